//! Flotilla's management API as protobuf: `flotilla.v1.ControlPlaneService`, served by the brain
//! on the gRPC API port (default 18001). Generated code only; the implementation lives in the
//! brain (`brain/src/grpc_api.rs`). Also the client of etcd's v3 API ([`etcd`]), which the
//! brain's etcd store speaks.

/// `flotilla.v1`: messages, client and server.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("flotilla.v1");

    /// Encoded descriptor set of `flotilla/v1/controlplane.proto`, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/controlplane_descriptor.bin"));
}

/// etcd's v3 API (packages `etcdserverpb`, `mvccpb`, `authpb`), client only: the definitions
/// vendored from etcd by scripts/vendor-etcd-protos.py.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod etcd {
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
}
