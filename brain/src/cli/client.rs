//! A small client of the brain's REST API, with errors that carry an exit code.

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A failed command: what to print and how to exit.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server refused (4xx): exit 1.
    #[error("{0}")]
    Refused(String),
    /// Could not reach the server, or it failed (5xx): exit 3.
    #[error("{0}")]
    Unavailable(String),
    /// Bad local input (a file that cannot be read): exit 2.
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Refused(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unavailable(_) => 3,
        }
    }
}

pub struct Client {
    base: String,
    user: Option<String>,
    token: Option<String>,
    http: reqwest::Client,
}

/// Renders a refusal body (`{"code","message","errors":[...]}`) for a person.
fn describe_refusal(status: StatusCode, body: &Value) -> String {
    let mut msg = format!("{} ({})", body["message"].as_str().unwrap_or("request refused"), status.as_u16());
    if let Some(errs) = body["errors"].as_array() {
        for e in errs {
            let value = match &e["value"] {
                Value::Null => String::new(),
                v => format!(" (got {v})"),
            };
            msg.push_str(&format!(
                "\n  {}: {}{}",
                e["path"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("?"),
                value
            ));
        }
    }
    msg
}

/// The cause of a failed request, in words: the deepest error of the chain (where the cause
/// is: connection refused, DNS, TLS), with a hint for the common ones.
fn why(e: &reqwest::Error) -> String {
    let mut chain = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        chain.push(err.to_string());
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    return "connection refused (is flotilla-brain running, and listening on that address?)"
                        .into();
                }
                std::io::ErrorKind::TimedOut => return "connection timed out".into(),
                _ => {}
            }
        }
        cur = err.source();
    }
    let all = chain.join(": ");
    let deepest = chain.last().cloned().unwrap_or_default();
    if all.contains("UnknownIssuer") || all.contains("unknown issuer") {
        format!(
            "TLS: the server's certificate is signed by a CA this client does not trust; give that CA with --ca-cert ({deepest})"
        )
    } else if all.contains("NotValidForName") || all.contains("not valid for name") {
        format!("TLS: the server's certificate does not name the host in --server ({deepest})")
    } else if all.contains("dns error") || all.contains("failed to lookup address") {
        format!("cannot resolve the host name ({deepest})")
    } else if e.is_timeout() {
        "timed out".into()
    } else {
        all
    }
}

impl Client {
    /// A client of `base`, trusting `ca_cert` (PEM) for https:// servers when given.
    pub fn new(
        base: &str,
        user: Option<String>,
        token: Option<String>,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Client, CliError> {
        let mut http = reqwest::Client::builder();
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| CliError::Usage(format!("cannot read --ca-cert {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                CliError::Usage(format!("--ca-cert {} is not a PEM certificate bundle: {e}", path.display()))
            })?;
            if certs.is_empty() {
                return Err(CliError::Usage(format!("--ca-cert {} holds no certificate", path.display())));
            }
            for c in certs {
                http = http.add_root_certificate(c);
            }
        }
        let http = http.build().map_err(|e| CliError::Usage(format!("cannot build the HTTP client: {e}")))?;
        let token = token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        Ok(Client { base: base.trim_end_matches('/').to_string(), user, token, http })
    }

    /// `path` on the server, with query parameters encoded.
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<reqwest::Url, CliError> {
        reqwest::Url::parse_with_params(&format!("{}{}", self.base, path), query)
            .map_err(|e| CliError::Usage(format!("invalid --server {:?}: {e}", self.base)))
    }

    /// Sends a request; 2xx bodies are returned as JSON (or a string for non-JSON bodies).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, String)>,
    ) -> Result<Value, CliError> {
        let url = self.url(path, &[])?;
        self.call_url(method, url, body).await
    }

    pub async fn call_url(
        &self,
        method: Method,
        url: reqwest::Url,
        body: Option<(&str, String)>,
    ) -> Result<Value, CliError> {
        let mut req = self.http.request(method, url);
        if let Some(u) = &self.user {
            req = req.header("x-flotilla-user", u);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some((ct, b)) = body {
            req = req.header("content-type", ct).body(b);
        }
        let resp = req.send().await.map_err(|e| {
            CliError::Unavailable(format!("cannot reach the Flotilla server at {}: {}", self.base, why(&e)))
        })?;
        let status = resp.status();
        let is_json = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("json"));
        let text =
            resp.text().await.map_err(|e| CliError::Unavailable(format!("reading the response: {e}")))?;
        let value = if is_json {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        } else {
            Value::String(text)
        };
        if status.is_success() {
            Ok(value)
        } else if status.is_client_error() {
            Err(CliError::Refused(describe_refusal(status, &value)))
        } else {
            Err(CliError::Unavailable(describe_refusal(status, &value)))
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::GET, path, None).await
    }

    /// The id of config `namespace/name`.
    pub async fn config_id(&self, namespace: &str, name: &str) -> Result<String, CliError> {
        let url = self.url("/api/v1/configs", &[("namespace", namespace), ("name", name)])?;
        let list = self.call_url(Method::GET, url, None).await?;
        list.as_array()
            .and_then(|a| a.first())
            .and_then(|c| c["id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| CliError::Refused(format!("config {namespace}/{name} not found")))
    }
}
