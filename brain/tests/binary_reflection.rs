//! gRPC reflection on the built `flotilla-brain` binary (the one `cargo run` starts, not an
//! in-process server): the xDS port describes Envoy's discovery services and the resource types
//! they carry, so `grpcurl -plaintext localhost:18000 describe ...` works on every build; the
//! management API port describes the control-plane service. `FLOTILLA_BRAIN_BIN` points it at
//! another build of the binary (e.g. `target/release/flotilla-brain`).

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flotilla_test_support::free_port;
use prost::Message;
use prost_types::FileDescriptorProto;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

struct Brain(Child);

impl Drop for Brain {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn ask(ch: &Channel, req: MessageRequest) -> ServerReflectionResponse {
    let req = ServerReflectionRequest { message_request: Some(req), ..Default::default() };
    let mut stream = ServerReflectionClient::new(ch.clone())
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap()
}

async fn services(ch: &Channel) -> Vec<String> {
    let resp = ask(ch, MessageRequest::ListServices(String::new())).await;
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else { panic!("{resp:?}") };
    list.service.into_iter().map(|s| s.name).collect()
}

/// The file descriptors reflection returns for `symbol` (the defining file first, then its imports).
async fn files_for(ch: &Channel, symbol: &str) -> Vec<FileDescriptorProto> {
    let resp = ask(ch, MessageRequest::FileContainingSymbol(symbol.into())).await;
    let Some(MessageResponse::FileDescriptorResponse(f)) = resp.message_response else {
        panic!("{symbol}: {resp:?}")
    };
    f.file_descriptor_proto.iter().map(|b| FileDescriptorProto::decode(b.as_slice()).unwrap()).collect()
}

async fn connect(port: u16) -> Channel {
    let endpoint = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    for _ in 0..400 {
        if let Ok(ch) = endpoint.connect().await {
            return ch;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("port {port} never accepted a connection");
}

#[tokio::test]
async fn the_built_binary_describes_envoys_discovery_services_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (xds, api) = (free_port(), free_port());
    let _brain = Brain(
        Command::new(
            std::env::var("FLOTILLA_BRAIN_BIN")
                .unwrap_or_else(|_| env!("CARGO_BIN_EXE_flotilla-brain").into()),
        )
        .args(["--data-dir", &dir.path().display().to_string()])
        .args(["--rest-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--xds-addr", &format!("127.0.0.1:{xds}")])
        .args(["--grpc-api-addr", &format!("127.0.0.1:{api}")])
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap(),
    );

    let ch = connect(xds).await;
    let names = services(&ch).await;
    for want in [
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        "envoy.service.listener.v3.ListenerDiscoveryService",
        "envoy.service.route.v3.RouteDiscoveryService",
        "envoy.service.cluster.v3.ClusterDiscoveryService",
        "envoy.service.endpoint.v3.EndpointDiscoveryService",
        "envoy.service.secret.v3.SecretDiscoveryService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }

    // ADS is described down to its methods, and the messages they carry resolve.
    let files = files_for(&ch, "envoy.service.discovery.v3.AggregatedDiscoveryService").await;
    let ads = files
        .iter()
        .flat_map(|f| &f.service)
        .find(|s| s.name() == "AggregatedDiscoveryService")
        .unwrap_or_else(|| {
            panic!("no ADS service in {:?}", files.iter().map(|f| f.name()).collect::<Vec<_>>())
        });
    let methods: Vec<&str> = ads.method.iter().map(|m| m.name()).collect();
    assert_eq!(methods, ["StreamAggregatedResources", "DeltaAggregatedResources"]);
    // Every file it imports resolves by name too, as grpcurl asks for them.
    let mut todo: Vec<String> = files[0].dependency.clone();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let resp = ask(&ch, MessageRequest::FileByFilename(name.clone())).await;
        let Some(MessageResponse::FileDescriptorResponse(f)) = resp.message_response else {
            panic!("{name}: {resp:?}")
        };
        let file = FileDescriptorProto::decode(f.file_descriptor_proto[0].as_slice()).unwrap();
        todo.extend(file.dependency);
    }
    assert!(seen.contains("envoy/service/discovery/v3/discovery.proto"), "{seen:?}");

    // The resource types inside the Any payloads resolve too, so a client can print responses.
    for (symbol, message) in [
        ("envoy.config.listener.v3.Listener", "Listener"),
        ("envoy.config.route.v3.RouteConfiguration", "RouteConfiguration"),
        ("envoy.config.cluster.v3.Cluster", "Cluster"),
        ("envoy.config.endpoint.v3.ClusterLoadAssignment", "ClusterLoadAssignment"),
        ("envoy.extensions.transport_sockets.tls.v3.Secret", "Secret"),
    ] {
        let files = files_for(&ch, symbol).await;
        assert!(
            files[0].message_type.iter().any(|m| m.name() == message),
            "{symbol} not in {}",
            files[0].name()
        );
    }

    // The management API port describes the control-plane service.
    let names = services(&connect(api).await).await;
    assert!(names.iter().any(|n| n.starts_with("flotilla.")), "no flotilla service in {names:?}");
}
