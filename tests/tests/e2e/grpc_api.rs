//! The gRPC management API (`flotilla.v1.ControlPlaneService`): the same operations and
//! refusals as REST, mapped to gRPC codes with field violations; plus reflection and health.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use flotilla_proto::v1 as pb;
use flotilla_proto::v1::control_plane_service_client::ControlPlaneServiceClient;
use flotilla_tests::brain::{TestBrain, example_config};
use tonic::Code;
use tonic_types::StatusExt;

async fn client(brain: &TestBrain) -> ControlPlaneServiceClient<tonic::transport::Channel> {
    ControlPlaneServiceClient::new(flotilla_tests::xds_client::channel(brain.grpc_api_port).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_validate_history_rollback_over_grpc() {
    let brain = TestBrain::start().await;
    let mut c = client(&brain).await;
    let backend = "127.0.0.1:9001".parse().unwrap();
    let doc = example_config(10_000, &[backend]);

    let created = c
        .create_config(pb::CreateConfigRequest {
            document: doc.clone(),
            format: pb::Format::Yaml as i32,
            apply: true,
            dry_run: false,
            validate_envoy: false,
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!((created.version, created.applied_version, created.status.as_str()), (1, Some(1), "applied"));

    // The same name again: ALREADY_EXISTS.
    let err = c
        .create_config(pb::CreateConfigRequest { document: doc.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    // Invalid: INVALID_ARGUMENT with one field violation per problem, nothing stored.
    let bad = doc
        .replace("route: {cluster: api_cluster}", "route: {cluster: nope}")
        .replace("port: 10000", "port: 0");
    let err = c
        .update_config(pb::UpdateConfigRequest {
            id: created.id.clone(),
            document: bad.clone(),
            apply: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> =
        err.get_details_bad_request().unwrap().field_violations.into_iter().map(|v| v.field).collect();
    assert!(fields.contains(&"spec.listeners[0].port".to_string()), "{fields:?}");
    assert!(
        fields.contains(&"spec.routes[0].virtualHosts[0].routes[0].route.cluster".to_string()),
        "{fields:?}"
    );

    // Malformed documents name line/column; unknown fields name the field.
    let err = c
        .validate_config(pb::ValidateConfigRequest { document: "kind: [".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("line"), "{}", err.message());
    let v = c
        .validate_config(pb::ValidateConfigRequest { document: bad, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(!v.valid && v.errors.len() == 2, "{v:?}");

    // Optimistic concurrency: ABORTED on a stale expected_version.
    let changed = doc.replace("port: 9001", "port: 9002");
    let err = c
        .update_config(pb::UpdateConfigRequest {
            id: created.id.clone(),
            document: changed.clone(),
            expected_version: Some(7),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    let updated = c
        .update_config(pb::UpdateConfigRequest {
            id: created.id.clone(),
            document: changed,
            expected_version: Some(1),
            apply: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(updated.version, 2);

    let history = c.get_history(pb::GetHistoryRequest { id: created.id.clone() }).await.unwrap().into_inner();
    assert_eq!(history.revisions.len(), 2);
    assert!(
        history.revisions[1].diff_json.contains("spec.clusters[0].endpoints[0].port"),
        "{}",
        history.revisions[1].diff_json
    );
    let rolled = c
        .rollback_config(pb::RollbackConfigRequest { id: created.id.clone(), version: 1, apply: None })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!((rolled.version, rolled.applied_version), (3, Some(3)));

    let list = c
        .list_configs(pb::ListConfigsRequest { namespace: "production".into(), name: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.configs.len(), 1);
    let err = c.get_config(pb::GetConfigRequest { id: uuid_nil(), rendered: false }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let deleted =
        c.delete_config(pb::DeleteConfigRequest { id: created.id, apply: true }).await.unwrap().into_inner();
    assert!(deleted.deleted);
    assert!(c.list_proxies(pb::ListProxiesRequest {}).await.unwrap().into_inner().proxies.is_empty());
}

fn uuid_nil() -> String {
    "00000000-0000-0000-0000-000000000000".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_control_plane_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let brain = TestBrain::start().await;
    let ch = flotilla_tests::xds_client::channel(brain.grpc_api_port).await;
    let req = ServerReflectionRequest {
        message_request: Some(MessageRequest::ListServices(String::new())),
        ..Default::default()
    };
    let mut s = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = s.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else { panic!("{resp:?}") };
    assert!(list.service.iter().any(|s| s.name == "flotilla.v1.ControlPlaneService"), "{list:?}");
}

/// The operations REST had and gRPC lacked — bulk, import, export, apply dry run, staged delete,
/// proxies, audit, whoami — called both ways: the same results and the same refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_rest_answer_the_same() {
    use serde_json::Value;

    let brain = TestBrain::start().await;
    let mut c = client(&brain).await;
    let one = example_config(10_001, &["127.0.0.1:9001".parse().unwrap()]);
    let two = one.replace("name: example-service", "name: second-service");
    let bundle = format!("{one}\n---\n{two}");
    let rest = |path: &str, body: &str| {
        brain
            .http
            .post(brain.url(path))
            .header("content-type", "application/yaml")
            .body(body.to_string())
            .send()
    };

    // Bulk dry run: the same plan both ways; nothing stored.
    let g = c
        .bulk(pb::BulkRequest { document: bundle.clone(), dry_run: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let r: Value = rest("/api/v1/bulk?dryRun=true", &bundle).await.unwrap().json().await.unwrap();
    assert!(g.dry_run && !g.applied);
    assert_eq!(serde_json::from_str::<Value>(&g.results_json).unwrap(), r["results"]);
    assert_eq!(r["results"].as_array().unwrap().len(), 2, "{r}");

    // Bulk for real over gRPC, then REST sees both configs; export is the same bundle both ways.
    let g = c
        .bulk(pb::BulkRequest { document: bundle.clone(), apply: Some(true), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(g.applied, "{g:?}");
    let (_, list) = brain.get_json("/api/v1/configs").await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let exported = c.export(pb::ExportRequest::default()).await.unwrap().into_inner().bundle_yaml;
    let rest_export = brain.http.get(brain.url("/api/v1/export")).send().await.unwrap().text().await.unwrap();
    assert_eq!(exported, rest_export);

    // Import of the export: applied by default, every config unchanged.
    let g =
        c.import(pb::BulkRequest { document: exported, ..Default::default() }).await.unwrap().into_inner();
    let results: Value = serde_json::from_str(&g.results_json).unwrap();
    assert!(g.applied && results.as_array().unwrap().iter().all(|p| p["action"] == "unchanged"), "{results}");

    // Staged delete, its dry-run apply, and the apply that carries it out.
    let id = list[0]["id"].as_str().unwrap().to_string();
    let d =
        c.delete_config(pb::DeleteConfigRequest { id: id.clone(), apply: false }).await.unwrap().into_inner();
    assert_eq!((d.pending, d.status.as_str(), d.id.as_str()), (true, "pending-delete", id.as_str()));
    let (_, rec) = brain.get_json(&format!("/api/v1/configs/{id}")).await;
    assert_eq!(rec["status"], "pending-delete");
    let plan = c
        .apply_config(pb::ApplyConfigRequest { id: id.clone(), dry_run: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let plan: Value = serde_json::from_str(&plan.plan_json).unwrap();
    assert_eq!(plan["action"], "delete", "{plan}");
    let done = c
        .apply_config(pb::ApplyConfigRequest { id: id.clone(), dry_run: false, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(done.deleted && done.config.is_none(), "{done:?}");
    let (s, _) = brain.get_json(&format!("/api/v1/configs/{id}")).await;
    assert_eq!(s, 404);

    // Validate by id (the stored revision) and a bundle without id.
    let other = list[1]["id"].as_str().unwrap().to_string();
    let v = c
        .validate_config(pb::ValidateConfigRequest { id: other.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid, "{v:?}");
    let bad = two.replace("port: 10001", "port: 0");
    let v = c
        .validate_config(pb::ValidateConfigRequest {
            document: format!("{one}\n---\n{bad}"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!v.valid && v.errors.iter().all(|e| e.path.starts_with("[1].")), "{v:?}");

    // The same refusals: an empty bundle, an invalid one, an unknown proxy.
    let err = c.bulk(pb::BulkRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(rest("/api/v1/bulk", " ").await.unwrap().status(), 400);
    let err = c.bulk(pb::BulkRequest { document: bad.clone(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(!err.get_details_bad_request().unwrap().field_violations.is_empty());
    assert_eq!(rest("/api/v1/bulk", &bad).await.unwrap().status(), 422);
    let err = c.get_proxy(pb::GetProxyRequest { node_id: "nobody".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = c.get_proxy_status(pb::GetProxyRequest { node_id: "nobody".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(brain.get_json("/api/v1/proxies/nobody").await.0, 404);

    // The audit log: the gRPC writes are there, marked as such, and REST shows the same entries.
    let g = c.list_audit(pb::ListAuditRequest::default()).await.unwrap().into_inner();
    let g: Value = serde_json::from_str(&g.entries_json).unwrap();
    let (_, r) = brain.get_json("/api/v1/audit").await;
    assert_eq!(g, r);
    assert!(g.as_array().unwrap().iter().any(|e| e["api"] == "grpc" && e["verb"] == "delete"), "{g}");
    let err = c
        .list_audit(pb::ListAuditRequest { since: "yesterday".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Who am I: anonymous, unauthenticated, everything allowed — as REST says.
    let w = c.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    let (_, r) = brain.get_json("/api/v1/auth/whoami").await;
    assert_eq!((w.subject.as_str(), w.authenticated, w.via.as_str()), ("anonymous", false, "none"));
    assert_eq!(serde_json::from_str::<Value>(&w.permissions_json).unwrap(), r["permissions"]);
}
