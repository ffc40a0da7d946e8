//! The whole fleet's proxies: the embedded edge's registry plus what every `flotilla-edge`
//! reports over NATS (`flotilla.v1.edges.<edge>.status`: each second, or every n seconds from an
//! edge with up to n × 2,000 streams, at most 10 s). An edge silent for three of its report
//! intervals is forgotten, so the view never shows proxies of a dead edge as connected.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use flotilla_edge::app::{EdgeReport, STATUS_INTERVAL};
use flotilla_edge::registry::{NackInfo, Registry, StreamStatus};
use futures::StreamExt;

#[derive(Debug, Clone)]
pub struct Fleet {
    local: Registry,
    /// Per edge: until when its last report counts (three of its intervals), and its streams.
    remote: Arc<DashMap<String, (Instant, Vec<StreamStatus>)>>,
}

impl Fleet {
    pub fn new(local: Registry) -> Fleet {
        Fleet { local, remote: Arc::new(DashMap::new()) }
    }

    /// Every connected stream, on every edge.
    pub fn streams(&self) -> Vec<StreamStatus> {
        let mut out = self.local.streams();
        let now = Instant::now();
        for e in self.remote.iter() {
            if e.value().0 >= now {
                out.extend(e.value().1.iter().cloned());
            }
        }
        out
    }

    /// Last NACK per type for a node: kept locally after disconnects, and as reported by edges.
    pub fn nacks_of(&self, node_id: &str) -> BTreeMap<Cow<'static, str>, NackInfo> {
        let mut out: BTreeMap<Cow<'static, str>, NackInfo> =
            self.local.nacks_of(node_id).into_iter().map(|(k, v)| (Cow::Borrowed(k), v)).collect();
        for s in self.streams().into_iter().filter(|s| s.node_id == node_id && s.edge != self.local.edge()) {
            for (t, st) in s.types {
                if let Some(n) = st.last_nack
                    && st.acked_version != st.last_sent_version
                {
                    out.insert(t, n);
                }
            }
        }
        out
    }

    /// Listens to edge reports until the connection closes.
    pub fn listen(&self, client: async_nats::Client) {
        let remote = self.remote.clone();
        tokio::spawn(async move {
            let subject = format!("{}.*.status", flotilla_shared::subject::EDGE_STATUS_PREFIX);
            let mut sub = match client.subscribe(subject).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(message = "cannot subscribe to edge reports; the fleet view shows only the embedded edge", error = %e);
                    return;
                }
            };
            while let Some(msg) = sub.next().await {
                match serde_json::from_slice::<EdgeReport>(&msg.payload) {
                    Ok(r) if r.streams.is_empty() => {
                        remote.remove(&r.edge);
                    }
                    Ok(r) => {
                        // Large edges report less often (and say when the next report is due).
                        let interval = match r.interval_ms {
                            0 => STATUS_INTERVAL,
                            ms => std::time::Duration::from_millis(ms).max(STATUS_INTERVAL),
                        };
                        remote.insert(r.edge, (Instant::now() + interval * 3, r.streams));
                    }
                    Err(e) => {
                        metrics::counter!("flotilla_brain_edge_report_errors_total").increment(1);
                        tracing::warn!(message = "unreadable edge report", subject = %msg.subject, error = %e);
                    }
                }
            }
        });
    }
}
