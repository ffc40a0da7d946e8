//! A fake Consul agent: no Consul server exists on this machine, so tests run this faithful
//! stand-in of the parts of its HTTP API the `consul` discovery source uses, built from
//! Consul's documented wire format: `GET /v1/catalog/services`, `GET /v1/health/service/{name}`
//! and `GET /v1/health/state/any`, each a blocking query (`?index=N&wait=Ns` waits until the
//! state's index passes N or the wait runs out) answering `X-Consul-Index`. Entries use
//! Consul's PascalCase JSON (`Node`, `Service`, `Checks`, `Weights.Passing`, ...). It can also
//! fail on purpose: HTTP 500, or a body that is not JSON. With ACLs on it refuses requests
//! without the token (403 "ACL not found"); `?dc=` answers for dc1 and dc2 (else 500 "No path to
//! datacenter"); `?tag=` filters a service's instances.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::watch;

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    ServerError,
    Garbage,
}

/// One registered instance.
#[derive(Debug, Clone)]
pub struct Instance {
    pub addr: SocketAddr,
    /// "passing", "warning" or "critical".
    pub status: &'static str,
    pub tags: Vec<&'static str>,
}

#[derive(Default)]
struct Inner {
    services: BTreeMap<String, Vec<Instance>>,
    mode: Option<Mode>,
    /// With ACLs on: the token every request must carry in `X-Consul-Token`.
    token: Option<String>,
    /// Requests refused for a missing or wrong token.
    denied: usize,
}

#[derive(Clone)]
struct Fake {
    inner: Arc<Mutex<Inner>>,
    index: watch::Sender<u64>,
}

/// A running fake agent on 127.0.0.1.
pub struct FakeConsul {
    pub url: String,
    fake: Fake,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeConsul {
    pub async fn start() -> FakeConsul {
        let fake = Fake { inner: Arc::default(), index: watch::channel(1).0 };
        let app = Router::new()
            .route("/v1/catalog/services", get(catalog))
            .route("/v1/health/service/{name}", get(health))
            .route("/v1/health/state/any", get(checks))
            .layer(axum::middleware::from_fn_with_state(fake.clone(), refused))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeConsul { url: format!("http://{addr}"), fake, task }
    }

    /// Registers (or replaces) `service`'s instances; blocked queries return.
    pub fn set(&self, service: &str, instances: Vec<Instance>) {
        if let Ok(mut i) = self.fake.inner.lock() {
            i.services.insert(service.to_string(), instances);
        }
        self.fake.index.send_modify(|n| *n += 1);
    }

    /// Turns ACLs on: a request without this token gets 403 "ACL not found", as Consul answers.
    pub fn require_token(&self, token: &str) {
        if let Ok(mut i) = self.fake.inner.lock() {
            i.token = Some(token.to_string());
        }
    }

    /// Requests refused for their token so far.
    pub fn denied(&self) -> usize {
        self.fake.inner.lock().map(|i| i.denied).unwrap_or(0)
    }

    pub fn mode(&self, mode: Mode) {
        if let Ok(mut i) = self.fake.inner.lock() {
            i.mode = Some(mode);
        }
        self.fake.index.send_modify(|n| *n += 1);
    }
}

/// Waits as a blocking query does: until the index passes `index`, or `wait` (at most 5 s here,
/// so a test's teardown is quick).
async fn block(fake: &Fake, q: &BTreeMap<String, String>) -> u64 {
    let index: u64 = q.get("index").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut rx = fake.index.subscribe();
    let wait = q
        .get("wait")
        .and_then(|w| w.trim_end_matches('s').parse::<u64>().ok())
        .map_or(Duration::ZERO, |s| Duration::from_secs(s.min(5)));
    if *rx.borrow() <= index {
        let _ = tokio::time::timeout(wait, rx.wait_for(|n| *n > index)).await;
    }
    *rx.borrow()
}

/// Consul's refusals before any answer: a missing/wrong ACL token (403), an unknown datacenter
/// (500 "No path to datacenter"; this agent is in dc1 and knows dc2).
/// Runs before every route.
async fn refused(
    State(fake): State<Fake>,
    Query(q): Query<BTreeMap<String, String>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    {
        let Ok(mut i) = fake.inner.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
        let sent = req.headers().get("x-consul-token").and_then(|v| v.to_str().ok());
        if let Some(t) = &i.token
            && sent != Some(t.as_str())
        {
            i.denied += 1;
            return (StatusCode::FORBIDDEN, "ACL not found").into_response();
        }
    }
    match q.get("dc").map(String::as_str) {
        None | Some("dc1" | "dc2") => next.run(req).await,
        Some(_) => (StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter").into_response(),
    }
}

fn answer(fake: &Fake, index: u64, body: Value) -> Response {
    let mode = fake.inner.lock().ok().and_then(|i| i.mode).unwrap_or(Mode::Normal);
    let mut headers = HeaderMap::new();
    headers.insert("x-consul-index", HeaderValue::from(index));
    match mode {
        Mode::Normal => (headers, axum::Json(body)).into_response(),
        Mode::ServerError => {
            (StatusCode::INTERNAL_SERVER_ERROR, "rpc error: No cluster leader").into_response()
        }
        Mode::Garbage => (headers, "{\"Node\": [oops").into_response(),
    }
}

async fn catalog(State(fake): State<Fake>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let index = block(&fake, &q).await;
    let body: Value = fake
        .inner
        .lock()
        .map(|i| {
            let mut m = serde_json::Map::new();
            m.insert("consul".into(), json!([]));
            for (name, inst) in &i.services {
                let tags: Vec<&str> = inst.iter().flat_map(|x| x.tags.iter().copied()).collect();
                m.insert(name.clone(), json!(tags));
            }
            Value::Object(m)
        })
        .unwrap_or(Value::Null);
    answer(&fake, index, body)
}

async fn health(
    State(fake): State<Fake>,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let index = block(&fake, &q).await;
    let dc = q.get("dc").cloned().unwrap_or_else(|| "dc1".into());
    // `?tag=T` keeps the instances tagged T (one tag; Consul's filter).
    let tag = q.get("tag").cloned();
    let entries: Vec<Value> = fake
        .inner
        .lock()
        .map(|i| {
            i.services
                .get(&name)
                .into_iter()
                .flatten()
                .filter(|x| tag.as_deref().is_none_or(|t| x.tags.contains(&t)))
                .enumerate()
                .map(|(n, x)| {
                    json!({
                        "Node": {"Node": format!("node-{n}"), "Address": x.addr.ip().to_string(), "Datacenter": dc, "Meta": {"zone": "z1"}},
                        "Service": {"ID": format!("{name}-{n}"), "Service": name, "Address": "", "Port": x.addr.port(),
                                    "Tags": x.tags, "Meta": {}, "Weights": {"Passing": 1, "Warning": 1}},
                        "Checks": [{"CheckID": "serfHealth", "Status": "passing"}, {"CheckID": format!("service:{name}-{n}"), "Status": x.status}]
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    answer(&fake, index, Value::Array(entries))
}

async fn checks(State(fake): State<Fake>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let index = block(&fake, &q).await;
    answer(&fake, index, json!([]))
}
