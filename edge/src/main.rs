//! `flotilla-edge`: a stateless xDS edge. It serves Envoys from proxy-group state in NATS
//! JetStream (written by `flotilla-brain --nats-url`), loading only the groups of the proxies
//! connected to it.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use flotilla_edge::app::{Edge, EdgeSettings};

/// jemalloc: an edge allocates and frees per-stream state as Envoys come and go; with glibc's
/// malloc a 10,000-proxy mass reconnect left the edge at 1,001 MB, with jemalloc at 816 MB.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "flotilla-edge", version, about = "Flotilla xDS edge (serves Envoys from NATS JetStream)")]
struct Cli {
    /// NATS server with JetStream, e.g. nats://127.0.0.1:4222.
    #[arg(long, env = "FLOTILLA_NATS_URL")]
    nats_url: String,
    /// xDS (gRPC) listen address.
    #[arg(long, env = "FLOTILLA_XDS_ADDR", default_value = "0.0.0.0:18000")]
    xds_addr: SocketAddr,
    /// JetStream KV bucket holding group states (must match the brain's).
    #[arg(long, env = "FLOTILLA_NATS_BUCKET", default_value = flotilla_shared::subject::STATE_BUCKET)]
    nats_bucket: String,
    /// Federation: follow the brain of another region, whose JetStream domain this is (reached
    /// through a NATS leaf node). The bucket becomes a local mirror of that domain's bucket, so
    /// this edge keeps serving while the link is down and catches up when it returns.
    #[arg(long, env = "FLOTILLA_MIRROR_DOMAIN")]
    mirror_domain: Option<String>,
    /// Close connections older than this (e.g. 30m; ±10 % jitter) so Envoys rebalance across
    /// edges behind an L4 load balancer.
    #[arg(long, env = "FLOTILLA_MAX_CONNECTION_AGE", value_parser = humantime::parse_duration)]
    max_connection_age: Option<std::time::Duration>,
    /// On SIGTERM, close streams over this window so Envoys move to other edges gradually.
    #[arg(long, env = "FLOTILLA_DRAIN_WINDOW", default_value = "10s", value_parser = humantime::parse_duration)]
    drain_window: std::time::Duration,
    /// Admit at most this many new xDS streams per second (the rest wait their turn), so a mass
    /// reconnect arrives as a steady flow. Unlimited when unset.
    #[arg(long, env = "FLOTILLA_MAX_NEW_STREAMS_PER_SEC")]
    max_new_streams_per_sec: Option<u32>,
    /// Name of this edge in status reports [default: hostname-pid].
    #[arg(long, env = "FLOTILLA_EDGE_NAME")]
    name: Option<String>,
    /// PEM certificate chain: serve xDS over TLS 1.3 (with --tls-key).
    #[arg(long, env = "FLOTILLA_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FLOTILLA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// PEM CA bundle: proxies must present a certificate it signed (mTLS), whose SPIFFE id names
    /// their namespace.
    #[arg(long, env = "FLOTILLA_CLIENT_CA", requires = "tls_cert")]
    client_ca: Option<std::path::PathBuf>,
    /// Trust domain proxies' SPIFFE ids must be in (with --client-ca).
    #[arg(long, env = "FLOTILLA_TRUST_DOMAIN")]
    trust_domain: Option<String>,
    /// NATS credentials file (JWT + NKey seed).
    #[arg(long, env = "FLOTILLA_NATS_CREDS")]
    nats_creds: Option<std::path::PathBuf>,
    /// CA bundle to verify the NATS server (turns on TLS to NATS).
    #[arg(long, env = "FLOTILLA_NATS_TLS_CA")]
    nats_tls_ca: Option<std::path::PathBuf>,
    /// Client certificate for NATS mTLS (with --nats-tls-key).
    #[arg(long, env = "FLOTILLA_NATS_TLS_CERT")]
    nats_tls_cert: Option<std::path::PathBuf>,
    #[arg(long, env = "FLOTILLA_NATS_TLS_KEY")]
    nats_tls_key: Option<std::path::PathBuf>,
    /// The brain's secrets key (32 bytes as 64 hex digits or base64, in a file): opens the secret
    /// (SDS) bodies the brain seals on the bus. The key may instead come from FLOTILLA_SECRETS_KEY
    /// (never a flag: flags show in `ps`). Required when the brain seals secrets.
    #[arg(long, env = "FLOTILLA_SECRETS_KEY_FILE")]
    secrets_key_file: Option<std::path::PathBuf>,
    /// The previous secrets key, while rotating (bodies sealed before the rotation).
    #[arg(long, env = "FLOTILLA_SECRETS_OLD_KEY_FILE")]
    secrets_old_key_file: Option<std::path::PathBuf>,
    /// Where to serve /metrics (Prometheus), /health and /ready over HTTP; `off` to not serve them.
    #[arg(long, env = "FLOTILLA_METRICS_ADDR", default_value = "0.0.0.0:18002")]
    metrics_addr: String,
    /// Export traces to this OTLP/gRPC collector (e.g. http://127.0.0.1:4317).
    #[arg(long, env = "FLOTILLA_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[arg(long, env = "FLOTILLA_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[arg(long, env = "FLOTILLA_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _tracing = flotilla_common::ops::init_logging(
        &cli.log_level,
        cli.log_format == "json",
        cli.otlp_endpoint.as_deref(),
        "flotilla-edge",
    )?;
    let metrics_addr = match cli.metrics_addr.as_str() {
        "off" | "" => None,
        a => Some(a.parse().with_context(|| format!("invalid --metrics-addr {a:?} (host:port or off)"))?),
    };
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "edge".into());
    let key_text = std::env::var("FLOTILLA_SECRETS_KEY").ok().filter(|k| !k.trim().is_empty());
    let secrets = flotilla_shared::cipher::SecretsCipher::load(
        cli.secrets_key_file.as_deref(),
        key_text.as_deref(),
        cli.secrets_old_key_file.as_deref(),
    )
    .context("the secrets key (--secrets-key-file / FLOTILLA_SECRETS_KEY)")?
    .map(std::sync::Arc::new);
    let settings = EdgeSettings {
        nats_url: cli.nats_url,
        xds_addr: cli.xds_addr,
        bucket: cli.nats_bucket,
        mirror_domain: cli.mirror_domain,
        name: cli.name.unwrap_or_else(|| format!("{host}-{}", std::process::id())),
        max_connection_age: cli.max_connection_age,
        tls: match (cli.tls_cert, cli.tls_key) {
            (Some(cert), Some(key)) => {
                Some(flotilla_common::tls::TlsFiles { cert, key, client_ca: cli.client_ca })
            }
            _ => None,
        },
        trust_domain: cli.trust_domain,
        max_new_streams_per_sec: cli.max_new_streams_per_sec,
        nats: flotilla_common::nats::NatsSecurity {
            creds: cli.nats_creds,
            tls_ca: cli.nats_tls_ca,
            tls_cert: cli.nats_tls_cert,
            tls_key: cli.nats_tls_key,
        },
        metrics_addr,
        secrets,
    };
    if settings.tls.is_none() {
        tracing::warn!(
            "xDS is served in plaintext: anyone who can reach {} can read every proxy's config; pass --tls-cert/--tls-key (and --client-ca for mTLS)",
            settings.xds_addr
        );
    }
    let edge = Edge::start(&settings).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    edge.drain(cli.drain_window).await;
    Ok(())
}
