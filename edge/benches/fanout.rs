//! One change fanned out to 1k and 10k in-process Delta ADS subscribers of one proxy group.
//!
//! Each subscriber is a tokio task holding a `DeltaStream` and a `watch` receiver from the cache,
//! as a real stream does; the gRPC socket is replaced by counting the frame. Measured: from
//! `Cache::set` with one changed ClusterLoadAssignment until every subscriber has produced its
//! push. Also printed: resource encodes per change (must be 1 whatever the subscriber count).
//!
//! `cargo bench -p flotilla-edge --bench fanout`

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
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
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    tag += 1;
                    changes += 1;
                    let snap = common::group(CLUSTERS, ENDPOINTS, tag);
                    fleet.pushed.store(0, Ordering::Release);
                    let start = Instant::now();
                    let notified = fleet.done.notified();
                    fleet.cache.set(&fleet.target, &snap);
                    rt.block_on(notified);
                    total += start.elapsed();
                    assert_eq!(fleet.pushed.load(Ordering::Acquire), fleet.n);
                }
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

criterion_group!(benches, fanout);
criterion_main!(benches);
