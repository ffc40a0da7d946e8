//! Starting and stopping a brain, in either shape: by default everything in one process (the
//! embedded store, the in-process bus into the embedded edge's cache, the xDS server, REST and
//! the gRPC API); with `--database-url`, `--nats-url`, `--no-embedded-edge` and `--ha`, the
//! store is PostgreSQL, snapshots are also (or only) published to JetStream for `flotilla-edge`
//! replicas, and the brain joins a leader election. [`Brain::start`] wires the parts in order
//! (store, buses, discovery, leadership, service, listeners, servers, first publish);
//! [`Brain::shutdown`] stops them within bounds. Used by `main` and by the end-to-end tests.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use flotilla_edge::cache::Cache;
use flotilla_edge::registry::Registry;
use flotilla_edge::xds::server::{XdsConfig, XdsContext, serve};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use flotilla_common::tls::{ClientAuth, TlsReloader, incoming};

use crate::api::{ApiState, router};
use crate::audit::Audit;
use crate::auth::jwt::JwtVerifier;
use crate::auth::{Authz, PolicyReloader};
use crate::edge_runtime::EdgeRuntime;
use crate::grpc_api::GrpcApi;
use crate::manage::Manager;
use crate::publish::{Bus, EmbeddedBus, Fanout, NatsBus};
use crate::secrets::{EncryptingStore, SecretsCipher};
use crate::service::ConfigService;
use crate::settings::Security;
use crate::settings::Settings;
use crate::store::{EmbeddedStore, PostgresStore, Store};
use crate::transport::{ConnListener, Peer};

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}://{}@{}", &url[..s], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "brain".into())
}

/// The URL other brains redirect writers to, from the REST address (an unspecified IP becomes
/// the host name).
fn advertised(rest: std::net::SocketAddr) -> String {
    let host = if rest.ip().is_unspecified() { hostname() } else { rest.ip().to_string() };
    format!("http://{host}:{}", rest.port())
}

/// On becoming the leader: read the store again (the old leader wrote to it) and publish every
/// applied config with the new epoch, which also fences the old leader out of every group.
fn spawn_promotion(
    service: Arc<ConfigService>,
    mut role: watch::Receiver<crate::ha::Role>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = role.changed() => if changed.is_err() { return },
                _ = stop.changed() => return,
            }
            let now = role.borrow_and_update().clone();
            if let crate::ha::Role::Leader { epoch } = now {
                service.forget_latest();
                match service.publish_all().await {
                    Ok(n) => tracing::warn!(
                        message = "became the leader; published every applied config",
                        epoch,
                        configs = n
                    ),
                    Err(e) => {
                        tracing::error!(message = "became the leader but could not publish", epoch, error = %e)
                    }
                }
            }
        }
    });
}

/// Cross-namespace grants hold at every publish, not only when a config is written: discovery
/// asks the policy in force on every fill, and a new policy whose grants differ publishes every
/// applied config again, so a grant taken away stops endpoints flowing across namespaces within
/// the reload's second (the edges push only what changed). A reload that changes only roles,
/// bindings or quotas publishes nothing.
fn spawn_grant_enforcement(
    service: &Arc<ConfigService>,
    policy: &Arc<crate::auth::PolicyReloader>,
    mut stop: watch::Receiver<bool>,
) {
    let gate_policy = policy.clone();
    service
        .discovery()
        .set_reference_gate(Arc::new(move |from, to| gate_policy.current().may_reference(from, to)));
    let mut reloads = policy.reloads();
    let mut granted = policy.current();
    let (service, policy) = (service.clone(), policy.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = reloads.changed() => if changed.is_err() { return },
                _ = stop.changed() => return,
            }
            let now = policy.current();
            if now.same_grants(&granted) {
                continue;
            }
            granted = now;
            if let Err(e) = service.publish_all().await {
                tracing::error!(message = "RBAC policy reloaded but configs could not be published again", error = %e);
            }
        }
    });
}

/// Serves `flotilla.v1.ControlPlaneService` with gRPC health and reflection.
async fn serve_grpc_api(
    api: GrpcApi,
    listener: TcpListener,
    tls: Option<Arc<TlsReloader>>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    use flotilla_proto::v1::control_plane_service_server::ControlPlaneServiceServer;
    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_serving::<ControlPlaneServiceServer<GrpcApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(flotilla_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    tonic::transport::Server::builder()
        .add_service(reflection)
        .add_service(health_svc)
        .add_service(ControlPlaneServiceServer::new(api))
        .serve_with_incoming_shutdown(incoming(listener, tls.map(|t| (t, ClientAuth::Optional))), shutdown)
        .await?;
    Ok(())
}

/// A running brain.
pub struct Brain {
    pub rest_addr: SocketAddr,
    pub xds_addr: SocketAddr,
    pub grpc_api_addr: SocketAddr,
    pub registry: Registry,
    pub cache: Cache,
    stop: watch::Sender<bool>,
    /// Ends the embedded edge's streams (shutdown).
    drain: watch::Sender<Option<std::time::Duration>>,
    /// Given up first thing on shutdown (HA).
    leadership: crate::ha::Leadership,
    drain_window: std::time::Duration,
    tasks: Vec<JoinHandle<()>>,
    /// The embedded edge's threads (None with `--no-embedded-edge` or `--xds-threads 0`);
    /// stopped last.
    edge_runtime: Option<EdgeRuntime>,
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for {what} (is the port in use?)"))
}

/// The secrets cipher, from `--secrets-key-file` or `FLOTILLA_SECRETS_KEY`.
fn secrets_cipher(sec: &Security) -> anyhow::Result<Option<Arc<SecretsCipher>>> {
    let cipher = SecretsCipher::load(
        sec.secrets_key_file.as_deref(),
        sec.secrets_key.as_deref(),
        sec.secrets_old_key_file.as_deref(),
    )?;
    Ok(cipher.map(Arc::new))
}

/// Authentication and authorization from the security settings.
async fn authz(sec: &Security) -> anyhow::Result<Authz> {
    let jwt = match &sec.auth_jwks {
        Some(src) => Some(Arc::new(
            JwtVerifier::new(
                src.clone(),
                sec.auth_issuer.clone(),
                sec.auth_audience.clone(),
                sec.auth_groups_claim.clone(),
            )
            .await
            .context("--auth-jwks")?,
        )),
        None => None,
    };
    let policy = match &sec.rbac_policy {
        Some(path) => Some(PolicyReloader::new(path.clone())?),
        None => None,
    };
    let certificates = sec.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    Ok(Authz::new(jwt, certificates, policy))
}

impl Brain {
    /// Opens the store, binds the ports, loads every applied config, and serves.
    pub async fn start(settings: &Settings) -> anyhow::Result<Brain> {
        let metrics = flotilla_common::ops::metrics_handle();
        counters_at_zero();
        let sec = &settings.security;
        let tls = match &sec.tls {
            Some(files) => {
                Some(TlsReloader::new(files.clone()).context("TLS (--tls-cert/--tls-key/--client-ca)")?)
            }
            None => None,
        };
        let authz = authz(sec).await?;
        warn_if_open(sec, &authz);
        let cipher = secrets_cipher(sec)?;
        let Opened { store, health_store, store_health, pg_pool } =
            open_store(settings, cipher.clone()).await?;
        let audit = Audit::new(store.clone());
        let quotas = crate::auth::quota::Quotas::default();
        let cache = Cache::paced(flotilla_edge::coalesce::DEBOUNCE);
        let registry = Registry::new("embedded");
        let fleet = crate::fleet::Fleet::new(registry.clone());
        let (buses, nats_bus) = buses(settings, &cache, &fleet, cipher.clone()).await?;
        let (ready_tx, ready) = watch::channel(false);
        let (stop, stopped) = watch::channel(false);
        let discovery = start_discovery(settings, &stopped);
        let leadership = leadership(settings, pg_pool, &stopped).await?;
        let service = Arc::new(
            ConfigService::new(store, Arc::new(Fanout(buses)))
                .with_secrets(cipher.clone())
                .with_store_health(store_health)
                .with_discovery(discovery.clone())
                .with_leadership(leadership.clone())
                .with_history_limit(settings.history_limit),
        );
        if leadership.elected() {
            spawn_promotion(service.clone(), leadership.watch(), stopped.clone());
        }
        health_store.spawn_probe(stopped.clone());
        if let Some(bus) = nats_bus
            && !settings.bucket_gc_interval.is_zero()
        {
            spawn_bucket_gc(bus, settings.bucket_gc_interval, leadership.clone(), stopped.clone());
        }
        if let Some(b) = &settings.backup {
            spawn_backups(service.clone(), b, cipher.is_some(), &stopped);
        }

        let xds_listener = match settings.embedded_edge {
            true => Some(bind(settings.xds_addr, "xDS").await?),
            false => None,
        };
        let rest_listener = bind(settings.rest_addr, "the REST API").await?;
        let grpc_listener = bind(settings.grpc_api_addr, "the gRPC API").await?;
        let grpc_api_addr = grpc_listener.local_addr()?;
        let xds_addr = match &xds_listener {
            Some(l) => l.local_addr()?,
            None => settings.xds_addr,
        };
        let rest_addr = rest_listener.local_addr()?;

        let shutdown = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let (drain, _) = watch::channel(None);
        let ctx =
            xds_context(settings, &cache, &registry, ready.clone(), drain.subscribe(), tls.clone(), &authz);
        // The embedded edge's streams run on threads of their own (edge_runtime): a push to
        // every proxy must not queue the next API call behind it. `--xds-threads 0`: as before,
        // on this runtime.
        let (edge_runtime, xds) = match xds_listener {
            Some(listener) => {
                let runtime = match settings.xds_threads {
                    Some(0) => None,
                    n => Some(EdgeRuntime::start(n)?),
                };
                // Registered again where it is served, so its connections are driven there.
                let listener = listener.into_std().context("handing over the xDS listener")?;
                let stopped = stopped.clone();
                let server = async move {
                    let served = match TcpListener::from_std(listener) {
                        Ok(l) => serve(ctx, l, shutdown(stopped)).await.map_err(anyhow::Error::from),
                        Err(e) => Err(e.into()),
                    };
                    if let Err(e) = served {
                        tracing::error!(message = "xDS server failed", error = format!("{e:#}"));
                    }
                };
                let xds = match &runtime {
                    Some(r) => r.spawn(server),
                    None => tokio::spawn(server),
                };
                (runtime, Some(xds))
            }
            None => (None, None),
        };
        if let Some(t) = &tls {
            t.spawn_watch(stopped.clone());
        }
        if let Some(p) = &sec.rbac_policy {
            tracing::info!(message = "RBAC policy in force", path = %p.display());
        }
        if let Some(reloader) = authz.policy_reloader() {
            reloader.spawn_watch(stopped.clone());
            spawn_grant_enforcement(&service, reloader, stopped.clone());
        }
        let manage = Arc::new(Manager {
            service: service.clone(),
            registry: fleet.clone(),
            authz: authz.clone(),
            audit: audit.clone(),
            quotas: quotas.clone(),
            rollbacks: Arc::default(),
            envoy: settings.envoy_validate_bin.clone().map(|bin| {
                let validator = crate::envoy_check::EnvoyValidator::new(bin);
                Arc::new(crate::envoy_check::EnvoyGate::new(
                    validator,
                    settings.envoy_validate_namespaces.clone(),
                ))
            }),
        });
        tokio::spawn(crate::rollback::run(
            manage.rollbacks.clone(),
            manage.registry.clone(),
            manage.clone(),
            stopped.clone(),
        ));
        let app = router(ApiState { manage: manage.clone(), metrics, ready });
        let rest_listener = ConnListener::new(rest_listener, tls.clone())?;
        let rest = tokio::spawn({
            let stopped = stopped.clone();
            async move {
                let app = app.into_make_service_with_connect_info::<Peer>();
                if let Err(e) =
                    axum::serve(rest_listener, app).with_graceful_shutdown(shutdown(stopped)).await
                {
                    tracing::error!(message = "REST server failed", error = %e);
                }
            }
        });

        let grpc = tokio::spawn({
            let stopped = stopped.clone();
            let api = GrpcApi::new(manage);
            let tls = tls.clone();
            async move {
                if let Err(e) = serve_grpc_api(api, grpc_listener, tls, shutdown(stopped)).await {
                    tracing::error!(message = "gRPC API server failed", error = %e);
                }
            }
        });

        let n = service.publish_all().await.context("loading applied configs")?;
        spawn_discovery_publisher(service.clone(), discovery.subscribe(), stopped.clone());
        spawn_discovery_expiry(discovery.clone(), stopped.clone());
        crate::discovery::probe::spawn(discovery.clone(), stopped.clone());
        ready_tx.send_replace(true);
        let storage = match &settings.database_url {
            Some(url) => redact(url),
            None => settings.data_dir.display().to_string(),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(message = "flotilla-brain ready", %rest_addr, %xds_addr, %grpc_api_addr, configs = n, %storage, %scheme,
            authentication = authz.authenticates(), rbac = authz.policy().is_some());
        Ok(Brain {
            rest_addr,
            xds_addr,
            grpc_api_addr,
            registry,
            cache,
            stop,
            drain,
            leadership: leadership.clone(),
            drain_window: settings.drain_window,
            tasks: [Some(rest), Some(grpc), xds].into_iter().flatten().collect(),
            edge_runtime,
        })
    }

    /// The embedded edge's runtime, where every xDS stream runs (None with
    /// `--no-embedded-edge` or `--xds-threads 0`).
    pub fn edge_runtime(&self) -> Option<&tokio::runtime::Handle> {
        self.edge_runtime.as_ref().map(EdgeRuntime::handle)
    }

    /// Stops at once what must stop at once — the HA lease is handed over, no new connection
    /// is taken — then ends the embedded edge's xDS streams within the drain window (Envoys
    /// reconnect elsewhere), and waits a short grace at most for the servers to close their
    /// connections: a connected Envoy or an open event stream never holds the stop.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let resign = self.leadership.resign();
        if tokio::time::timeout(flotilla_edge::shutdown::GRACE, resign).await.is_err() {
            tracing::warn!("the HA lease could not be given up in time; it expires by itself");
        }
        flotilla_edge::shutdown::drain_streams(&self.registry, &self.drain, self.drain_window).await;
        flotilla_edge::shutdown::finish(self.tasks, flotilla_edge::shutdown::GRACE).await;
        tracing::info!("stopped");
    }
}

/// Where compiled snapshots go: the embedded edge's cache (unless `--no-embedded-edge`) and
/// JetStream (with `--nats-url`, secret bodies sealed with `cipher`); the NATS connection also
/// brings the edges' reports and events into `fleet`.
async fn buses(
    settings: &Settings,
    cache: &Cache,
    fleet: &crate::fleet::Fleet,
    cipher: Option<Arc<SecretsCipher>>,
) -> anyhow::Result<(Vec<Box<dyn Bus>>, Option<NatsBus>)> {
    let mut buses: Vec<Box<dyn Bus>> = Vec::new();
    let mut nats = None;
    if settings.embedded_edge {
        buses.push(Box::new(EmbeddedBus::new(cache.clone())));
    }
    if let Some(url) = &settings.nats_url {
        let client =
            flotilla_common::nats::connect_secure(url, "flotilla-brain", &settings.nats_security).await?;
        fleet.listen(client.clone());
        let js = async_nats::jetstream::new(client);
        let kv = flotilla_common::nats::open_bucket(&js, &settings.nats_bucket).await?;
        let bus = NatsBus::new(js, kv).sealing_secrets(cipher).await?;
        nats = Some(bus.clone());
        buses.push(Box::new(bus));
    }
    Ok((buses, nats))
}

/// Collects the JetStream bucket's unused resource bodies every `interval` (also their grace
/// period), while this brain leads ([`crate::bucket_gc`]).
fn spawn_bucket_gc(
    bus: NatsBus,
    interval: std::time::Duration,
    leadership: crate::ha::Leadership,
    mut stopped: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stopped.changed() => return,
            }
            if leadership.epoch().is_none() {
                continue;
            }
            let leads = || leadership.epoch().is_some();
            match bus.collect_garbage(interval, &leads).await {
                Ok(p) if p.deleted > 0 => tracing::info!(
                    message = "unused resource bodies deleted from the state bucket",
                    deleted = p.deleted,
                    bodies = p.bodies,
                    unused = p.unused,
                    groups = p.groups
                ),
                Ok(p) => tracing::debug!(
                    message = "state bucket collected",
                    bodies = p.bodies,
                    unused = p.unused,
                    groups = p.groups
                ),
                Err(e) => {
                    tracing::warn!(message = "state bucket not collected; tried again at the next interval", error = %e)
                }
            }
        }
    });
}

/// What the embedded edge's streams share: its cache and registry, the stream limits, TLS and
/// the trust domain, and the proxy quota as the admission hook when a policy is in force.
fn xds_context(
    settings: &Settings,
    cache: &Cache,
    registry: &Registry,
    ready: watch::Receiver<bool>,
    drain: watch::Receiver<Option<std::time::Duration>>,
    tls: Option<Arc<TlsReloader>>,
    authz: &Authz,
) -> XdsContext {
    let sec = &settings.security;
    XdsContext {
        cache: cache.clone(),
        registry: registry.clone(),
        config: XdsConfig {
            new_streams: settings
                .max_new_streams_per_sec
                .and_then(flotilla_edge::xds::server::StreamThrottle::per_second),
            ..XdsConfig::default()
        },
        ready,
        source: None,
        drain,
        tls,
        trust_domain: sec.trust_domain.clone(),
        admission: authz.policy_reloader().map(|p| {
            Arc::new(crate::auth::ProxyQuota::new(p.clone(), registry.clone()))
                as Arc<dyn flotilla_edge::xds::server::Admission>
        }),
    }
}

/// Error counters exist from the start at 0, so `increase()` in alert rules sees the first
/// failure (a series born at 1 has no increase).
fn counters_at_zero() {
    metrics::counter!("flotilla_brain_store_errors_total", "op" => "write").increment(0);
    metrics::counter!("flotilla_brain_nats_publish_failures_total").increment(0);
    for outcome in ["ok", "failed", "fenced"] {
        metrics::counter!("flotilla_brain_publishes_total", "outcome" => outcome).increment(0);
    }
}

/// Says loudly when the brain runs without TLS and authentication, or authenticates without a
/// policy (every caller an admin).
fn warn_if_open(sec: &Security, authz: &Authz) {
    if sec.is_open() {
        tracing::warn!(
            "security is off: REST, the gRPC API and xDS are served in plaintext with no authentication; \
         anyone who can reach these ports can read every secret and change every config. \
         See docs/security.md (--tls-cert, --client-ca, --auth-jwks, --rbac-policy)."
        );
    } else if authz.authenticates() && authz.policy().is_none() {
        tracing::warn!(
            "authentication is on but no --rbac-policy is given: every authenticated caller is an admin"
        );
    }
}

/// The store as the service uses it: PostgreSQL or the embedded store, noting its health, and
/// with `cipher` sealing private keys at rest (what is still plaintext is sealed in the
/// background).
struct Opened {
    store: Arc<dyn Store>,
    health_store: Arc<crate::store::HealthStore>,
    store_health: crate::store::StoreHealth,
    /// For the HA lease, when the store is PostgreSQL.
    pg_pool: Option<sqlx::PgPool>,
}

/// Logs the once-per-store removal of revisions that deleted configs left behind (etcd, Redis;
/// the embedded store does it when it opens, PostgreSQL in a migration). A failure is logged and
/// the brain starts anyway: the step is tried again at the next start.
fn orphans_removed(result: Result<usize, crate::store::StoreError>) {
    match result {
        Ok(0) => {}
        Ok(n) => tracing::info!(message = "removed the revisions of configs deleted earlier", configs = n),
        Err(e) => {
            tracing::warn!(message = "revisions of deleted configs not removed; tried again at the next start", error = %e)
        }
    }
}

async fn open_store(settings: &Settings, cipher: Option<Arc<SecretsCipher>>) -> anyhow::Result<Opened> {
    let mut pg_pool = None;
    let store: Arc<dyn Store> = match &settings.database_url {
        Some(url) if settings.store_kind() == crate::settings::StoreKind::Etcd => {
            let etcd = crate::store::EtcdStore::connect(url)
                .await
                .with_context(|| format!("opening the etcd store at {}", redact(url)))?;
            orphans_removed(etcd.remove_orphaned_history().await);
            Arc::new(etcd)
        }
        Some(url) if settings.store_kind() == crate::settings::StoreKind::Redis => {
            let redis = crate::store::RedisStore::connect(url, settings.allow_volatile_store)
                .await
                .with_context(|| format!("opening the Redis store at {}", redact(url)))?;
            orphans_removed(redis.remove_orphaned_history().await);
            Arc::new(redis)
        }
        Some(url) => {
            let pg = PostgresStore::connect(url, settings.db_pool_size)
                .await
                .with_context(|| format!("opening the PostgreSQL store at {}", redact(url)))?;
            pg_pool = Some(pg.pool().clone());
            Arc::new(pg)
        }
        None => Arc::new(
            EmbeddedStore::open(&settings.data_dir)
                .with_context(|| format!("opening the embedded store in {}", settings.data_dir.display()))?,
        ),
    };
    // Every backend call notes whether the store answered (reads fall back to memory, /ready
    // and stats say so); the probe notices an outage or a recovery when no request comes.
    let store_health = crate::store::StoreHealth::default();
    let health_store = Arc::new(crate::store::HealthStore::new(store, store_health.clone()));
    let store: Arc<dyn Store> = health_store.clone();
    let store: Arc<dyn Store> = match cipher {
        Some(cipher) => {
            tracing::info!(message = "secret material is encrypted at rest", key = %cipher.key_id());
            let sealed = Arc::new(EncryptingStore::new(store, cipher));
            // Seal what is still plaintext, and re-encrypt what an old key sealed.
            let reseal = sealed.clone();
            tokio::spawn(async move {
                match reseal.reseal().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        message = "secret values re-encrypted under the current key",
                        values = n
                    ),
                    Err(e) => {
                        tracing::error!(message = "re-encrypting secrets failed; values stay readable with the old key", error = %e)
                    }
                }
            });
            sealed
        }
        None => store,
    };
    Ok(Opened { store, health_store, store_health, pg_pool })
}

/// The discovery registry with every configured source reading into it (files are read once
/// before the first publish, so proxies start with the discovered endpoints).
fn start_discovery(settings: &Settings, stopped: &watch::Receiver<bool>) -> crate::discovery::Discovery {
    let discovery = crate::discovery::Discovery::with_grace(settings.discovery_grace);
    for (name, path) in &settings.discovery_files {
        discovery.declare(name, crate::discovery::SourceKind::File);
        // Read once before the first publish, so proxies start with the discovered endpoints.
        match crate::discovery::file::read(path) {
            Ok(services) => discovery.update(name, services),
            Err(e) => discovery.failed(name, e),
        }
        crate::discovery::file::spawn(discovery.clone(), name.clone(), path.clone(), stopped.clone());
    }
    for (name, url) in &settings.discovery_consul {
        crate::discovery::consul::spawn(discovery.clone(), name.clone(), url.clone(), stopped.clone());
    }
    for (name, server) in &settings.discovery_dns {
        crate::discovery::dns::spawn(discovery.clone(), name.clone(), server.clone(), stopped.clone());
    }
    for (name, url) in &settings.discovery_plugins {
        crate::discovery::plugin::spawn(discovery.clone(), name.clone(), url.clone(), stopped.clone());
    }
    for (name, source) in &settings.discovery_kubernetes {
        crate::discovery::kubernetes::spawn(discovery.clone(), name.clone(), source.clone(), stopped.clone());
    }
    discovery
}

/// This brain's leadership: always the leader alone; with `--ha`, joined to the election
/// through PostgreSQL, etcd or a Kubernetes Lease.
async fn leadership(
    settings: &Settings,
    pg_pool: Option<sqlx::PgPool>,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<crate::ha::Leadership> {
    use crate::settings::StoreKind;
    if !settings.ha {
        return Ok(crate::ha::Leadership::default());
    }
    if settings.store_kind() == StoreKind::Embedded {
        anyhow::bail!(
            "--ha needs a store the brains share (--database-url postgres://…, redis://… or etcd://…): the embedded store is one brain's"
        );
    }
    let lease: Box<dyn crate::ha::LeaseStore> = if let Some(url) = &settings.ha_lease_etcd {
        Box::new(
            crate::ha::etcd::EtcdLease::connect(url)
                .await
                .map_err(|e| anyhow::anyhow!("--ha-lease-etcd: {e}"))?,
        )
    } else if let Some(target) = &settings.ha_lease_kubernetes {
        Box::new(
            crate::ha::kubernetes::KubeLease::connect(target)
                .await
                .map_err(|e| anyhow::anyhow!("--ha-lease-kubernetes: {e}"))?,
        )
    } else if let (StoreKind::Etcd, Some(url)) = (settings.store_kind(), &settings.database_url) {
        Box::new(
            crate::ha::etcd::EtcdLease::connect(url)
                .await
                .map_err(|e| anyhow::anyhow!("the etcd lease: {e}"))?,
        )
    } else if let Some(pool) = pg_pool {
        Box::new(crate::ha::postgres::PgLease { pool })
    } else {
        anyhow::bail!(
            "--ha needs somewhere to keep the leader lease: PostgreSQL or etcd as the store, --ha-lease-etcd or --ha-lease-kubernetes (Redis holds configs but not the lease)"
        );
    };
    let url = settings.advertise_url.clone().unwrap_or_else(|| advertised(settings.rest_addr));
    let id =
        format!("{}-{}-{}", hostname(), std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let kind = lease.describe();
    let l = crate::ha::join(lease, id.clone(), url.clone(), stopped.clone()).await;
    tracing::info!(message = "high availability: joined the leader election", brain = %id, advertise = %url, lease = kind, role = ?l.role());
    Ok(l)
}

/// Scheduled backups of every config into `b.dir` (private keys `sealed` with the secrets key,
/// or in plaintext, said at start).
fn spawn_backups(
    service: Arc<ConfigService>,
    b: &crate::backup::BackupSettings,
    sealed: bool,
    stopped: &watch::Receiver<bool>,
) {
    tracing::info!(message = "scheduled backups", dir = %b.dir.display(), interval = ?b.interval, keep = b.keep,
            private_keys = if sealed { "sealed" } else { "plaintext" });
    if !sealed {
        tracing::warn!(
            "backups hold private keys in plaintext (mode 0600): give the brain --secrets-key-file to seal them"
        );
    }
    crate::backup::spawn(service, b.clone(), stopped.clone());
}

/// Publishes the configs that use discovery again whenever a source's services change; changes
/// that arrive together (within 50 ms) are published once.
fn spawn_discovery_publisher(
    service: Arc<ConfigService>,
    mut changes: watch::Receiver<u64>,
    mut stopped: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = stopped.changed() => return,
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            changes.borrow_and_update();
            let changed = service.discovery().take_changed();
            match service.publish_discovered(&changed).await {
                Ok(n) => {
                    tracing::info!(
                        message = "discovered endpoints changed; configs published",
                        services = changed.len(),
                        configs = n
                    )
                }
                Err(e) => tracing::error!(message = "publishing discovered endpoints failed", error = %e),
            }
        }
    });
}

/// Removes vanished services whose grace period has passed, once a second.
fn spawn_discovery_expiry(discovery: crate::discovery::Discovery, mut stopped: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => discovery.expire(),
                _ = stopped.changed() => return,
            }
        }
    });
}
