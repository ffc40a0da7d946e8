//! `GET /api/v1/events`: the live proxy event stream as Server-Sent Events — one SSE event per
//! proxy event (`event:` its kind, `data:` its JSON), `event: dropped` with a count when the
//! reader fell behind, and a keep-alive comment every 15 s.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;

use super::query::ApiQuery;
use super::{ApiError, ApiState};
use crate::manage::{Caller, EventFilter, EventItem};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    namespace: Option<String>,
    proxy: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/events", tag = "proxies",
    params(("namespace" = Option<String>, Query, description = "Only this namespace's proxies"),
           ("proxy" = Option<String>, Query, description = "Only this proxy (node id)")),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "Server-Sent Events until the client disconnects: `event:` connected, disconnected, pushed, acked or nacked, `data:` the event as JSON (at, event, nodeId, namespace, config, edge, protocol, type, version, changeId, error, resources, propagationMs); `event: dropped` with the number of events lost when the reader fell behind"),
        (status = 403, body = ApiError)))]
pub async fn stream(
    State(st): State<ApiState>,
    c: Caller,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let events = st.manage.proxy_events(&c, EventFilter { namespace: q.namespace, node_id: q.proxy })?;
    let stream = futures::stream::unfold(events, |mut events| async move {
        let sse = match events.next().await? {
            EventItem::Event(e) => {
                Event::default().event(e.event.as_str()).data(serde_json::to_string(&*e).unwrap_or_default())
            }
            EventItem::Dropped(n) => Event::default().event("dropped").data(n.to_string()),
        };
        Some((Ok(sse), events))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
