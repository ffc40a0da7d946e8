//! Rule tests for the SotW state machine (IDs from shared/xds-rules.md).

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status;
use flotilla_shared::ResourceType::{self, *};
use prost::Message;

use super::*;
use crate::xds::testutil::{chain, names, r, snap};

fn req(kind: ResourceType, names_: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: kind.type_url().into(),
        resource_names: names(names_),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn nack(kind: ResourceType, names_: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        error_detail: Some(Status { code: 3, message: "rejected".into(), details: vec![] }),
        ..req(kind, names_, version, nonce)
    }
}

fn decode(p: &Push) -> DiscoveryResponse {
    DiscoveryResponse::decode(p.frame.to_bytes()).unwrap()
}

fn ads() -> SotwStream {
    SotwStream::new(None, Limits::default())
}

fn ack_of(kind: ResourceType, names_: &[&str], p: &Push) -> DiscoveryRequest {
    req(kind, names_, &p.version, &p.nonce)
}

// W1 + S3: version and nonce set, type matches, every resource is an Any of that type.
#[test]
fn w1_s3_response_shape() {
    let s = snap(chain("c1", "1"));
    let mut st = ads();
    let now = Instant::now();
    st.on_request(&req(Cluster, &[], "", ""), &s, now).unwrap();
    let p = st.poll(&s, now).unwrap();
    let resp = decode(&p);
    assert!(!resp.version_info.is_empty() && !resp.nonce.is_empty());
    assert_eq!(resp.type_url, Cluster.type_url());
    assert!(resp.resources.iter().all(|a| a.type_url == Cluster.type_url()));
    assert_eq!(resp.resources.len(), 1);
    // Nonces are unique on the stream.
    st.on_request(&req(Listener, &[], "", ""), &s, now).unwrap();
    st.on_request(&ack_of(Cluster, &[], &p), &s, now).unwrap();
    let p2 = st.poll(&s, now).unwrap();
    assert_ne!(p.nonce, p2.nonce);
}

// S3: an ADS request without type_url is an error for the stream.
#[test]
fn s3_missing_type_url_is_an_error() {
    let s = snap(vec![]);
    let err = ads().on_request(&DiscoveryRequest::default(), &s, Instant::now()).unwrap_err();
    assert_eq!(err, ProtocolError::MissingTypeUrl);
}

// S5: unknown type on ADS gets an empty response once; its ACK gets nothing; other types work.
#[test]
fn s5_unknown_type_answered_cleanly() {
    let s = snap(chain("c1", "1"));
    let mut st = ads();
    let now = Instant::now();
    let unknown = DiscoveryRequest { type_url: "type.googleapis.com/foo.Bar".into(), ..Default::default() };
    st.on_request(&unknown, &s, now).unwrap();
    let p = st.poll(&s, now).unwrap();
    assert_eq!(decode(&p).type_url, "type.googleapis.com/foo.Bar");
    assert_eq!(p.resources, 0);
    let ack = DiscoveryRequest { response_nonce: p.nonce.to_string(), version_info: "0".into(), ..unknown };
    st.on_request(&ack, &s, now).unwrap();
    assert!(st.poll(&s, now).is_none(), "ACK of an unknown type must not loop");
    st.on_request(&req(Cluster, &[], "", ""), &s, now).unwrap();
    assert_eq!(st.poll(&s, now).unwrap().kind, Some(Cluster));
}

// S5 per-type: a wrong type on a per-type stream is an error.
#[test]
fn s5_wrong_type_on_per_type_stream() {
    let s = snap(vec![]);
    let mut st = SotwStream::new(Some(Cluster), Limits::default());
    let err = st.on_request(&req(Listener, &[], "", ""), &s, Instant::now()).unwrap_err();
    assert!(matches!(err, ProtocolError::WrongTypeUrl { .. }));
}

// W2 + R3: after an ACK nothing is resent while nothing changed, even if the snapshot is rebuilt.
#[test]
fn w2_r3_ack_then_silence() {
    let s = snap(chain("c1", "1"));
    let mut st = ads();
    let now = Instant::now();
    st.on_request(&req(Cluster, &[], "", ""), &s, now).unwrap();
    let p = st.poll(&s, now).unwrap();
    let ev = st.on_request(&ack_of(Cluster, &[], &p), &s, now).unwrap();
    assert_eq!(ev, Some(Event::Ack { kind: Cluster, version: p.version.clone(), whole: true }));
    let rebuilt = snap(chain("c1", "1"));
    assert!(st.poll(&rebuilt, now).is_none());
    // A change is pushed.
    let changed = snap(chain("c1", "2"));
    assert!(st.poll(&changed, now).is_some());
}

/// A wildcard CDS stream that ACKed version 1 of `c1` (`p1`) and was pushed version 2 (`p2`, of
/// snapshot `s2`), not yet answered; at `t0`.
fn acked_then_pushed() -> (SotwStream, Push, EdgeSnapshot, Push, Instant) {
    let s1 = snap(chain("c1", "1"));
    let mut st = ads();
    let t0 = Instant::now();
    st.on_request(&req(Cluster, &[], "", ""), &s1, t0).unwrap();
    let p1 = st.poll(&s1, t0).unwrap();
    st.on_request(&ack_of(Cluster, &[], &p1), &s1, t0).unwrap();
    let s2 = snap(chain("c1", "2"));
    let p2 = st.poll(&s2, t0).unwrap();
    (st, p1, s2, p2, t0)
}

// W3: a NACK keeps the rejected version from being resent; a newer one is offered after back-off.
#[test]
fn w3_nack_no_resend_loop_then_backoff() {
    let (mut st, p1, s2, p2, t0) = acked_then_pushed();
    let ev = st.on_request(&nack(Cluster, &[], &p1.version, &p2.nonce), &s2, t0).unwrap();
    assert!(matches!(ev, Some(Event::Nack { ref version, .. }) if *version == p2.version));
    assert!(st.poll(&s2, t0 + Duration::from_secs(60)).is_none(), "rejected version resent");
    assert_eq!(st.type_state(Cluster).acked_version(), Some(&*p1.version));
    let s3 = snap(chain("c1", "3"));
    assert!(st.poll(&s3, t0).is_none(), "newer version must wait for the back-off");
    assert!(st.next_wakeup(t0).is_some());
    let p3 = st.poll(&s3, t0 + Duration::from_secs(1)).unwrap();
    assert_ne!(p3.version, p2.version);
}

// After a NACK, a config back at the version the client ACKed (a rollback) is in sync without a
// push, reported once.
#[test]
fn w3_back_to_the_acked_version_is_in_sync_without_a_push() {
    let (mut st, p1, s2, p2, t0) = acked_then_pushed();
    st.on_request(&nack(Cluster, &[], &p1.version, &p2.nonce), &s2, t0).unwrap();
    let later = t0 + Duration::from_secs(60);
    assert!(st.poll(&s2, later).is_none());
    assert!(st.take_quiet_syncs().is_empty(), "still rejecting what is wanted");
    let back = snap(chain("c1", "1"));
    assert!(st.poll(&back, later).is_none(), "the client has it");
    assert_eq!(st.take_quiet_syncs(), vec![(Cluster, p1.version.clone())]);
    assert!(st.poll(&back, later).is_none());
    assert!(st.take_quiet_syncs().is_empty(), "reported once");
}

// W4: a stale nonce changes nothing and triggers no response.
#[test]
fn w4_stale_nonce_ignored() {
    let s1 = snap(chain("c1", "1"));
    let mut st = ads();
    let now = Instant::now();
    st.on_request(&req(Cluster, &[], "", ""), &s1, now).unwrap();
    let p1 = st.poll(&s1, now).unwrap();
    st.on_request(&ack_of(Cluster, &[], &p1), &s1, now).unwrap();
    let s2 = snap(chain("c1", "2"));
    let p2 = st.poll(&s2, now).unwrap();
    // A late request still carrying p1's nonce (and even a NACK) is ignored.
    assert_eq!(st.on_request(&nack(Cluster, &[], "", &p1.nonce), &s2, now).unwrap(), None);
    assert!(st.poll(&s2, now).is_none(), "R6: still awaiting ACK of p2");
    st.on_request(&ack_of(Cluster, &[], &p2), &s2, now).unwrap();
    assert_eq!(st.type_state(Cluster).acked_version(), Some(&*p2.version));
}

// W6: LDS/CDS responses carry the full set; a removal is a full response without it.
#[test]
fn w6_removal_is_full_set_without_it() {
    let mut res = chain("c1", "1");
    res.push(r(Cluster, "extra", "x", &[]));
    let s1 = snap(res);
    let mut st = SotwStream::new(Some(Cluster), Limits::default());
    let now = Instant::now();
    st.on_request(&req(Cluster, &[], "", ""), &s1, now).unwrap();
    let p1 = st.poll(&s1, now).unwrap();
    assert_eq!(p1.resources, 2);
    st.on_request(&ack_of(Cluster, &[], &p1), &s1, now).unwrap();
    let s2 = snap(chain("c1", "1"));
    let p2 = st.poll(&s2, now).unwrap();
    let resp = decode(&p2);
    assert_eq!(resp.resources.len(), 1);
    assert_eq!(p2.removed, 1);
}

// W7: RDS/EDS return only requested names; a name change is answered even if unchanged;
// W9: a missing name is not invented, and is sent when it appears.
#[test]
fn w7_w9_named_resources() {
    let mut res = chain("c1", "1");
    res.push(r(Endpoint, "other", "o", &[]));
    let s = snap(res);
    let mut st = ads();
    let now = Instant::now();
    st.on_request(&req(Endpoint, &["c1"], "", ""), &s, now).unwrap();
    let p1 = st.poll(&s, now).unwrap();
    assert_eq!(p1.resources, 1);
    st.on_request(&ack_of(Endpoint, &["c1"], &p1), &s, now).unwrap();
    assert!(st.poll(&s, now).is_none());
    // Adding a name is answered with both (full requested set), even though c1 is unchanged.
    st.on_request(&req(Endpoint, &["c1", "other", "missing"], &p1.version, &p1.nonce), &s, now).unwrap();
    let p2 = st.poll(&s, now).unwrap();
    assert_eq!(decode(&p2).resources.len(), 2, "missing name must not be invented");
    st.on_request(&ack_of(Endpoint, &["c1", "other", "missing"], &p2), &s, now).unwrap();
    let mut res = chain("c1", "1");
    res.push(r(Endpoint, "other", "o", &[]));
    res.push(r(Endpoint, "missing", "m", &[]));
    let s2 = snap(res);
    assert_eq!(st.poll(&s2, now).unwrap().resources, 3, "W9: appears later, is sent");
}

// W8: a reconnecting client with the current version is not resent it; with an old one it is.
#[test]
fn w8_reconnect_with_current_version() {
    let s = snap(chain("c1", "1"));
    let now = Instant::now();
    let mut first = ads();
    first.on_request(&req(Cluster, &[], "", ""), &s, now).unwrap();
    let p = first.poll(&s, now).unwrap();
    let mut again = ads();
    again.on_request(&req(Cluster, &[], &p.version, ""), &s, now).unwrap();
    assert!(again.poll(&s, now).is_none());
    let mut stale = ads();
    stale.on_request(&req(Cluster, &[], "old", ""), &s, now).unwrap();
    assert!(stale.poll(&s, now).is_some());
}

// W10: an updated cluster is followed by its endpoints even if they did not change.
#[test]
fn w10_cluster_update_resends_endpoints() {
    let now = Instant::now();
    let s1 = snap(chain("c1", "1"));
    let mut st = ads();
    st.on_request(&req(Cluster, &[], "", ""), &s1, now).unwrap();
    let c = st.poll(&s1, now).unwrap();
    st.on_request(&ack_of(Cluster, &[], &c), &s1, now).unwrap();
    st.on_request(&req(Endpoint, &["c1"], "", ""), &s1, now).unwrap();
    let e = st.poll(&s1, now).unwrap();
    st.on_request(&ack_of(Endpoint, &["c1"], &e), &s1, now).unwrap();
    // Cluster body changes, endpoints do not.
    let mut res = chain("c1", "1");
    res[0] = r(Cluster, "c1", "c-changed", &[(Endpoint, "c1")]);
    let s2 = snap(res);
    let c2 = st.poll(&s2, now).unwrap();
    assert_eq!(c2.kind, Some(Cluster));
    // EDS follows at once: Envoy ACKs CDS only once the cluster is warm, which needs them.
    let e2 = st.poll(&s2, now).unwrap();
    assert_eq!(e2.kind, Some(Endpoint));
    assert_eq!(e2.version, e.version, "same endpoints, resent for warming");
}

// O1: a route to a new cluster waits until the client holds the cluster.
#[test]
fn o1_clusters_before_routes() {
    let now = Instant::now();
    let s1 = snap(chain("c1", "1"));
    let mut st = ads();
    for (k, n) in [(Cluster, vec![]), (Listener, vec![]), (Route, vec!["routes"]), (Endpoint, vec!["c1"])] {
        st.on_request(&req(k, &n, "", ""), &s1, now).unwrap();
    }
    let first = st.poll(&s1, now).unwrap();
    assert_eq!(first.kind, Some(Cluster), "CDS goes first");
    let eds = st.poll(&s1, now).unwrap();
    assert_eq!(eds.kind, Some(Endpoint), "EDS goes with it");
    assert!(st.poll(&s1, now).is_none(), "LDS and RDS wait for the CDS and EDS ACKs");
    st.on_request(&ack_of(Cluster, &[], &first), &s1, now).unwrap();
    assert!(st.poll(&s1, now).is_none(), "LDS/RDS wait for the EDS ACK (the cluster is warming)");
    st.on_request(&ack_of(Endpoint, &["c1"], &eds), &s1, now).unwrap();
    let lds = st.poll(&s1, now).unwrap();
    assert_eq!(lds.kind, Some(Listener));
    assert!(st.poll(&s1, now).is_none(), "RDS waits for the LDS ACK");
    st.on_request(&ack_of(Listener, &[], &lds), &s1, now).unwrap();
    let rds1 = st.poll(&s1, now).unwrap();
    assert_eq!(rds1.kind, Some(Route));
    st.on_request(&ack_of(Route, &["routes"], &rds1), &s1, now).unwrap();
    assert!(st.poll(&s1, now).is_none());
    // Switch the route to a brand-new cluster c2.
    let s2 = snap(chain("c2", "1"));
    let p = st.poll(&s2, now).unwrap();
    assert_eq!(p.kind, Some(Cluster), "the new cluster is pushed before the route that uses it");
    let resp = decode(&p);
    assert_eq!(resp.resources.len(), 2, "O2: c1 is kept while the client's route still uses it");
    assert!(st.poll(&s2, now).is_none());
    st.on_request(&ack_of(Cluster, &[], &p), &s2, now).unwrap();
    assert!(st.poll(&s2, now).is_none(), "c2 is warming: no route to it until its endpoints are held");
    // Envoy subscribes to the new cluster's endpoints; once they are ACKed the route may go.
    st.on_request(&req(Endpoint, &["c1", "c2"], &eds.version, &eds.nonce), &s2, now).unwrap();
    let eds2 = st.poll(&s2, now).unwrap();
    assert_eq!(eds2.kind, Some(Endpoint));
    st.on_request(&ack_of(Endpoint, &["c1", "c2"], &eds2), &s2, now).unwrap();
    let rds = std::iter::from_fn(|| st.poll(&s2, now)).find(|p| p.kind == Some(Route));
    let rds = rds.expect("route pushed once c2 is held");
    st.on_request(&ack_of(Route, &["routes"], &rds), &s2, now).unwrap();
    // O2: now that no route uses c1, CDS drops it.
    let cds = std::iter::from_fn(|| st.poll(&s2, now)).find(|p| p.kind == Some(Cluster)).unwrap();
    assert_eq!(decode(&cds).resources.len(), 1);
}

// R6: at most one un-ACKed push per type; changes meanwhile merge into the next push.
#[test]
fn r6_one_unacked_push_per_type() {
    let now = Instant::now();
    let mut st = SotwStream::new(Some(Cluster), Limits::default());
    let s1 = snap(chain("c1", "1"));
    st.on_request(&req(Cluster, &[], "", ""), &s1, now).unwrap();
    let p1 = st.poll(&s1, now).unwrap();
    assert!(st.poll(&snap(chain("c1", "2")), now).is_none());
    let s3 = snap(chain("c1", "3"));
    assert!(st.poll(&s3, now).is_none());
    st.on_request(&ack_of(Cluster, &[], &p1), &s3, now).unwrap();
    let p = st.poll(&s3, now).unwrap();
    assert_eq!(p.version, s3.of_type(Cluster).version, "latest wins");
}

// R1: absurd name lists cost the sender its stream.
#[test]
fn r1_huge_name_list_refused() {
    let s = snap(vec![]);
    let limits = Limits { max_names_per_request: 10, ..Limits::default() };
    let mut st = SotwStream::new(None, limits);
    let many: Vec<String> = (0..11).map(|i| i.to_string()).collect();
    let req =
        DiscoveryRequest { type_url: Endpoint.type_url().into(), resource_names: many, ..Default::default() };
    assert!(matches!(st.on_request(&req, &s, Instant::now()), Err(ProtocolError::TooLarge { .. })));
}

/// The chain of `chain("c1", "1")` plus a new cluster c2 with a new route and listener using it.
fn with_new_listener() -> Vec<flotilla_shared::Resource> {
    let mut v = chain("c1", "1");
    v.push(r(Cluster, "c2", "c-2", &[(Endpoint, "c2")]));
    v.push(r(Endpoint, "c2", "e-2", &[]));
    v.push(r(Route, "routes2", "r-c2", &[(Cluster, "c2")]));
    v.push(r(Listener, "listener2", "l2", &[(Route, "routes2")]));
    v
}

/// Brings a full ADS stream (CDS, EDS c1, LDS, RDS routes) to holding `s`.
fn synced(s: &EdgeSnapshot, now: Instant) -> SotwStream {
    let mut st = ads();
    for (k, n) in [(Cluster, vec![]), (Endpoint, vec!["c1"]), (Listener, vec![]), (Route, vec!["routes"])] {
        st.on_request(&req(k, &n, "", ""), s, now).unwrap();
    }
    while let Some(p) = st.poll(s, now) {
        let kind = p.kind.unwrap();
        let sub: Vec<&str> = match kind {
            Endpoint => vec!["c1"],
            Route => vec!["routes"],
            _ => vec![],
        };
        st.on_request(&ack_of(kind, &sub, &p), s, now).unwrap();
    }
    st
}

// O1 (issue 11): one change adds a cluster and a listener and route using it. The listener goes
// out only after the new cluster's CDS and EDS were sent and held, even when the client ACKs CDS
// before asking for the new cluster's endpoints.
#[test]
fn o1_a_new_listener_waits_for_the_clusters_of_its_routes() {
    let now = Instant::now();
    let s1 = snap(chain("c1", "1"));
    let mut st = synced(&s1, now);
    let s2 = snap(with_new_listener());
    let cds = st.poll(&s2, now).unwrap();
    assert_eq!(cds.kind, Some(Cluster));
    st.on_request(&ack_of(Cluster, &[], &cds), &s2, now).unwrap();
    assert!(st.poll(&s2, now).is_none(), "no listener naming routes to c2 before c2's endpoints are held");
    st.on_request(&req(Endpoint, &["c1", "c2"], "", ""), &s2, now).unwrap();
    let eds = st.poll(&s2, now).unwrap();
    assert_eq!(eds.kind, Some(Endpoint));
    assert!(st.poll(&s2, now).is_none(), "LDS waits while EDS is in flight");
    st.on_request(&ack_of(Endpoint, &["c1", "c2"], &eds), &s2, now).unwrap();
    let lds = st.poll(&s2, now).unwrap();
    assert_eq!(lds.kind, Some(Listener));
    assert_eq!(decode(&lds).resources.len(), 2);
}

// S-independence (issue 11): a stream that subscribes to LDS only is answered.
#[test]
fn lds_alone_is_answered_without_cds() {
    let now = Instant::now();
    let s = snap(with_new_listener());
    let mut st = ads();
    st.on_request(&req(Listener, &[], "", ""), &s, now).unwrap();
    let p = st.poll(&s, now).expect("LDS answered without a CDS subscription");
    assert_eq!(p.kind, Some(Listener));
    assert_eq!(decode(&p).resources.len(), 2);
}

// S-independence (issue 11): a NACK of LDS neither triggers nor blocks CDS.
#[test]
fn an_lds_nack_neither_triggers_nor_blocks_cds() {
    let now = Instant::now();
    let s1 = snap(chain("c1", "1"));
    let mut st = synced(&s1, now);
    // A new listener the client rejects.
    let mut v = chain("c1", "1");
    v.push(r(Listener, "bad", "l-bad", &[(Route, "routes")]));
    let s2 = snap(v);
    let lds = st.poll(&s2, now).unwrap();
    assert_eq!(lds.kind, Some(Listener));
    st.on_request(&nack(Listener, &[], &lds.version, &lds.nonce), &s2, now).unwrap();
    assert!(st.poll(&s2, now).is_none(), "the NACK triggers no CDS (or any) push");
    // A cluster change goes out while LDS is backing off.
    let mut v = chain("c1", "2");
    v.push(r(Listener, "bad", "l-bad", &[(Route, "routes")]));
    let s3 = snap(v);
    let p = st.poll(&s3, now).expect("CDS is not blocked by the LDS NACK");
    assert_eq!(p.kind, Some(Cluster));
}

// S2: on ADS, a type is answered on its own: LDS (wildcard) with no CDS subscription at all.
#[test]
fn s2_lds_alone_on_ads_is_answered() {
    let s = snap(chain("c1", "1"));
    let mut st = ads();
    let now = Instant::now();
    st.on_request(&req(Listener, &[], "", ""), &s, now).unwrap();
    let p = st.poll(&s, now).expect("an LDS answer without any CDS subscription");
    assert_eq!(p.kind, Some(Listener));
    assert_eq!(p.resources, 1);
    st.on_request(&ack_of(Listener, &[], &p), &s, now).unwrap();
    assert!(st.poll(&s, now).is_none());
}

// S2 + W3: a NACK of LDS is not answered, and CDS keeps being pushed while LDS backs off.
#[test]
fn s2_an_lds_nack_neither_answers_nor_blocks_cds() {
    let s1 = snap(chain("c1", "1"));
    let mut st = ads();
    let now = Instant::now();
    st.on_request(&req(Listener, &[], "", ""), &s1, now).unwrap();
    st.on_request(&req(Cluster, &[], "", ""), &s1, now).unwrap();
    let cds = st.poll(&s1, now).unwrap();
    assert_eq!(cds.kind, Some(Cluster), "clusters first (O1)");
    st.on_request(&ack_of(Cluster, &[], &cds), &s1, now).unwrap();
    let lds = st.poll(&s1, now).unwrap();
    assert_eq!(lds.kind, Some(Listener));
    let ev = st.on_request(&nack(Listener, &[], "", &lds.nonce), &s1, now).unwrap();
    assert!(matches!(ev, Some(Event::Nack { kind: Listener, .. })));
    assert!(st.poll(&s1, now).is_none(), "a NACK is not answered");
    // A cluster change arrives while LDS is backing off: CDS is pushed at once.
    let s2 = snap(chain("c1", "2"));
    let p = st.poll(&s2, now).expect("CDS pushed while LDS backs off");
    assert_eq!(p.kind, Some(Cluster));
    st.on_request(&ack_of(Cluster, &[], &p), &s2, now).unwrap();
    assert!(st.poll(&s2, now).is_none(), "the rejected listener is not resent");
}

// Issue 26, item 6: NACKed, rolled back, then the rejected content applied again: nothing is
// sent (W3), and the type is reported (once) as still rejecting what is wanted.
#[test]
fn w3_the_rejected_version_wanted_again_is_reported_not_resent() {
    let (mut st, p1, s2, p2, t0) = acked_then_pushed();
    st.on_request(&nack(Cluster, &[], &p1.version, &p2.nonce), &s2, t0).unwrap();
    let later = t0 + Duration::from_secs(60);
    assert!(st.poll(&snap(chain("c1", "1")), later).is_none());
    assert_eq!(st.take_quiet_syncs().len(), 1, "rolled back: in sync");
    let again = snap(chain("c1", "2"));
    assert!(st.poll(&again, later).is_none(), "the rejected version is not resent");
    assert_eq!(st.take_still_rejected(), vec![(Cluster, p2.version.clone())]);
    assert!(st.poll(&again, later).is_none());
    assert!(st.take_still_rejected().is_empty(), "reported once");
    // Rolled back once more: in sync again, though no NACK came this time.
    assert!(st.poll(&snap(chain("c1", "1")), later).is_none());
    assert_eq!(st.take_quiet_syncs(), vec![(Cluster, p1.version.clone())]);
}
