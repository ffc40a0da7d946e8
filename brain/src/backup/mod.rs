//! Scheduled backups (`--backup-dir`, `--backup-interval`, `--backup-keep`): every interval the
//! leader writes every config (latest revisions, secrets included: private keys sealed with the
//! secrets key when the brain has one, `enc:v1:…`, which import opens) as one YAML bundle, `flotilla-backup-<UTC time>.yaml`, readable only by its owner, written to a
//! temporary name, synced and renamed (a backup is whole or absent), and keeps the newest
//! `keep`. Restoring is importing that bundle (`flotilla import -f FILE`, or
//! `POST /api/v1/import`) into a brain. Followers do not write backups.
//!
//! It does not restore to a point in time from revision history (not implemented), nor copy
//! the files anywhere else.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::service::ConfigService;

/// Where and how often.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    pub dir: PathBuf,
    pub interval: Duration,
    /// Backups kept (the oldest beyond this are removed).
    pub keep: usize,
}

const PREFIX: &str = "flotilla-backup-";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot export the configs: {0}")]
    Export(#[from] crate::service::ServiceError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Writes backups every `s.interval` until `stop` (the first one an interval after start).
pub fn spawn(service: Arc<ConfigService>, s: BackupSettings, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(s.interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if service.leadership().epoch().is_none() {
                continue;
            }
            match backup_once(&service, &s).await {
                Ok(path) => {
                    metrics::counter!("flotilla_brain_backups_total", "result" => "ok").increment(1);
                    metrics::gauge!("flotilla_brain_last_backup_timestamp_seconds")
                        .set(flotilla_shared::wire::unix_ms() as f64 / 1000.0);
                    tracing::info!(message = "backup written", path = %path.display());
                }
                Err(e) => {
                    metrics::counter!("flotilla_brain_backups_total", "result" => "error").increment(1);
                    tracing::error!(message = "backup failed", error = %e);
                }
            }
        }
    });
}

/// Writes one backup now and prunes the old ones; returns its path.
pub async fn backup_once(service: &ConfigService, s: &BackupSettings) -> Result<PathBuf, BackupError> {
    let yaml = service.export_for_backup().await?;
    let name = format!("{PREFIX}{}.yaml", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"));
    let path = s.dir.join(&name);
    let (dir, tmp_path, final_path, keep) =
        (s.dir.clone(), s.dir.join(format!(".{name}.tmp")), path.clone(), s.keep);
    tokio::task::spawn_blocking(move || -> Result<(), BackupError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BackupError::Write { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        write_private(&tmp_path, yaml.as_bytes()).map_err(io(&tmp_path))?;
        std::fs::rename(&tmp_path, &final_path).map_err(io(&final_path))?;
        prune(&dir, keep).map_err(io(&dir))
    })
    .await
    .map_err(|e| BackupError::Write { path: path.clone(), source: std::io::Error::other(e) })??;
    Ok(path)
}

/// Writes `bytes` to a new file only its owner may read, synced to disk.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Removes the oldest backups beyond `keep` (names sort by time).
fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(PREFIX) && n.ends_with(".yaml"))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep.max(1));
    for n in &names[..excess] {
        std::fs::remove_file(dir.join(n))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for n in ["flotilla-backup-1.yaml", "flotilla-backup-2.yaml", "flotilla-backup-3.yaml", "other.yaml"]
        {
            std::fs::write(dir.path().join(n), "x").unwrap_or_else(|e| panic!("{e}"));
        }
        super::prune(dir.path(), 2).unwrap_or_else(|e| panic!("{e}"));
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        left.sort();
        assert_eq!(left, ["flotilla-backup-2.yaml", "flotilla-backup-3.yaml", "other.yaml"]);
    }
}
