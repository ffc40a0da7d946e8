//! Flotilla's management API as protobuf: `flotilla.v1.ControlPlaneService`, served by the brain
//! on the gRPC API port (default 18001). Generated code only; the implementation lives in the
//! brain (`brain/src/grpc_api.rs`).

/// `flotilla.v1`: messages, client and server.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("flotilla.v1");

    /// Encoded descriptor set of `flotilla/v1/controlplane.proto`, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/controlplane_descriptor.bin"));
}
