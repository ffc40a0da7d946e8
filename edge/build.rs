//! Finds the protobuf descriptor set that the `envoy-types` crate ships (`src/generated/types.bin`)
//! so the xDS port can serve gRPC reflection for Envoy's discovery services. The path comes from
//! `cargo metadata` (offline, from the lockfile); if it cannot be found the build still succeeds
//! and reflection is served without Envoy's descriptors (logged at start-up).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../Cargo.lock");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let dest = out.join("envoy_descriptors.bin");
    let bytes = find().and_then(|p| std::fs::read(p).ok()).unwrap_or_default();
    if bytes.is_empty() {
        println!("cargo:warning=envoy-types descriptor set not found; gRPC reflection will not describe xDS");
    }
    std::fs::write(&dest, bytes).expect("write descriptor set");
}

fn find() -> Option<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let target = std::env::var("TARGET").ok()?;
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--locked", "--filter-platform", &target])
        .current_dir(dir)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let pkg = meta["packages"].as_array()?.iter().find(|p| p["name"] == "envoy-types")?;
    let manifest = PathBuf::from(pkg["manifest_path"].as_str()?);
    let path = manifest.parent()?.join("src/generated/types.bin");
    path.exists().then_some(path)
}
