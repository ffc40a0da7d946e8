//! A small Rust xDS client for tests (and later the load harness): SotW and Delta, over ADS or a
//! per-type service, with helpers to await or rule out a response.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

/// A node in group `namespace/cluster`.
pub fn node(id: &str, cluster: &str, namespace: &str) -> Node {
    let md = Struct {
        fields: [("namespace".to_string(), Value { kind: Some(Kind::StringValue(namespace.to_string())) })]
            .into(),
    };
    Node { id: id.to_string(), cluster: cluster.to_string(), metadata: Some(md), ..Default::default() }
}

pub fn nack_status(msg: &str) -> Option<RpcStatus> {
    Some(RpcStatus { code: 3, message: msg.to_string(), details: vec![] })
}

pub async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect to xDS")
}

/// Which service a stream uses.
#[derive(Debug, Clone, Copy)]
pub enum Service {
    Ads,
    Cds,
    Eds,
}

/// What `recv` saw.
#[derive(Debug)]
pub enum Got<T> {
    Msg(T),
    Err(Status),
    Closed,
    Nothing,
}

impl<T: std::fmt::Debug> Got<T> {
    pub fn msg(self) -> T {
        match self {
            Got::Msg(m) => m,
            other => panic!("expected a response, got {other:?}"),
        }
    }
}

async fn recv<T>(rx: &mut Streaming<T>, wait: Duration) -> Got<T> {
    match tokio::time::timeout(wait, rx.message()).await {
        Err(_) => Got::Nothing,
        Ok(Ok(Some(m))) => Got::Msg(m),
        Ok(Ok(None)) => Got::Closed,
        Ok(Err(s)) => Got::Err(s),
    }
}

/// A SotW stream.
pub struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Sotw {
    pub async fn open(port: u16, service: Service) -> Sotw {
        Sotw::open_on(channel(port).await, service).await
    }

    /// A stream on an existing channel (e.g. one with TLS).
    pub async fn open_on(ch: Channel, service: Service) -> Sotw {
        let (tx, reqs) = mpsc::channel(64);
        let reqs = ReceiverStream::new(reqs);
        let rx = match service {
            Service::Ads => AggregatedDiscoveryServiceClient::new(ch).stream_aggregated_resources(reqs).await,
            Service::Cds => ClusterDiscoveryServiceClient::new(ch).stream_clusters(reqs).await,
            Service::Eds => EndpointDiscoveryServiceClient::new(ch).stream_endpoints(reqs).await,
        }
        .expect("open stream")
        .into_inner();
        Sotw { tx, rx }
    }

    pub async fn send(&self, req: DiscoveryRequest) {
        self.tx.send(req).await.expect("send request");
    }

    pub async fn recv(&mut self) -> Got<DiscoveryResponse> {
        recv(&mut self.rx, Duration::from_secs(5)).await
    }

    /// Waits `wait` and returns whatever arrived (usually asserting `Nothing`).
    pub async fn quiet_for(&mut self, wait: Duration) -> Got<DiscoveryResponse> {
        recv(&mut self.rx, wait).await
    }

    /// ACKs a response.
    pub async fn ack(&self, resp: &DiscoveryResponse, names: &[&str]) {
        self.send(DiscoveryRequest {
            type_url: resp.type_url.clone(),
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await;
    }
}

/// A Delta stream.
pub struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    pub async fn open(port: u16, service: Service) -> Delta {
        let ch = channel(port).await;
        let (tx, reqs) = mpsc::channel(64);
        let reqs = ReceiverStream::new(reqs);
        let rx = match service {
            Service::Ads => AggregatedDiscoveryServiceClient::new(ch).delta_aggregated_resources(reqs).await,
            Service::Cds => ClusterDiscoveryServiceClient::new(ch).delta_clusters(reqs).await,
            Service::Eds => EndpointDiscoveryServiceClient::new(ch).delta_endpoints(reqs).await,
        }
        .expect("open stream")
        .into_inner();
        Delta { tx, rx }
    }

    pub async fn send(&self, req: DeltaDiscoveryRequest) {
        self.tx.send(req).await.expect("send request");
    }

    pub async fn recv(&mut self) -> Got<DeltaDiscoveryResponse> {
        recv(&mut self.rx, Duration::from_secs(5)).await
    }

    pub async fn quiet_for(&mut self, wait: Duration) -> Got<DeltaDiscoveryResponse> {
        recv(&mut self.rx, wait).await
    }

    pub async fn ack(&self, resp: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    /// As proxy `node_id` of the example group (`example-service` in `production`), subscribes
    /// to the endpoints of `cluster`, checks the first push names exactly it, ACKs it and
    /// returns it.
    pub async fn sync_endpoints(&mut self, node_id: &str, cluster: &str) -> DeltaDiscoveryResponse {
        self.send(DeltaDiscoveryRequest {
            node: Some(node(node_id, "example-service", "production")),
            type_url: flotilla_shared::ResourceType::Endpoint.type_url().into(),
            resource_names_subscribe: vec![cluster.into()],
            ..Default::default()
        })
        .await;
        let first = self.recv().await.msg();
        assert_eq!(delta_names(&first), vec![cluster.to_string()]);
        self.ack(&first).await;
        first
    }
}

/// Names of the resources in a Delta response.
pub fn delta_names(r: &DeltaDiscoveryResponse) -> Vec<String> {
    r.resources.iter().map(|r| r.name.clone()).collect()
}
