//! Where the milliseconds of a whole-config PUT go (issue 28): one ProxyConfig of `CLUSTERS`
//! STATIC clusters × `ENDPOINTS` endpoints (default 100 × 100, ~0.4 MB of YAML), sent whole,
//! each revision moving one endpoint, as the load test's independent client does. Each phase is
//! timed on its own (parse the YAML body, and the same as JSON, check = render + validate +
//! compile, the store's commit with history and diff, rendering the answer) and then the whole
//! service update (check, commit, publish to a bus that drops it) as the API runs it.
//!
//! `cargo bench -p flotilla-brain --bench whole_config_put` (`WHOLE_CONFIG_CLUSTERS`,
//! `WHOLE_CONFIG_ENDPOINTS` to resize).

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use flotilla_brain::parse::{Format, parse_config};
use flotilla_brain::publish::DiscardBus;
use flotilla_brain::service::ConfigService;
use flotilla_brain::store::{EmbeddedStore, Store, Write};

const BY: flotilla_brain::service::Origin<'static> =
    flotilla_brain::service::Origin { author: "bench", request_id: "bench" };

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The config as YAML, endpoint 0 of cluster 0 on port `port`.
fn yaml(clusters: usize, endpoints: usize, port: u16) -> String {
    let mut out = String::from(
        "apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: whole, namespace: bench}\nspec:\n  listeners:\n  - name: ingress\n    address: 127.0.0.1\n    port: 10000\n    filterChains:\n    - filters:\n      - name: envoy.filters.network.http_connection_manager\n        config: {routeConfig: ingress}\n  routes:\n  - name: ingress\n    virtualHosts:\n    - name: all\n      domains: [\"*\"]\n      routes:\n      - match: {prefix: /}\n        route: {cluster: c0}\n  clusters:\n",
    );
    for c in 0..clusters {
        out.push_str(&format!("  - name: c{c}\n    type: STATIC\n    endpoints:\n"));
        for e in 0..endpoints {
            let p = if c == 0 && e == 0 { port } else { 8080 };
            out.push_str(&format!("    - {{address: 10.{}.{}.{}, port: {p}}}\n", c % 256, e / 256, e % 256));
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let clusters = env("WHOLE_CONFIG_CLUSTERS", 100);
    let endpoints = env("WHOLE_CONFIG_ENDPOINTS", 100);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    let service = ConfigService::new(store.clone(), Arc::new(DiscardBus));
    let bodies: Vec<String> = (0..2).map(|i| yaml(clusters, endpoints, 9000 + i)).collect();
    println!("body: {} bytes of YAML", bodies[0].len());
    let first = parse_config(bodies[0].as_bytes(), Format::Yaml).expect("config");
    let first_doc = first.clone();
    let id = rt.block_on(service.create(first, true, BY)).expect("create").id;
    let name = format!("whole_config_put/{clusters}x{endpoints}");
    let mut group = c.benchmark_group(name);
    let mut n = 0usize;
    group.bench_function("parse_yaml", |b| {
        b.iter(|| parse_config(bodies[n % 2].as_bytes(), Format::Yaml).expect("config"))
    });
    group.bench_function("yaml_streaming_untyped_scalars", |b| {
        b.iter(|| serde_yaml_ng::from_str::<flotilla_brain::model::ProxyConfig>(&bodies[0]).expect("yaml"))
    });
    // The path before typed scalars (2b23467): YAML's value tree, then the document from it.
    group.bench_function("yaml_value_tree_then_typed", |b| {
        b.iter(|| {
            let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&bodies[0]).expect("yaml");
            serde_yaml_ng::from_value::<flotilla_brain::model::ProxyConfig>(v).expect("typed")
        })
    });
    let json_body = serde_json::to_vec(&first_doc).expect("json");
    group
        .bench_function("parse_json", |b| b.iter(|| parse_config(&json_body, Format::Json).expect("config")));
    let docs: Vec<_> =
        bodies.iter().map(|b| parse_config(b.as_bytes(), Format::Yaml).expect("config")).collect();
    group.bench_function("check", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(service.check(&docs[n % 2])).expect("check")
        })
    });
    group.bench_function("store_commit", |b| {
        b.iter(|| {
            n += 1;
            let w = Write::Update {
                id,
                config: docs[n % 2].clone(),
                expected_version: None,
                apply: true,
                action: "update",
            };
            rt.block_on(store.write_many(vec![w], "bench")).expect("commit")
        })
    });
    let rec = rt.block_on(store.get(id)).expect("get").expect("record");
    group.bench_function("answer_json", |b| b.iter(|| serde_json::to_vec(&rec.config).expect("json")));
    let rec_bytes = serde_json::to_vec(&rec).expect("json");
    println!("stored record: {} bytes of JSON", rec_bytes.len());
    group.bench_function("record_to_json", |b| b.iter(|| serde_json::to_vec(&rec).expect("json")));
    group.bench_function("record_from_json", |b| {
        b.iter(|| serde_json::from_slice::<flotilla_brain::store::ConfigRecord>(&rec_bytes).expect("json"))
    });
    group.bench_function("history_diff", |b| {
        b.iter(|| {
            let a = serde_json::to_value(&docs[0]).expect("value");
            let z = serde_json::to_value(&docs[1]).expect("value");
            flotilla_brain::store::diff(&a, &z)
        })
    });
    group.bench_function("service_update", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(service.update(id, docs[n % 2].clone(), None, true, BY)).expect("update")
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
