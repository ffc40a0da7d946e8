//! `flotilla`: the kubectl-like command line of Flotilla. It talks to the brain's REST API
//! (`--server` / `FLOTILLA_SERVER`, default http://localhost:8080).
//!
//! Exit codes: 0 success; 1 the server refused (invalid config, conflict, not found), proxies
//! NACKed what `apply` applied (or `--wait` timed out), or `diff` found differences; 2 bad usage
//! or a file that does not parse; 3 the server could not be reached or failed.

mod client;
mod commands;
mod devtoken;
mod output;
mod rollout;

use clap::{Parser, Subcommand, ValueEnum};

/// Output formats of `get`, `history` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about = "Operate a Flotilla control plane")]
pub struct Cli {
    /// Brain REST API address.
    #[arg(long, global = true, env = "FLOTILLA_SERVER", default_value = "http://localhost:8080")]
    pub server: String,
    /// Name recorded as the author of changes (servers without authentication only).
    #[arg(long, global = true, env = "FLOTILLA_USER")]
    pub user: Option<String>,
    /// Bearer token (JWT) for servers with `--auth-jwks`.
    #[arg(long, global = true, env = "FLOTILLA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA bundle to verify an https:// server with.
    #[arg(long, global = true, env = "FLOTILLA_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update (and apply) every config in FILE, DIR or - (stdin), atomically.
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        /// Show what would change; store nothing.
        #[arg(long)]
        dry_run: bool,
        /// Store without pushing to proxies.
        #[arg(long)]
        no_apply: bool,
        /// Have Envoy validate each config first (the brain needs --envoy-validate-bin).
        #[arg(long)]
        validate_envoy: bool,
        /// Follow the rollout until every connected proxy of the applied configs has ACKed it
        /// (or one NACKs), at most TIMEOUT [default: 5m]. Without it, apply still waits up to 3 s
        /// for the proxies' first answers and exits 1 if one rejected the config.
        #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, default_missing_value = "5m",
              value_parser = humantime::parse_duration)]
        wait: Option<std::time::Duration>,
    },
    /// List configs or proxies, or show one.
    Get {
        #[arg(value_enum)]
        what: Kind,
        name: Option<String>,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Everything about one config (with its proxies and NACKs) or one proxy.
    Describe {
        #[arg(value_enum)]
        what: Kind,
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Delete a config and remove its resources from proxies (--stage: mark it pending-delete,
    /// proxies keep it until the deletion is applied).
    Delete {
        #[arg(value_enum)]
        what: Kind,
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Only stage the deletion (pending-delete); run `delete` again without it to carry it out.
        #[arg(long, alias = "no-apply")]
        stage: bool,
    },
    /// Show what applying FILE would change (exit 1 if anything would).
    Diff {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
    /// Revisions of a config.
    History {
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Make revision N current again (as a new revision) and apply it.
    Rollback {
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[arg(long = "to")]
        to: u64,
    },
    /// Check configs without storing them (exit 1 if invalid).
    Validate {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
    /// Write every config (or one namespace's) as a YAML bundle.
    Export {
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// File to write (default: stdout).
        #[arg(short = 'o', long = "output-file")]
        out: Option<String>,
        /// Include private keys (needs `export` on `secrets`); redacted otherwise.
        #[arg(long)]
        include_secrets: bool,
    },
    /// Create or update every config of a bundle, atomically, and apply them.
    Import {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        #[arg(long)]
        no_apply: bool,
    },
    /// Every config (or one namespace's) back to the revision it had at a time, in one
    /// transaction; configs created since are deleted. Shows the plan and changes nothing
    /// unless --yes.
    Restore {
        /// RFC 3339 time, e.g. 2026-12-01T10:00:00Z.
        #[arg(long)]
        at: String,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Do it (without it, only the plan is shown).
        #[arg(long)]
        yes: bool,
    },
    /// Fleet summary: the brains and which leads, configs, proxies connected, synced, stale, NACKing.
    Status {
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Who the server takes you for.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// The audit log (entries of the namespaces you may read it in), newest first.
    Audit {
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Only this subject's entries.
        #[arg(long)]
        subject: Option<String>,
        /// Entries at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// The subject, its groups, and what it may do in each namespace.
    Whoami {
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// For trying authentication on one machine (not for production): writes a new ES256
    /// signing key (DIR/signing.pem) and the JWKS a brain verifies tokens with (DIR/jwks.json,
    /// for --auth-jwks).
    DevKeys {
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
    /// For trying authentication on one machine (not for production): prints a token for
    /// SUBJECT signed with a key from `dev-keys`.
    DevToken {
        subject: String,
        /// The signing key `dev-keys` wrote.
        #[arg(long, default_value = "signing.pem")]
        key: std::path::PathBuf,
        /// Groups claim (repeatable), e.g. --group platform.
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long, default_value = devtoken::DEV_ISSUER)]
        issuer: String,
        #[arg(long, default_value = "flotilla")]
        audience: String,
        /// How long the token is valid.
        #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    #[value(alias = "config")]
    Configs,
    #[value(alias = "proxy")]
    Proxies,
    /// Discovered services (with each source's health).
    #[value(alias = "service", alias = "svc")]
    Services,
    /// Discovered endpoints, per service.
    #[value(alias = "endpoint", alias = "ep")]
    Endpoints,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let code = match commands::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
