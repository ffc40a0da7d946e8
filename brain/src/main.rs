//! `flotilla-brain`: runs the control plane. With no flags: embedded store in ./flotilla-data,
//! in-process bus and edge, REST on :8080, xDS on :18000.

use clap::Parser;
use flotilla_brain::app::Brain;
use flotilla_brain::settings::{Cli, LogFormat, Settings};

/// jemalloc, as on `flotilla-edge`: the embedded edge frees per-stream state as Envoys come and
/// go, and glibc's malloc kept much of it as fragmented heap.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn init_logging(s: &Settings) -> anyhow::Result<flotilla_common::ops::Tracing> {
    flotilla_common::ops::init_logging(
        &s.log_level,
        s.log_format == LogFormat::Json,
        s.otlp_endpoint.as_deref(),
        "flotilla-brain",
    )
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let check_only = cli.check_config;
    let settings = Settings::resolve(cli)?;
    if check_only {
        println!(
            "configuration is valid: REST {}, store {}, NATS {}, HA {}",
            settings.rest_addr,
            settings.store_kind().name(),
            settings.nats_url.as_deref().unwrap_or("none (in-process bus)"),
            if settings.ha { "on" } else { "off" },
        );
        return Ok(());
    }
    let _tracing = init_logging(&settings)?;
    let brain = Brain::start(&settings).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    brain.shutdown().await;
    Ok(())
}
