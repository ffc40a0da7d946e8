//! One change fanned out to 1k and 10k in-process Delta ADS subscribers of one proxy group.
//!
//! Each subscriber is a tokio task holding a `DeltaStream` and a `watch` receiver from the cache,
//! as a real stream does; the gRPC socket is replaced by counting the frame. Measured: from
//! `Cache::set` with one changed ClusterLoadAssignment until every subscriber has produced its
//! push. Also printed: resource encodes per change (must be 1 whatever the subscriber count).
//!
//! The lower bound beside it (`null_server_one_change`): the same number of tasks woken the same
//! way, each taking the change's pre-encoded frame (one shared `Bytes`) and counting it — no
//! protocol state, no planning. fanout / null is what the xDS server adds per change.
//!
//! `cargo bench -p flotilla-edge --bench fanout`
//!
//! Wall-clock on a shared VM moves by tens of percent between runs. For a steady figure,
//! `scripts/fanout-cost.sh` runs the same two fleets on one thread for a fixed number of changes
//! (`FANOUT_FIXED=<changes>`, `FANOUT_STREAMS=<n>`) under callgrind, which counts instructions and
//! simulated cache misses inside `fanout_wake` and `null_changes` only, per stream per change.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group};
use flotilla_edge::cache::Cache;
use flotilla_edge::encode::encodes_total;
use flotilla_shared::Target;
use tokio::sync::Notify;

const CLUSTERS: usize = 100;
const ENDPOINTS: usize = 10;

struct Fleet {
    cache: Cache,
    target: Target,
    pushed: Arc<AtomicUsize>,
    done: Arc<Notify>,
    n: usize,
}

fn spawn_fleet(rt: &tokio::runtime::Runtime, n: usize) -> Fleet {
    let cache = Cache::new();
    let target = Target::new("bench", "group");
    cache.set(&target, &common::group(CLUSTERS, ENDPOINTS, 0));
    let pushed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let ready = Arc::new(AtomicUsize::new(0));
    for _ in 0..n {
        let mut rx = cache.subscribe(&target);
        let (pushed, done, ready) = (pushed.clone(), done.clone(), ready.clone());
        rt.spawn(async move {
            let snap = rx.borrow_and_update().clone();
            let mut st = common::subscribed_stream(&snap, CLUSTERS);
            ready.fetch_add(1, Ordering::Relaxed);
            while rx.changed().await.is_ok() {
                let snap = rx.borrow_and_update().clone();
                let sent = common::drain_and_ack(&mut st, &snap);
                if sent > 0 && pushed.fetch_add(1, Ordering::AcqRel) + 1 == n {
                    done.notify_one();
                }
            }
        });
    }
    rt.block_on(async {
        while ready.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    Fleet { cache, target, pushed, done, n }
}

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut group = c.benchmark_group("fanout_one_change");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    for n in [1_000usize, 10_000] {
        let fleet = spawn_fleet(&rt, n);
        let mut tag = 0u64;
        let encodes_before = encodes_total();
        let mut changes = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let total = fanout_changes(&rt, &fleet, tag + 1..tag + 1 + iters, Burst::ONE);
                tag += iters;
                changes += iters;
                total
            });
        });
        let encodes = encodes_total() - encodes_before;
        println!(
            "fanout n={n}: {changes} changes, {encodes} resource encodes ({:.2} per change), {} pushes per change",
            encodes as f64 / changes as f64,
            n
        );
    }
    group.finish();
}

struct NullFleet {
    tx: tokio::sync::watch::Sender<bytes::Bytes>,
    pushed: Arc<AtomicUsize>,
    done: Arc<Notify>,
    n: usize,
}

fn spawn_null_fleet(rt: &tokio::runtime::Runtime, n: usize) -> NullFleet {
    let (tx, _) = tokio::sync::watch::channel(bytes::Bytes::new());
    let pushed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    for _ in 0..n {
        let mut rx = tx.subscribe();
        let (pushed, done) = (pushed.clone(), done.clone());
        rt.spawn(async move {
            while rx.changed().await.is_ok() {
                let frame = rx.borrow_and_update().clone();
                std::hint::black_box(frame.len());
                if pushed.fetch_add(1, Ordering::AcqRel) + 1 == n {
                    done.notify_one();
                }
            }
        });
    }
    NullFleet { tx, pushed, done, n }
}

/// The frame a subscriber would get for change `tag`: encoded once, as the server does.
fn frame_of(tag: u64) -> bytes::Bytes {
    let before = common::group(CLUSTERS, ENDPOINTS, tag.saturating_sub(1));
    let snap = flotilla_edge::cache::EdgeSnapshot::build(&before);
    let mut st = common::subscribed_stream(&snap, CLUSTERS);
    common::drain_and_ack(&mut st, &snap);
    let after = flotilla_edge::cache::EdgeSnapshot::build(&common::group(CLUSTERS, ENDPOINTS, tag));
    match st.poll(&after, Instant::now()) {
        Some(p) => p.frame.to_bytes(),
        None => bytes::Bytes::from_static(b"unchanged"),
    }
}

fn null_server(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut group = c.benchmark_group("null_server_one_change");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    let frames: Vec<bytes::Bytes> = (1..=2).map(frame_of).collect();
    for n in [1_000usize, 10_000] {
        let fleet = spawn_null_fleet(&rt, n);
        let mut k = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let total = null_changes(&rt, &fleet, &frames, k..k + iters);
                k += iters;
                total
            });
        });
    }
    group.finish();
}

/// What each wake of the fleet carries: `changes` changes to as many ClusterLoadAssignments,
/// set one by one (each its own generation: the streams, woken once, find several generations
/// they missed — what per-stream coalescing gave them) or, `paced`, published as one generation
/// (what a group's coalescing window gives them).
#[derive(Clone, Copy)]
struct Burst {
    changes: u64,
    paced: bool,
}

impl Burst {
    const ONE: Burst = Burst { changes: 1, paced: false };
}

/// One wake per tag fanned out to `fleet`, one after another: the time from each wake's first
/// `Cache::set` until every subscriber pushed, summed.
fn fanout_changes(
    rt: &tokio::runtime::Runtime,
    fleet: &Fleet,
    tags: std::ops::Range<u64>,
    burst: Burst,
) -> Duration {
    let mut total = Duration::ZERO;
    for tag in tags {
        let last = tag * burst.changes;
        let first = if burst.paced { last } else { last + 1 - burst.changes };
        let snaps: Vec<_> = (first..=last).map(|t| common::group(CLUSTERS, ENDPOINTS, t)).collect();
        total += fanout_wake(rt, fleet, &snaps);
    }
    total
}

/// One wake: `snaps` set in turn, then every subscriber pushes once (the callgrind mode counts
/// everything inside, the cache's work on each set included; building the snapshots is not).
#[inline(never)]
fn fanout_wake(rt: &tokio::runtime::Runtime, fleet: &Fleet, snaps: &[flotilla_shared::Snapshot]) -> Duration {
    fleet.pushed.store(0, Ordering::Release);
    let start = Instant::now();
    let notified = fleet.done.notified();
    for snap in snaps {
        fleet.cache.set(&fleet.target, snap);
    }
    rt.block_on(notified);
    let took = start.elapsed();
    assert_eq!(fleet.pushed.load(Ordering::Acquire), fleet.n);
    took
}

/// The two pre-encoded frames handed to `fleet` in turn, one per `k`: the time until every
/// subscriber took it, summed.
#[inline(never)]
fn null_changes(
    rt: &tokio::runtime::Runtime,
    fleet: &NullFleet,
    frames: &[bytes::Bytes],
    ks: std::ops::Range<u64>,
) -> Duration {
    let mut total = Duration::ZERO;
    for k in ks {
        fleet.pushed.store(0, Ordering::Release);
        let start = Instant::now();
        let notified = fleet.done.notified();
        fleet.tx.send_replace(frames[(k % 2) as usize].clone());
        rt.block_on(notified);
        total += start.elapsed();
        assert_eq!(fleet.pushed.load(Ordering::Acquire), fleet.n);
    }
    total
}

/// The fixed-count mode: both fleets on a one-thread runtime, `changes` wakes each, time per
/// stream. `FANOUT_BURST=<k>`: each wake carries k changes, set one by one (or, with
/// `FANOUT_PACED=1`, as one generation).
fn fixed(changes: u64) {
    let n: usize = std::env::var("FANOUT_STREAMS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let burst = Burst {
        changes: std::env::var("FANOUT_BURST")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
            .clamp(1, CLUSTERS as u64),
        paced: std::env::var("FANOUT_PACED").is_ok_and(|v| v == "1"),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let fleet = spawn_fleet(&rt, n);
    let null = spawn_null_fleet(&rt, n);
    let frames: Vec<bytes::Bytes> = (1..=2).map(frame_of).collect();
    // Every task polled once outside the counted functions, then one change each, so the
    // counted ones start from streams already woken once.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
    fanout_changes(&rt, &fleet, 1..2, burst);
    null_changes(&rt, &null, &frames, 0..1);
    let per_stream = |d: Duration| d.as_nanos() as f64 / (changes as f64 * n as f64);
    let f = per_stream(fanout_changes(&rt, &fleet, 2..2 + changes, burst));
    let z = per_stream(null_changes(&rt, &null, &frames, 1..1 + changes));
    // Wall clock on one thread, as noisy as any here: scripts/fanout-cost.sh counts instead.
    println!(
        "streams {n}, wakes {changes} of {} change(s){}, one thread: fanout {f:.0} ns, null {z:.0} ns per stream per wake",
        burst.changes,
        if burst.paced { " as one generation" } else { "" }
    );
}

criterion_group!(benches, fanout, null_server);

fn main() {
    match std::env::var("FANOUT_FIXED").ok().and_then(|v| v.parse().ok()) {
        Some(changes) => fixed(changes),
        None => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
