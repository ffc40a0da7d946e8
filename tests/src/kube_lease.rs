//! Leases (coordination.k8s.io/v1) on the fake Kubernetes API: no API server exists here, so
//! this serves the parts a leader election uses, from the documented wire format — `GET`,
//! `POST` (create; `409 AlreadyExists` if it exists), `PUT` (replace, conditional on
//! `metadata.resourceVersion`: `409 Conflict` when it is not the stored one, as the real server's
//! optimistic concurrency), `DELETE`, and list with `labelSelector=key=value`; a missing object is
//! a `404 NotFound` Status. Every write gets a new resourceVersion.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// The last resourceVersion given out, and every Lease by (namespace, name).
type Stored = (u64, BTreeMap<(String, String), Value>);

#[derive(Clone, Default)]
pub struct Leases {
    inner: Arc<Mutex<Stored>>,
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    (code, Json(body)).into_response()
}

impl Leases {
    /// The Lease `namespace/name` as stored, if any.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Value> {
        let inner = self.inner.lock().expect("lease lock");
        inner.1.get(&(namespace.to_string(), name.to_string())).cloned()
    }

    /// The routes, to merge into the fake API server.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases", get(list).post(create))
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(read).put(replace).delete(remove),
            )
            .with_state(self.clone())
    }

    fn store(&self, ns: &str, name: &str, mut obj: Value) -> Value {
        let mut inner = self.inner.lock().expect("lease lock");
        inner.0 += 1;
        obj["apiVersion"] = json!("coordination.k8s.io/v1");
        obj["kind"] = json!("Lease");
        obj["metadata"]["namespace"] = json!(ns);
        obj["metadata"]["name"] = json!(name);
        obj["metadata"]["resourceVersion"] = json!(inner.0.to_string());
        inner.1.insert((ns.to_string(), name.to_string()), obj.clone());
        obj
    }
}

async fn read(State(l): State<Leases>, Path((ns, name)): Path<(String, String)>) -> Response {
    match l.get(&ns, &name) {
        Some(v) => Json(v).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("leases.coordination.k8s.io \"{name}\" not found"),
        ),
    }
}

async fn create(State(l): State<Leases>, Path(ns): Path<String>, Json(obj): Json<Value>) -> Response {
    let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) else {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "metadata.name: Required value".into());
    };
    if l.get(&ns, &name).is_some() {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("leases.coordination.k8s.io \"{name}\" already exists"),
        );
    }
    (StatusCode::CREATED, Json(l.store(&ns, &name, obj))).into_response()
}

async fn replace(
    State(l): State<Leases>,
    Path((ns, name)): Path<(String, String)>,
    Json(obj): Json<Value>,
) -> Response {
    let Some(current) = l.get(&ns, &name) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("leases.coordination.k8s.io \"{name}\" not found"),
        );
    };
    let sent = obj["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
    if sent != current["metadata"]["resourceVersion"].as_str().unwrap_or_default() {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    Json(l.store(&ns, &name, obj)).into_response()
}

async fn remove(State(l): State<Leases>, Path((ns, name)): Path<(String, String)>) -> Response {
    let removed = l.inner.lock().expect("lease lock").1.remove(&(ns, name.clone()));
    match removed {
        Some(_) => Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("leases.coordination.k8s.io \"{name}\" not found"),
        ),
    }
}

async fn list(
    State(l): State<Leases>,
    Path(ns): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let inner = l.inner.lock().expect("lease lock");
    let selector = q.get("labelSelector").and_then(|s| s.split_once('='));
    let items: Vec<Value> = inner
        .1
        .iter()
        .filter(|((n, _), _)| *n == ns)
        .map(|(_, v)| v.clone())
        .filter(|v| selector.is_none_or(|(k, val)| v["metadata"]["labels"][k] == val))
        .collect();
    Json(json!({"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
        "metadata": {"resourceVersion": inner.0.to_string()}, "items": items}))
    .into_response()
}
