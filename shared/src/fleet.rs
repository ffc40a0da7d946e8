//! The messages edges and the brain exchange on NATS core subjects (the group states travel in
//! the JetStream bucket, [`crate::wire`]): an edge's status report of its streams
//! ([`EdgeReport`] on `flotilla.v1.edges.<edge>.status`), live proxy events ([`ProxyEvent`] on
//! `flotilla.v1.events.<namespace>`), and the brain's requests to edges: resend a proxy's
//! config ([`ReloadRequest`] on `flotilla.v1.reload`) and "somebody watches events"
//! (`flotilla.v1.events-watch`, no body).
//!
//! Each message kind has a wire version, sent in the [`WIRE_HEADER`] NATS header. A sender
//! writes its build's version; a receiver reads every version from its kind's oldest to its
//! newest, and refuses a newer one with a message naming the kind, both versions and what to
//! upgrade ([`MessageError::TooNew`]) instead of misreading it. A message without the header is
//! version 1 (what builds before the header sent). Within a version, fields are only added
//! (JSON, unknown fields ignored, new ones defaulted), so a brain and an edge one release apart
//! read each other; a change that would break an older reader takes the next version.
//!
//! Also here: [`set_version`], the version of a set of resources both sides compute alike.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::snapshot::content_version;

/// NATS header carrying a message's wire version (a decimal number).
pub const WIRE_HEADER: &str = "Flotilla-Wire";

/// A kind of message with the wire versions this build writes and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageKind {
    pub name: &'static str,
    /// The version this build writes (and the newest it reads).
    pub current: u32,
    /// The oldest version this build still reads.
    pub oldest: u32,
    /// Who must be upgraded when a newer version arrives.
    pub sender: &'static str,
}

/// An edge's status report, read by the brain.
pub const STATUS_REPORT: MessageKind =
    MessageKind { name: "edge status report", current: 1, oldest: 1, sender: "edge" };
/// A proxy event relayed by an edge, read by the brain.
pub const PROXY_EVENT: MessageKind =
    MessageKind { name: "proxy event", current: 1, oldest: 1, sender: "edge" };
/// A forced reload asked by the brain, read by edges.
pub const RELOAD_REQUEST: MessageKind =
    MessageKind { name: "reload request", current: 1, oldest: 1, sender: "brain" };
/// The brain's "somebody watches events" heartbeat, read by edges.
pub const EVENTS_WATCH: MessageKind =
    MessageKind { name: "events-watch heartbeat", current: 1, oldest: 1, sender: "brain" };

/// Why a message was not read.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error(
        "{kind} of wire version {got}: this build reads versions {oldest} to {current}; the {sender} is newer — upgrade this process to the {sender}'s release"
    )]
    TooNew { kind: &'static str, got: u32, oldest: u32, current: u32, sender: &'static str },
    #[error(
        "{kind} of wire version {got}: this build reads versions {oldest} to {current}; the {sender} is too old for it — upgrade the {sender}"
    )]
    TooOld { kind: &'static str, got: u32, oldest: u32, current: u32, sender: &'static str },
    #[error("{kind}: {WIRE_HEADER} header {value:?} is not a version number")]
    BadHeader { kind: &'static str, value: String },
    #[error("{kind} of wire version {version} is malformed: {source}")]
    Malformed {
        kind: &'static str,
        version: u32,
        #[source]
        source: serde_json::Error,
    },
}

impl MessageError {
    /// A short label for metrics: `wire_version`, `bad_header` or `malformed`.
    pub fn reason(&self) -> &'static str {
        match self {
            MessageError::TooNew { .. } | MessageError::TooOld { .. } => "wire_version",
            MessageError::BadHeader { .. } => "bad_header",
            MessageError::Malformed { .. } => "malformed",
        }
    }
}

impl MessageKind {
    /// The header value a sender of this build writes.
    pub fn header(&self) -> String {
        self.current.to_string()
    }

    /// The version of a message whose [`WIRE_HEADER`] is `header` (absent: 1), if this build
    /// reads it.
    pub fn check(&self, header: Option<&str>) -> Result<u32, MessageError> {
        let got = match header.map(str::trim) {
            None => 1,
            Some(v) => v
                .parse::<u32>()
                .map_err(|_| MessageError::BadHeader { kind: self.name, value: v.to_string() })?,
        };
        let (oldest, current, kind, sender) = (self.oldest, self.current, self.name, self.sender);
        if got > current {
            return Err(MessageError::TooNew { kind, got, oldest, current, sender });
        }
        if got < oldest {
            return Err(MessageError::TooOld { kind, got, oldest, current, sender });
        }
        Ok(got)
    }

    /// Reads a JSON message of this kind (its header checked first).
    pub fn decode<T: serde::de::DeserializeOwned>(
        &self,
        header: Option<&str>,
        payload: &[u8],
    ) -> Result<T, MessageError> {
        let version = self.check(header)?;
        serde_json::from_slice(payload).map_err(|source| MessageError::Malformed {
            kind: self.name,
            version,
            source,
        })
    }
}

/// A rejected push, as the proxy reported it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NackInfo {
    pub version: String,
    pub error: String,
    pub resources: Vec<String>,
    pub at: DateTime<Utc>,
}

/// Per-type state of one stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeStatus {
    pub last_sent_version: Option<String>,
    pub last_sent_at: Option<DateTime<Utc>>,
    pub acked_version: Option<String>,
    pub acked_at: Option<DateTime<Utc>>,
    pub last_nack: Option<NackInfo>,
    pub pushes: u64,
}

/// One connected xDS stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    pub stream_id: u64,
    pub node_id: String,
    pub cluster: String,
    pub namespace: String,
    /// "ads" or the per-type service ("cds", "lds", ...).
    pub service: String,
    /// "sotw" or "delta".
    pub protocol: Cow<'static, str>,
    pub edge: String,
    pub connected_at: DateTime<Utc>,
    pub types: BTreeMap<Cow<'static, str>, TypeStatus>,
}

/// What an edge reports about its proxies ([`STATUS_REPORT`]), every [`STATUS_INTERVAL`] or
/// less often for a large edge.
#[derive(Debug, Serialize, Deserialize)]
pub struct EdgeReport {
    pub edge: String,
    pub streams: Vec<StreamStatus>,
    /// When the next report is due, in milliseconds (0: [`STATUS_INTERVAL`], from older edges).
    #[serde(default)]
    pub interval_ms: u64,
}

/// How often a small edge reports; the brain forgets an edge silent for three intervals.
pub const STATUS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What happened to a proxy's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Connected,
    Disconnected,
    Pushed,
    Acked,
    Nacked,
    /// The brain rolled a config back because its proxies NACKed it (`spec.autoRollback`).
    #[serde(rename = "rolledback")]
    RolledBack,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Connected => "connected",
            EventKind::Disconnected => "disconnected",
            EventKind::Pushed => "pushed",
            EventKind::Acked => "acked",
            EventKind::Nacked => "nacked",
            EventKind::RolledBack => "rolledback",
        }
    }
}

/// One event of one proxy stream ([`PROXY_EVENT`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyEvent {
    pub at: DateTime<Utc>,
    pub event: EventKind,
    pub node_id: String,
    pub namespace: String,
    /// The config (proxy group) the proxy belongs to.
    pub config: String,
    pub edge: String,
    /// "sotw" or "delta".
    pub protocol: String,
    /// Resource type ("cds", "eds", "lds", "rds", "sds") of pushes, ACKs and NACKs.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The change (API request id, or discovery/startup id) the pushed state came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
    /// Envoy's error message, on a NACK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Resources of a push (count) or named by a NACK.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// On the first ACK of a change: milliseconds from the write to this ACK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation_ms: Option<u64>,
}

impl ProxyEvent {
    /// An event of `kind` about a proxy's stream, now; the optional fields empty.
    pub fn new(
        event: EventKind,
        node_id: &str,
        namespace: &str,
        config: &str,
        edge: &str,
        protocol: &str,
    ) -> ProxyEvent {
        ProxyEvent {
            at: Utc::now(),
            event,
            node_id: node_id.into(),
            namespace: namespace.into(),
            config: config.into(),
            edge: edge.into(),
            protocol: protocol.into(),
            kind: None,
            version: None,
            change_id: None,
            error: None,
            resources: Vec::new(),
            propagation_ms: None,
        }
    }
}

/// The brain asks every edge to resend everything to the streams of one node
/// ([`RELOAD_REQUEST`]). Version 1's payload is the node id in UTF-8, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadRequest {
    pub node_id: String,
}

impl ReloadRequest {
    pub fn encode(&self) -> Vec<u8> {
        self.node_id.as_bytes().to_vec()
    }

    /// Reads a request whose [`WIRE_HEADER`] is `header`.
    pub fn decode(header: Option<&str>, payload: &[u8]) -> Result<ReloadRequest, MessageError> {
        RELOAD_REQUEST.check(header)?;
        Ok(ReloadRequest { node_id: String::from_utf8_lossy(payload).into_owned() })
    }
}

/// A version string for a set of (name, version) pairs; a pure function of content (V1). The
/// edge versions what it sends with it, and the brain what it intends, so the two compare.
pub fn set_version<'a>(items: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut buf = Vec::with_capacity(256);
    for (name, version) in items {
        buf.extend_from_slice(name.as_bytes());
        buf.push(0);
        buf.extend_from_slice(version.as_bytes());
        buf.push(0);
    }
    content_version(&buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_message_without_the_header_is_version_1_as_older_builds_sent_it() {
        // What a build before the header published: no header, the same JSON.
        let older = br#"{"edge":"e1","streams":[],"interval_ms":1000}"#;
        let r: EdgeReport = STATUS_REPORT.decode(None, older).unwrap();
        assert_eq!(r.edge, "e1");
        assert_eq!(STATUS_REPORT.check(None).unwrap(), 1);
    }

    #[test]
    fn fields_added_within_a_version_are_ignored_by_older_readers_and_defaulted_for_newer_ones() {
        // A newer sender's report with a field this build does not know.
        let newer = br#"{"edge":"e1","streams":[],"interval_ms":2000,"queueDepth":7}"#;
        let r: EdgeReport = STATUS_REPORT.decode(Some("1"), newer).unwrap();
        assert_eq!(r.interval_ms, 2000);
        // An older sender's report without a field this build added.
        let older = br#"{"edge":"e1","streams":[]}"#;
        let r: EdgeReport = STATUS_REPORT.decode(Some("1"), older).unwrap();
        assert_eq!(r.interval_ms, 0);
        let e = br#"{"at":"2026-12-06T00:00:00Z","event":"acked","nodeId":"n","namespace":"ns","config":"c","edge":"e","protocol":"delta","future":true}"#;
        let e: ProxyEvent = PROXY_EVENT.decode(None, e).unwrap();
        assert_eq!(e.event, EventKind::Acked);
    }

    #[test]
    fn a_newer_wire_version_is_refused_naming_the_kind_the_versions_and_what_to_upgrade() {
        let err = STATUS_REPORT.decode::<EdgeReport>(Some("2"), b"{}").unwrap_err();
        assert_eq!(err.reason(), "wire_version");
        assert_eq!(
            err.to_string(),
            "edge status report of wire version 2: this build reads versions 1 to 1; the edge is newer — upgrade this process to the edge's release"
        );
        let err = ReloadRequest::decode(Some("9"), b"node-1").unwrap_err();
        assert!(err.to_string().starts_with("reload request of wire version 9"), "{err}");
        assert!(err.to_string().contains("the brain is newer"), "{err}");
        let err = STATUS_REPORT.check(Some("two")).unwrap_err();
        assert_eq!(err.reason(), "bad_header");
        assert_eq!(
            err.to_string(),
            "edge status report: Flotilla-Wire header \"two\" is not a version number"
        );
    }

    #[test]
    fn a_version_older_than_a_kind_reads_is_refused_naming_who_to_upgrade() {
        let kind = MessageKind { oldest: 2, current: 3, ..STATUS_REPORT };
        let err = kind.check(Some("1")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "edge status report of wire version 1: this build reads versions 2 to 3; the edge is too old for it — upgrade the edge"
        );
        assert_eq!(kind.check(Some("2")).unwrap(), 2);
        assert_eq!(kind.check(Some(" 3 ")).unwrap(), 3);
    }

    #[test]
    fn a_malformed_message_names_its_kind_and_version() {
        let err = STATUS_REPORT.decode::<EdgeReport>(None, b"not json").unwrap_err();
        assert_eq!(err.reason(), "malformed");
        assert!(err.to_string().starts_with("edge status report of wire version 1 is malformed: "), "{err}");
    }

    #[test]
    fn a_reload_request_is_the_node_id() {
        let r = ReloadRequest { node_id: "envoy-1".into() };
        assert_eq!(ReloadRequest::decode(Some(&RELOAD_REQUEST.header()), &r.encode()).unwrap(), r);
        assert_eq!(ReloadRequest::decode(None, b"envoy-1").unwrap(), r, "as older brains send it");
    }

    #[test]
    fn set_version_depends_on_names_and_versions() {
        assert_eq!(set_version([("a", "1")]), set_version([("a", "1")]));
        assert_ne!(set_version([("a", "1")]), set_version([("a", "2")]));
        assert_ne!(set_version([("a", "1")]), set_version([("b", "1")]));
        assert!(!set_version([]).is_empty());
    }
}
