//! The `file` source: a YAML or JSON file of services, re-read when it changes (polled once a
//! second by modification time and size; an editor's rename-into-place is seen too).
//!
//! ```yaml
//! services:
//!   - name: payments
//!     namespace: shop
//!     endpoints:
//!       - {address: 10.0.0.7, port: 8080, health: healthy, zone: eu-west-1a, labels: {track: stable}}
//! ```
//!
//! An unreadable or malformed file keeps the last services read and marks the source unhealthy
//! with the reason (file, line, column, path); fixing the file heals it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use super::{Discovery, Service};
use crate::parse::{Format, parse};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicesFile {
    #[serde(default)]
    services: Vec<Service>,
}

/// Reads `path` once: its services, or why not.
pub fn read(path: &Path) -> Result<Vec<Service>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        _ => Format::Yaml,
    };
    let file: ServicesFile = parse(&bytes, format).map_err(|e| {
        let at = match (e.line, e.column) {
            (Some(l), Some(c)) => format!(":{l}:{c}"),
            _ => String::new(),
        };
        format!("{}{at}: {e}", path.display())
    })?;
    Ok(file.services)
}

/// Declares source `name` and keeps it in step with `path` until `stop` turns true.
pub fn spawn(discovery: Discovery, name: String, path: PathBuf, mut stop: watch::Receiver<bool>) {
    discovery.declare(&name, super::SourceKind::File);
    tokio::spawn(async move {
        let mut seen: Option<flotilla_common::files::FileStamp> = None;
        loop {
            let stamp = flotilla_common::files::FileStamp::of([path.as_path()]);
            if seen.as_ref() != Some(&stamp) {
                match read(&path) {
                    Ok(services) => {
                        tracing::info!(message = "discovery source read", source = %name, services = services.len());
                        discovery.update(&name, services);
                        seen = Some(stamp);
                    }
                    // Not remembered as seen: retried every tick until it reads.
                    Err(e) => discovery.failed(&name, e),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    });
}
