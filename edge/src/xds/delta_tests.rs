//! Rule tests for the Delta state machine (IDs from shared/xds-rules.md).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use envoy_types::pb::google::rpc::Status;
use flotilla_shared::ResourceType::{self, *};
use prost::Message;

use super::*;
use crate::xds::testutil::{chain, names, r, snap};

fn sub(kind: ResourceType, add: &[&str], remove: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: kind.type_url().into(),
        resource_names_subscribe: names(add),
        resource_names_unsubscribe: names(remove),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn ack(kind: ResourceType, p: &Push) -> DeltaDiscoveryRequest {
    sub(kind, &[], &[], &p.nonce)
}

fn nack(kind: ResourceType, p: &Push) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        error_detail: Some(Status { code: 3, message: "bad".into(), details: vec![] }),
        ..ack(kind, p)
    }
}

fn decode(p: &Push) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse::decode(p.frame.to_bytes()).unwrap()
}

fn sent_names(p: &Push) -> Vec<String> {
    decode(p).resources.into_iter().map(|r| r.name).collect()
}

fn ads() -> DeltaStream {
    DeltaStream::new(None, Limits::default())
}

// D1: only what changed is sent, each with name and version; removals in removed_resources.
#[test]
fn d1_only_changes() {
    let now = Instant::now();
    let mut res = chain("c1", "1");
    res.push(r(Cluster, "c2", "x", &[]));
    let s1 = snap(res);
    let mut st = DeltaStream::new(Some(Cluster), Limits::default());
    st.on_request(&sub(Cluster, &[], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    let p1 = st.poll(&s1, now).unwrap();
    let resp = decode(&p1);
    assert_eq!(resp.resources.len(), 2);
    assert!(resp.resources.iter().all(|r| !r.name.is_empty() && !r.version.is_empty()));
    st.on_request(&ack(Cluster, &p1), &EdgeSnapshot::default(), now).unwrap();
    // c1 changes, c2 removed.
    let s2 = snap(chain("c1", "2"));
    let p2 = st.poll(&s2, now).unwrap();
    assert_eq!(sent_names(&p2), vec!["c1"]);
    assert_eq!(decode(&p2).removed_resources, vec!["c2"]);
}

// D2 + D6: a NACKed version is not resent; the client keeps its previous one.
#[test]
fn d2_nack_keeps_previous_and_no_resend() {
    let t0 = Instant::now();
    let mut st = DeltaStream::new(Some(Cluster), Limits::default());
    let s1 = snap(chain("c1", "1"));
    st.on_request(&sub(Cluster, &[], &[], ""), &EdgeSnapshot::default(), t0).unwrap();
    let p1 = st.poll(&s1, t0).unwrap();
    st.on_request(&ack(Cluster, &p1), &EdgeSnapshot::default(), t0).unwrap();
    let v1 = st.type_state(Cluster).client_version("c1").unwrap().to_string();
    let s2 = snap(chain("c1", "2"));
    let p2 = st.poll(&s2, t0).unwrap();
    let ev = st.on_request(&nack(Cluster, &p2), &EdgeSnapshot::default(), t0).unwrap();
    assert!(matches!(ev, Some(Event::Nack { ref resources, .. }) if resources == &vec!["c1".to_string()]));
    assert_eq!(st.type_state(Cluster).client_version("c1"), Some(v1.as_str()));
    assert!(st.poll(&s2, t0 + Duration::from_secs(120)).is_none(), "rejected version resent");
    let s3 = snap(chain("c1", "3"));
    assert!(st.poll(&s3, t0).is_none(), "back-off");
    assert_eq!(sent_names(&st.poll(&s3, t0 + Duration::from_secs(1)).unwrap()), vec!["c1"]);
}

// After a NACK, when the config goes back to what the client kept (a rollback), nothing is
// pushed and the type is reported in sync once, with the version it matches.
#[test]
fn d2_back_to_what_the_client_kept_is_in_sync_without_a_push() {
    let t0 = Instant::now();
    let mut st = DeltaStream::new(Some(Cluster), Limits::default());
    st.on_request(&sub(Cluster, &[], &[], ""), &EdgeSnapshot::default(), t0).unwrap();
    let p1 = st.poll(&snap(chain("c1", "1")), t0).unwrap();
    st.on_request(&ack(Cluster, &p1), &EdgeSnapshot::default(), t0).unwrap();
    let p2 = st.poll(&snap(chain("c1", "2")), t0).unwrap();
    let bad = snap(chain("c1", "2"));
    st.on_request(&nack(Cluster, &p2), &EdgeSnapshot::default(), t0).unwrap();
    let later = t0 + Duration::from_secs(5);
    assert!(st.poll(&bad, later).is_none(), "the rejected version is not resent");
    assert!(st.take_quiet_syncs().is_empty(), "still out of sync with the rejected version");
    let back = snap(chain("c1", "1"));
    assert!(st.poll(&back, later).is_none(), "the client already holds it");
    assert_eq!(st.take_quiet_syncs(), vec![(Cluster, back.of_type(Cluster).version.clone())]);
    assert!(st.poll(&snap(chain("c1", "1")), later).is_none());
    assert!(st.take_quiet_syncs().is_empty(), "reported once");
}

// A forced reload resends everything the client holds, even unchanged.
#[test]
fn resend_all_sends_what_the_client_already_has() {
    let now = Instant::now();
    let mut st = DeltaStream::new(Some(Cluster), Limits::default());
    let s1 = snap(chain("c1", "1"));
    st.on_request(&sub(Cluster, &[], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    let p1 = st.poll(&s1, now).unwrap();
    st.on_request(&ack(Cluster, &p1), &EdgeSnapshot::default(), now).unwrap();
    assert!(st.poll(&s1, now).is_none(), "in sync: nothing to send");
    st.resend_all(&s1);
    assert_eq!(sent_names(&st.poll(&s1, now).unwrap()), sent_names(&p1));
}

// D2/W4: a stale nonce neither ACKs nor NACKs.
#[test]
fn d2_stale_nonce_ignored_but_subscription_honoured() {
    let now = Instant::now();
    let s = snap(chain("c1", "1"));
    let mut st = ads();
    st.on_request(&sub(Endpoint, &["c1"], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    let p1 = st.poll(&s, now).unwrap();
    // A stale nonce carrying a NACK: ignored; the push stays pending (R6).
    let stale = DeltaDiscoveryRequest {
        error_detail: Some(Status { code: 3, message: "x".into(), details: vec![] }),
        ..sub(Endpoint, &[], &[], "999")
    };
    assert_eq!(st.on_request(&stale, &EdgeSnapshot::default(), now).unwrap(), None);
    assert!(st.type_state(Endpoint).client_version("c1").is_some());
    // D3: a subscription change on a stale nonce still counts.
    st.on_request(&ack(Endpoint, &p1), &EdgeSnapshot::default(), now).unwrap();
    st.on_request(&sub(Endpoint, &["missing"], &[], "999"), &EdgeSnapshot::default(), now).unwrap();
    let p2 = st.poll(&s, now).unwrap();
    assert_eq!(decode(&p2).removed_resources, vec!["missing"], "D5: explicit does-not-exist");
}

// D3: every subscribed name is answered even if already held; unsubscribed names get nothing more.
#[test]
fn d3_resubscribe_answered_unsubscribe_silences() {
    let now = Instant::now();
    let s1 = snap(chain("c1", "1"));
    let mut st = ads();
    st.on_request(&sub(Endpoint, &["c1"], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    let p1 = st.poll(&s1, now).unwrap();
    st.on_request(&ack(Endpoint, &p1), &EdgeSnapshot::default(), now).unwrap();
    assert!(st.poll(&s1, now).is_none());
    st.on_request(&sub(Endpoint, &["c1"], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    let p2 = st.poll(&s1, now).unwrap();
    assert_eq!(sent_names(&p2), vec!["c1"], "re-subscribe must be answered (W10 warming)");
    st.on_request(&ack(Endpoint, &p2), &EdgeSnapshot::default(), now).unwrap();
    st.on_request(&sub(Endpoint, &[], &["c1", "never-subscribed"], ""), &EdgeSnapshot::default(), now)
        .unwrap();
    assert!(st.poll(&snap(chain("c1", "2")), now).is_none(), "unsubscribed name updated");
}

// D4: initial_resource_versions: matching versions not resent; vanished names come back removed.
#[test]
fn d4_initial_resource_versions() {
    let now = Instant::now();
    let s = snap(chain("c1", "1"));
    let have = s.get(Cluster, "c1").unwrap().version.clone();
    let mut st = DeltaStream::new(Some(Cluster), Limits::default());
    let first = DeltaDiscoveryRequest {
        initial_resource_versions: HashMap::from([
            ("c1".to_string(), have),
            ("gone".to_string(), "v".to_string()),
        ]),
        ..sub(Cluster, &["*"], &[], "")
    };
    st.on_request(&first, &EdgeSnapshot::default(), now).unwrap();
    let p = st.poll(&s, now).unwrap();
    assert!(sent_names(&p).is_empty(), "c1 already held");
    assert_eq!(decode(&p).removed_resources, vec!["gone"]);
}

// D5: a deleted subscribed resource is removed; a missing one is announced and sent when it appears.
#[test]
fn d5_removed_and_later_appears() {
    let now = Instant::now();
    let mut st = ads();
    let empty = snap(vec![]);
    st.on_request(&sub(Route, &["routes"], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    let p1 = st.poll(&empty, now).unwrap();
    assert_eq!(decode(&p1).removed_resources, vec!["routes"]);
    st.on_request(&ack(Route, &p1), &EdgeSnapshot::default(), now).unwrap();
    assert!(st.poll(&empty, now).is_none(), "does-not-exist is said once");
    let mut res = vec![r(Route, "routes", "r", &[])];
    res.push(r(Listener, "l", "l", &[]));
    let s2 = snap(res);
    let p2 = st.poll(&s2, now).unwrap();
    assert_eq!(sent_names(&p2), vec!["routes"]);
    st.on_request(&ack(Route, &p2), &EdgeSnapshot::default(), now).unwrap();
    let p3 = st.poll(&snap(vec![r(Listener, "l", "l", &[])]), now).unwrap();
    assert_eq!(decode(&p3).removed_resources, vec!["routes"]);
}

// D3 wildcard: with `*` plus a name, unsubscribing the name keeps it.
#[test]
fn d3_wildcard_plus_name() {
    let now = Instant::now();
    let s = snap(chain("c1", "1"));
    let mut st = DeltaStream::new(Some(Cluster), Limits::default());
    st.on_request(&sub(Cluster, &["*", "c1"], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    let p = st.poll(&s, now).unwrap();
    st.on_request(&ack(Cluster, &p), &EdgeSnapshot::default(), now).unwrap();
    st.on_request(&sub(Cluster, &[], &["c1"], ""), &EdgeSnapshot::default(), now).unwrap();
    assert!(st.type_state(Cluster).client_version("c1").is_some());
    let p2 = st.poll(&snap(chain("c1", "2")), now).unwrap();
    assert_eq!(sent_names(&p2), vec!["c1"], "still covered by wildcard");
}

// O1/O2 on Delta ADS: a new cluster before the route using it; the old cluster removed after.
#[test]
fn o1_o2_make_before_break() {
    let now = Instant::now();
    let s1 = snap(chain("c1", "1"));
    let mut st = ads();
    st.on_request(&sub(Cluster, &[], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    st.on_request(&sub(Route, &["routes"], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    let c = st.poll(&s1, now).unwrap();
    assert_eq!(c.kind, Some(Cluster));
    assert!(st.poll(&s1, now).is_none(), "RDS waits for CDS ACK");
    st.on_request(&ack(Cluster, &c), &EdgeSnapshot::default(), now).unwrap();
    let rds = st.poll(&s1, now).unwrap();
    st.on_request(&ack(Route, &rds), &EdgeSnapshot::default(), now).unwrap();
    let s2 = snap(chain("c2", "1"));
    let c2 = st.poll(&s2, now).unwrap();
    assert_eq!(c2.kind, Some(Cluster));
    assert_eq!(sent_names(&c2), vec!["c2"]);
    assert!(decode(&c2).removed_resources.is_empty(), "c1 still routed to");
    st.on_request(&ack(Cluster, &c2), &EdgeSnapshot::default(), now).unwrap();
    let rds2 = st.poll(&s2, now).unwrap();
    assert_eq!(rds2.kind, Some(Route));
    st.on_request(&ack(Route, &rds2), &EdgeSnapshot::default(), now).unwrap();
    let c3 = st.poll(&s2, now).unwrap();
    assert_eq!(decode(&c3).removed_resources, vec!["c1"]);
}

// S5 on Delta ADS: unknown type answered with its names removed; others keep working.
#[test]
fn s5_unknown_type() {
    let now = Instant::now();
    let s = snap(chain("c1", "1"));
    let mut st = ads();
    let unknown = DeltaDiscoveryRequest {
        type_url: "type.googleapis.com/x.Y".into(),
        resource_names_subscribe: names(&["a"]),
        ..Default::default()
    };
    st.on_request(&unknown, &EdgeSnapshot::default(), now).unwrap();
    let p = st.poll(&s, now).unwrap();
    assert_eq!(decode(&p).removed_resources, vec!["a"]);
    st.on_request(&sub(Cluster, &[], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    assert_eq!(st.poll(&s, now).unwrap().kind, Some(Cluster));
    assert_eq!(
        ads().on_request(&DeltaDiscoveryRequest::default(), &EdgeSnapshot::default(), now).unwrap_err(),
        ProtocolError::MissingTypeUrl
    );
}

// R6: one un-ACKed push per type; later changes merge.
#[test]
fn r6_merge_while_pending() {
    let now = Instant::now();
    let mut st = DeltaStream::new(Some(Cluster), Limits::default());
    st.on_request(&sub(Cluster, &[], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    let p1 = st.poll(&snap(chain("c1", "1")), now).unwrap();
    assert!(st.poll(&snap(chain("c1", "2")), now).is_none());
    st.on_request(&ack(Cluster, &p1), &EdgeSnapshot::default(), now).unwrap();
    let s3 = snap(chain("c1", "3"));
    let p = st.poll(&s3, now).unwrap();
    assert_eq!(decode(&p).resources[0].version, s3.get(Cluster, "c1").unwrap().version);
}

// Incremental planning: a stream in sync with generation g checks only g+1's changed names, and
// still gets every change right, including when it skips a generation.
#[test]
fn incremental_planning_through_the_cache() {
    use crate::cache::Cache;
    use flotilla_shared::{Snapshot, Target};
    let now = Instant::now();
    let cache = Cache::new();
    let t = Target::new("ns", "g");
    let set = |tags: &[(&str, &str)]| {
        let res = tags.iter().map(|(n, tag)| r(Cluster, n, tag, &[])).collect::<Vec<_>>();
        cache.set(&t, &Snapshot::build(res).unwrap());
        cache.get(&t).unwrap()
    };
    let mut st = DeltaStream::new(Some(Cluster), Limits::default());
    st.on_request(&sub(Cluster, &[], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    let s1 = set(&[("a", "1"), ("b", "1"), ("c", "1")]);
    let p = st.poll(&s1, now).unwrap();
    st.on_request(&ack(Cluster, &p), &EdgeSnapshot::default(), now).unwrap();
    assert!(st.poll(&s1, now).is_none());
    let s2 = set(&[("a", "1"), ("b", "2"), ("c", "1")]);
    assert_eq!(s2.changed(Cluster), &[Arc::<str>::from("b")]);
    let p = st.poll(&s2, now).unwrap();
    assert_eq!(sent_names(&p), vec!["b"]);
    st.on_request(&ack(Cluster, &p), &EdgeSnapshot::default(), now).unwrap();
    // Skip a generation: s3 is never seen; s4 removes c and changes a.
    let _s3 = set(&[("a", "3"), ("b", "2"), ("c", "1")]);
    let s4 = set(&[("a", "4"), ("b", "2")]);
    // Two generations behind: the union of both changes (a twice, c once), each name once.
    let mut since = s4.changed_since(Cluster, s2.generation).unwrap().to_vec();
    since.sort_unstable();
    assert_eq!(since, [Arc::from("a"), Arc::from("c")]);
    let again = s4.changed_since(Cluster, s2.generation).unwrap();
    assert!(std::ptr::eq(again, s4.changed_since(Cluster, s2.generation).unwrap()), "worked out once");
    assert_eq!(s4.changed_since(Cluster, s4.generation), Some(&[][..]));
    assert_eq!(s4.changed_since(Cluster, s4.generation + 7), None, "unknown generation: recheck all");
    let p = st.poll(&s4, now).unwrap();
    assert_eq!(sent_names(&p), vec!["a"]);
    assert_eq!(decode(&p).removed_resources, vec!["c"]);
    st.on_request(&ack(Cluster, &p), &EdgeSnapshot::default(), now).unwrap();
    let s5 = set(&[("a", "4"), ("b", "2"), ("d", "1")]);
    assert_eq!(sent_names(&st.poll(&s5, now).unwrap()), vec!["d"]);
}

// W10 on Delta: an updated cluster is followed by its (unchanged) endpoints; a new one is not
// (Envoy subscribes to a new cluster's endpoints itself).
#[test]
fn w10_updated_cluster_gets_its_endpoints_again() {
    let now = Instant::now();
    let mut st = ads();
    let s1 = snap(chain("c1", "1"));
    st.on_request(&sub(Cluster, &[], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    st.on_request(&sub(Endpoint, &["c1"], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    let c = st.poll(&s1, now).unwrap();
    let e = st.poll(&s1, now).unwrap();
    st.on_request(&ack(Cluster, &c), &EdgeSnapshot::default(), now).unwrap();
    st.on_request(&ack(Endpoint, &e), &EdgeSnapshot::default(), now).unwrap();
    let mut res = chain("c1", "1");
    res[0] = r(Cluster, "c1", "c-updated", &[(Endpoint, "c1")]);
    let s2 = snap(res);
    assert_eq!(st.poll(&s2, now).unwrap().kind, Some(Cluster));
    let e2 = st.poll(&s2, now).unwrap();
    assert_eq!(e2.kind, Some(Endpoint));
    assert_eq!(sent_names(&e2), vec!["c1"]);
}

// Bounded pushes: a first sync larger than MAX_PUSH_BYTES goes out in several responses, one
// per ACK, every resource exactly once, and the stream is in sync afterwards.
#[test]
fn a_large_first_sync_is_chunked() {
    let now = Instant::now();
    let body = "x".repeat(1024);
    let names: Vec<String> = (0..200).map(|i| format!("c{i:03}")).collect();
    let s = snap(names.iter().map(|n| r(Cluster, n, &body, &[])).collect());
    let mut st = DeltaStream::new(Some(Cluster), Limits::default());
    st.on_request(&sub(Cluster, &[], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    let mut got = Vec::new();
    let mut pushes = 0;
    let mut whole = Vec::new();
    while let Some(p) = st.poll(&s, now) {
        assert!(p.frame.len() <= MAX_PUSH_BYTES + 4096, "push of {} bytes", p.frame.len());
        got.extend(sent_names(&p));
        let ev = st.on_request(&ack(Cluster, &p), &EdgeSnapshot::default(), now).unwrap();
        whole.push(matches!(ev, Some(Event::Ack { whole: true, .. })));
        pushes += 1;
        assert!(pushes < 100, "no progress");
    }
    assert!(pushes >= 200 * 1024 / MAX_PUSH_BYTES, "only {pushes} pushes");
    got.sort();
    assert_eq!(got, names);
    // Only the ACK of the last chunk says the client holds the whole version.
    assert_eq!(whole.iter().filter(|w| **w).count(), 1, "{whole:?}");
    assert_eq!(whole.last(), Some(&true), "{whole:?}");
}

// An ACK reports the client in sync only when the push left nothing for later: a removal
// deferred for ordering (O2) or a name whose version the client rejected (D2) makes it an ACK
// in part; the push that completes it, or a plan that finds the client already complete, does.
#[test]
fn an_ack_is_whole_only_when_the_push_left_nothing_for_later() {
    let whole = |ev: Option<Event>| match ev {
        Some(Event::Ack { whole, .. }) => whole,
        other => panic!("not an ACK: {other:?}"),
    };
    let now = Instant::now();
    // O2: c1's removal waits for the route that still names it.
    let mut st = ads();
    st.on_request(&sub(Cluster, &[], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    st.on_request(&sub(Route, &["routes"], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    let s1 = snap(chain("c1", "1"));
    let c = st.poll(&s1, now).unwrap();
    assert!(whole(st.on_request(&ack(Cluster, &c), &EdgeSnapshot::default(), now).unwrap()));
    let rds = st.poll(&s1, now).unwrap();
    assert!(whole(st.on_request(&ack(Route, &rds), &EdgeSnapshot::default(), now).unwrap()));
    let s2 = snap(chain("c2", "1"));
    let c2 = st.poll(&s2, now).unwrap();
    assert!(decode(&c2).removed_resources.is_empty(), "c1 still routed to");
    assert!(
        !whole(st.on_request(&ack(Cluster, &c2), &EdgeSnapshot::default(), now).unwrap()),
        "c1 still held"
    );
    let rds2 = st.poll(&s2, now).unwrap();
    st.on_request(&ack(Route, &rds2), &EdgeSnapshot::default(), now).unwrap();
    let c3 = st.poll(&s2, now).unwrap();
    assert_eq!(decode(&c3).removed_resources, vec!["c1"]);
    assert!(whole(st.on_request(&ack(Cluster, &c3), &EdgeSnapshot::default(), now).unwrap()));

    // D2: c1's new version was rejected; a push of c2 alone leaves c1 behind.
    let t0 = Instant::now();
    let two = |a: &str, b: &str| snap(vec![r(Cluster, "c1", a, &[]), r(Cluster, "c2", b, &[])]);
    let mut st = DeltaStream::new(Some(Cluster), Limits::default());
    st.on_request(&sub(Cluster, &[], &[], ""), &EdgeSnapshot::default(), t0).unwrap();
    let p1 = st.poll(&two("1", "1"), t0).unwrap();
    assert!(whole(st.on_request(&ack(Cluster, &p1), &EdgeSnapshot::default(), t0).unwrap()));
    let p2 = st.poll(&two("2", "1"), t0).unwrap();
    st.on_request(&nack(Cluster, &p2), &EdgeSnapshot::default(), t0).unwrap();
    let later = t0 + Duration::from_secs(5);
    let p3 = st.poll(&two("2", "2"), later).unwrap();
    assert_eq!(sent_names(&p3), vec!["c2"]);
    assert!(
        !whole(st.on_request(&ack(Cluster, &p3), &EdgeSnapshot::default(), later).unwrap()),
        "c1 rejected"
    );
    assert!(st.take_quiet_syncs().is_empty());
    // Rolled back to the c1 the client kept: complete without a push, reported once.
    let back = two("1", "2");
    assert!(st.poll(&back, later).is_none(), "the client holds all of it");
    assert_eq!(st.take_quiet_syncs(), vec![(Cluster, back.of_type(Cluster).version.clone())]);
    assert!(st.poll(&back, later).is_none());
    assert!(st.take_quiet_syncs().is_empty(), "reported once");
}

// D1 across the group's name table: through the cache, generations extend one table (ids kept)
// until removed names outnumber live ones and a new epoch starts; a stream re-files what it holds
// by name, so each generation still sends exactly the new cluster and removes the old one.
#[test]
fn d1_holds_through_name_table_growth_and_compaction() {
    let now = Instant::now();
    let cache = crate::cache::Cache::new();
    let group = flotilla_shared::Target::new("ns", "g");
    let mut st = DeltaStream::new(Some(Cluster), Limits::default());
    st.on_request(&sub(Cluster, &[], &[], ""), &EdgeSnapshot::default(), now).unwrap();
    let mut epochs = std::collections::BTreeSet::new();
    for i in 0..1_500 {
        let cluster = format!("c{i}");
        cache.set(&group, &flotilla_shared::Snapshot::build(vec![r(Cluster, &cluster, "x", &[])]).unwrap());
        let s = cache.get(&group).unwrap();
        epochs.insert(s.names().epoch());
        let p = st.poll(&s, now).expect("a push per generation");
        assert_eq!(sent_names(&p), vec![cluster.clone()]);
        let removed = decode(&p).removed_resources;
        assert_eq!(removed, if i == 0 { vec![] } else { vec![format!("c{}", i - 1)] }, "generation {i}");
        st.on_request(&ack(Cluster, &p), &s, now).unwrap();
        assert!(st.poll(&s, now).is_none());
    }
    assert!(epochs.len() >= 2, "the table never started a new epoch");
}

// Issue 26, item 6: NACKed, rolled back, then the rejected content applied again: nothing is
// sent (D2), and the type is reported as still rejecting what is wanted (not in sync).
#[test]
fn d2_the_rejected_version_wanted_again_is_reported_not_resent() {
    let t0 = Instant::now();
    let mut st = DeltaStream::new(Some(Cluster), Limits::default());
    st.on_request(&sub(Cluster, &[], &[], ""), &EdgeSnapshot::default(), t0).unwrap();
    let p1 = st.poll(&snap(chain("c1", "1")), t0).unwrap();
    st.on_request(&ack(Cluster, &p1), &EdgeSnapshot::default(), t0).unwrap();
    let p2 = st.poll(&snap(chain("c1", "2")), t0).unwrap();
    st.on_request(&nack(Cluster, &p2), &EdgeSnapshot::default(), t0).unwrap();
    let later = t0 + Duration::from_secs(5);
    assert!(st.poll(&snap(chain("c1", "1")), later).is_none());
    assert_eq!(st.take_quiet_syncs().len(), 1, "rolled back: in sync");
    let again = snap(chain("c1", "2"));
    assert!(st.poll(&again, later).is_none(), "the rejected version is not resent");
    assert!(st.take_quiet_syncs().is_empty());
    assert_eq!(st.take_still_rejected(), vec![(Cluster, again.of_type(Cluster).version.clone())]);
    // Rolled back once more: in sync again, though no NACK came this time.
    let back = snap(chain("c1", "1"));
    assert!(st.poll(&back, later).is_none());
    assert_eq!(st.take_quiet_syncs(), vec![(Cluster, back.of_type(Cluster).version.clone())]);
}

/// A group in a cache, so generations follow one another as in production (and steps exist).
struct Group {
    cache: crate::cache::Cache,
    target: flotilla_shared::Target,
}

impl Group {
    fn new() -> Group {
        Group { cache: crate::cache::Cache::new(), target: flotilla_shared::Target::new("ns", "shared") }
    }

    fn set(&self, res: Vec<flotilla_shared::Resource>) -> Arc<EdgeSnapshot> {
        self.cache.set(&self.target, &flotilla_shared::Snapshot::build(res).unwrap());
        self.cache.get(&self.target).unwrap()
    }
}

/// Two EDS clusters, `tag1`/`tag2` varying each one's endpoints.
fn two_clusters(tag1: &str, tag2: &str) -> Vec<flotilla_shared::Resource> {
    vec![
        r(Cluster, "c1", "c1", &[(Endpoint, "c1")]),
        r(Cluster, "c2", "c2", &[(Endpoint, "c2")]),
        r(Endpoint, "c1", tag1, &[]),
        r(Endpoint, "c2", tag2, &[]),
    ]
}

/// An ADS stream subscribed like Envoy (wildcard CDS, `eds` named) and in sync with `s`.
fn synced_ads(s: &EdgeSnapshot, eds: &[&str]) -> DeltaStream {
    let now = Instant::now();
    let mut st = ads();
    st.on_request(&sub(Cluster, &[], &[], ""), s, now).unwrap();
    st.on_request(&sub(Endpoint, eds, &[], ""), s, now).unwrap();
    while let Some(p) = st.poll(s, now) {
        st.on_request(&ack(p.kind.unwrap(), &p), s, now).unwrap();
    }
    st
}

/// An ADS stream subscribed to every type of `chain("c0", …)` plus `two_clusters`, in sync with
/// `s`.
fn synced_chain_ads(s: &EdgeSnapshot) -> DeltaStream {
    let now = Instant::now();
    let mut st = ads();
    st.on_request(&sub(Cluster, &[], &[], ""), s, now).unwrap();
    st.on_request(&sub(Endpoint, &["c0", "c1", "c2"], &[], ""), s, now).unwrap();
    st.on_request(&sub(Listener, &[], &[], ""), s, now).unwrap();
    st.on_request(&sub(Route, &["routes"], &[], ""), s, now).unwrap();
    while let Some(p) = st.poll(s, now) {
        st.on_request(&ack(p.kind.unwrap(), &p), s, now).unwrap();
    }
    st
}

// Streams in sync with the same generation get the step's one shared response: the same nonce
// and the very same bytes; a stream whose subscription does not cover every changed name gets a
// response planned for it alone, with only what it subscribed to.
#[test]
fn streams_in_the_same_state_share_one_response() {
    let now = Instant::now();
    let g = Group::new();
    let s1 = g.set(two_clusters("e1", "e1"));
    let mut a = synced_ads(&s1, &["c1", "c2"]);
    let mut b = synced_ads(&s1, &["c1", "c2"]);
    let mut only_c2 = synced_ads(&s1, &["c2"]);

    let s2 = g.set(two_clusters("e2", "e2"));
    let (pa, pb) = (a.poll(&s2, now).unwrap(), b.poll(&s2, now).unwrap());
    assert_eq!(pa.kind, Some(Endpoint));
    assert_eq!(pa.nonce, pb.nonce);
    assert!(pa.nonce.starts_with('s'), "a shared nonce: {}", pa.nonce);
    assert_eq!(pa.frame.to_bytes().as_ptr(), pb.frame.to_bytes().as_ptr(), "the same bytes, not a copy");
    assert_eq!(sent_names(&pa), vec!["c1", "c2"]);
    assert_eq!(decode(&pa).system_version_info, *s2.of_type(Endpoint).version);
    let own = only_c2.poll(&s2, now).unwrap();
    assert_ne!(own.nonce, pa.nonce);
    assert_eq!(sent_names(&own), vec!["c2"]);

    // ACKed, every stream is in sync and the next step is shared again.
    for (st, p) in [(&mut a, &pa), (&mut b, &pb), (&mut only_c2, &own)] {
        assert!(matches!(st.on_request(&ack(Endpoint, p), &s2, now).unwrap(), Some(Event::Ack { .. })));
        assert!(st.poll(&s2, now).is_none());
    }
    let s3 = g.set(two_clusters("e3", "e2"));
    let (pa, pb) = (a.poll(&s3, now).unwrap(), b.poll(&s3, now).unwrap());
    assert_eq!((pa.nonce.clone(), sent_names(&pa)), (pb.nonce.clone(), vec!["c1".to_string()]));
    assert!(only_c2.poll(&s3, now).is_none(), "c1 is not its business");
    assert_eq!(
        a.type_state(Endpoint).client_version("c1"),
        s3.get(Endpoint, "c1").map(|r| r.version.as_str())
    );
}

// A stream that mirrors a generation's set and missed several generations (its push was still
// unanswered as they came) gets a catch-up response shared with every stream at the same place:
// one nonce, the same bytes, every name changed since, none that came back to what it held. A
// stream one generation behind gets the usual step; one that keeps slots of its own (part of
// the set) plans its own. A NACK of the catch-up puts back the older set.
#[test]
fn streams_several_generations_behind_share_a_catch_up_response() {
    let now = Instant::now();
    let g = Group::new();
    let three = |t1: &str, t2: &str, t3: &str| {
        let mut res = two_clusters(t1, t2);
        res.push(r(Cluster, "c3", "c3", &[(Endpoint, "c3")]));
        res.push(r(Endpoint, "c3", t3, &[]));
        res
    };
    let s1 = g.set(three("e1", "e1", "e1"));
    let mut a = synced_ads(&s1, &["c1", "c2", "c3"]);
    let mut b = synced_ads(&s1, &["c1", "c2", "c3"]);
    let mut part = synced_ads(&s1, &["c1", "c2"]);
    assert_eq!(a.type_state(Endpoint).mirrors(), Some(s1.generation));
    let mut current = synced_ads(&s1, &["c1", "c2", "c3"]);
    let s2 = g.set(three("e2", "e1", "x"));
    let p = current.poll(&s2, now).unwrap();
    current.on_request(&ack(Endpoint, &p), &s2, now).unwrap();
    // c3 comes back to what s1 had: not part of the catch-up from s1.
    let s3 = g.set(three("e2", "e3", "e1"));

    let (pa, pb) = (a.poll(&s3, now).unwrap(), b.poll(&s3, now).unwrap());
    assert!(pa.shared && pb.shared);
    assert_eq!(pa.nonce, pb.nonce);
    assert_eq!(pa.frame.to_bytes().as_ptr(), pb.frame.to_bytes().as_ptr(), "the same bytes, not a copy");
    assert_eq!(sent_names(&pa), vec!["c1", "c2"]);
    assert_eq!(decode(&pa).system_version_info, *s3.of_type(Endpoint).version);
    assert_eq!(a.type_state(Endpoint).mirrors(), Some(s3.generation), "the pointer moved two generations");
    a.on_request(&ack(Endpoint, &pa), &s3, now).unwrap();
    assert!(a.poll(&s3, now).is_none());

    let pc = current.poll(&s3, now).unwrap();
    assert!(pc.shared);
    assert_ne!(pc.nonce, pa.nonce, "one generation behind: the generation's own step");
    assert_eq!(sent_names(&pc), vec!["c2", "c3"]);

    let own = part.poll(&s3, now).unwrap();
    assert!(!own.shared, "own slots: planned for this stream");
    assert_eq!(sent_names(&own), vec!["c1", "c2"]);

    b.on_request(&nack(Endpoint, &pb), &s3, now).unwrap();
    let eds = b.type_state(Endpoint);
    assert_eq!(eds.mirrors(), Some(s1.generation), "NACK: the set it held before");
    assert_eq!(eds.client_version("c1"), s1.get(Endpoint, "c1").map(|r| r.version.as_str()));
}

// D2 for a shared response: its NACK puts back what the client held, the rejected version is not
// sent again, and a newer one is (after the back-off); once ACKed, steps are shared again.
#[test]
fn a_nacked_shared_response_restores_what_the_client_held() {
    let now = Instant::now();
    let g = Group::new();
    let s1 = g.set(two_clusters("e1", "e1"));
    let old = s1.get(Endpoint, "c1").unwrap().version.clone();
    let mut st = synced_ads(&s1, &["c1", "c2"]);
    let s2 = g.set(two_clusters("bad", "e1"));
    let p = st.poll(&s2, now).unwrap();
    assert!(p.shared);
    let ev = st.on_request(&nack(Endpoint, &p), &s2, now).unwrap();
    assert!(matches!(ev, Some(Event::Nack { ref resources, .. }) if resources == &["c1".to_string()]));
    assert_eq!(st.type_state(Endpoint).client_version("c1"), Some(old.as_str()));
    let later = now + Duration::from_secs(60);
    assert!(st.poll(&s2, later).is_none(), "the rejected version is not resent");
    let s3 = g.set(two_clusters("good", "e1"));
    assert!(st.poll(&s3, now).is_none(), "backing off");
    let p = st.poll(&s3, later).unwrap();
    assert_eq!(sent_names(&p), vec!["c1"]);
    st.on_request(&ack(Endpoint, &p), &s3, later).unwrap();
    let s4 = g.set(two_clusters("good", "e2"));
    let p = st.poll(&s4, later).unwrap();
    assert!(p.shared, "shared again after the ACK: {}", p.nonce);
}

// W10 and O2 still hold on the shared path: an updated cluster sent as a shared response is
// followed by its endpoints; a removal of a cluster a held route still uses is planned per
// stream, so it waits for the route.
#[test]
fn shared_responses_keep_w10_and_o2() {
    let now = Instant::now();
    let g = Group::new();
    let mut res = chain("c0", "1");
    res.extend(two_clusters("e1", "e1"));
    let s1 = g.set(res.clone());
    let mut st = synced_chain_ads(&s1);
    let mut updated = res.clone();
    updated[5] = r(Cluster, "c2", "c2-updated", &[(Endpoint, "c2")]);
    let s2 = g.set(updated.clone());
    let c = st.poll(&s2, now).unwrap();
    assert!(c.shared);
    assert_eq!((c.kind, sent_names(&c)), (Some(Cluster), vec!["c2".to_string()]));
    st.on_request(&ack(Cluster, &c), &s2, now).unwrap();
    let e = st.poll(&s2, now).unwrap();
    assert_eq!((e.kind, sent_names(&e)), (Some(Endpoint), vec!["c2".to_string()]), "W10");
    st.on_request(&ack(Endpoint, &e), &s2, now).unwrap();

    // The route moves to c1 and c0 goes, in one generation: c0 is removed only after the client
    // ACKed the route that no longer names it (O2), so that removal is planned per stream.
    let mut moved: Vec<_> = updated.into_iter().filter(|x| x.name != "c0" && x.kind != Route).collect();
    moved.push(r(Route, "routes", "r-c1", &[(Cluster, "c1")]));
    let s3 = g.set(moved);
    let mut order = Vec::new();
    while let Some(p) = st.poll(&s3, now) {
        let removed = decode(&p).removed_resources;
        order.push((p.kind.unwrap(), removed, p.shared));
        st.on_request(&ack(p.kind.unwrap(), &p), &s3, now).unwrap();
    }
    let route = order.iter().position(|(k, _, _)| *k == Route).expect("route pushed");
    let gone = order.iter().position(|(k, rm, _)| *k == Cluster && rm == &["c0"]).expect("c0 removed");
    assert!(route < gone, "O2: {order:?}");
    assert!(!order[gone].2, "a removal the client still uses is planned per stream");
    assert!(st.type_state(Cluster).client_version("c0").is_none());
}

// O2 on the shared path: a cluster no held listener or route uses is removed by the step's shared
// response on ADS, and its endpoints after it (the client no longer holds the cluster).
#[test]
fn a_removal_nothing_uses_is_shared_on_ads() {
    let now = Instant::now();
    let g = Group::new();
    let mut res = chain("c0", "1");
    res.extend(two_clusters("e1", "e1"));
    let s1 = g.set(res.clone());
    let (mut a, mut b) = (synced_chain_ads(&s1), synced_chain_ads(&s1));
    let without_c2: Vec<_> = res.iter().filter(|x| x.name != "c2").cloned().collect();
    let s2 = g.set(without_c2.clone());
    for kind in [Cluster, Endpoint] {
        let (pa, pb) = (a.poll(&s2, now).unwrap(), b.poll(&s2, now).unwrap());
        assert_eq!(pa.kind, Some(kind));
        assert!(pa.shared && pb.shared, "{kind:?}: shared");
        assert_eq!(pa.nonce, pb.nonce);
        assert_eq!(decode(&pa).removed_resources, vec!["c2"]);
        a.on_request(&ack(kind, &pa), &s2, now).unwrap();
        b.on_request(&ack(kind, &pb), &s2, now).unwrap();
    }
    assert!(a.poll(&s2, now).is_none());
    // A removal the client still uses: `shared_responses_keep_w10_and_o2`.
}

// A stream that holds exactly a generation's set of a type keeps one pointer to it: after the
// first sync, and through shared steps (the pointer moves); a NACK of a shared step puts back the
// previous set; a stream that subscribes to part of the set keeps its own slots.
#[test]
fn streams_in_sync_keep_one_pointer_to_the_generations_set() {
    let now = Instant::now();
    let g = Group::new();
    let s1 = g.set(two_clusters("e1", "e1"));
    let mut all = synced_ads(&s1, &["c1", "c2"]);
    let part = synced_ads(&s1, &["c2"]);
    assert_eq!(all.type_state(Cluster).mirrors(), Some(s1.generation), "wildcard CDS");
    assert_eq!(all.type_state(Endpoint).mirrors(), Some(s1.generation), "EDS naming every cluster");
    assert_eq!(part.type_state(Endpoint).mirrors(), None);
    assert_eq!(
        part.type_state(Endpoint).client_version("c2"),
        s1.get(Endpoint, "c2").map(|r| r.version.as_str())
    );

    let s2 = g.set(two_clusters("e2", "e1"));
    let p = all.poll(&s2, now).unwrap();
    assert!(p.shared);
    assert_eq!(all.type_state(Endpoint).mirrors(), Some(s2.generation), "the pointer moved");
    all.on_request(&nack(Endpoint, &p), &s2, now).unwrap();
    assert_eq!(all.type_state(Endpoint).mirrors(), Some(s1.generation), "NACK: the previous set");
    assert_eq!(
        all.type_state(Endpoint).client_version("c1"),
        s1.get(Endpoint, "c1").map(|r| r.version.as_str())
    );

    // An own plan (the back-off over, a newer version) turns the set into own slots; the next
    // full sync finds them equal to the set again.
    let later = now + Duration::from_secs(60);
    let s3 = g.set(two_clusters("e3", "e1"));
    let p = all.poll(&s3, later).unwrap();
    assert!(!p.shared);
    all.on_request(&ack(Endpoint, &p), &s3, later).unwrap();
    assert!(all.poll(&s3, later).is_none());
    assert_eq!(
        all.type_state(Endpoint).client_version("c1"),
        s3.get(Endpoint, "c1").map(|r| r.version.as_str())
    );
    all.resend_all(&s3);
    while let Some(p) = all.poll(&s3, later) {
        all.on_request(&ack(p.kind.unwrap(), &p), &s3, later).unwrap();
    }
    assert_eq!(all.type_state(Endpoint).mirrors(), Some(s3.generation));
    // A generation that changes only clusters moves the endpoints' pointer up without a push.
    let mut res = two_clusters("e3", "e1");
    res[0] = r(Cluster, "c1", "c1-new", &[(Endpoint, "c1")]);
    let s4 = g.set(res);
    while let Some(p) = all.poll(&s4, later) {
        all.on_request(&ack(p.kind.unwrap(), &p), &s4, later).unwrap();
    }
    assert_eq!(all.type_state(Cluster).mirrors(), Some(s4.generation));
    assert_eq!(
        all.type_state(Endpoint).client_version("c1"),
        s4.get(Endpoint, "c1").map(|r| r.version.as_str())
    );
}

// A name the client does not subscribe to never enters what a mirroring stream thinks it holds:
// it appears alone (nothing for EDS to send, the stream still mirrors the older set), then a
// subscribed name changes (a shared step from the newer generation).
#[test]
fn a_name_outside_the_subscription_never_enters_the_mirrored_set() {
    let now = Instant::now();
    let g = Group::new();
    let s1 = g.set(two_clusters("e1", "e1"));
    let mut st = synced_ads(&s1, &["c1", "c2"]);
    assert_eq!(st.type_state(Endpoint).mirrors(), Some(s1.generation));
    let with_c3 = |tag1: &str| {
        let mut res = two_clusters(tag1, "e1");
        res.push(r(Cluster, "c3", "c3", &[(Endpoint, "c3")]));
        res.push(r(Endpoint, "c3", "e1", &[]));
        res
    };
    let s2 = g.set(with_c3("e1"));
    while let Some(p) = st.poll(&s2, now) {
        assert_eq!(p.kind, Some(Cluster), "only the new cluster goes out");
        st.on_request(&ack(Cluster, &p), &s2, now).unwrap();
    }
    let s3 = g.set(with_c3("e2"));
    let p = st.poll(&s3, now).unwrap();
    assert_eq!((p.kind, sent_names(&p)), (Some(Endpoint), vec!["c1".to_string()]));
    st.on_request(&ack(Endpoint, &p), &s3, now).unwrap();
    let eds = st.type_state(Endpoint);
    assert_eq!(eds.client_version("c3"), None, "never sent, never subscribed");
    assert_eq!(eds.client_version("c1"), s3.get(Endpoint, "c1").map(|r| r.version.as_str()));
    assert_ne!(eds.mirrors(), Some(s3.generation), "it does not hold c3, so not the whole set");
}

// Many generations of random changes through the cache, streams of different subscriptions (some
// share responses, some do not; one falls behind by a few generations at a time): after every
// drain each client holds exactly what the snapshot has of what it subscribed to.
#[test]
fn shared_and_own_responses_leave_every_client_exact() {
    let now = Instant::now();
    let g = Group::new();
    let mut seed: u64 = 0x5eed;
    let mut rand = move |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let names: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    let mut tags = vec![0u64; names.len()];
    // The last name starts absent: the stream that does not subscribe to it holds the whole set
    // until it appears.
    let mut present = vec![true; names.len()];
    present[names.len() - 1] = false;
    let build = |tags: &[u64], present: &[bool]| {
        let mut res = Vec::new();
        for (i, n) in names.iter().enumerate().filter(|(i, _)| present[*i]) {
            res.push(r(Cluster, n, "c", &[(Endpoint, n)]));
            res.push(r(Endpoint, n, &format!("e{}", tags[i]), &[]));
        }
        res
    };
    let mut snap_now = g.set(build(&tags, &present));
    let all: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
    let but_last = &all[..all.len() - 1];
    let mut streams = [
        (synced_ads(&snap_now, &all), all.clone()),
        (synced_ads(&snap_now, &all), all.clone()),
        (synced_ads(&snap_now, but_last), but_last.to_vec()),
        (synced_ads(&snap_now, &all[..3]), all[..3].to_vec()),
    ];
    // Client-side view: what each client holds of EDS, by applying every response.
    let mut held: Vec<HashMap<String, String>> = streams
        .iter()
        .map(|(st, subs)| {
            subs.iter()
                .filter_map(|n| {
                    st.type_state(Endpoint).client_version(n).map(|v| (n.to_string(), v.to_string()))
                })
                .collect()
        })
        .collect();
    let (mut shared, mut mirrored, mut skipped, mut caught_up) = (0, 0, 0, 0);
    // W1: nonces stay unique on each stream, shared responses and its own mixed.
    let mut nonces: Vec<std::collections::HashSet<Arc<str>>> = vec![Default::default(); streams.len()];
    for _ in 0..200 {
        for _ in 0..=rand(2) {
            let i = rand(names.len() as u64) as usize;
            if rand(10) == 0 {
                present[i] = !present[i];
            } else {
                tags[i] += 1;
            }
        }
        snap_now = g.set(build(&tags, &present));
        for (i, (((st, subs), view), seen)) in
            streams.iter_mut().zip(held.iter_mut()).zip(nonces.iter_mut()).enumerate()
        {
            // The second stream falls behind by a few generations at a time (catch-up steps).
            if i == 1 && rand(3) != 0 {
                skipped += 1;
                continue;
            }
            while let Some(p) = st.poll(&snap_now, now) {
                shared += usize::from(p.shared);
                if i == 1 && skipped > 0 && p.kind == Some(Endpoint) && p.shared {
                    caught_up += 1;
                }
                assert!(seen.insert(p.nonce.clone()), "nonce {} sent twice on one stream", p.nonce);
                if p.kind == Some(Endpoint) {
                    let resp = decode(&p);
                    for res in resp.resources {
                        view.insert(res.name, res.version);
                    }
                    for n in resp.removed_resources {
                        view.remove(&n);
                    }
                }
                st.on_request(&ack(p.kind.unwrap(), &p), &snap_now, now).unwrap();
            }
            let want: HashMap<String, String> = subs
                .iter()
                .filter_map(|n| snap_now.get(Endpoint, n).map(|r| (n.to_string(), r.version.clone())))
                .collect();
            assert_eq!(*view, want, "client view after generation {}", snap_now.generation);
            // The stream's own idea of what the client holds (slots or a mirrored set) is the
            // client's.
            let eds = st.type_state(Endpoint);
            let thinks: HashMap<String, String> = names
                .iter()
                .filter_map(|n| eds.client_version(n).map(|v| (n.to_string(), v.to_string())))
                .collect();
            assert_eq!(thinks, want, "stream state after generation {}", snap_now.generation);
            mirrored += usize::from(eds.mirrors().is_some());
            if i == 1 {
                skipped = 0;
            }
        }
    }
    assert!(shared > 100, "the shared path was exercised ({shared} shared pushes)");
    assert!(caught_up > 20, "catch-up steps were exercised ({caught_up} shared after a lag)");
    assert!(mirrored > 100, "streams mirrored the generation's set ({mirrored} times)");
}

/// The fan-out reads, of every subscribed type of every stream on each change, only what
/// `idle_through` needs: keep it within the first 128 bytes of `DeltaType`, and what every
/// poll and every request read of the stream first within its first 64 bytes
/// (`scripts/fanout-cost.sh` counts the misses).
#[test]
fn the_fan_outs_fast_path_reads_only_the_head_of_each_types_state() {
    use std::mem::{offset_of, size_of};
    let hot = [
        offset_of!(DeltaType, force) + size_of::<BTreeSet<Arc<str>>>(),
        offset_of!(DeltaType, rejected) + size_of::<BTreeMap<String, String>>(),
        offset_of!(DeltaType, synced) + size_of::<Option<u64>>(),
        offset_of!(DeltaType, retry_at) + size_of::<Option<Instant>>(),
        offset_of!(DeltaType, pending) + size_of::<Option<Box<Pending>>>(),
        offset_of!(DeltaType, nacks) + size_of::<u32>(),
        offset_of!(DeltaType, kind) + 1,
        offset_of!(DeltaType, started) + 1,
        offset_of!(DeltaType, reported_rejected) + 1,
        offset_of!(DeltaType, acked_in_part) + 1,
    ];
    assert!(hot.iter().all(|end| *end <= 128), "{hot:?}");
    let head = [
        offset_of!(DeltaStream, started) + 1,
        offset_of!(DeltaStream, fixed) + size_of::<Option<ResourceType>>(),
        offset_of!(DeltaStream, table) + size_of::<Arc<NameTable>>(),
        offset_of!(DeltaStream, unknown_due) + size_of::<BTreeMap<String, Vec<String>>>(),
        offset_of!(DeltaStream, limits) + size_of::<Limits>(),
    ];
    assert!(head.iter().all(|end| *end <= 64), "{head:?}");
}
