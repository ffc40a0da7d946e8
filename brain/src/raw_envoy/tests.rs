use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};
use serde_json::json;

use super::*;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

const HEADER_MUTATION: &str =
    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation";

fn header_mutation(append: Value) -> Map<String, Value> {
    obj(json!({
        "@type": HEADER_MUTATION,
        "mutations": {"responseMutations": [{"append": append}]}
    }))
}

#[test]
fn an_extension_decodes_into_its_any() {
    let any = to_any(&header_mutation(json!({"header": {"key": "x-raw", "value": "yes"}}))).unwrap();
    assert_eq!(any.type_url, HEADER_MUTATION);
    assert!(!any.value.is_empty());
    let back =
        DynamicMessage::decode(message(pool().unwrap(), type_name(HEADER_MUTATION)).unwrap(), &*any.value)
            .unwrap();
    assert!(format!("{back:?}").contains("x-raw"));
}

#[test]
fn a_typo_is_refused_with_its_path() {
    let e = to_any(&header_mutation(json!({"header": {"kee": "x-raw", "value": "yes"}}))).unwrap_err();
    assert_eq!(e.path, "mutations.responseMutations[0].append.header.kee", "{e}");
    assert!(e.message.contains("kee"), "{e}");
}

#[test]
fn a_wrong_type_is_refused_with_its_path() {
    let e = to_any(&header_mutation(json!({"header": {"key": 7, "value": "yes"}}))).unwrap_err();
    assert_eq!(e.path, "mutations.responseMutations[0].append.header.key", "{e}");
}

#[test]
fn unknown_or_missing_types_are_refused() {
    let e = to_any(&obj(json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.nope.v3.Nope"})))
        .unwrap_err();
    assert_eq!(e.path, "@type");
    assert!(e.message.contains("envoy.extensions.filters.http.nope.v3.Nope"), "{e}");
    let e = to_any(&obj(json!({"mutations": {}}))).unwrap_err();
    assert_eq!(e.path, "@type");
    assert!(e.message.starts_with("missing"), "{e}");
    let e = to_any(&obj(json!({"@type": 3}))).unwrap_err();
    assert_eq!(e.path, "@type");
}

#[test]
fn merging_replaces_singular_fields_and_appends_repeated_ones() {
    let base = Cluster {
        name: "web".into(),
        connect_timeout: Some(Duration { seconds: 5, nanos: 0 }),
        per_connection_buffer_limit_bytes: Some(UInt32Value { value: 1024 }),
        health_checks: vec![Default::default()],
        ..Default::default()
    };
    let merged =
        merge(&base, &obj(json!({"connectTimeout": "0.250s", "healthChecks": [{"timeout": "1s"}]}))).unwrap();
    assert_eq!(merged.name, "web");
    assert_eq!(merged.connect_timeout, Some(Duration { seconds: 0, nanos: 250_000_000 }));
    assert_eq!(merged.per_connection_buffer_limit_bytes, Some(UInt32Value { value: 1024 }), "untouched");
    assert_eq!(merged.health_checks.len(), 2, "repeated fields append");
}

#[test]
fn a_merge_keeps_the_name_and_the_type() {
    let base = Cluster { name: "web".into(), ..Default::default() };
    let e = merge(&base, &obj(json!({"name": "other"}))).unwrap_err();
    assert_eq!(e.path, "name");
    let e = merge(&base, &obj(json!({"@type": "type.googleapis.com/envoy.config.listener.v3.Listener"})))
        .unwrap_err();
    assert_eq!(e.path, "@type");
    assert!(e.message.contains("envoy.config.cluster.v3.Cluster"), "{e}");
    let ok =
        merge(&base, &obj(json!({"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster"}))).unwrap();
    assert_eq!(ok, base);
}

#[test]
fn the_descriptors_are_those_of_the_compiler_types() {
    // Every field the compiler sets must be known to the descriptors: a message encoded by the
    // compiler's types decodes (without unknown fields) and re-encodes to the same bytes.
    let example = include_str!("../../../docs/examples/example-service.yaml");
    let cfg = crate::parse::parse_config(example.as_bytes(), crate::parse::Format::Yaml).unwrap();
    let snap = crate::compile::compile(&cfg).unwrap();
    let pool = pool().unwrap();
    for r in snap.iter() {
        let desc = message(pool, type_name(r.kind.type_url())).unwrap();
        let dynamic = DynamicMessage::decode(desc, r.body.as_ref()).unwrap();
        assert_eq!(dynamic.encode_to_vec(), r.body.to_vec(), "{} {}", r.kind.type_url(), r.name);
    }
}

#[test]
fn a_oneof_member_replaces_the_others_and_maps_set_their_keys() {
    use envoy_types::pb::envoy::config::route::v3::{Route, RouteAction, route, route_action};
    let base = Route {
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("web".into())),
            ..Default::default()
        })),
        typed_per_filter_config: [("a".to_string(), Any { type_url: "x".into(), value: vec![] })].into(),
        ..Default::default()
    };
    let over = obj(json!({
        "directResponse": {"status": 204},
        "typedPerFilterConfig": {"b": {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true}}
    }));
    let merged = merge(&base, &over).unwrap();
    assert!(matches!(merged.action, Some(route::Action::DirectResponse(_))), "{:?}", merged.action);
    let mut keys: Vec<_> = merged.typed_per_filter_config.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["a", "b"]);
}
