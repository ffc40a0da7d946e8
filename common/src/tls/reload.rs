//! Keeping served TLS material current: the files are checked every second (and re-read on
//! SIGHUP); new material replaces the old only when all of it loads. Connections already open
//! keep the keys they were made with, so no stream drops; the next handshake uses the new pair.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::ServerConfig;

use super::{ClientAuth, Material, TlsError, TlsFiles, load};
use crate::files::FileStamp;

/// How often the files are looked at for changes.
const POLL: Duration = Duration::from_secs(1);

/// Served TLS material, reloaded when its files change.
#[derive(Debug)]
pub struct TlsReloader {
    files: TlsFiles,
    poll: Duration,
    current: RwLock<Arc<Material>>,
    stamp: Mutex<FileStamp>,
}

fn stamp(files: &TlsFiles) -> FileStamp {
    FileStamp::of([&files.cert, &files.key].into_iter().chain(files.client_ca.as_ref()).map(|p| p.as_path()))
}

impl TlsReloader {
    /// Loads the files; fails (naming the file) if they do not make a servable pair.
    pub fn new(files: TlsFiles) -> Result<Arc<TlsReloader>, TlsError> {
        TlsReloader::with_poll(files, POLL)
    }

    /// Like [`new`](Self::new), looking at the files every `poll` instead of every second.
    pub fn with_poll(files: TlsFiles, poll: Duration) -> Result<Arc<TlsReloader>, TlsError> {
        let material = load(&files)?;
        let s = stamp(&files);
        metrics::gauge!("flotilla_tls_certificate_expiry_seconds").set(material.not_after as f64);
        Ok(Arc::new(TlsReloader {
            files,
            poll,
            current: RwLock::new(Arc::new(material)),
            stamp: Mutex::new(s),
        }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The material served now.
    pub fn current(&self) -> Arc<Material> {
        match self.current.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The server config for the next handshake on a port asking `auth`.
    pub fn config(&self, auth: ClientAuth) -> Arc<ServerConfig> {
        self.current().config(auth)
    }

    /// Re-reads the files now. On error the previous material stays in service.
    pub fn reload(&self) -> Result<(), TlsError> {
        let s = stamp(&self.files);
        if let Ok(mut last) = self.stamp.lock() {
            *last = s;
        }
        match load(&self.files) {
            Ok(m) => {
                tracing::info!(message = "TLS material reloaded", cert = %self.files.cert.display(), serial = %m.serial);
                metrics::counter!("flotilla_tls_reloads_total", "result" => "ok").increment(1);
                metrics::gauge!("flotilla_tls_certificate_expiry_seconds").set(m.not_after as f64);
                match self.current.write() {
                    Ok(mut c) => *c = Arc::new(m),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(m),
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(message = "new TLS material refused; still serving the previous certificate", error = %e);
                metrics::counter!("flotilla_tls_reloads_total", "result" => "refused").increment(1);
                Err(e)
            }
        }
    }

    /// Reloads if any file changed since the last read.
    fn reload_if_changed(&self) {
        let changed = self.stamp.lock().map(|last| *last != stamp(&self.files)).unwrap_or(true);
        if changed {
            let _ = self.reload();
        }
    }

    /// Watches the files (and SIGHUP) until `stop` turns true.
    pub fn spawn_watch(self: &Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let me = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let hup_recv = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hup_recv = std::future::pending::<Option<()>>();
                tokio::select! {
                    _ = tokio::time::sleep(me.poll) => me.reload_if_changed(),
                    Some(()) = hup_recv => {
                        tracing::info!("SIGHUP: re-reading TLS files");
                        let _ = me.reload();
                    }
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
    }
}
