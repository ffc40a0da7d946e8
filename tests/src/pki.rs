//! Certificates made for a test (rcgen): a CA, a server certificate for `localhost` and
//! 127.0.0.1, client certificates carrying SPIFFE ids, all written as PEM files in a temp dir
//! that is removed on `Drop`.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub pem: String,
}

/// A certificate and its key, as PEM.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new() -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "flotilla test CA");
        let pem = params.self_signed(&key).expect("CA cert").pem();
        Ca { params, key, pem }
    }

    fn sign(&self, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &Issuer::from_params(&self.params, &self.key)).expect("sign");
        Pair { cert: cert.pem(), key: key.serialize_pem() }
    }

    /// A TLS connection to 127.0.0.1:`port` asking for server name `name`, the server's
    /// certificate verified against this CA for that name; `None` when it cannot be made.
    pub async fn tls_connect(
        &self,
        port: u16,
        name: &str,
    ) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from_pem_slice(self.pem.as_bytes()).ok()?).ok()?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).ok()?;
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(server, tcp).await.ok()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Pair {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        self.sign(params)
    }

    /// A server certificate naming only `names` (DNS names).
    pub fn server_for(&self, names: &[&str]) -> Pair {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        self.sign(params)
    }

    /// An expired server certificate.
    pub fn expired_server(&self) -> Pair {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.sign(params)
    }

    /// A client certificate whose URI SAN is `spiffe_id`.
    pub fn client(&self, spiffe_id: &str) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .subject_alt_names
            .push(SanType::URI(rcgen::string::Ia5String::try_from(spiffe_id).expect("URI SAN")));
        self.sign(params)
    }
}

impl Default for Ca {
    fn default() -> Self {
        Ca::new()
    }
}

/// A temp dir of PEM files.
pub struct PemDir {
    pub dir: tempfile::TempDir,
}

impl PemDir {
    pub fn new() -> PemDir {
        PemDir { dir: tempfile::tempdir().expect("tempdir") }
    }

    /// Writes `body` to `name` (atomically: a reader never sees half a file) and returns the path.
    pub fn write(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, body).expect("write PEM");
        std::fs::rename(&tmp, &path).expect("rename PEM");
        path
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for PemDir {
    fn default() -> Self {
        PemDir::new()
    }
}

/// A gRPC channel to `https://127.0.0.1:port` trusting `ca`, presenting `identity` if given.
pub async fn tls_channel(port: u16, ca: &Ca, identity: Option<&Pair>) -> tonic::transport::Channel {
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(&id.cert, &id.key));
    }
    tonic::transport::Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("uri")
        .tls_config(tls)
        .expect("TLS config")
        .connect()
        .await
        .expect("TLS connection")
}

/// TLS files for a server a test starts and a client that talks to it: a CA, a server
/// certificate for `localhost` and 127.0.0.1, a client certificate, as PEM files.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    _dir: PemDir,
}

impl TlsFiles {
    pub fn new() -> TlsFiles {
        let ca = Ca::new();
        let (server, client) = (ca.server(), ca.client("spiffe://flotilla.test/brain"));
        let dir = PemDir::new();
        TlsFiles {
            ca: dir.write("ca.pem", &ca.pem),
            server_cert: dir.write("server.pem", &server.cert),
            server_key: dir.write("server.key", &server.key),
            client_cert: dir.write("client.pem", &client.cert),
            client_key: dir.write("client.key", &client.key),
            _dir: dir,
        }
    }

    /// `?cacert=…&cert=…&key=…`: the client's side, as the brain's store URLs take it.
    pub fn url_query(&self) -> String {
        format!(
            "?cacert={}&cert={}&key={}",
            self.ca.display(),
            self.client_cert.display(),
            self.client_key.display()
        )
    }
}

impl Default for TlsFiles {
    fn default() -> Self {
        TlsFiles::new()
    }
}
