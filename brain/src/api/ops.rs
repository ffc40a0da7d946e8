//! Liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;

use super::{ApiError, ApiState};
use crate::manage::Caller;

#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "The process is up", body = String)))]
pub async fn health() -> &'static str {
    "ok"
}

/// Ready once every applied config has been loaded and published. A discovery source that is
/// failing does not make the brain unready (it serves the last known endpoints); it is named on
/// a line of its own after `ready`. So is an unreachable store: proxies keep their config and
/// reads are served from memory, but writes are refused until it answers again.
#[utoipa::path(get, path = "/ready", tag = "operations", responses((status = 200, description = "Every applied config is loaded and published; then a line if the store is unreachable and one per failing discovery source", body = String), (status = 503, description = "Still loading", body = String)))]
pub async fn ready(State(st): State<ApiState>) -> impl IntoResponse {
    if !*st.ready.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "loading configs".to_string());
    }
    let mut body = "ready".to_string();
    let leadership = st.manage.service.leadership();
    if leadership.elected() {
        match leadership.role() {
            crate::ha::Role::Leader { epoch } => body.push_str(&format!("\nrole: leader (epoch {epoch})")),
            crate::ha::Role::Follower { leader } => body.push_str(&format!(
                "\nrole: follower (writes go to {})",
                leader.as_deref().unwrap_or("the leader, once elected")
            )),
        }
    }
    let store = st.manage.service.store_health().status();
    if !store.healthy {
        body.push_str(&format!(
            "\nstore unavailable since {}: writes are refused, reads are served from memory: {}",
            store.since.map(|t| t.to_rfc3339()).unwrap_or_default(),
            store.error.unwrap_or_default()
        ));
    }
    for s in st.manage.service.discovery().statuses().into_iter().filter(|s| !s.healthy) {
        let why = s.error.unwrap_or_default();
        body.push_str(&format!(
            "\ndiscovery source {} ({}) unhealthy, serving its last known endpoints: {why}",
            s.name,
            s.kind.as_str()
        ));
    }
    (StatusCode::OK, body)
}

/// `200` while this brain leads (writes go here), `503` on a follower (it still serves reads):
/// for a load balancer that sends writes to the leader only.
#[utoipa::path(get, path = "/ready/leader", tag = "operations", responses((status = 200, description = "This brain is the leader", body = String), (status = 503, description = "A follower, or still loading", body = String)))]
pub async fn ready_leader(State(st): State<ApiState>) -> impl IntoResponse {
    if !*st.ready.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "loading configs".to_string());
    }
    match st.manage.service.leadership().role() {
        crate::ha::Role::Leader { epoch } => (StatusCode::OK, format!("leader (epoch {epoch})")),
        crate::ha::Role::Follower { leader } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("follower; the leader is {}", leader.as_deref().unwrap_or("not elected yet")),
        ),
    }
}

/// Prometheus text format. With authentication on, the scraper needs credentials (a token or a
/// client certificate) and sees only series of the namespaces it may see; fleet-wide series
/// (no `namespace` label) are shown to every authenticated caller.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String), (status = 401, body = ApiError)))]
pub async fn metrics(State(st): State<ApiState>, c: Caller) -> impl IntoResponse {
    let body = st.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    let body = match st.manage.authz.policy() {
        Some(_) => visible_series(&body, |ns| st.manage.authz.sees(&c.who, ns)),
        None => body,
    };
    ([("content-type", "text/plain; version=0.0.4")], body)
}

/// The lines of a Prometheus exposition whose `namespace` label (if any) passes `sees`.
fn visible_series(body: &str, sees: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(body.len());
    for line in body.lines() {
        let hidden = line
            .split_once("namespace=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .is_some_and(|(ns, _)| !line.starts_with('#') && !sees(ns));
        if !hidden {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn series_of_unseen_namespaces_are_left_out() {
        let body =
            "# TYPE x gauge\nx{namespace=\"a\",config=\"c\"} 1\nx{namespace=\"b\",config=\"c\"} 2\ny 3\n";
        let out = super::visible_series(body, |ns| ns == "a");
        assert_eq!(out, "# TYPE x gauge\nx{namespace=\"a\",config=\"c\"} 1\ny 3\n");
    }
}
