//! Compiles the Envoy protos vendored in `proto/vendor/` (copied from the `envoy-types` crate by
//! `scripts/vendor-envoy-protos.py`) with protox — pure Rust, no `protoc`, no shelling out — into
//! the descriptor set that gRPC reflection serves on the xDS port. A failure here fails the build:
//! every binary describes Envoy's discovery services.

use std::path::{Path, PathBuf};

use prost::Message;

const VENDOR: &str = "proto/vendor";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={VENDOR}");
    let mut files = Vec::new();
    collect(Path::new(VENDOR), &mut files)?;
    files.sort();
    let relative: Vec<PathBuf> =
        files.iter().filter_map(|f| f.strip_prefix(VENDOR).ok()).map(Path::to_path_buf).collect();
    let fds = protox::compile(&relative, [VENDOR])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("envoy_descriptors.bin"), fds.encode_to_vec())?;
    Ok(())
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            files.push(path);
        }
    }
    Ok(())
}
