//! Memory per stream: RSS growth from 10,000 Delta ADS stream states subscribed to one proxy group
//! (wildcard CDS + 100 named EDS resources, initial pushes ACKed) plus their cache receivers.
//! The shared snapshot is built first and not counted.
//!
//! `cargo bench -p flotilla-edge --bench stream_memory` (`STREAM_MEMORY_CLUSTERS=1000` for the
//! 1,000-cluster group, with 1,000 streams).

mod common;

use flotilla_edge::cache::Cache;
use flotilla_shared::Target;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn main() {
    let clusters: usize =
        std::env::var("STREAM_MEMORY_CLUSTERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let streams_n: usize = if clusters > 100 { 1_000 } else { 10_000 };
    let cache = Cache::new();
    let target = Target::new("bench", "group");
    cache.set(&target, &common::group(clusters, 10, 0));
    let snap = cache.get(&target).expect("group");
    let before = rss_bytes();
    let streams: Vec<_> = (0..streams_n)
        .map(|_| (cache.subscribe(&target), common::subscribed_stream(&snap, clusters)))
        .collect();
    let after = rss_bytes();
    let per = (after.saturating_sub(before)) as f64 / streams_n as f64;
    println!(
        "stream_memory: {streams_n} Delta ADS streams, {clusters} clusters + {clusters} CLAs each: RSS +{:.1} MiB, {:.0} bytes per stream",
        (after - before) as f64 / (1 << 20) as f64,
        per
    );
    drop(streams);
}
