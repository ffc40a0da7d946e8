//! Settings of `flotilla-brain`: flags, `FLOTILLA_*` environment variables, and an optional
//! YAML config file (`--config`), in that order of precedence, over built-in defaults.

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

/// Command line of `flotilla-brain`.
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
    /// REST API listen address [default: 0.0.0.0:8080].
    #[arg(long, env = "FLOTILLA_REST_ADDR")]
    pub rest_addr: Option<SocketAddr>,
    /// xDS (gRPC) listen address of the embedded edge [default: 0.0.0.0:18000].
    #[arg(long, env = "FLOTILLA_XDS_ADDR")]
    pub xds_addr: Option<SocketAddr>,
    /// gRPC management API listen address [default: 0.0.0.0:18001].
    #[arg(long, env = "FLOTILLA_GRPC_API_ADDR")]
    pub grpc_api_addr: Option<SocketAddr>,
    /// Directory of the embedded store [default: ./flotilla-data].
    #[arg(long, env = "FLOTILLA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (`postgres://user@host/db`); the embedded store is used when unset.
    #[arg(long, env = "FLOTILLA_DATABASE_URL")]
    pub database_url: Option<String>,
    /// PostgreSQL connection pool size [default: 10].
    #[arg(long, env = "FLOTILLA_DB_POOL_SIZE")]
    pub db_pool_size: Option<u32>,
    /// NATS with JetStream (e.g. nats://127.0.0.1:4222): publish group states for `flotilla-edge`.
    #[arg(long, env = "FLOTILLA_NATS_URL")]
    pub nats_url: Option<String>,
    /// JetStream KV bucket for group states [default: flotilla_state].
    #[arg(long, env = "FLOTILLA_NATS_BUCKET")]
    pub nats_bucket: Option<String>,
    /// NATS credentials file (JWT + NKey seed).
    #[arg(long, env = "FLOTILLA_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// CA bundle to verify the NATS server with (turns on TLS to NATS).
    #[arg(long, env = "FLOTILLA_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate for NATS mTLS (with --nats-tls-key).
    #[arg(long, env = "FLOTILLA_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    #[arg(long, env = "FLOTILLA_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
    /// Embedded edge: admit at most this many new xDS streams per second (the rest wait their
    /// turn). Unlimited when unset.
    #[arg(long, env = "FLOTILLA_MAX_NEW_STREAMS_PER_SEC")]
    pub max_new_streams_per_sec: Option<u32>,
    /// On SIGTERM / Ctrl-C, end the embedded edge's xDS streams over this window (so Envoys
    /// reconnect elsewhere gradually), then exit [default: 5s; 0s ends them at once].
    #[arg(long, env = "FLOTILLA_DRAIN_WINDOW", value_parser = humantime::parse_duration)]
    pub drain_window: Option<std::time::Duration>,
    /// Do not run the embedded edge (xDS is served by flotilla-edge replicas only).
    #[arg(long, env = "FLOTILLA_NO_EMBEDDED_EDGE")]
    pub no_embedded_edge: bool,
    /// Write a backup of every config (a YAML bundle, secrets included, mode 0600) into this
    /// directory every --backup-interval, keeping the newest --backup-keep (docs/operations.md).
    #[arg(long, env = "FLOTILLA_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// How often to write a backup [default: 1h].
    #[arg(long, env = "FLOTILLA_BACKUP_INTERVAL", value_parser = humantime::parse_duration)]
    pub backup_interval: Option<std::time::Duration>,
    /// Backups kept [default: 24].
    #[arg(long, env = "FLOTILLA_BACKUP_KEEP")]
    pub backup_keep: Option<usize>,
    /// Run as one of several brains on the same PostgreSQL (--database-url): one leader, elected
    /// through a lease in the database, writes and publishes; followers serve reads and redirect
    /// writes to it (docs/operations.md, "High availability").
    #[arg(long, env = "FLOTILLA_HA")]
    pub ha: bool,
    /// The REST URL other brains send writers to while this one leads [default:
    /// http://<host>:<rest port>].
    #[arg(long, env = "FLOTILLA_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// With --ha, keep the leader lease in a Kubernetes Lease instead of PostgreSQL:
    /// CONFIG@NAMESPACE/NAME, CONFIG being `in-cluster`, `default` or a kubeconfig path (e.g.
    /// in-cluster@flotilla/flotilla-leader). Configs stay in PostgreSQL.
    #[arg(long, env = "FLOTILLA_HA_LEASE_KUBERNETES")]
    pub ha_lease_kubernetes: Option<String>,
    /// Log filter, e.g. `info` or `flotilla_edge=debug,info` [default: info].
    #[arg(long, env = "FLOTILLA_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format [default: text].
    #[arg(long, env = "FLOTILLA_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// An Envoy binary that validates configs before any proxy sees them (`envoy --mode
    /// validate`), on writes with `?validate=envoy` and on every write to the namespaces of
    /// `--envoy-validate-namespaces`.
    #[arg(long, env = "FLOTILLA_ENVOY_VALIDATE_BIN", value_name = "PATH")]
    pub envoy_validate_bin: Option<PathBuf>,
    /// Namespaces whose writes are always validated by Envoy (`*`: all); needs
    /// `--envoy-validate-bin`. Comma-separated.
    #[arg(long, env = "FLOTILLA_ENVOY_VALIDATE_NAMESPACES", value_delimiter = ',', value_name = "NS")]
    pub envoy_validate_namespaces: Vec<String>,
    /// Export traces (one per change: API call, validate, compile, store, publish, and on the
    /// edges receipt, pushes and ACKs) to this OTLP/gRPC collector, e.g. http://127.0.0.1:4317.
    #[arg(long, env = "FLOTILLA_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// A `file` service discovery source: NAME=PATH of a YAML/JSON file of services, re-read
    /// when it changes (docs/discovery.md). Repeatable; comma-separated in the env var.
    #[arg(
        long = "discovery-file",
        env = "FLOTILLA_DISCOVERY_FILES",
        value_delimiter = ',',
        value_name = "NAME=PATH"
    )]
    pub discovery_files: Vec<String>,
    /// A `consul` service discovery source: NAME=URL of a Consul agent's HTTP API (e.g.
    /// `consul=http://127.0.0.1:8500?dc=dc2&tag=web&token-file=/etc/consul.token`), watched with
    /// blocking queries. Repeatable.
    #[arg(
        long = "discovery-consul",
        env = "FLOTILLA_DISCOVERY_CONSUL",
        value_delimiter = ',',
        value_name = "NAME=URL"
    )]
    pub discovery_consul: Vec<String>,
    /// A `dns` service discovery source: NAME=SERVER, SERVER being IP:PORT of a DNS server or
    /// `system` (the system's resolvers). Names are looked up as configs ask and again on TTL.
    #[arg(
        long = "discovery-dns",
        env = "FLOTILLA_DISCOVERY_DNS",
        value_delimiter = ',',
        value_name = "NAME=SERVER"
    )]
    pub discovery_dns: Vec<String>,
    /// A `kubernetes` service discovery source: NAME=CONFIG[@NS+NS…], CONFIG being `in-cluster`,
    /// `default` ($KUBECONFIG or ~/.kube/config) or a kubeconfig path; EndpointSlices and Pods
    /// are watched in the namespaces listed after `@`, else in all (docs/discovery.md).
    #[arg(
        long = "discovery-kubernetes",
        env = "FLOTILLA_DISCOVERY_KUBERNETES",
        value_delimiter = ',',
        value_name = "NAME=CONFIG[@NS+NS]"
    )]
    pub discovery_kubernetes: Vec<String>,
    /// A `plugin` service discovery source: NAME=URL of a program speaking the plugin watch
    /// protocol (`GET URL/v1/services?index=N&wait=30s`; docs/discovery.md). Repeatable.
    #[arg(
        long = "discovery-plugin",
        env = "FLOTILLA_DISCOVERY_PLUGINS",
        value_delimiter = ',',
        value_name = "NAME=URL"
    )]
    pub discovery_plugins: Vec<String>,
    /// How long a service that vanished from its registry keeps its last endpoints before it is
    /// removed, e.g. `30s` [default: 30s].
    #[arg(long, env = "FLOTILLA_DISCOVERY_GRACE", value_parser = humantime::parse_duration)]
    pub discovery_grace: Option<std::time::Duration>,
    #[command(flatten)]
    pub security: SecurityCli,
}

/// Security flags (docs/security.md). With none of them the brain is open: no TLS, no auth.
#[derive(Debug, Default, clap::Args)]
pub struct SecurityCli {
    /// PEM certificate chain: serve REST, the gRPC API and xDS over TLS 1.3 (with --tls-key).
    #[arg(long, env = "FLOTILLA_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FLOTILLA_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: proxies must present a client certificate it signed (mTLS on xDS); the
    /// management APIs accept one as an identity.
    #[arg(long, env = "FLOTILLA_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Trust domain of SPIFFE ids in client certificates (any when unset).
    #[arg(long, env = "FLOTILLA_TRUST_DOMAIN")]
    pub trust_domain: Option<String>,
    /// JWKS (file path or http(s) URL): turns on JWT bearer authentication of the management APIs.
    #[arg(long, env = "FLOTILLA_AUTH_JWKS")]
    pub auth_jwks: Option<String>,
    /// Required `iss` of tokens.
    #[arg(long, env = "FLOTILLA_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// Required `aud` of tokens.
    #[arg(long, env = "FLOTILLA_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// Claim holding a token's groups [default: groups].
    #[arg(long, env = "FLOTILLA_AUTH_GROUPS_CLAIM")]
    pub auth_groups_claim: Option<String>,
    /// RBAC policy (YAML: roles, bindings, quotas, cross-namespace grants); reloaded on change.
    #[arg(long, env = "FLOTILLA_RBAC_POLICY")]
    pub rbac_policy: Option<PathBuf>,
    /// File holding the 32-byte key that encrypts secret material at rest (base64 or hex).
    #[arg(long, env = "FLOTILLA_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// A previous key: rows it encrypted are decrypted and re-encrypted with the current key.
    #[arg(long, env = "FLOTILLA_SECRETS_OLD_KEY_FILE")]
    pub secrets_old_key_file: Option<PathBuf>,
}

/// The config file. Every key is optional; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: FileServer,
    #[serde(default)]
    pub storage: FileStorage,
    /// Also accepted as `observability:`.
    #[serde(default, alias = "observability")]
    pub logging: FileLogging,
    #[serde(default)]
    pub nats: FileNats,
    #[serde(default)]
    pub security: FileSecurity,
    /// Also accepted as `serviceDiscovery:` or `service_discovery:`.
    #[serde(default, alias = "serviceDiscovery", alias = "service_discovery")]
    pub discovery: FileDiscovery,
    #[serde(default)]
    pub ha: FileHa,
    #[serde(default)]
    pub backup: FileBackup,
    #[serde(default)]
    pub validation: FileValidation,
}

/// `validation:` in the config file (as `--envoy-validate-bin`, `--envoy-validate-namespaces`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct FileValidation {
    pub envoy_bin: Option<PathBuf>,
    pub envoy_namespaces: Vec<String>,
}

/// `ha:` in the config file (as `--ha`, `--advertise-url`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct FileHa {
    pub enabled: Option<bool>,
    pub advertise_url: Option<String>,
    /// As `--ha-lease-kubernetes`.
    pub lease_kubernetes: Option<String>,
}

/// `backup:` in the config file (as `--backup-dir`, `--backup-interval`, `--backup-keep`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct FileBackup {
    pub dir: Option<PathBuf>,
    /// A duration such as `1h` or `30m`.
    pub interval: Option<String>,
    pub keep: Option<usize>,
}

/// A duration written in the config file at `path` (e.g. `backup.interval`).
fn file_duration(path: &str, value: Option<&str>) -> Result<Option<std::time::Duration>, SettingsError> {
    value
        .map(|v| {
            humantime::parse_duration(v).map_err(|e| {
                SettingsError::Invalid(format!(
                    "config file: {path}: {v:?} is not a duration (e.g. 30s, 1h): {e}"
                ))
            })
        })
        .transpose()
}

/// `discovery:` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct FileDiscovery {
    /// `NAME=PATH` entries, as `--discovery-file`.
    pub files: Vec<String>,
    /// `NAME=URL` entries, as `--discovery-consul`.
    pub consul: Vec<String>,
    /// `NAME=SERVER` entries, as `--discovery-dns`.
    pub dns: Vec<String>,
    /// `NAME=CONFIG[@NS+NS]` entries, as `--discovery-kubernetes`.
    pub kubernetes: Vec<String>,
    /// `NAME=URL` entries, as `--discovery-plugin`.
    pub plugins: Vec<String>,
    /// As `--discovery-grace`, e.g. `30s`.
    pub grace: Option<String>,
}

/// `NAME=VALUE` specs of discovery sources, each name once.
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

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileSecurity {
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub trust_domain: Option<String>,
    pub auth_jwks: Option<String>,
    pub auth_issuer: Option<String>,
    pub auth_audience: Option<String>,
    pub auth_groups_claim: Option<String>,
    pub rbac_policy: Option<PathBuf>,
    pub secrets_key_file: Option<PathBuf>,
    pub secrets_old_key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileNats {
    pub url: Option<String>,
    pub bucket: Option<String>,
    pub embedded_edge: Option<bool>,
    pub creds: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileServer {
    pub rest_addr: Option<SocketAddr>,
    pub xds_addr: Option<SocketAddr>,
    pub grpc_api_addr: Option<SocketAddr>,
    pub max_new_streams_per_sec: Option<u32>,
    pub drain_window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileStorage {
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub pool_size: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileLogging {
    pub level: Option<String>,
    pub format: Option<LogFormat>,
    pub otlp_endpoint: Option<String>,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rest_addr: SocketAddr,
    pub xds_addr: SocketAddr,
    pub grpc_api_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub db_pool_size: u32,
    pub nats_url: Option<String>,
    pub nats_bucket: String,
    /// Credentials and TLS of the NATS connection.
    pub nats_security: flotilla_common::nats::NatsSecurity,
    pub embedded_edge: bool,
    /// New xDS streams admitted per second by the embedded edge (None: no limit).
    pub max_new_streams_per_sec: Option<u32>,
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
            db_pool_size: 10,
            nats_url: None,
            nats_bucket: flotilla_shared::subject::STATE_BUCKET.to_string(),
            nats_security: Default::default(),
            embedded_edge: true,
            max_new_streams_per_sec: None,
            drain_window: std::time::Duration::from_secs(5),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            backup: None,
            ha: false,
            advertise_url: None,
            ha_lease_kubernetes: None,
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
    /// Flags and environment over the file over defaults.
    pub fn resolve(cli: Cli) -> Result<Settings, SettingsError> {
        let file = match &cli.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let d = Settings::default();
        let security = resolve_security(cli.security, file.security)?;
        let files =
            named("--discovery-file", "NAME=PATH", cli.discovery_files.iter().chain(&file.discovery.files))?;
        let consul = named(
            "--discovery-consul",
            "NAME=URL",
            cli.discovery_consul.iter().chain(&file.discovery.consul),
        )?;
        let dns =
            named("--discovery-dns", "NAME=SERVER", cli.discovery_dns.iter().chain(&file.discovery.dns))?;
        let kubernetes = named(
            "--discovery-kubernetes",
            "NAME=CONFIG[@NS+NS]",
            cli.discovery_kubernetes.iter().chain(&file.discovery.kubernetes),
        )?;
        let plugins = named(
            "--discovery-plugin",
            "NAME=URL",
            cli.discovery_plugins.iter().chain(&file.discovery.plugins),
        )?;
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
        let discovery_dns = dns;
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
        let envoy_validate_bin = cli.envoy_validate_bin.or(file.validation.envoy_bin);
        let mut envoy_validate_namespaces = cli.envoy_validate_namespaces;
        envoy_validate_namespaces.extend(file.validation.envoy_namespaces);
        if envoy_validate_bin.is_none() && !envoy_validate_namespaces.is_empty() {
            return Err(SettingsError::Invalid(
                "--envoy-validate-namespaces needs --envoy-validate-bin (the Envoy that validates)".into(),
            ));
        }
        if let Some(bin) = &envoy_validate_bin
            && !bin.is_file()
        {
            return Err(SettingsError::Invalid(format!(
                "--envoy-validate-bin {}: no such file",
                bin.display()
            )));
        }
        Ok(Settings {
            envoy_validate_bin,
            envoy_validate_namespaces,
            security,
            discovery_files,
            discovery_consul,
            discovery_dns,
            discovery_kubernetes,
            discovery_plugins: plugins,
            discovery_grace: cli
                .discovery_grace
                .or(file_duration("discovery.grace", file.discovery.grace.as_deref())?)
                .unwrap_or(d.discovery_grace),
            rest_addr: cli.rest_addr.or(file.server.rest_addr).unwrap_or(d.rest_addr),
            xds_addr: cli.xds_addr.or(file.server.xds_addr).unwrap_or(d.xds_addr),
            grpc_api_addr: cli.grpc_api_addr.or(file.server.grpc_api_addr).unwrap_or(d.grpc_api_addr),
            data_dir: cli.data_dir.or(file.storage.data_dir).unwrap_or(d.data_dir),
            database_url: cli.database_url.or(file.storage.database_url),
            db_pool_size: cli.db_pool_size.or(file.storage.pool_size).unwrap_or(d.db_pool_size),
            nats_url: cli.nats_url.or(file.nats.url),
            nats_bucket: cli.nats_bucket.or(file.nats.bucket).unwrap_or(d.nats_bucket),
            nats_security: flotilla_common::nats::NatsSecurity {
                creds: cli.nats_creds.or(file.nats.creds),
                tls_ca: cli.nats_tls_ca.or(file.nats.tls_ca),
                tls_cert: cli.nats_tls_cert.or(file.nats.tls_cert),
                tls_key: cli.nats_tls_key.or(file.nats.tls_key),
            },
            embedded_edge: !cli.no_embedded_edge && file.nats.embedded_edge.unwrap_or(true),
            max_new_streams_per_sec: cli.max_new_streams_per_sec.or(file.server.max_new_streams_per_sec),
            drain_window: cli
                .drain_window
                .or(file_duration("server.drainWindow", file.server.drain_window.as_deref())?)
                .unwrap_or(d.drain_window),
            log_level: cli.log_level.or(file.logging.level).unwrap_or(d.log_level),
            log_format: cli.log_format.or(file.logging.format).unwrap_or(d.log_format),
            otlp_endpoint: cli.otlp_endpoint.or(file.logging.otlp_endpoint),
            backup: match cli.backup_dir.or(file.backup.dir) {
                Some(dir) => Some(crate::backup::BackupSettings {
                    dir,
                    interval: cli
                        .backup_interval
                        .or(file_duration("backup.interval", file.backup.interval.as_deref())?)
                        .unwrap_or(std::time::Duration::from_secs(3600)),
                    keep: cli.backup_keep.or(file.backup.keep).unwrap_or(24),
                }),
                None => None,
            },
            ha: cli.ha || file.ha.enabled.unwrap_or(false),
            advertise_url: cli.advertise_url.or(file.ha.advertise_url),
            ha_lease_kubernetes: cli
                .ha_lease_kubernetes
                .or(file.ha.lease_kubernetes)
                .map(|s| s.parse().map_err(|e| SettingsError::Invalid(format!("--ha-lease-kubernetes {e}"))))
                .transpose()?,
        })
    }
}

fn resolve_security(cli: SecurityCli, file: FileSecurity) -> Result<Security, SettingsError> {
    let cert = cli.tls_cert.or(file.tls_cert);
    let key = cli.tls_key.or(file.tls_key);
    let client_ca = cli.client_ca.or(file.client_ca);
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(flotilla_common::tls::TlsFiles { cert, key, client_ca }),
        (None, None) if client_ca.is_some() => {
            return Err(SettingsError::Invalid("--client-ca needs --tls-cert and --tls-key".into()));
        }
        (None, None) => None,
        (Some(_), None) => return Err(SettingsError::Invalid("--tls-cert needs --tls-key".into())),
        (None, Some(_)) => return Err(SettingsError::Invalid("--tls-key needs --tls-cert".into())),
    };
    Ok(Security {
        tls,
        trust_domain: cli.trust_domain.or(file.trust_domain),
        auth_jwks: cli.auth_jwks.or(file.auth_jwks),
        auth_issuer: cli.auth_issuer.or(file.auth_issuer),
        auth_audience: cli.auth_audience.or(file.auth_audience),
        auth_groups_claim: cli
            .auth_groups_claim
            .or(file.auth_groups_claim)
            .unwrap_or_else(|| "groups".into()),
        rbac_policy: cli.rbac_policy.or(file.rbac_policy),
        secrets_key_file: cli.secrets_key_file.or(file.secrets_key_file),
        secrets_old_key_file: cli.secrets_old_key_file.or(file.secrets_old_key_file),
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
    }

    #[test]
    fn the_whole_file_shape_with_its_section_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controlplane.yaml");
        std::fs::write(
            &path,
            "server: {restAddr: 127.0.0.1:9090}\n\
             storage: {databaseUrl: postgres://db/flotilla}\n\
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
}
