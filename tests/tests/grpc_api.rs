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
        .validate_config(pb::ValidateConfigRequest { document: "kind: [".into(), format: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("line"), "{}", err.message());
    let v =
        c.validate_config(pb::ValidateConfigRequest { document: bad, format: 0 }).await.unwrap().into_inner();
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
