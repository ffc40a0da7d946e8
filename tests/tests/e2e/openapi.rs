//! `GET /api/v1/openapi.json` is an OpenAPI 3 document generated from the code, and it matches
//! the server: every documented path and method is routed (no "no such endpoint", no 405),
//! every routed operation is documented, every REST operation has its gRPC method and every
//! gRPC method its REST operation, and the ProxyConfig schema is the one the server parses.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::collections::BTreeSet;

use flotilla_tests::brain::TestBrain;
use prost::Message;
use serde_json::Value;

/// Documented ⊆ routed ⊆ documented: the router is built from `operation_list()`, so this
/// compares what is routed with what the document lists, both ways.
#[tokio::test]
async fn routed_and_documented_are_the_same_operations() {
    let brain = TestBrain::start().await;
    let (_, doc) = brain.get_json("/api/v1/openapi.json").await;
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, item)| item.as_object().unwrap().keys().map(move |m| (m.to_uppercase(), p.clone())))
        .collect();
    let routed: BTreeSet<(String, String)> = flotilla_brain::api::operation_list()
        .into_iter()
        .map(|o| (o.method.to_string(), o.path.to_string()))
        .collect();
    assert_eq!(
        routed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routed, not documented"
    );
    assert_eq!(
        documented.difference(&routed).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented, not routed"
    );
}

/// REST ⊆ gRPC ⊆ REST: each REST operation names the gRPC method that does the same, and that
/// method exists in `flotilla.v1.ControlPlaneService`; every method there is named by one.
#[test]
fn every_rest_operation_has_its_grpc_method_and_back() {
    let fds = prost_types::FileDescriptorSet::decode(flotilla_proto::v1::FILE_DESCRIPTOR_SET).unwrap();
    let grpc: BTreeSet<String> = fds
        .file
        .iter()
        .flat_map(|f| &f.service)
        .filter(|s| s.name() == "ControlPlaneService")
        .flat_map(|s| s.method.iter().map(|m| m.name().to_string()))
        .collect();
    let ops = flotilla_brain::api::operation_list();
    let named: BTreeSet<String> = ops.iter().filter_map(|o| o.grpc.map(str::to_string)).collect();
    assert_eq!(
        named.difference(&grpc).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "named by REST, not in the proto"
    );
    assert_eq!(
        grpc.difference(&named).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in the proto, no REST operation"
    );
    // What has no gRPC method is transport-level only.
    let rest_only: BTreeSet<&str> = ops.iter().filter(|o| o.grpc.is_none()).map(|o| o.path).collect();
    assert_eq!(
        rest_only,
        BTreeSet::from(["/api/v1/openapi.json", "/health", "/ready", "/ready/leader", "/metrics"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_routes() {
    let brain = TestBrain::start().await;
    let (status, doc) = brain.get_json("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    for want in [
        "/api/v1/configs",
        "/api/v1/configs/{id}",
        "/api/v1/configs/{id}/rollback",
        "/api/v1/bulk",
        "/api/v1/proxies/{node_id}",
        "/metrics",
    ] {
        assert!(paths.contains_key(want), "{want} not documented");
    }
    let id = "00000000-0000-0000-0000-000000000000";
    let mut checked = 0;
    for (path, item) in paths {
        let url = brain.url(&path.replace("{id}", id).replace("{node_id}", "nobody"));
        for method in item.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = brain
                .http
                .request(m, &url)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            let unrouted =
                status == 404 && body["message"].as_str().is_some_and(|m| m.starts_with("no such endpoint"));
            assert!(!unrouted, "{method} {path} is documented but not routed");
            checked += 1;
        }
    }
    assert!(checked >= 18, "only {checked} operations documented");
    // Every operation documents the refusals any request can get, with the one error body.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let mut want = vec!["400"];
            if !matches!(path.as_str(), "/health" | "/ready" | "/api/v1/openapi.json") {
                want.extend(["401", "403", "429"]);
            }
            for code in want {
                let r = &op["responses"][code];
                let schema = &r["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ApiError", "{method} {path} {code}: {r}");
            }
        }
    }
    let cfg = &doc["components"]["schemas"]["ProxyConfig"];
    let props = cfg["properties"].as_object().unwrap();
    for field in ["apiVersion", "kind", "metadata", "spec"] {
        assert!(props.contains_key(field), "ProxyConfig schema lacks {field}: {cfg}");
    }
    assert!(
        doc["components"]["schemas"]["Cluster"]["properties"]["type"].is_object(),
        "serde renames are honoured"
    );
}
