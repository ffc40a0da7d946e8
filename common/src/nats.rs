//! The NATS connection and the JetStream state bucket, as both binaries open them: credentials
//! and TLS ([`NatsSecurity`]), a connection that waits for a late server ([`connect_secure`]),
//! and the group-state bucket, opened or created safely by many processes at once
//! ([`open_bucket`]), or mirrored from another region ([`open_mirror`]). What goes into the
//! bucket is `flotilla-shared`'s wire format; who writes and reads it, the brain's and edge's.

use anyhow::Context;
use async_nats::jetstream::{self, kv};

/// Credentials and TLS for the NATS connection (all optional).
#[derive(Debug, Clone, Default)]
pub struct NatsSecurity {
    /// A `.creds` file (JWT + NKey seed), as `nsc` writes it.
    pub creds: Option<std::path::PathBuf>,
    /// CA bundle to verify the NATS server with (implies TLS).
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate and key for NATS mTLS.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
}

/// The stream of a KV bucket as JetStream's KV layer makes it: the latest value per key, direct
/// gets. Its own subjects (a bucket written here) or a mirror (another region's) are the caller's.
fn kv_stream(bucket: &str) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        max_messages_per_subject: 1,
        discard: jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        ..Default::default()
    }
}

/// Attempts to create a bucket's stream before giving up: another brain or edge starting at the
/// same moment may create it between our look and our create (a Deployment's replicas do).
const CREATE_ATTEMPTS: u32 = 5;

/// Opens the group-state bucket, creating it (latest value per key) if the brain has not yet.
/// Safe to run from many processes at once: when a create conflicts with one made meanwhile,
/// the bucket that exists is opened and its settings checked.
///
/// The bucket's stream is created directly (what `create_key_value` would create) because
/// async-nats' `create_key_value` first queries account info in a shape that JetStream servers
/// before 2.10 (Debian's 2.9) do not answer.
pub async fn open_bucket(js: &jetstream::Context, bucket: &str) -> anyhow::Result<kv::Store> {
    let stream = format!("KV_{bucket}");
    let subject = format!("$KV.{bucket}.>");
    let config = jetstream::stream::Config { subjects: vec![subject.clone()], ..kv_stream(bucket) };
    ensure_stream(js, &stream, config, |c| {
        if c.mirror.is_some() {
            return Err("a mirror of another region's bucket (run this edge with --mirror-domain, or use another --nats-bucket)".into());
        }
        if !c.subjects.contains(&subject) {
            return Err(format!("a stream on subjects {:?}, not {subject:?}", c.subjects));
        }
        Ok(())
    })
    .await?;
    js.get_key_value(bucket).await.with_context(|| format!("cannot open the JetStream KV bucket {bucket:?}"))
}

/// Opens the group-state bucket as a local mirror of the bucket of the same name in JetStream
/// domain `domain` (another region, reached through a NATS leaf node), creating the mirror if
/// missing (idempotent under concurrent starts, as [`open_bucket`]). A local bucket that exists
/// but is not that mirror is refused: it would silently serve another region's state, or none.
pub async fn open_mirror(js: &jetstream::Context, bucket: &str, domain: &str) -> anyhow::Result<kv::Store> {
    let stream = format!("KV_{bucket}");
    let config = jetstream::stream::Config {
        mirror: Some(jetstream::stream::Source {
            name: stream.clone(),
            domain: Some(domain.to_string()),
            ..Default::default()
        }),
        mirror_direct: true,
        ..kv_stream(bucket)
    };
    let api = format!("$JS.{domain}.API");
    ensure_stream(js, &stream, config, |c| {
        let mirror = c.mirror.as_ref();
        let same = mirror
            .is_some_and(|m| m.name == stream && m.external.as_ref().is_some_and(|e| e.api_prefix == api));
        let what = match (same, mirror) {
            (true, _) => return Ok(()),
            (false, None) => "a bucket of its own (written here, not mirrored)".to_string(),
            (false, Some(m)) => format!(
                "a mirror of {:?} via {:?}",
                m.name,
                m.external.as_ref().map(|e| e.api_prefix.as_str()).unwrap_or("this domain")
            ),
        };
        Err(format!("{what}; delete it (nats stream rm {stream}) or run without --mirror-domain"))
    })
    .await
    .map_err(|e| anyhow::anyhow!("--mirror-domain {domain}: {e:#}"))?;
    js.get_key_value(bucket)
        .await
        .with_context(|| format!("cannot open the mirrored JetStream KV bucket {bucket:?}"))
}

/// Makes sure stream `name` exists: opens it and checks it with `fits` (an `Err` says what the
/// existing stream is instead), or creates it from `config`. A create that fails because another
/// process created the stream meanwhile is followed by opening and checking that one.
async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    config: jetstream::stream::Config,
    fits: impl Fn(&jetstream::stream::Config) -> Result<(), String>,
) -> anyhow::Result<()> {
    let mut last_error = None;
    for attempt in 0..CREATE_ATTEMPTS {
        if let Ok(mut existing) = js.get_stream(name).await {
            let info =
                existing.info().await.with_context(|| format!("cannot read JetStream stream {name:?}"))?;
            return fits(&info.config)
                .map_err(|what| anyhow::anyhow!("the JetStream stream {name:?} already exists as {what}"));
        }
        match js.create_stream(config.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                // Most often: created by another process since our look (JetStream answers
                // "subjects overlap" or "name already in use"); look again.
                tracing::debug!(message = "creating a JetStream stream failed; looking again", stream = name, attempt, error = %e);
                last_error = Some(e);
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
        }
    }
    let e = last_error.map_or_else(|| "unknown error".to_string(), |e| e.to_string());
    anyhow::bail!("cannot create the JetStream stream {name:?} after {CREATE_ATTEMPTS} attempts: {e}")
}

/// Connects to NATS, retrying until it answers (the edge must come up even if NATS is late).
pub async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    connect_secure(url, name, &NatsSecurity::default()).await
}

/// [`connect`] with credentials and TLS.
pub async fn connect_secure(url: &str, name: &str, sec: &NatsSecurity) -> anyhow::Result<async_nats::Client> {
    let mut opts = async_nats::ConnectOptions::new().name(name).retry_on_initial_connect();
    if let Some(creds) = &sec.creds {
        opts = async_nats::ConnectOptions::with_credentials_file(creds)
            .await
            .with_context(|| format!("cannot read NATS credentials {}", creds.display()))?
            .name(name)
            .retry_on_initial_connect();
    }
    if let Some(ca) = &sec.tls_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    match (&sec.tls_cert, &sec.tls_key) {
        (Some(c), Some(k)) => opts = opts.add_client_certificate(c.clone(), k.clone()).require_tls(true),
        (None, None) => {}
        _ => anyhow::bail!("--nats-tls-cert and --nats-tls-key go together"),
    }
    opts.connect(url).await.with_context(|| format!("cannot connect to NATS at {url}"))
}

/// Headers naming `kind`'s wire version as this build writes it ([`flotilla_shared::fleet`]).
pub fn wire_headers(kind: &flotilla_shared::fleet::MessageKind) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert(flotilla_shared::fleet::WIRE_HEADER, kind.header().as_str());
    h
}

/// The wire version header of `msg`, if it has one (none: version 1, as older builds send).
pub fn wire_version(msg: &async_nats::Message) -> Option<&str> {
    msg.headers.as_ref().and_then(|h| h.get(flotilla_shared::fleet::WIRE_HEADER)).map(|v| v.as_str())
}
