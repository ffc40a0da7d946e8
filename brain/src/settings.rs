//! Settings of `flotilla-brain`: flags, `FLOTILLA_*` environment variables, and an optional
//! YAML config file (`--config`), in that order of precedence, over built-in defaults.
//!
//! Each section is declared once, as a layer (`layer!`): its fields are at the same time flags
//! with their variables and help, and the keys of the file's section (camelCase, unknown keys
//! refused). [`Settings::resolve`] puts the flags' layer over the file's and applies defaults
//! and the checks that span fields; [`Settings`] is the resolved shape the brain runs with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::parse::{Format, ParseError, parse};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Command line of `flotilla-brain`: the config file, then one group of flags per section of the
/// file ([`FileConfig`]); each section is declared once, as a layer both read into.
#[derive(Debug, Parser)]
#[command(
    name = "flotilla-brain",
    version,
    about = "Flotilla control plane for Envoy fleets (brain; embedded edge by default)"
)]
pub struct Cli {
    /// YAML config file (see docs/operations.md for its shape).
    #[arg(long, env = "FLOTILLA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Read the config file, flags and environment, say whether they are valid, and exit
    /// without starting (exit 1, naming the problem, if not).
    #[arg(long)]
    pub check_config: bool,
    #[command(flatten)]
    pub server: ServerLayer,
    #[command(flatten)]
    pub storage: StorageLayer,
    #[command(flatten)]
    pub nats: NatsLayer,
    /// Use a Redis that keeps nothing on disk (no AOF, or `appendfsync no`): a restart of it loses
    /// every config. Refused without this flag.
    #[arg(long, env = "FLOTILLA_ALLOW_VOLATILE_STORE")]
    pub allow_volatile_store: bool,
    /// Do not run the embedded edge (xDS is served by flotilla-edge replicas only).
    #[arg(long, env = "FLOTILLA_NO_EMBEDDED_EDGE")]
    pub no_embedded_edge: bool,
    #[command(flatten)]
    pub backup: BackupLayer,
    /// Run as one of several brains on the same PostgreSQL (--database-url): one leader, elected
    /// through a lease in the database, writes and publishes; followers serve reads and redirect
    /// writes to it (docs/operations.md, "High availability").
    #[arg(long, env = "FLOTILLA_HA")]
    pub ha: bool,
    #[command(flatten)]
    pub ha_layer: HaLayer,
    #[command(flatten)]
    pub logging: LoggingLayer,
    #[command(flatten)]
    pub validation: ValidationLayer,
    #[command(flatten)]
    pub discovery: DiscoveryLayer,
    #[command(flatten)]
    pub security: SecurityLayer,
}

/// How one layer of settings (flags and environment, or a section of the config file) is put
/// over another: a value set in the first wins; lists are joined.
trait Merge {
    fn merge(self, under: Self) -> Self;
}

impl<T> Merge for Option<T> {
    fn merge(self, under: Self) -> Self {
        self.or(under)
    }
}

impl<T> Merge for Vec<T> {
    fn merge(mut self, under: Self) -> Self {
        self.extend(under);
        self
    }
}

/// Declares a section of settings once: its flags (with their `FLOTILLA_*` variables and help)
/// and its config-file keys (the field names in camelCase, unknown keys refused), and how a
/// layer of it goes over another.
macro_rules! layer {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Clone, clap::Args, Deserialize)]
        #[serde(default, deny_unknown_fields, rename_all = "camelCase")]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty,)* }

        impl Merge for $name {
            fn merge(self, under: Self) -> Self {
                $name { $($field: Merge::merge(self.$field, under.$field),)* }
            }
        }
    };
}

/// A duration written as `30s`, `5m`, `1h` (humantime), on a flag or in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub std::time::Duration);

impl std::str::FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<HumanDuration, String> {
        humantime::parse_duration(s)
            .map(HumanDuration)
            .map_err(|e| format!("{s:?} is not a duration (e.g. 30s, 1h): {e}"))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

layer! {
    /// `server:` — listen addresses and the embedded edge's stream limits.
    pub struct ServerLayer {
        /// REST API listen address [default: 0.0.0.0:8080].
        #[arg(long = "rest-addr", env = "FLOTILLA_REST_ADDR")]
        pub rest_addr: Option<SocketAddr>,
        /// xDS (gRPC) listen address of the embedded edge [default: 0.0.0.0:18000].
        #[arg(long = "xds-addr", env = "FLOTILLA_XDS_ADDR")]
        pub xds_addr: Option<SocketAddr>,
        /// gRPC management API listen address [default: 0.0.0.0:18001].
        #[arg(long = "grpc-api-addr", env = "FLOTILLA_GRPC_API_ADDR")]
        pub grpc_api_addr: Option<SocketAddr>,
        /// Embedded edge: admit at most this many new xDS streams per second (the rest wait their
        /// turn). Unlimited when unset.
        #[arg(long = "max-new-streams-per-sec", env = "FLOTILLA_MAX_NEW_STREAMS_PER_SEC")]
        pub max_new_streams_per_sec: Option<u32>,
        /// Embedded edge: worker threads of the runtime its xDS streams run on, apart from the API
        /// and the write path [default: one per core]; 0 runs them on the brain's own runtime.
        #[arg(long = "xds-threads", env = "FLOTILLA_XDS_THREADS")]
        pub xds_threads: Option<usize>,
        /// On SIGTERM / Ctrl-C, end the embedded edge's xDS streams over this window (so Envoys
        /// reconnect elsewhere gradually), then exit [default: 5s; 0s ends them at once].
        #[arg(long = "drain-window", env = "FLOTILLA_DRAIN_WINDOW")]
        pub drain_window: Option<HumanDuration>,
    }
}

layer! {
    /// `storage:` — the embedded store's directory, or PostgreSQL or Redis.
    pub struct StorageLayer {
        /// Directory of the embedded store [default: ./flotilla-data].
        #[arg(long = "data-dir", env = "FLOTILLA_DATA_DIR")]
        pub data_dir: Option<PathBuf>,
        /// PostgreSQL (`postgres://user@host/db`), Redis (`redis://[user:password@]host:6379[/db]`,
        /// `rediss://` for TLS) or etcd (`etcd://[user:password@]host:2379[,host2:2379…]`, `etcds://`
        /// for TLS with `?cacert=ca.pem&cert=client.pem&key=client.key`) to store configs in; the
        /// embedded store is used when unset.
        #[arg(long = "database-url", env = "FLOTILLA_DATABASE_URL")]
        pub database_url: Option<String>,
        /// Whether a store that does not persist what it acknowledges may be used (file only;
        /// the flag is --allow-volatile-store).
        #[arg(skip)]
        pub allow_volatile_store: Option<bool>,
        /// PostgreSQL connection pool size [default: 10].
        #[arg(long = "db-pool-size", env = "FLOTILLA_DB_POOL_SIZE")]
        pub pool_size: Option<u32>,
        /// Revisions kept per config, the newest; older ones are deleted after each write
        /// (0 keeps every revision) [default: 1000].
        #[arg(long = "history-limit", env = "FLOTILLA_HISTORY_LIMIT")]
        pub history_limit: Option<usize>,
    }
}

layer! {
    /// `nats:` — publishing group states to JetStream for `flotilla-edge` replicas.
    pub struct NatsLayer {
        /// NATS with JetStream (e.g. nats://127.0.0.1:4222): publish group states for `flotilla-edge`.
        #[arg(long = "nats-url", env = "FLOTILLA_NATS_URL")]
        pub url: Option<String>,
        /// JetStream KV bucket for group states [default: flotilla_state].
        #[arg(long = "nats-bucket", env = "FLOTILLA_NATS_BUCKET")]
        pub bucket: Option<String>,
        /// How often the bucket's resource bodies that no group uses any more are deleted, and
        /// how long one stays unused before it is (0 turns collection off) [default: 10m].
        #[arg(long = "bucket-gc-interval", env = "FLOTILLA_BUCKET_GC_INTERVAL")]
        pub gc_interval: Option<HumanDuration>,
        /// Whether to run the embedded edge (file only; the flag is --no-embedded-edge).
        #[arg(skip)]
        pub embedded_edge: Option<bool>,
        /// NATS credentials file (JWT + NKey seed).
        #[arg(long = "nats-creds", env = "FLOTILLA_NATS_CREDS")]
        pub creds: Option<PathBuf>,
        /// CA bundle to verify the NATS server with (turns on TLS to NATS).
        #[arg(id = "nats_tls_ca", long = "nats-tls-ca", env = "FLOTILLA_NATS_TLS_CA")]
        pub tls_ca: Option<PathBuf>,
        /// Client certificate for NATS mTLS (with --nats-tls-key).
        #[arg(id = "nats_tls_cert", long = "nats-tls-cert", env = "FLOTILLA_NATS_TLS_CERT")]
        pub tls_cert: Option<PathBuf>,
        #[arg(id = "nats_tls_key", long = "nats-tls-key", env = "FLOTILLA_NATS_TLS_KEY")]
        pub tls_key: Option<PathBuf>,
    }
}

layer! {
    /// `backup:` — scheduled backups.
    pub struct BackupLayer {
        /// Write a backup of every config (a YAML bundle, secrets included, mode 0600) into this
        /// directory every --backup-interval, keeping the newest --backup-keep (docs/operations.md).
        #[arg(long = "backup-dir", env = "FLOTILLA_BACKUP_DIR")]
        pub dir: Option<PathBuf>,
        /// How often to write a backup [default: 1h].
        #[arg(long = "backup-interval", env = "FLOTILLA_BACKUP_INTERVAL")]
        pub interval: Option<HumanDuration>,
        /// Backups kept [default: 24].
        #[arg(long = "backup-keep", env = "FLOTILLA_BACKUP_KEEP")]
        pub keep: Option<usize>,
    }
}

layer! {
    /// `ha:` — several brains on one PostgreSQL (the flag to turn it on is --ha).
    pub struct HaLayer {
        /// Whether elections run (file only; the flag is --ha).
        #[arg(skip)]
        pub enabled: Option<bool>,
        /// The REST URL other brains send writers to while this one leads [default:
        /// http://<host>:<rest port>].
        #[arg(long = "advertise-url", env = "FLOTILLA_ADVERTISE_URL")]
        pub advertise_url: Option<String>,
        /// With --ha, keep the leader lease in a Kubernetes Lease instead of PostgreSQL:
        /// CONFIG@NAMESPACE/NAME, CONFIG being `in-cluster`, `default` or a kubeconfig path (e.g.
        /// in-cluster@flotilla/flotilla-leader). Configs stay in PostgreSQL.
        #[arg(long = "ha-lease-kubernetes", env = "FLOTILLA_HA_LEASE_KUBERNETES")]
        pub lease_kubernetes: Option<String>,
        /// With --ha, keep the leader lease in etcd (etcd://host:2379[,host2:2379…], or etcds://
        /// as for --database-url): an etcd lease and an election key. The default when the store itself is etcd.
        #[arg(long = "ha-lease-etcd", env = "FLOTILLA_HA_LEASE_ETCD")]
        pub lease_etcd: Option<String>,
    }
}

layer! {
    /// `logging:` (also `observability:`) — logs and traces.
    pub struct LoggingLayer {
        /// Log filter, e.g. `info` or `flotilla_edge=debug,info` [default: info].
        #[arg(long = "log-level", env = "FLOTILLA_LOG_LEVEL")]
        pub level: Option<String>,
        /// Log format [default: text].
        #[arg(long = "log-format", env = "FLOTILLA_LOG_FORMAT", value_enum)]
        pub format: Option<LogFormat>,
        /// Export traces (one per change: API call, validate, compile, store, publish, and on the
        /// edges receipt, pushes and ACKs) to this OTLP/gRPC collector, e.g. http://127.0.0.1:4317.
        #[arg(long = "otlp-endpoint", env = "FLOTILLA_OTLP_ENDPOINT")]
        pub otlp_endpoint: Option<String>,
    }
}

layer! {
    /// `validation:` — validation of writes by a real Envoy.
    pub struct ValidationLayer {
        /// An Envoy binary that validates configs before any proxy sees them (`envoy --mode
        /// validate`), on writes with `?validate=envoy` and on every write to the namespaces of
        /// `--envoy-validate-namespaces`.
        #[arg(long = "envoy-validate-bin", env = "FLOTILLA_ENVOY_VALIDATE_BIN", value_name = "PATH")]
        pub envoy_bin: Option<PathBuf>,
        /// Namespaces whose writes are always validated by Envoy (`*`: all); needs
        /// `--envoy-validate-bin`. Comma-separated.
        #[arg(
            long = "envoy-validate-namespaces",
            env = "FLOTILLA_ENVOY_VALIDATE_NAMESPACES",
            value_delimiter = ',',
            value_name = "NS"
        )]
        pub envoy_namespaces: Vec<String>,
    }
}

layer! {
    /// `discovery:` (also `serviceDiscovery:`) — service discovery sources.
    pub struct DiscoveryLayer {
        /// A `file` service discovery source: NAME=PATH of a YAML/JSON file of services, re-read
        /// when it changes (docs/discovery.md). Repeatable; comma-separated in the env var.
        #[arg(long = "discovery-file", env = "FLOTILLA_DISCOVERY_FILES", value_delimiter = ',', value_name = "NAME=PATH")]
        pub files: Vec<String>,
        /// A `consul` service discovery source: NAME=URL of a Consul agent's HTTP API (e.g.
        /// `consul=http://127.0.0.1:8500?dc=dc2&tag=web&token-file=/etc/consul.token`), watched with
        /// blocking queries. Repeatable.
        #[arg(long = "discovery-consul", env = "FLOTILLA_DISCOVERY_CONSUL", value_delimiter = ',', value_name = "NAME=URL")]
        pub consul: Vec<String>,
        /// A `dns` service discovery source: NAME=SERVER, SERVER being IP:PORT of a DNS server or
        /// `system` (the system's resolvers). Names are looked up as configs ask and again on TTL.
        #[arg(long = "discovery-dns", env = "FLOTILLA_DISCOVERY_DNS", value_delimiter = ',', value_name = "NAME=SERVER")]
        pub dns: Vec<String>,
        /// A `kubernetes` service discovery source: NAME=CONFIG[@NS+NS…], CONFIG being `in-cluster`,
        /// `default` ($KUBECONFIG or ~/.kube/config) or a kubeconfig path; EndpointSlices and Pods
        /// are watched in the namespaces listed after `@`, else in all (docs/discovery.md).
        #[arg(
            long = "discovery-kubernetes",
            env = "FLOTILLA_DISCOVERY_KUBERNETES",
            value_delimiter = ',',
            value_name = "NAME=CONFIG[@NS+NS]"
        )]
        pub kubernetes: Vec<String>,
        /// A `plugin` service discovery source: NAME=URL of a program speaking the plugin watch
        /// protocol (`GET URL/v1/services?index=N&wait=30s`; docs/discovery.md). Repeatable.
        #[arg(long = "discovery-plugin", env = "FLOTILLA_DISCOVERY_PLUGINS", value_delimiter = ',', value_name = "NAME=URL")]
        pub plugins: Vec<String>,
        /// How long a service that vanished from its registry keeps its last endpoints before it is
        /// removed, e.g. `30s` [default: 30s].
        #[arg(long = "discovery-grace", env = "FLOTILLA_DISCOVERY_GRACE")]
        pub grace: Option<HumanDuration>,
    }
}

layer! {
    /// `security:` — TLS, authentication, authorization and the secrets key (docs/security.md).
    /// With none of them the brain is open: no TLS, no auth.
    pub struct SecurityLayer {
        /// PEM certificate chain: serve REST, the gRPC API and xDS over TLS 1.3 (with --tls-key).
        #[arg(long = "tls-cert", env = "FLOTILLA_TLS_CERT")]
        pub tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long = "tls-key", env = "FLOTILLA_TLS_KEY")]
        pub tls_key: Option<PathBuf>,
        /// PEM CA bundle: proxies must present a client certificate it signed (mTLS on xDS); the
        /// management APIs accept one as an identity.
        #[arg(long = "client-ca", env = "FLOTILLA_CLIENT_CA")]
        pub client_ca: Option<PathBuf>,
        /// Trust domain of SPIFFE ids in client certificates (any when unset).
        #[arg(long = "trust-domain", env = "FLOTILLA_TRUST_DOMAIN")]
        pub trust_domain: Option<String>,
        /// JWKS (file path or http(s) URL): turns on JWT bearer authentication of the management APIs.
        #[arg(long = "auth-jwks", env = "FLOTILLA_AUTH_JWKS")]
        pub auth_jwks: Option<String>,
        /// Required `iss` of tokens.
        #[arg(long = "auth-issuer", env = "FLOTILLA_AUTH_ISSUER")]
        pub auth_issuer: Option<String>,
        /// Required `aud` of tokens.
        #[arg(long = "auth-audience", env = "FLOTILLA_AUTH_AUDIENCE")]
        pub auth_audience: Option<String>,
        /// Claim holding a token's groups [default: groups].
        #[arg(long = "auth-groups-claim", env = "FLOTILLA_AUTH_GROUPS_CLAIM")]
        pub auth_groups_claim: Option<String>,
        /// RBAC policy (YAML: roles, bindings, quotas, cross-namespace grants); reloaded on change.
        #[arg(long = "rbac-policy", env = "FLOTILLA_RBAC_POLICY")]
        pub rbac_policy: Option<PathBuf>,
        /// File holding the 32-byte key that encrypts secret material at rest (base64 or hex).
        #[arg(long = "secrets-key-file", env = "FLOTILLA_SECRETS_KEY_FILE")]
        pub secrets_key_file: Option<PathBuf>,
        /// A previous key: rows it encrypted are decrypted and re-encrypted with the current key.
        #[arg(long = "secrets-old-key-file", env = "FLOTILLA_SECRETS_OLD_KEY_FILE")]
        pub secrets_old_key_file: Option<PathBuf>,
    }
}

/// The config file: one section per layer. Every key is optional; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerLayer,
    #[serde(default)]
    pub storage: StorageLayer,
    #[serde(default, alias = "observability")]
    pub logging: LoggingLayer,
    #[serde(default)]
    pub nats: NatsLayer,
    #[serde(default)]
    pub security: SecurityLayer,
    #[serde(default, alias = "serviceDiscovery", alias = "service_discovery")]
    pub discovery: DiscoveryLayer,
    #[serde(default)]
    pub ha: HaLayer,
    #[serde(default)]
    pub backup: BackupLayer,
    #[serde(default)]
    pub validation: ValidationLayer,
}

fn named<'a>(
    flag: &str,
    shape: &str,
    specs: impl Iterator<Item = &'a String>,
) -> Result<Vec<(String, String)>, SettingsError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for spec in specs {
        let Some((name, value)) = spec.split_once('=').filter(|(n, v)| !n.is_empty() && !v.is_empty()) else {
            return Err(SettingsError::Invalid(format!("{flag} {spec:?}: expected {shape}")));
        };
        if out.iter().any(|(n, _)| n == name) {
            return Err(SettingsError::Invalid(format!("{flag}: source {name:?} is declared twice")));
        }
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

/// Which configuration store `--database-url` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Embedded,
    Postgres,
    Redis,
    Etcd,
}

impl StoreKind {
    /// The store a `--database-url` names by its scheme (`None`: not one Flotilla has).
    pub fn of_url(url: Option<&str>) -> Option<StoreKind> {
        let Some(url) = url else { return Some(StoreKind::Embedded) };
        match url.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase()).as_deref() {
            Some("postgres" | "postgresql") => Some(StoreKind::Postgres),
            Some("redis" | "rediss") => Some(StoreKind::Redis),
            Some("etcd" | "etcds") => Some(StoreKind::Etcd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Postgres => "PostgreSQL",
            StoreKind::Redis => "Redis",
            StoreKind::Etcd => "etcd",
        }
    }
}

/// The most worker threads `--xds-threads` takes: more than any machine has cores, fewer than
/// would exhaust its threads.
pub const MAX_XDS_THREADS: usize = 1024;

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rest_addr: SocketAddr,
    pub xds_addr: SocketAddr,
    pub grpc_api_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    /// A store that does not persist what it acknowledges may be used (Redis without AOF).
    pub allow_volatile_store: bool,
    pub db_pool_size: u32,
    /// Revisions kept per config (0: all).
    pub history_limit: usize,
    pub nats_url: Option<String>,
    pub nats_bucket: String,
    /// How often unused resource bodies are deleted from the bucket (zero: never).
    pub bucket_gc_interval: std::time::Duration,
    /// Credentials and TLS of the NATS connection.
    pub nats_security: flotilla_common::nats::NatsSecurity,
    pub embedded_edge: bool,
    /// New xDS streams admitted per second by the embedded edge (None: no limit).
    pub max_new_streams_per_sec: Option<u32>,
    /// Worker threads of the embedded edge's own runtime (None: one per core; 0: none, the
    /// streams share the brain's runtime).
    pub xds_threads: Option<usize>,
    /// On shutdown, xDS streams end within this window; the process exits shortly after.
    pub drain_window: std::time::Duration,
    pub log_level: String,
    pub log_format: LogFormat,
    pub otlp_endpoint: Option<String>,
    /// Scheduled backups, when a directory is given.
    pub backup: Option<crate::backup::BackupSettings>,
    /// Leader election with other brains on the same PostgreSQL.
    pub ha: bool,
    pub advertise_url: Option<String>,
    /// The leader lease as a Kubernetes Lease (None: a row in PostgreSQL).
    pub ha_lease_kubernetes: Option<crate::ha::kubernetes::LeaseTarget>,
    /// The etcd holding the leader lease (`--ha-lease-etcd`).
    pub ha_lease_etcd: Option<String>,
    pub security: Security,
    /// `file` discovery sources: name → path.
    pub discovery_files: Vec<(String, PathBuf)>,
    /// `consul` discovery sources: name → agent (URL, datacenter, tags, token file).
    pub discovery_consul: Vec<(String, crate::discovery::consul::Target)>,
    /// `dns` discovery sources: name → server (`IP:PORT` or `system`).
    pub discovery_dns: Vec<(String, String)>,
    /// `kubernetes` discovery sources: name → client config and namespaces.
    pub discovery_kubernetes: Vec<(String, crate::discovery::kubernetes::KubeSource)>,
    /// `plugin` discovery sources: name → base URL.
    pub discovery_plugins: Vec<(String, String)>,
    /// How long a vanished service is kept.
    pub discovery_grace: std::time::Duration,
    /// The Envoy that validates writes (`envoy_check`), if any.
    pub envoy_validate_bin: Option<PathBuf>,
    /// Namespaces whose writes Envoy always validates (`*`: all).
    pub envoy_validate_namespaces: Vec<String>,
}

/// Resolved security settings; all off by default.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub tls: Option<flotilla_common::tls::TlsFiles>,
    pub trust_domain: Option<String>,
    pub auth_jwks: Option<String>,
    pub auth_issuer: Option<String>,
    pub auth_audience: Option<String>,
    pub auth_groups_claim: String,
    pub rbac_policy: Option<PathBuf>,
    pub secrets_key_file: Option<PathBuf>,
    pub secrets_old_key_file: Option<PathBuf>,
    /// The key itself, from `FLOTILLA_SECRETS_KEY` (base64 or hex; never a flag: flags show in `ps`).
    pub secrets_key: Option<String>,
}

impl Security {
    /// True when nothing is protected: the startup warning says so.
    pub fn is_open(&self) -> bool {
        self.tls.is_none() && self.auth_jwks.is_none() && self.rbac_policy.is_none()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rest_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            xds_addr: SocketAddr::from(([0, 0, 0, 0], 18000)),
            grpc_api_addr: SocketAddr::from(([0, 0, 0, 0], 18001)),
            data_dir: PathBuf::from("./flotilla-data"),
            database_url: None,
            allow_volatile_store: false,
            db_pool_size: 10,
            history_limit: 1000,
            nats_url: None,
            nats_bucket: flotilla_shared::subject::STATE_BUCKET.to_string(),
            bucket_gc_interval: std::time::Duration::from_secs(600),
            nats_security: Default::default(),
            embedded_edge: true,
            max_new_streams_per_sec: None,
            xds_threads: None,
            drain_window: std::time::Duration::from_secs(5),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            backup: None,
            ha: false,
            advertise_url: None,
            ha_lease_kubernetes: None,
            ha_lease_etcd: None,
            security: Security::default(),
            discovery_files: Vec::new(),
            discovery_consul: Vec::new(),
            discovery_dns: Vec::new(),
            discovery_kubernetes: Vec::new(),
            discovery_plugins: Vec::new(),
            discovery_grace: crate::discovery::DEFAULT_GRACE,
            envoy_validate_bin: None,
            envoy_validate_namespaces: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: PathBuf, source: ParseError },
    #[error("{0}")]
    Invalid(String),
}

/// Reads a config file.
pub fn read_file(path: &Path) -> Result<FileConfig, SettingsError> {
    let body =
        std::fs::read(path).map_err(|source| SettingsError::Read { path: path.to_path_buf(), source })?;
    parse(&body, Format::Yaml).map_err(|source| SettingsError::Parse { path: path.to_path_buf(), source })
}

impl Settings {
    /// The configuration store the settings name (the URL's scheme was checked by `resolve`).
    pub fn store_kind(&self) -> StoreKind {
        StoreKind::of_url(self.database_url.as_deref()).unwrap_or(StoreKind::Postgres)
    }

    /// Flags and environment over the file over defaults.
    pub fn resolve(cli: Cli) -> Result<Settings, SettingsError> {
        let file = match &cli.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let d = Settings::default();
        let security = resolve_security(cli.security.merge(file.security))?;
        let server = cli.server.merge(file.server);
        let storage = cli.storage.merge(file.storage);
        if let Some(url) = storage.database_url.as_deref()
            && StoreKind::of_url(Some(url)).is_none()
        {
            let scheme = url.split_once("://").map_or("no scheme", |(s, _)| s);
            return Err(SettingsError::Invalid(format!(
                "--database-url ({scheme}://…) names no store Flotilla has: use postgres://… (PostgreSQL), redis://… / rediss://… (Redis) or etcd://host:2379[,host…] / etcds://… (etcd), or leave it unset for the embedded store"
            )));
        }
        if let Some(url) = storage.database_url.as_deref()
            && StoreKind::of_url(Some(url)) == Some(StoreKind::Etcd)
        {
            crate::store::etcd_url::EtcdUrl::parse(url)
                .map_err(|e| SettingsError::Invalid(format!("--database-url: {e}")))?;
        }
        let nats = cli.nats.merge(file.nats);
        let logging = cli.logging.merge(file.logging);
        let backup = cli.backup.merge(file.backup);
        let ha = cli.ha_layer.merge(file.ha);
        let validation = cli.validation.merge(file.validation);
        let discovery = cli.discovery.merge(file.discovery);
        let files = named("--discovery-file", "NAME=PATH", discovery.files.iter())?;
        let consul = named("--discovery-consul", "NAME=URL", discovery.consul.iter())?;
        let dns = named("--discovery-dns", "NAME=SERVER", discovery.dns.iter())?;
        let kubernetes = named("--discovery-kubernetes", "NAME=CONFIG[@NS+NS]", discovery.kubernetes.iter())?;
        let plugins = named("--discovery-plugin", "NAME=URL", discovery.plugins.iter())?;
        let all: Vec<&String> = files
            .iter()
            .chain(&consul)
            .chain(&dns)
            .chain(&kubernetes)
            .chain(&plugins)
            .map(|(n, _)| n)
            .collect();
        for (i, name) in all.iter().enumerate() {
            if all[..i].contains(name) {
                return Err(SettingsError::Invalid(format!("discovery source {name:?} is declared twice")));
            }
        }
        let discovery_files = files.into_iter().map(|(n, p)| (n, PathBuf::from(p))).collect();
        let discovery_consul = consul
            .into_iter()
            .map(|(n, v)| {
                v.parse()
                    .map(|t| (n.clone(), t))
                    .map_err(|e| SettingsError::Invalid(format!("--discovery-consul {n}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let discovery_kubernetes = kubernetes
            .into_iter()
            .map(|(n, v)| {
                v.parse()
                    .map(|k| (n.clone(), k))
                    .map_err(|e| SettingsError::Invalid(format!("--discovery-kubernetes {n}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        if let Some(n) = server.xds_threads
            && n > MAX_XDS_THREADS
        {
            return Err(SettingsError::Invalid(format!(
                "--xds-threads {n}: at most {MAX_XDS_THREADS} (default: one per core; 0 shares the brain's threads)"
            )));
        }
        if validation.envoy_bin.is_none() && !validation.envoy_namespaces.is_empty() {
            return Err(SettingsError::Invalid(
                "--envoy-validate-namespaces needs --envoy-validate-bin (the Envoy that validates)".into(),
            ));
        }
        if let Some(bin) = &validation.envoy_bin
            && !bin.is_file()
        {
            return Err(SettingsError::Invalid(format!(
                "--envoy-validate-bin {}: no such file",
                bin.display()
            )));
        }
        let duration = |v: Option<HumanDuration>, default| v.map_or(default, |h| h.0);
        Ok(Settings {
            envoy_validate_bin: validation.envoy_bin,
            envoy_validate_namespaces: validation.envoy_namespaces,
            security,
            discovery_files,
            discovery_consul,
            discovery_dns: dns,
            discovery_kubernetes,
            discovery_plugins: plugins,
            discovery_grace: duration(discovery.grace, d.discovery_grace),
            rest_addr: server.rest_addr.unwrap_or(d.rest_addr),
            xds_addr: server.xds_addr.unwrap_or(d.xds_addr),
            grpc_api_addr: server.grpc_api_addr.unwrap_or(d.grpc_api_addr),
            data_dir: storage.data_dir.unwrap_or(d.data_dir),
            database_url: storage.database_url,
            allow_volatile_store: cli.allow_volatile_store || storage.allow_volatile_store.unwrap_or(false),
            db_pool_size: storage.pool_size.unwrap_or(d.db_pool_size),
            history_limit: storage.history_limit.unwrap_or(d.history_limit),
            nats_url: nats.url,
            nats_bucket: nats.bucket.unwrap_or(d.nats_bucket),
            bucket_gc_interval: duration(nats.gc_interval, d.bucket_gc_interval),
            nats_security: flotilla_common::nats::NatsSecurity {
                creds: nats.creds,
                tls_ca: nats.tls_ca,
                tls_cert: nats.tls_cert,
                tls_key: nats.tls_key,
            },
            embedded_edge: !cli.no_embedded_edge && nats.embedded_edge.unwrap_or(true),
            max_new_streams_per_sec: server.max_new_streams_per_sec,
            xds_threads: server.xds_threads,
            drain_window: duration(server.drain_window, d.drain_window),
            log_level: logging.level.unwrap_or(d.log_level),
            log_format: logging.format.unwrap_or(d.log_format),
            otlp_endpoint: logging.otlp_endpoint,
            backup: backup.dir.map(|dir| crate::backup::BackupSettings {
                dir,
                interval: duration(backup.interval, std::time::Duration::from_secs(3600)),
                keep: backup.keep.unwrap_or(24),
            }),
            ha: cli.ha || ha.enabled.unwrap_or(false),
            advertise_url: ha.advertise_url,
            ha_lease_etcd: ha
                .lease_etcd
                .map(|u| {
                    crate::store::etcd_url::EtcdUrl::parse(&u)
                        .map(|_| u)
                        .map_err(|e| SettingsError::Invalid(format!("--ha-lease-etcd: {e}")))
                })
                .transpose()?,
            ha_lease_kubernetes: ha
                .lease_kubernetes
                .map(|s| s.parse().map_err(|e| SettingsError::Invalid(format!("--ha-lease-kubernetes {e}"))))
                .transpose()?,
        })
    }
}

fn resolve_security(sec: SecurityLayer) -> Result<Security, SettingsError> {
    let tls = match (sec.tls_cert, sec.tls_key) {
        (Some(cert), Some(key)) => {
            Some(flotilla_common::tls::TlsFiles { cert, key, client_ca: sec.client_ca })
        }
        (None, None) if sec.client_ca.is_some() => {
            return Err(SettingsError::Invalid("--client-ca needs --tls-cert and --tls-key".into()));
        }
        (None, None) => None,
        (Some(_), None) => return Err(SettingsError::Invalid("--tls-cert needs --tls-key".into())),
        (None, Some(_)) => return Err(SettingsError::Invalid("--tls-key needs --tls-cert".into())),
    };
    Ok(Security {
        tls,
        trust_domain: sec.trust_domain,
        auth_jwks: sec.auth_jwks,
        auth_issuer: sec.auth_issuer,
        auth_audience: sec.auth_audience,
        auth_groups_claim: sec.auth_groups_claim.unwrap_or_else(|| "groups".into()),
        rbac_policy: sec.rbac_policy,
        secrets_key_file: sec.secrets_key_file,
        secrets_old_key_file: sec.secrets_old_key_file,
        secrets_key: std::env::var("FLOTILLA_SECRETS_KEY").ok().filter(|k| !k.trim().is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controlplane.yaml");
        std::fs::write(
            &path,
            "server:\n  restAddr: 127.0.0.1:9090\n  xdsAddr: 127.0.0.1:19000\nlogging: {format: json}\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "flotilla-brain",
            "--config",
            path.to_str().unwrap(),
            "--xds-addr",
            "127.0.0.1:1",
        ]);
        let s = Settings::resolve(cli).unwrap();
        assert_eq!(s.rest_addr.port(), 9090);
        assert_eq!(s.xds_addr.port(), 1);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.data_dir, PathBuf::from("./flotilla-data"));
        assert_eq!(s.history_limit, 1000, "the default history limit");
        assert_eq!(
            s.bucket_gc_interval,
            std::time::Duration::from_secs(600),
            "the default collection interval"
        );
    }

    #[test]
    fn bucket_collection_is_set_by_flag_and_turned_off_by_zero() {
        let s =
            Settings::resolve(Cli::parse_from(["flotilla-brain", "--bucket-gc-interval", "90s"])).unwrap();
        assert_eq!(s.bucket_gc_interval, std::time::Duration::from_secs(90));
        let s = Settings::resolve(Cli::parse_from(["flotilla-brain", "--bucket-gc-interval", "0s"])).unwrap();
        assert!(s.bucket_gc_interval.is_zero());
    }

    #[test]
    fn xds_threads_beyond_the_bound_are_refused_naming_the_flag() {
        let s = Settings::resolve(Cli::parse_from(["flotilla-brain", "--xds-threads", "0"])).unwrap();
        assert_eq!(s.xds_threads, Some(0));
        let err =
            Settings::resolve(Cli::parse_from(["flotilla-brain", "--xds-threads", "100000"])).unwrap_err();
        assert!(err.to_string().contains("--xds-threads 100000: at most 1024"), "{err}");
    }

    #[test]
    fn the_whole_file_shape_with_its_section_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controlplane.yaml");
        std::fs::write(
            &path,
            "server: {restAddr: 127.0.0.1:9090}\n\
             storage: {databaseUrl: redis://cache:6379/2, allowVolatileStore: true, historyLimit: 50}\n\
             service_discovery: {files: [\"web=/etc/flotilla/web.yaml\"], grace: 45s}\n\
             observability: {level: debug, format: json, otlpEndpoint: http://127.0.0.1:4317}\n\
             ha: {enabled: true, advertiseUrl: http://brain-1:8080}\n\
             backup: {dir: /var/backups/flotilla, interval: 15m, keep: 4}\n",
        )
        .unwrap();
        let s = Settings::resolve(Cli::parse_from(["flotilla-brain", "--config", path.to_str().unwrap()]))
            .unwrap();
        assert_eq!(s.discovery_files, vec![("web".to_string(), PathBuf::from("/etc/flotilla/web.yaml"))]);
        assert_eq!(s.discovery_grace, std::time::Duration::from_secs(45));
        assert_eq!((s.log_level.as_str(), s.log_format), ("debug", LogFormat::Json));
        assert_eq!(s.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert!(s.ha);
        assert_eq!(s.advertise_url.as_deref(), Some("http://brain-1:8080"));
        assert_eq!(s.database_url.as_deref(), Some("redis://cache:6379/2"));
        assert_eq!(s.store_kind(), StoreKind::Redis);
        assert!(s.allow_volatile_store);
        assert_eq!(s.history_limit, 50);
        let b = s.backup.unwrap();
        assert_eq!(
            (b.dir, b.interval, b.keep),
            (PathBuf::from("/var/backups/flotilla"), std::time::Duration::from_secs(900), 4)
        );
        // A flag still wins over the file.
        let s = Settings::resolve(Cli::parse_from([
            "flotilla-brain",
            "--config",
            path.to_str().unwrap(),
            "--backup-keep",
            "9",
        ]))
        .unwrap();
        assert_eq!(s.backup.unwrap().keep, 9);
        std::fs::write(&path, "backup: {dir: /b, interval: soon}\n").unwrap();
        let err = Settings::resolve(Cli::parse_from(["flotilla-brain", "--config", path.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("backup.interval") && err.contains("soon"), "{err}");
        std::fs::write(&path, "ha: {enabled: true, advertise: x}\n").unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains("advertise") && err.contains("ha"), "{err}");
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "server:\n  restAdr: 1.2.3.4:1\n").unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains("restAdr") && err.contains("server"), "{err}");
    }

    #[test]
    fn security_comes_from_flags_env_or_file_and_half_pairs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "security:\n  tlsCert: /etc/f/tls.crt\n  tlsKey: /etc/f/tls.key\n  rbacPolicy: /etc/f/rbac.yaml\n  authJwks: https://idp/jwks\n",
        )
        .unwrap();
        let cli =
            Cli::parse_from(["flotilla-brain", "--config", path.to_str().unwrap(), "--client-ca", "/ca.pem"]);
        let s = Settings::resolve(cli).unwrap().security;
        let tls = s.tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("/etc/f/tls.crt"));
        assert_eq!(tls.client_ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(s.auth_jwks.as_deref(), Some("https://idp/jwks"));
        assert_eq!(s.auth_groups_claim, "groups");
        assert!(Settings::resolve(Cli::parse_from(["flotilla-brain"])).unwrap().security.is_open());
        let err = Settings::resolve(Cli::parse_from(["flotilla-brain", "--tls-cert", "/c"])).unwrap_err();
        assert!(err.to_string().contains("--tls-key"), "{err}");
        let err = Settings::resolve(Cli::parse_from(["flotilla-brain", "--client-ca", "/c"])).unwrap_err();
        assert!(err.to_string().contains("--tls-cert"), "{err}");
        std::fs::write(&path, "security:\n  tlsCrt: x\n").unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains("tlsCrt"), "{err}");
    }

    #[test]
    fn the_store_is_named_by_the_url_scheme_and_an_unknown_one_is_refused() {
        let kind = |url: &str| Settings::resolve(Cli::parse_from(["flotilla-brain", "--database-url", url]));
        assert_eq!(kind("postgres://db/f").unwrap().store_kind(), StoreKind::Postgres);
        assert_eq!(kind("postgresql://db/f").unwrap().store_kind(), StoreKind::Postgres);
        assert_eq!(kind("rediss://:pw@cache:6380/1").unwrap().store_kind(), StoreKind::Redis);
        assert_eq!(kind("etcd://e1:2379,e2:2379").unwrap().store_kind(), StoreKind::Etcd);
        assert_eq!(
            Settings::resolve(Cli::parse_from(["flotilla-brain"])).unwrap().store_kind(),
            StoreKind::Embedded
        );
        let err = kind("mysql://root:secret@db/f").unwrap_err().to_string();
        assert!(err.contains("mysql://") && err.contains("redis://") && !err.contains("secret"), "{err}");
        assert_eq!(kind("etcds://e1:2379?cacert=/ca.pem").unwrap().store_kind(), StoreKind::Etcd);
        let err = kind("etcd://root:secret@e1:2379?cacert=/ca.pem").unwrap_err().to_string();
        assert!(
            err.contains("--database-url") && err.contains("etcds://") && !err.contains("secret"),
            "{err}"
        );
        let lease = ["flotilla-brain", "--ha-lease-etcd", "etcds://e1:2379?cert=/c.pem"];
        let err = Settings::resolve(Cli::parse_from(lease)).unwrap_err().to_string();
        assert!(err.contains("--ha-lease-etcd") && err.contains("cert and key"), "{err}");
    }
}
