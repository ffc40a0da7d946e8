//! A fake Kubernetes API server: no API server exists on this machine, so tests run this
//! stand-in of the parts the `kubernetes` discovery source uses, built from the documented wire
//! format (API concepts: "Efficient detection of changes", "Watch bookmarks", "410 Gone
//! responses"; the discovery.k8s.io/v1 EndpointSlice and core/v1 Pod schemas) and driven through
//! the real kube-rs client:
//!
//! - `GET /apis/discovery.k8s.io/v1[/namespaces/{ns}]/endpointslices` and
//!   `GET /api/v1[/namespaces/{ns}]/pods`: a list (`{kind: EndpointSliceList, metadata:
//!   {resourceVersion}, items}`), honouring `labelSelector` (`key`, `key=value`); Pods as
//!   `PartialObjectMetadataList` when the `Accept` header asks for it (as kube's metadata API
//!   does);
//! - with `?watch=true&resourceVersion=N`: a chunked stream of JSON lines, one watch event each
//!   (`ADDED`, `MODIFIED`, `DELETED` after N, then live), `BOOKMARK`s every 500 ms when
//!   `allowWatchBookmarks=true`, ending at `timeoutSeconds`; a resourceVersion older than the
//!   compacted history answers an `ERROR` event carrying a `410` `Expired` Status, as the real
//!   server does, so the client relists.
//!
//! - Leases for leader election (`crate::kube_lease`).
//!
//! It can also fail on purpose (HTTP 500 Status, or a body that is not JSON), drop every open
//! watch, compact its history, and records the requests it answered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::watch;

pub use crate::consul::Mode;

/// One pod behind a service.
#[derive(Debug, Clone)]
pub struct FakePod {
    pub name: String,
    pub ip: String,
    pub ready: bool,
    /// Being deleted (still serving): an endpoint that drains.
    pub terminating: bool,
    pub labels: BTreeMap<String, String>,
}

impl FakePod {
    /// A ready pod with label `track: stable`.
    pub fn ready(name: &str, ip: &str) -> FakePod {
        FakePod {
            name: name.into(),
            ip: ip.into(),
            ready: true,
            terminating: false,
            labels: [("track".to_string(), "stable".to_string())].into(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Slice,
    Pod,
}

struct Change {
    rv: u64,
    kind: Kind,
    kind_of_event: &'static str,
    namespace: String,
    object: Value,
}

struct Inner {
    rv: u64,
    /// Oldest resourceVersion a watch may resume from; older ones get 410 Gone.
    compacted: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    history: Vec<Change>,
    mode: Mode,
    requests: Vec<String>,
}

#[derive(Clone)]
struct Fake {
    inner: Arc<Mutex<Inner>>,
    /// Bumped on every change (wakes watches).
    changed: watch::Sender<u64>,
    /// Bumped to drop every open watch.
    dropped: watch::Sender<u64>,
}

/// A running fake API server on 127.0.0.1, with a kubeconfig pointing at it.
pub struct FakeKube {
    pub url: String,
    pub kubeconfig: std::path::PathBuf,
    /// Leases (coordination.k8s.io/v1), for leader election.
    pub leases: crate::kube_lease::Leases,
    fake: Fake,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
        self.fake.dropped.send_modify(|n| *n += 1);
    }
}

impl FakeKube {
    pub async fn start() -> FakeKube {
        let leases = crate::kube_lease::Leases::default();
        let fake = Fake {
            inner: Arc::new(Mutex::new(Inner {
                rv: 100,
                compacted: 0,
                objects: BTreeMap::new(),
                history: Vec::new(),
                mode: Mode::Normal,
                requests: Vec::new(),
            })),
            changed: watch::channel(0).0,
            dropped: watch::channel(0).0,
        };
        let app = Router::new()
            .route(
                "/apis/discovery.k8s.io/v1/endpointslices",
                get(|s, q, h, u| answer(Kind::Slice, None, s, q, h, u)),
            )
            .route(
                "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                get(|Path(ns): Path<String>, s, q, h, u| answer(Kind::Slice, Some(ns), s, q, h, u)),
            )
            .route("/api/v1/pods", get(|s, q, h, u| answer(Kind::Pod, None, s, q, h, u)))
            .route(
                "/api/v1/namespaces/{ns}/pods",
                get(|Path(ns): Path<String>, s, q, h, u| answer(Kind::Pod, Some(ns), s, q, h, u)),
            )
            .with_state(fake.clone())
            .merge(leases.router());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake Kubernetes");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{url}\"}}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake}}\ncurrent-context: fake\n"
            ),
        )
        .expect("write kubeconfig");
        FakeKube { url, kubeconfig, fake, leases, task, _dir: dir }
    }

    /// Makes `service` in `namespace` have exactly `pods` on `port` (named `http`): the pods and
    /// one EndpointSlice are created, changed or deleted as a controller would.
    pub fn set_service(&self, namespace: &str, service: &str, port: u16, pods: &[FakePod]) {
        let mut inner = self.fake.inner.lock().expect("fake lock");
        let wanted: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
        let owned: Vec<String> = inner
            .objects
            .iter()
            .filter(|((k, ns, _), o)| {
                *k == Kind::Pod && ns == namespace && o["metadata"]["labels"]["app"] == service
            })
            .map(|((_, _, n), _)| n.clone())
            .collect();
        for gone in owned.iter().filter(|n| !wanted.contains(n)) {
            inner.delete(Kind::Pod, namespace, gone);
        }
        for p in pods {
            let mut labels = p.labels.clone();
            labels.insert("app".into(), service.into());
            inner.put(
                Kind::Pod,
                namespace,
                &p.name,
                json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": p.name, "namespace": namespace, "labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "app:1"}]},
                    "status": {"podIP": p.ip, "phase": "Running"}
                }),
            );
        }
        let endpoints: Vec<Value> = pods
            .iter()
            .map(|p| {
                json!({
                    "addresses": [p.ip],
                    "conditions": {"ready": p.ready && !p.terminating, "serving": p.ready, "terminating": p.terminating},
                    "zone": "zone-a",
                    "targetRef": {"kind": "Pod", "name": p.name, "namespace": namespace}
                })
            })
            .collect();
        let slice = format!("{service}-x7k2p");
        inner.put(
            Kind::Slice,
            namespace,
            &slice,
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": slice, "namespace": namespace,
                             "labels": {"kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                "endpoints": endpoints
            }),
        );
        drop(inner);
        self.fake.changed.send_modify(|n| *n += 1);
    }

    /// Deletes `service`'s slice and pods.
    pub fn delete_service(&self, namespace: &str, service: &str) {
        self.set_service(namespace, service, 1, &[]);
        let mut inner = self.fake.inner.lock().expect("fake lock");
        inner.delete(Kind::Slice, namespace, &format!("{service}-x7k2p"));
        drop(inner);
        self.fake.changed.send_modify(|n| *n += 1);
    }

    pub fn set_mode(&self, mode: Mode) {
        self.fake.inner.lock().expect("fake lock").mode = mode;
        // Open watches end, so the client's next request meets the new mode.
        self.fake.dropped.send_modify(|n| *n += 1);
    }

    /// Compacts the history (every resourceVersion handed out so far becomes too old) and drops
    /// every open watch: resuming answers 410 Gone and the client must relist.
    pub fn compact(&self) {
        let mut inner = self.fake.inner.lock().expect("fake lock");
        inner.rv += 1;
        inner.compacted = inner.rv + 1;
        inner.history.clear();
        // Under the lock: no open watch reads (or bookmarks) anything past this point.
        self.fake.dropped.send_modify(|n| *n += 1);
        drop(inner);
    }

    /// Every request answered so far: `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.fake.inner.lock().expect("fake lock").requests.clone()
    }
}

impl Inner {
    fn put(&mut self, kind: Kind, ns: &str, name: &str, mut object: Value) {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        object["metadata"]["uid"] = json!(format!("uid-{ns}-{name}"));
        let key = (kind, ns.to_string(), name.to_string());
        let kind_of_event = if self.objects.contains_key(&key) { "MODIFIED" } else { "ADDED" };
        self.objects.insert(key, object.clone());
        self.history.push(Change { rv: self.rv, kind, kind_of_event, namespace: ns.into(), object });
    }

    fn delete(&mut self, kind: Kind, ns: &str, name: &str) {
        if let Some(mut object) = self.objects.remove(&(kind, ns.to_string(), name.to_string())) {
            self.rv += 1;
            object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.history.push(Change {
                rv: self.rv,
                kind,
                kind_of_event: "DELETED",
                namespace: ns.into(),
                object,
            });
        }
    }
}

fn selected(object: &Value, selector: Option<&str>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else { return true };
    selector.split(',').all(|term| {
        let labels = &object["metadata"]["labels"];
        match term.split_once('=') {
            Some((k, v)) => labels[k.trim_end_matches('=')] == v,
            None => !labels[term].is_null(),
        }
    })
}

/// Pods as `PartialObjectMetadata` when the client asked for metadata only.
fn shaped(kind: Kind, metadata_only: bool, object: &Value) -> Value {
    if kind == Kind::Pod && metadata_only {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": object["metadata"]})
    } else {
        object.clone()
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

async fn answer(
    kind: Kind,
    ns: Option<String>,
    State(f): State<Fake>,
    Query(q): Query<BTreeMap<String, String>>,
    h: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let metadata_only =
        h.get("accept").and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let mode = {
        let mut inner = f.inner.lock().expect("fake lock");
        inner.requests.push(uri.to_string());
        inner.mode
    };
    match mode {
        Mode::ServerError => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(status(500, "InternalError", "etcd unavailable")),
            )
                .into_response();
        }
        // What a misconfigured proxy in front of the API server answers: a list that cannot be
        // read, a watch event that cannot be either. (A line cut short mid-JSON is not used:
        // kube-rs takes it for the end of the stream and watches again at once.)
        Mode::Garbage => {
            return (StatusCode::OK, "<html><body>502 Bad Gateway</body></html>\n").into_response();
        }
        Mode::Normal => {}
    }
    let selector = q.get("labelSelector").map(String::as_str);
    let in_scope = |object_ns: &str| ns.as_deref().is_none_or(|n| n == object_ns);
    let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    if !watching {
        let inner = f.inner.lock().expect("fake lock");
        let items: Vec<Value> = inner
            .objects
            .iter()
            .filter(|((k, ons, _), o)| *k == kind && in_scope(ons) && selected(o, selector))
            .map(|(_, o)| shaped(kind, metadata_only, o))
            .map(|mut o| {
                // Items of a list carry no apiVersion/kind of their own.
                if let Some(m) = o.as_object_mut() {
                    m.remove("apiVersion");
                    m.remove("kind");
                }
                o
            })
            .collect();
        let (api_version, list_kind) = match (kind, metadata_only) {
            (Kind::Slice, _) => ("discovery.k8s.io/v1", "EndpointSliceList"),
            (Kind::Pod, true) => ("meta.k8s.io/v1", "PartialObjectMetadataList"),
            (Kind::Pod, false) => ("v1", "PodList"),
        };
        return axum::Json(json!({
            "apiVersion": api_version, "kind": list_kind,
            "metadata": {"resourceVersion": inner.rv.to_string()},
            "items": items
        }))
        .into_response();
    }
    let from: u64 = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = Duration::from_secs(q.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(290));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(64);
    let selector = selector.map(str::to_string);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = f.changed.subscribe();
        let mut dropped = f.dropped.subscribe();
        dropped.borrow_and_update();
        let mut sent = from;
        let compacted = f.inner.lock().expect("fake lock").compacted;
        if from < compacted {
            let gone = status(410, "Expired", &format!("too old resource version: {from} ({compacted})"));
            let _ = tx.send(Ok(format!("{}\n", json!({"type": "ERROR", "object": gone})))).await;
            return;
        }
        let mut bookmark = tokio::time::interval(Duration::from_millis(500));
        loop {
            let lines: Vec<String> = {
                let inner = f.inner.lock().expect("fake lock");
                if dropped.has_changed().unwrap_or(true) {
                    return;
                }
                let lines = inner
                    .history
                    .iter()
                    .filter(|c| {
                        c.rv > sent && c.kind == kind && (ns.as_deref().is_none_or(|n| n == c.namespace))
                    })
                    .filter(|c| selected(&c.object, selector.as_deref()))
                    .map(|c| {
                        format!(
                            "{}\n",
                            json!({"type": c.kind_of_event, "object": shaped(kind, metadata_only, &c.object)})
                        )
                    })
                    .collect();
                sent = inner.rv;
                lines
            };
            for l in lines {
                if tx.send(Ok(l)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = dropped.changed() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = bookmark.tick(), if bookmarks => {
                    if dropped.has_changed().unwrap_or(true) {
                        return;
                    }
                    let (api_version, k) = match kind {
                        Kind::Slice => ("discovery.k8s.io/v1", "EndpointSlice"),
                        Kind::Pod if metadata_only => ("meta.k8s.io/v1", "PartialObjectMetadata"),
                        Kind::Pod => ("v1", "Pod"),
                    };
                    let mark = json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": k,
                                      "metadata": {"resourceVersion": sent.to_string()}}});
                    if tx.send(Ok(format!("{mark}\n"))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
