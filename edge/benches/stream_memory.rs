//! Memory per stream: RSS growth from 10,000 Delta ADS stream states subscribed to one proxy group
//! (wildcard CDS + 100 named EDS resources, initial pushes ACKed) plus their cache receivers.
//! The shared snapshot is built first and not counted.
//!
//! `cargo bench -p flotilla-edge --bench stream_memory`

mod common;

use flotilla_edge::cache::Cache;
use flotilla_shared::Target;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn main() {
    const STREAMS: usize = 10_000;
    const CLUSTERS: usize = 100;
    let cache = Cache::new();
    let target = Target::new("bench", "group");
    cache.set(&target, &common::group(CLUSTERS, 10, 0));
    let snap = cache.get(&target).expect("group");
    let before = rss_bytes();
    let streams: Vec<_> = (0..STREAMS)
        .map(|_| (cache.subscribe(&target), common::subscribed_stream(&snap, CLUSTERS)))
        .collect();
    let after = rss_bytes();
    let per = (after.saturating_sub(before)) as f64 / STREAMS as f64;
    println!(
        "stream_memory: {STREAMS} Delta ADS streams, {CLUSTERS} clusters + {CLUSTERS} CLAs each: RSS +{:.1} MiB, {:.0} bytes per stream",
        (after - before) as f64 / (1 << 20) as f64,
        per
    );
    drop(streams);
}
