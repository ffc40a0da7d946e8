//! Validation by Envoy itself before any proxy sees a config (`--envoy-validate-bin`,
//! `?validate=envoy`, `--envoy-validate-namespaces`): the compiled resources become one static
//! bootstrap (route configurations inlined into their listeners, EDS endpoints into their
//! clusters, secrets static; a never-contacted ADS cluster keeps the remaining `ads` references
//! legal), written as binary protobuf and handed to `envoy --mode validate`. Envoy's refusal is
//! traced back to the resource that causes it by bisection (only when it refuses), so the
//! caller can name the ProxyConfig path.
//!
//! Owns building the bootstrap, running Envoy (bounded in time and in concurrent runs) and
//! reading its verdict. Does not own when to run it (`manage::configs`), what Flotilla itself
//! refuses (`validate`) or compiling (`compile`).

mod bootstrap;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use flotilla_shared::Snapshot;
use tokio::sync::Semaphore;

pub use bootstrap::{Unit, UnitKind};

/// Longest one Envoy run may take before the check gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Envoy runs one refusal may take to be traced to its resource.
const MAX_BISECT_RUNS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum EnvoyCheckError {
    /// Envoy refuses the config; `unit` is the resource that causes it, when one could be found.
    #[error("Envoy refuses the config: {message}")]
    Refused { unit: Option<Unit>, message: String },
    /// The check could not be carried out (no binary, a crash, a timeout): nothing is known.
    #[error("cannot validate with Envoy ({bin}): {reason}")]
    Unavailable { bin: String, reason: String },
    /// A compiled resource could not be read back (a bug: compile made it).
    #[error("cannot build the validation bootstrap: {0}")]
    Bootstrap(String),
}

/// Runs an Envoy binary in validate mode.
#[derive(Debug)]
pub struct EnvoyValidator {
    bin: PathBuf,
    runs: Semaphore,
}

/// When writes are checked by Envoy: on request (`?validate=envoy`), and always in the
/// namespaces named by `--envoy-validate-namespaces` (`*`: every one).
#[derive(Debug)]
pub struct EnvoyGate {
    pub validator: EnvoyValidator,
    namespaces: Vec<String>,
}

impl EnvoyGate {
    pub fn new(validator: EnvoyValidator, namespaces: Vec<String>) -> Self {
        EnvoyGate { validator, namespaces }
    }

    /// Whether writes to `namespace` are checked even when not asked.
    pub fn by_default(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|n| n == "*" || n == namespace)
    }
}

/// What a passed check cost.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    pub took: Duration,
    pub runs: usize,
}

impl EnvoyValidator {
    /// At most two Envoys validate at once (each takes a core for a moment).
    pub fn new(bin: PathBuf) -> Self {
        EnvoyValidator { bin, runs: Semaphore::new(2) }
    }

    pub fn bin(&self) -> &std::path::Path {
        &self.bin
    }

    /// Checks `snap` with Envoy; on a refusal, finds the resource that causes it.
    pub async fn check(&self, snap: &Snapshot) -> Result<Checked, EnvoyCheckError> {
        let started = Instant::now();
        let units = bootstrap::units(snap)?;
        let all: Vec<&Unit> = units.iter().collect();
        let outcome = self.run(snap, &all, false).await?;
        let result = match outcome {
            Ok(()) => Ok(Checked { took: started.elapsed(), runs: 1 }),
            Err(message) => {
                let mut runs = 1;
                let unit = self.locate(snap, &all, &mut runs).await?;
                Err(EnvoyCheckError::Refused { unit, message })
            }
        };
        let verdict = if result.is_ok() { "ok" } else { "refused" };
        metrics::histogram!("flotilla_brain_envoy_validate_seconds", "verdict" => verdict)
            .record(started.elapsed().as_secs_f64());
        tracing::info!(
            message = "validated with Envoy",
            verdict,
            took_ms = started.elapsed().as_millis() as u64,
            resources = snap.len()
        );
        result
    }

    /// The one resource (of `units`, which Envoy refuses together) that Envoy refuses alone.
    async fn locate(
        &self,
        snap: &Snapshot,
        units: &[&Unit],
        runs: &mut usize,
    ) -> Result<Option<Unit>, EnvoyCheckError> {
        let mut suspects = units.to_vec();
        while suspects.len() > 1 && *runs < MAX_BISECT_RUNS {
            let (left, right) = suspects.split_at(suspects.len() / 2);
            *runs += 1;
            if self.run(snap, left, false).await?.is_err() {
                suspects = left.to_vec();
                continue;
            }
            *runs += 1;
            if self.run(snap, right, false).await?.is_err() {
                suspects = right.to_vec();
                continue;
            }
            return Ok(None); // refused only together: no single resource to blame
        }
        let [unit] = suspects.as_slice() else { return Ok(None) };
        let mut unit = (*unit).clone();
        // A listener refused for one of its route configurations: name the route configuration.
        if unit.kind == UnitKind::Listener && !unit.routes.is_empty() && *runs < MAX_BISECT_RUNS {
            *runs += 1;
            if self.run(snap, &[&unit], true).await?.is_ok() {
                unit.kind = UnitKind::Route;
                unit.name = unit.routes.join(", ");
            }
        }
        Ok(Some(unit))
    }

    /// One Envoy run over `units`: `Ok(Err(message))` when Envoy refuses them.
    async fn run(
        &self,
        snap: &Snapshot,
        units: &[&Unit],
        stub_routes: bool,
    ) -> Result<Result<(), String>, EnvoyCheckError> {
        let unavailable =
            |reason: String| EnvoyCheckError::Unavailable { bin: self.bin.display().to_string(), reason };
        let bytes = bootstrap::build(snap, units, stub_routes)?;
        let _permit = self.runs.acquire().await.map_err(|e| unavailable(e.to_string()))?;
        let dir = tempfile::tempdir().map_err(|e| unavailable(format!("no temporary directory: {e}")))?;
        let path = dir.path().join("bootstrap.pb");
        tokio::fs::write(&path, bytes)
            .await
            .map_err(|e| unavailable(format!("cannot write {path:?}: {e}")))?;
        let child = tokio::process::Command::new(&self.bin)
            .args([
                "--mode",
                "validate",
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ])
            .arg("--config-path")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| unavailable(format!("cannot start it: {e}")))?;
        let out = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| unavailable(format!("no verdict within {RUN_TIMEOUT:?}")))?
            .map_err(|e| unavailable(e.to_string()))?;
        if out.status.success() {
            return Ok(Ok(()));
        }
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
        match verdict(&text, &path.display().to_string()) {
            Some(message) => Ok(Err(message)),
            None => Err(unavailable(format!("it exited with {} and said: {}", out.status, text.trim()))),
        }
    }
}

/// Envoy's reason for refusing a config, from what it printed (`None`: it did not say, e.g. it
/// crashed). The bootstrap's temporary path, the dump of the bootstrap Envoy prints before the
/// reason, and the outer links of a constraint's chain (they name the synthetic bootstrap, not
/// the config) are left out.
fn verdict(output: &str, path: &str) -> Option<String> {
    const MARK: &str = "error initializing configuration";
    let at = output.find(MARK)?;
    let rest = &output[at + MARK.len()..];
    let rest = rest.trim_start_matches([' ', '\'']);
    let rest = rest.strip_prefix(path).unwrap_or(rest).trim_start_matches(['\'', ':', ' ']);
    // With a dump: "goo.gle/debugstr\n<text proto>\n: <reason>"; the reason is the last such line.
    let reason = match rest.lines().rev().find_map(|l| l.strip_prefix(": ")) {
        Some(r) if rest.lines().count() > 1 => r,
        _ => rest.lines().next().unwrap_or(rest),
    };
    let reason = match reason.rsplit_once(" | caused by ") {
        Some((head, last)) => {
            let kind = head.split_once(" (").map_or("", |(k, _)| k);
            format!("{kind}: {}", last.trim_end_matches(')'))
        }
        None => reason.to_string(),
    };
    Some(reason.trim().trim_start_matches(": ").to_string())
}

#[cfg(test)]
mod tests {
    use super::verdict;

    #[test]
    fn a_constraint_is_reported_without_the_bootstrap_dump_and_chain() {
        let out = "[..][critical][main] [source/server/config_validation/server.cc:76] error initializing configuration '/tmp/b.pb': goo.gle/debugstr  \nstatic_resources {\n  clusters {\n    name: \"c\"\n  }\n}\n: Proto constraint validation failed (BootstrapValidationError.StaticResources: embedded message failed validation | caused by StaticResourcesValidationError.Clusters[0]: embedded message failed validation | caused by ClusterValidationError.DnsRefreshRate: value must be greater than 1ms)\n";
        assert_eq!(
            verdict(out, "/tmp/b.pb").as_deref(),
            Some(
                "Proto constraint validation failed: ClusterValidationError.DnsRefreshRate: value must be greater than 1ms"
            )
        );
    }

    #[test]
    fn the_verdict_is_the_reason_without_the_path() {
        let out = "[2026-12-06 01:00:00.000][1][critical][main] [source/server/server.cc:131] error initializing configuration '/tmp/x/bootstrap.pb': Proto constraint validation failed (ClusterValidationError.DnsRefreshRate: value must be greater than 1ms)\n";
        assert_eq!(
            verdict(out, "/tmp/x/bootstrap.pb").as_deref(),
            Some(
                "Proto constraint validation failed (ClusterValidationError.DnsRefreshRate: value must be greater than 1ms)"
            )
        );
        assert_eq!(verdict("Segmentation fault", "/tmp/x"), None);
    }
}
