//! A rolling restart of every process under real-Envoy traffic: two `flotilla-brain --ha`
//! processes on one PostgreSQL, two edges, two Envoys connected to both edges, requests flowing
//! the whole time. Each edge is drained (its streams closed over a window; the Envoys reconnect
//! to the other) and replaced on the same port; each brain is stopped with SIGTERM (the leader
//! gives its lease up, the other takes over) and started again. Writes keep working through
//! either brain (a follower redirects), the last change reaches the Envoys, no request fails and
//! no Envoy ever removes its listener. (Restarting each process in turn with its drain logic is
//! what the issue asks; two binary versions are not needed.)

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::Duration;

use flotilla_tests::backend::Backend;
use flotilla_tests::brain::example_config;
use flotilla_tests::edge::{nats_edge, nats_edge_on};
use flotilla_tests::envoy::{ApiType, Envoy, http_get};
use flotilla_tests::nats::NatsServer;
use flotilla_tests::pg::TempDatabase;
use flotilla_tests::process::{Process, distributed_brain_args, workspace_bin};
use flotilla_tests::{free_port, wait_for};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(30);

fn brain(db: &TempDatabase, nats: &NatsServer, rest: u16) -> Process {
    let mut args = distributed_brain_args(&nats.url(), rest);
    let base = format!("http://127.0.0.1:{rest}");
    args.extend(["--ha".into(), "--database-url".into(), db.url.clone(), "--advertise-url".into(), base]);
    Process::start(&workspace_bin("flotilla-brain"), &args)
}

async fn ready(rest: u16) {
    wait_for("a brain to be ready", CONVERGE, || async {
        let r = reqwest::get(format!("http://127.0.0.1:{rest}/ready")).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

/// Writes the config through the brain on `rest` (following a follower's redirect).
async fn put(rest: u16, id: &str, yaml: String) {
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{rest}/api/v1/configs/{id}?apply=true");
    wait_for("a write to be accepted", CONVERGE, || {
        let (http, url, yaml) = (http.clone(), url.clone(), yaml.clone());
        async move {
            let r = http.put(url).header("content-type", "application/yaml").body(yaml).send().await.ok()?;
            (r.status().as_u16() == 200).then_some(())
        }
    })
    .await;
}

/// Waits for a process told to stop to exit.
async fn exit(p: &mut Process) {
    let start = std::time::Instant::now();
    while !p.exited() {
        assert!(start.elapsed() < CONVERGE, "a brain did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_restarted_in_turn_under_traffic_loses_no_request() {
    let db = TempDatabase::create("flotilla_roll").await;
    let nats = NatsServer::start().await;
    let (b1, b2, b3) = (Backend::start("1").await, Backend::start("2").await, Backend::start("3").await);
    let (rest_a, rest_b) = (free_port(), free_port());
    let mut a = brain(&db, &nats, rest_a);
    ready(rest_a).await;
    let mut b = brain(&db, &nats, rest_b);
    ready(rest_b).await;
    let port = free_port();
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{rest_a}/api/v1/configs?apply=true"))
        .header("content-type", "application/yaml")
        .body(example_config(port, &[b1.addr]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    let mut edges = vec![nats_edge(&nats.url(), "roll-1").await, nats_edge(&nats.url(), "roll-2").await];
    let addrs: Vec<std::net::SocketAddr> = edges.iter().map(|e| e.xds_addr).collect();
    let ports: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
    let envoys: Vec<Envoy> = (0..2)
        .map(|i| {
            Envoy::start_multi(
                &ports,
                &format!("roll-{i}"),
                "example-service",
                "production",
                ApiType::DeltaGrpc,
            )
        })
        .collect();
    wait_for("the Envoys served", CONVERGE, || async {
        http_get(port, "example.com", "/api/x").await.filter(|b| b == "backend 1")
    })
    .await;

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(async move {
        let mut results = Vec::new();
        while !*stop.borrow() {
            results.push(http_get(port, "example.com", "/api/x").await);
        }
        results
    });

    // Edges, one at a time: drain (streams close over the window), then a new one on its port.
    for (i, addr) in addrs.iter().enumerate() {
        let old = edges.remove(i);
        old.drain(Duration::from_millis(500)).await;
        edges.insert(i, nats_edge_on(&nats.url(), &format!("roll-{}-new", i + 1), *addr).await);
        wait_for("both Envoys connected again", CONVERGE, || async {
            (edges.iter().map(|e| e.registry.streams().len()).sum::<usize>() >= 2).then_some(())
        })
        .await;
    }
    put(rest_b, &id, example_config(port, &[b2.addr])).await;
    wait_for("the change after the edges' restart", CONVERGE, || async {
        http_get(port, "example.com", "/api/x").await.filter(|b| b == "backend 2")
    })
    .await;

    // Brains, one at a time: SIGTERM (a leader hands its lease over), then start it again.
    a.signal("TERM");
    exit(&mut a).await;
    a = brain(&db, &nats, rest_a);
    ready(rest_a).await;
    b.signal("TERM");
    exit(&mut b).await;
    b = brain(&db, &nats, rest_b);
    ready(rest_b).await;
    put(rest_b, &id, example_config(port, &[b3.addr])).await;
    wait_for("the change after the brains' restart", CONVERGE, || async {
        http_get(port, "example.com", "/api/x").await.filter(|b| b == "backend 3")
    })
    .await;

    stop_tx.send_replace(true);
    let results = load.await.unwrap();
    let failed = results.iter().filter(|r| r.is_none()).count();
    eprintln!("rolling restart: {} requests, {failed} failed", results.len());
    assert!(results.len() > 50, "too little traffic to judge: {}", results.len());
    assert_eq!(failed, 0, "{failed} of {} requests failed during the rolling restart", results.len());
    for e in &envoys {
        assert_eq!(e.counter("listener_manager.listener_removed").await, 0, "an Envoy removed its listener");
    }
    drop((a, b));
    db.drop_now().await;
}
