//! Compiles `flotilla/v1/controlplane.proto` with protox (pure Rust: no protoc on the machine)
//! into Rust types and tonic stubs, and writes the descriptor set served by gRPC reflection; and
//! etcd's v3 API (`vendor/etcd`, scripts/vendor-etcd-protos.py) into a client only.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=flotilla/v1/controlplane.proto");
    let fds = protox::compile(["flotilla/v1/controlplane.proto"], ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("controlplane_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    println!("cargo:rerun-if-changed=vendor/etcd");
    let etcd = protox::compile(["rpc.proto"], ["vendor/etcd"])?;
    tonic_prost_build::configure().build_server(false).build_client(true).compile_fds(etcd)?;
    Ok(())
}
