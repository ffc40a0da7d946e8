//! The live proxy event stream: SSE on `GET /api/v1/events` and `StreamProxyEvents` on gRPC.
//! A real Envoy connects, is pushed its config and ACKs it; then a config Envoy itself rejects
//! (its listener's port is held by another socket, which validation cannot know) comes back as a
//! `nacked` event carrying Envoy's error. Filters narrow the stream. In the distributed shape
//! the events of a `flotilla-edge` reach the brain's stream over NATS.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use flotilla_proto::v1 as pb;
use flotilla_proto::v1::control_plane_service_client::ControlPlaneServiceClient;
use flotilla_shared::ResourceType;
use flotilla_tests::backend::Backend;
use flotilla_tests::brain::{TestBrain, example_config};
use flotilla_tests::envoy::{ApiType, Envoy, http_get};
use flotilla_tests::nats::NatsServer;
use flotilla_tests::xds_client::{Delta, Service, node};
use flotilla_tests::{free_port, wait_for};
use futures::StreamExt;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(30);

/// An SSE reader: yields (event name, JSON data) pairs.
struct Sse {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl Sse {
    async fn open(url: &str) -> Sse {
        let r = reqwest::get(url).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{url}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        Sse { body: Box::pin(r.bytes_stream()), buf: String::new() }
    }

    /// The next event, or `None` if none comes within `within`.
    async fn next(&mut self, within: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).unwrap_or(Value::String(data))));
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next()).await.ok()??.ok()?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads until an event matches `want`; panics (listing what came) if none does in time.
    async fn until(&mut self, what: &str, want: impl Fn(&str, &Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + CONVERGE;
        let mut seen = Vec::new();
        while tokio::time::Instant::now() < deadline {
            if let Some((name, data)) = self.next(Duration::from_millis(500)).await {
                if want(&name, &data) {
                    return data;
                }
                seen.push(format!("{name} {data}"));
            }
        }
        panic!("no {what} event; saw:\n{}", seen.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_connects_acks_and_nacks_on_the_event_stream() {
    let brain = TestBrain::start().await;
    let backend = Backend::start("1").await;
    let port = free_port();
    let r = brain.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[backend.addr])).await;
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    let mut sse = Sse::open(&brain.url("/api/v1/events?namespace=production")).await;
    let mut other = Sse::open(&brain.url("/api/v1/events?proxy=somebody-else")).await;
    let mut grpc =
        ControlPlaneServiceClient::new(flotilla_tests::xds_client::channel(brain.grpc_api_port).await)
            .stream_proxy_events(pb::StreamProxyEventsRequest {
                namespace: "production".into(),
                node_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();

    let _envoy =
        Envoy::start(brain.xds_port, "ev-envoy", "example-service", "production", ApiType::DeltaGrpc);
    let connected = sse.until("connected", |n, d| n == "connected" && d["nodeId"] == "ev-envoy").await;
    assert_eq!(connected["namespace"], "production");
    assert_eq!(connected["config"], "example-service");
    assert_eq!(connected["protocol"], "delta");
    sse.until("pushed lds", |n, d| n == "pushed" && d["type"] == "lds").await;
    sse.until("acked lds", |n, d| n == "acked" && d["type"] == "lds").await;
    wait_for("Envoy to route", CONVERGE, || http_get(port, "example.com", "/api/x")).await;

    // A listener on a port another socket holds: valid config, refused by Envoy (bind fails).
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let r = brain
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/configs/{id}?apply=true"),
            "application/yaml",
            example_config(taken, &[backend.addr]),
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let nack = sse.until("nacked lds", |n, d| n == "nacked" && d["type"] == "lds").await;
    let error = nack["error"].as_str().unwrap();
    assert!(error.contains(&taken.to_string()), "Envoy's own error message: {nack}");
    assert_eq!(nack["changeId"], request_id.as_str(), "the NACK names the change: {nack}");
    assert_eq!(nack["resources"][0], "http_listener", "{nack}");

    // The gRPC stream carried the same events.
    let mut grpc_nack = None;
    while grpc_nack.is_none() {
        let reply = tokio::time::timeout(CONVERGE, grpc.message()).await.unwrap().unwrap().unwrap();
        let e: Value = serde_json::from_str(&reply.event_json).unwrap_or(Value::Null);
        if e["event"] == "nacked" {
            grpc_nack = Some(e);
        }
    }
    assert_eq!(grpc_nack.unwrap()["error"], nack["error"]);
    // A stream narrowed to another proxy saw none of it.
    assert!(
        other.next(Duration::from_millis(300)).await.is_none(),
        "a filtered stream got another proxy's event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_edges_events_reach_the_brain_over_nats() {
    let nats = NatsServer::start().await;
    let brain = TestBrain::publishing_to(&nats.url()).await;
    let r = brain
        .post_yaml("/api/v1/configs?apply=true", &example_config(10_000, &["127.0.0.1:9".parse().unwrap()]))
        .await;
    assert_eq!(r.status().as_u16(), 201);
    let edge = flotilla_tests::edge::nats_edge(&nats.url(), "edge-ev").await;
    let mut sse = Sse::open(&brain.url("/api/v1/events")).await;
    // The edge publishes once it has heard the brain's heartbeat (within a second of a watcher):
    // connect proxies until one's connect comes through.
    let mut clients = Vec::new();
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let event = loop {
        assert!(tokio::time::Instant::now() < deadline, "no event from the remote edge");
        let c = Delta::open(edge.xds_addr.port(), Service::Ads).await;
        c.send(DeltaDiscoveryRequest {
            node: Some(node(&format!("remote-{}", clients.len()), "example-service", "production")),
            type_url: ResourceType::Cluster.type_url().into(),
            ..Default::default()
        })
        .await;
        clients.push(c);
        if let Some((_, data)) = sse.next(Duration::from_millis(500)).await
            && data["edge"] == "edge-ev"
        {
            break data;
        }
    };
    assert!(event["nodeId"].as_str().unwrap().starts_with("remote-"), "{event}");
    assert_eq!(event["namespace"], "production");
}
