//! What one write costs on each configuration store (issue 31): an update of a config, committed
//! with its revision and history diff, on the embedded store (redb, fsync), a real PostgreSQL
//! (a fresh database on `FLOTILLA_TEST_DATABASE_URL`, default the machine's 127.0.0.1:5432), a
//! real Redis (a private `redis-server` with its append-only file, `appendfsync always` and
//! `everysec`) and a real etcd (a private single-member cluster). Two sizes: the documentation's example config (a few KB) and 100 clusters × 100
//! endpoints (~0.4 MB of JSON per head and per revision). A store that is not reachable is
//! skipped with a line saying so.
//!
//! `cargo bench -p flotilla-brain --bench store_write`

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use flotilla_brain::model::ProxyConfig;
use flotilla_brain::parse::{Format, parse_config};
use flotilla_brain::store::{EmbeddedStore, EtcdStore, PostgresStore, RedisStore, Store, Write, Written};
use flotilla_test_support::free_port;

const EXAMPLE: &str = include_str!("../../docs/examples/example-service.yaml");

/// A config of `clusters` STATIC clusters × `endpoints` endpoints; `port` varies one endpoint.
fn large(clusters: usize, endpoints: usize, port: u16) -> ProxyConfig {
    let mut y = String::from(
        "apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: large, namespace: bench}\nspec:\n  clusters:\n",
    );
    for c in 0..clusters {
        y.push_str(&format!("  - name: c{c}\n    type: STATIC\n    endpoints:\n"));
        for e in 0..endpoints {
            let p = if c == 0 && e == 0 { port } else { 8080 };
            y.push_str(&format!("    - {{address: 10.{}.{}.{}, port: {p}}}\n", c % 256, e / 256, e % 256));
        }
    }
    parse_config(y.as_bytes(), Format::Yaml).expect("large config")
}

/// Two versions of the example config (one label differs).
fn small(i: u16) -> ProxyConfig {
    let mut cfg = parse_config(EXAMPLE.as_bytes(), Format::Yaml).expect("example config");
    cfg.metadata.labels.insert("rev".into(), i.to_string());
    cfg
}

/// A server process and its data directory (kept until the server is stopped).
/// A private single-member etcd on free ports; its URL.
fn etcd_server() -> Option<(RedisServer, String)> {
    let dir = tempfile::tempdir().ok()?;
    let (port, peer) = (free_port(), free_port());
    let child = flotilla_test_support::etcd_command(dir.path(), &format!("http://127.0.0.1:{port}"), peer)
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(1500));
    Some((RedisServer(child, dir), format!("etcd://127.0.0.1:{port}")))
}

struct RedisServer(Child, #[allow(dead_code, reason = "held for its Drop")] tempfile::TempDir);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server(fsync: &str) -> Option<(RedisServer, String)> {
    let dir = tempfile::tempdir().ok()?;
    let port = free_port();
    let bin = std::env::var("FLOTILLA_REDIS_BIN").unwrap_or_else(|_| "redis-server".into());
    let child = Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
        .args(["--appendfsync", fsync, "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(300));
    Some((RedisServer(child, dir), format!("redis://127.0.0.1:{port}/")))
}

fn bench_store(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, store: Arc<dyn Store>) {
    let mut group = c.benchmark_group(format!("store_write/{name}"));
    for (size, versions) in
        [("example", [small(1), small(2)]), ("100x100", [large(100, 100, 9000), large(100, 100, 9001)])]
    {
        let created =
            rt.block_on(store.write(Write::Create { config: versions[0].clone(), apply: true }, "bench"));
        let id = match created {
            Ok(Written::Record(r)) => r.id,
            other => {
                println!("store_write/{name}: create failed: {other:?}");
                return;
            }
        };
        let mut n = 0usize;
        group.bench_function(size, |b| {
            b.iter(|| {
                n += 1;
                let w = Write::Update {
                    id,
                    config: versions[n % 2].clone(),
                    expected_version: None,
                    apply: true,
                    action: "update",
                };
                rt.block_on(store.write(w, "bench")).expect("update")
            })
        });
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    bench_store(c, &rt, "embedded", Arc::new(EmbeddedStore::open(dir.path()).expect("embedded store")));

    let admin = std::env::var("FLOTILLA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let db = format!("flotilla_bench_{}", uuid::Uuid::now_v7().simple());
    let created = rt.block_on(async {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await?;
        sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut conn).await
    });
    match created {
        Ok(_) => {
            let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
            match rt.block_on(PostgresStore::connect(&format!("{base}/{db}"), 4)) {
                Ok(pg) => bench_store(c, &rt, "postgres", Arc::new(pg)),
                Err(e) => println!("store_write/postgres: skipped ({e})"),
            }
            let _ = rt.block_on(async {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut conn).await
            });
        }
        Err(e) => println!("store_write/postgres: skipped, no PostgreSQL at {admin} ({e})"),
    }

    for fsync in ["always", "everysec"] {
        let Some((_server, url)) = redis_server(fsync) else {
            println!("store_write/redis: skipped, redis-server did not start");
            continue;
        };
        match rt.block_on(RedisStore::connect(&url, false)) {
            Ok(r) => bench_store(c, &rt, &format!("redis_aof_{fsync}"), Arc::new(r)),
            Err(e) => println!("store_write/redis: skipped ({e})"),
        }
    }

    match etcd_server() {
        Some((_server, url)) => match rt.block_on(EtcdStore::connect(&url)) {
            Ok(e) => bench_store(c, &rt, "etcd", Arc::new(e)),
            Err(e) => println!("store_write/etcd: skipped ({e})"),
        },
        None => println!("store_write/etcd: skipped, etcd did not start"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
