//! The brain's cost of one endpoint change in a large fleet config, the load test's shape
//! (docs/performance.md): `TEMPLATES` ProxyTemplates of `CLUSTERS_PER_TEMPLATE` EDS clusters with
//! `ENDPOINTS` endpoints each, one applied ProxyConfig extending them all. One iteration updates
//! one template with one endpoint weight changed: check, store (embedded, on a temp dir), render,
//! validate, compile and publish the dependent config to a bus that drops it.
//!
//! `cargo bench -p flotilla-brain --bench template_change` (defaults: 100 × 10 × 100 = 100,000
//! endpoints; `TEMPLATE_CHANGE_CLUSTERS=1000 TEMPLATE_CHANGE_ENDPOINTS=100` to set them).

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use flotilla_brain::model::ProxyConfig;
use flotilla_brain::publish::DiscardBus;
use flotilla_brain::service::ConfigService;
use flotilla_brain::store::{EmbeddedStore, Store};
use serde_json::{Value, json};

const BY: flotilla_brain::service::Origin<'static> =
    flotilla_brain::service::Origin { author: "bench", request_id: "bench" };

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn template(t: usize, per: usize, endpoints: usize, weight: u32) -> ProxyConfig {
    let clusters: Vec<Value> = (0..per)
        .map(|i| {
            let eps: Vec<Value> = (0..endpoints)
                .map(|e| {
                    let w = if i == 0 && e == 0 { weight } else { 1 };
                    json!({"address": format!("10.{}.{}.{}", t % 256, e / 256 % 256, e % 256), "port": 8080, "weight": w})
                })
                .collect();
            json!({"name": format!("c{}", t * per + i), "type": "EDS", "endpoints": eps})
        })
        .collect();
    let doc = json!({"apiVersion": "v1", "kind": "ProxyTemplate",
        "metadata": {"name": format!("t{t}"), "namespace": "bench"}, "spec": {"clusters": clusters}});
    serde_json::from_value(doc).expect("template")
}

fn fleet(templates: usize) -> ProxyConfig {
    let extends: Vec<String> = (0..templates).map(|t| format!("t{t}")).collect();
    let doc = json!({"apiVersion": "v1", "kind": "ProxyConfig", "metadata": {"name": "fleet", "namespace": "bench"},
        "spec": {"extends": extends,
            "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": 10000,
                "filterChains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "config": {"routeConfig": "ingress"}}]}]}],
            "routes": [{"name": "ingress", "virtualHosts": [{"name": "all", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c0"}}]}]}]}});
    serde_json::from_value(doc).expect("fleet")
}

fn bench(c: &mut Criterion) {
    let clusters = env("TEMPLATE_CHANGE_CLUSTERS", 1000);
    let endpoints = env("TEMPLATE_CHANGE_ENDPOINTS", 100);
    let per = env("TEMPLATE_CHANGE_CLUSTERS_PER_TEMPLATE", 10);
    let templates = clusters.div_ceil(per);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    let service = ConfigService::new(store, Arc::new(DiscardBus));
    let ids: Vec<uuid::Uuid> = rt.block_on(async {
        let mut ids = Vec::new();
        for t in 0..templates {
            ids.push(service.create(template(t, per, endpoints, 1), true, BY).await.expect("template").id);
        }
        service.create(fleet(templates), true, BY).await.expect("fleet");
        ids
    });
    let docs: Vec<ProxyConfig> = (0..2).map(|w| template(0, per, endpoints, 2 + w)).collect();
    let mut n = 0usize;
    c.bench_function(&format!("template_change/{clusters}x{endpoints}"), |b| {
        b.iter(|| {
            n += 1;
            let doc = docs[n % 2].clone();
            rt.block_on(service.update(ids[0], doc, None, true, BY)).expect("update");
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
