//! Crash safety: a `flotilla-brain` process killed (SIGKILL) in the middle of a stream of writes
//! comes back with either the old or the new revision of the config — never half of one — and
//! with every write it acknowledged. Run against the embedded store and a real PostgreSQL.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flotilla_test_support::free_port;
use serde_json::Value;

const CONFIG: &str = include_str!("../../docs/examples/example-service.yaml");

struct Brain {
    child: Child,
    base: String,
}

impl Brain {
    async fn start(args: &[String]) -> Brain {
        // Free ports are picked, released, then bound by the child: another test may take one in
        // between. A child that exits at once (port taken) is started again on other ports.
        for _ in 0..3 {
            if let Some(b) = Brain::try_start(args).await {
                return b;
            }
        }
        panic!("flotilla-brain did not become ready");
    }

    async fn try_start(args: &[String]) -> Option<Brain> {
        let rest = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla-brain"))
            .args(args)
            .args([
                "--rest-addr",
                &format!("127.0.0.1:{rest}"),
                "--xds-addr",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args(["--grpc-api-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{rest}");
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client.get(format!("{base}/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
                return Some(Brain { child, base });
            }
            if child.try_wait().ok().flatten().is_some() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("flotilla-brain did not become ready");
    }

    fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

/// A config whose endpoint port and label carry `n`, so every revision is distinct.
fn config_n(n: u64) -> String {
    CONFIG
        .replace("port: 9001", &format!("port: {}", 10_000 + n % 50_000))
        .replace("namespace: production}", &format!("namespace: production, labels: {{n: \"{n}\"}}}}"))
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn crash_rounds(args: Vec<String>) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let brain = Brain::start(&args).await;
    let r = client
        .post(format!("{}/api/v1/configs?apply=true", brain.base))
        .header("content-type", "application/yaml")
        .body(config_n(0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let mut brain = brain;
    let acked = Arc::new(AtomicU64::new(1));
    for round in 0..4u64 {
        let writer = {
            let (client, base, id, acked) = (client.clone(), brain.base.clone(), id.clone(), acked.clone());
            tokio::spawn(async move {
                for n in 1.. {
                    let res = client
                        .put(format!("{base}/api/v1/configs/{id}?apply=true"))
                        .header("content-type", "application/yaml")
                        .body(config_n(round * 10_000 + n))
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status().is_success() => {
                            let v = r
                                .json::<Value>()
                                .await
                                .map(|v| v["version"].as_u64().unwrap_or(0))
                                .unwrap_or(0);
                            acked.fetch_max(v, Ordering::SeqCst);
                        }
                        _ => return,
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(150 + 70 * round)).await;
        brain.kill();
        let _ = writer.await;
        brain = Brain::start(&args).await;

        // A write whose COMMIT the killed brain had sent may still land after the new brain is
        // up (PostgreSQL finishes a commit whose client is gone). Head and history are two reads:
        // take them when the head read before and after agree, so both are of one state.
        let (head_url, history_url) = (
            format!("{}/api/v1/configs/{id}", brain.base),
            format!("{}/api/v1/configs/{id}/history", brain.base),
        );
        let mut stable = None;
        for _ in 0..100 {
            let head = get_json(&client, &head_url).await;
            let history = get_json(&client, &history_url).await;
            if get_json(&client, &head_url).await["version"] == head["version"] {
                stable = Some((head, history));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (head, history) = stable.expect("the head kept changing after the restart");
        let history = history.as_array().unwrap();
        let version = head["version"].as_u64().unwrap();
        let versions: Vec<u64> = history.iter().map(|r| r["version"].as_u64().unwrap()).collect();
        assert_eq!(versions, (1..=version).collect::<Vec<_>>(), "round {round}: history is not contiguous");
        assert_eq!(
            head["config"],
            history.last().unwrap()["config"],
            "round {round}: head and last revision disagree"
        );
        assert_eq!(head["appliedVersion"], head["version"], "round {round}: applied state torn");
        let acked_version = acked.load(Ordering::SeqCst);
        assert!(
            version >= acked_version,
            "round {round}: acknowledged write {acked_version} lost (found {version})"
        );
        assert!(version > 1, "round {round}: no write happened before the kill");
    }
    brain.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_survives_sigkill_mid_write() {
    let dir = tempfile::tempdir().unwrap();
    crash_rounds(vec!["--data-dir".into(), dir.path().display().to_string()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_survives_sigkill_mid_write() {
    let admin = std::env::var("FLOTILLA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("flotilla_crash_{}", std::process::id());
    let run = |sql: String| {
        let admin = admin.clone();
        async move {
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.unwrap();
            sqlx::query(&sql).execute(&mut c).await.unwrap();
        }
    };
    run(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    run(format!("CREATE DATABASE {name}")).await;
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    crash_rounds(vec!["--database-url".into(), url]).await;
    run(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
}
