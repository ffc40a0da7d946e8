//! Names on NATS: the JetStream KV bucket holding each proxy group's current state, its keys,
//! the subjects edges report proxy status on, and those of live proxy events.

use crate::Target;

/// Default KV bucket of group states.
pub const STATE_BUCKET: &str = "flotilla_state";

/// Subject prefix of edge status reports (`flotilla.v1.edges.<edge>.status`).
pub const EDGE_STATUS_PREFIX: &str = "flotilla.v1.edges";

/// KV key of a group's index: `g.<namespace>.<name>`, each part restricted to KV-safe characters
/// (`[A-Za-z0-9-]`, anything else `_`-escaped as `_xx` hex).
pub fn state_key(target: &Target) -> String {
    format!("g.{}.{}", escape(&target.namespace), escape(&target.name))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' => out.push(b as char),
            _ => out.push_str(&format!("_{b:02x}")),
        }
    }
    out
}

/// Subject prefix of live proxy events (`flotilla.v1.events.<namespace>`), published by edges
/// while a brain watches.
pub const EVENTS_PREFIX: &str = "flotilla.v1.events";

/// Subject a brain with watchers heartbeats on; an edge publishes events for a while after each.
pub const EVENTS_WATCH: &str = "flotilla.v1.events-watch";

/// Subject a brain asks every edge on: make the streams of the node id in the body resend
/// their whole config (`POST /api/v1/proxies/{node_id}/reload`).
pub const RELOAD: &str = "flotilla.v1.reload";

/// Subject of one namespace's proxy events.
pub fn events(namespace: &str) -> String {
    format!("{EVENTS_PREFIX}.{}", escape(namespace))
}

/// Subject an edge publishes its proxies' status on.
pub fn edge_status(edge: &str) -> String {
    format!("{EDGE_STATUS_PREFIX}.{}.status", escape(edge))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kv_safe_and_distinct() {
        assert_eq!(state_key(&Target::new("prod", "svc-a")), "g.prod.svc-a");
        assert_ne!(state_key(&Target::new("a.b", "c")), state_key(&Target::new("a", "b.c")));
        assert!(
            state_key(&Target::new("x y", "z*"))
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        );
    }
}
