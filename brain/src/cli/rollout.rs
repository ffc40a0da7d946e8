//! Following a rollout after `flotilla apply`: each connected proxy of the applied configs is
//! `pending` until its ACKed versions equal what the brain intends (`synced`) or it rejects a type
//! (`NACKed`, with Envoy's error), as `GET /api/v1/proxies/{node}/config_dump` tells. A progress
//! line is drawn on a terminal; the outcome decides the exit code.
//!
//! It only reads the API; applying is the `apply` command's.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{CliError, Client};

/// How often the proxies are asked again.
const POLL: Duration = Duration::from_millis(250);

/// One proxy's state in the rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyState {
    Pending,
    Synced,
    /// Rejected: the type and Envoy's error.
    Nacked(String, String),
}

/// What became of a rollout.
#[derive(Debug, Default)]
pub struct Outcome {
    pub proxies: Vec<(String, ProxyState)>,
    pub timed_out: bool,
}

impl Outcome {
    pub fn nacked(&self) -> usize {
        self.proxies.iter().filter(|(_, s)| matches!(s, ProxyState::Nacked(..))).count()
    }

    pub fn pending(&self) -> usize {
        self.proxies.iter().filter(|(_, s)| *s == ProxyState::Pending).count()
    }

    fn synced(&self) -> usize {
        self.proxies.iter().filter(|(_, s)| *s == ProxyState::Synced).count()
    }

    /// Prints one line per proxy that is not synced (and a summary).
    pub fn report(&self) {
        for (node, s) in &self.proxies {
            match s {
                ProxyState::Nacked(kind, error) => println!("  {node}: NACKed {kind}: {error}"),
                ProxyState::Pending => println!("  {node}: pending"),
                ProxyState::Synced => {}
            }
        }
        println!(
            "rollout: {} proxies, {} synced, {} NACKed, {} pending{}",
            self.proxies.len(),
            self.synced(),
            self.nacked(),
            self.pending(),
            if self.timed_out { " (timed out)" } else { "" }
        );
    }
}

/// A proxy's state from its config dump.
fn state_of(dump: &Value) -> ProxyState {
    if dump["inSync"] == true {
        return ProxyState::Synced;
    }
    let types = dump["types"].as_object().into_iter().flatten();
    for (kind, t) in types {
        if t["state"] == "nacked" {
            let error = t["lastNack"]["error"].as_str().unwrap_or("rejected").to_string();
            return ProxyState::Nacked(kind.clone(), error);
        }
    }
    ProxyState::Pending
}

/// Follows the proxies of `configs` (namespace, name) until none is pending or `timeout`
/// passes. With no proxy connected, returns at once.
pub async fn follow(
    c: &Client,
    configs: &BTreeSet<(String, String)>,
    timeout: Duration,
) -> Result<Outcome, CliError> {
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal();
    loop {
        let proxies = c.get("/api/v1/proxies").await?;
        let nodes: Vec<String> = proxies
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                let key = (
                    p["namespace"].as_str().unwrap_or_default().to_string(),
                    p["cluster"].as_str().unwrap_or_default().to_string(),
                );
                configs.contains(&key)
            })
            .filter_map(|p| p["nodeId"].as_str().map(str::to_string))
            .collect();
        let mut outcome = Outcome::default();
        for node in nodes {
            // A proxy that disconnected meanwhile is simply left out.
            let state = match c.get(&format!("/api/v1/proxies/{node}/config_dump")).await {
                Ok(dump) => state_of(&dump),
                Err(CliError::Refused(_)) => continue,
                Err(e) => return Err(e),
            };
            outcome.proxies.push((node, state));
        }
        let done = outcome.pending() == 0;
        outcome.timed_out = !done && started.elapsed() >= timeout;
        if progress {
            let mut err = std::io::stderr();
            let _ = write!(
                err,
                "\r\x1b[Krollout: {}/{} synced, {} NACKed, {} pending ({}s)",
                outcome.synced(),
                outcome.proxies.len(),
                outcome.nacked(),
                outcome.pending(),
                started.elapsed().as_secs()
            );
            if done || outcome.timed_out {
                let _ = writeln!(err);
            }
        }
        if done || outcome.timed_out {
            return Ok(outcome);
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_dump_is_synced_nacked_with_its_error_or_pending() {
        assert_eq!(state_of(&json!({"inSync": true, "types": {}})), ProxyState::Synced);
        let nacked = json!({"inSync": false, "types": {
            "cds": {"state": "in-sync"},
            "lds": {"state": "nacked", "lastNack": {"error": "cannot bind 127.0.0.1:80"}}}});
        assert_eq!(state_of(&nacked), ProxyState::Nacked("lds".into(), "cannot bind 127.0.0.1:80".into()));
        let pending = json!({"inSync": false, "types": {"lds": {"state": "pending"}}});
        assert_eq!(state_of(&pending), ProxyState::Pending);
    }
}
