//! What an etcd URL says: `etcd://` or `etcds://` (TLS), an optional user, the cluster's
//! endpoints, and the TLS files as query parameters named as etcdctl names its flags:
//!
//! `etcds://[user:password@]host:2379[,host2:2379…][?cacert=ca.pem][&cert=client.pem&key=client.key]`
//!
//! Owns parsing and checking that URL, and the TLS settings for tonic built from it (files read
//! here, each failure naming the file). It does not connect (`etcd::channel` does) nor hold the
//! password anywhere but in the parsed value: `Display` leaves it out.

use std::fmt;
use std::path::PathBuf;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// A parsed etcd URL.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `host:port` of each endpoint, as written.
    pub hosts: Vec<String>,
    /// User and password for etcd's authentication.
    pub user: Option<(String, String)>,
    /// TLS (`etcds://`), with what to trust and what to present.
    pub tls: Option<EtcdTls>,
}

/// TLS to etcd: the CA to trust (the platform's web roots when none is given) and a client
/// certificate to present (etcd's `--client-cert-auth`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdTls {
    pub cacert: Option<PathBuf>,
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl fmt::Debug for EtcdUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for EtcdUrl {
    /// The URL without the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls.is_some() { "etcds" } else { "etcd" };
        let user = self.user.as_ref().map(|(u, _)| format!("{u}@")).unwrap_or_default();
        write!(f, "{scheme}://{user}{}", self.hosts.join(","))
    }
}

impl EtcdUrl {
    /// Parses `url`, naming what is wrong (never echoing the password).
    pub fn parse(url: &str) -> Result<EtcdUrl, String> {
        let (scheme, rest) = url.split_once("://").ok_or("an etcd URL starts with etcd:// or etcds://")?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "etcd" => false,
            "etcds" => true,
            other => return Err(format!("an etcd URL starts with etcd:// or etcds:// (got {other}://)")),
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (user, hosts) = match rest.rsplit_once('@') {
            Some((creds, hosts)) => {
                let (name, password) = creds.split_once(':').unwrap_or((creds, ""));
                if name.is_empty() {
                    return Err("the etcd URL has an '@' but no user name before it".into());
                }
                (Some((name.to_string(), password.to_string())), hosts)
            }
            None => (None, rest),
        };
        let hosts: Vec<String> =
            hosts.trim_end_matches('/').split(',').filter(|h| !h.is_empty()).map(str::to_string).collect();
        if hosts.is_empty() {
            return Err(format!("the etcd URL names no endpoint ({scheme}://host:2379)"));
        }
        for h in &hosts {
            if h.contains('/') || h.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()) {
                return Err(format!("etcd endpoint {h:?} is not host:port"));
            }
        }
        let (mut cacert, mut cert, mut key) = (None, None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "cacert" => &mut cacert,
                "cert" => &mut cert,
                "key" => &mut key,
                other => {
                    return Err(format!(
                        "the etcd URL has an unknown parameter {other:?} (known: cacert, cert, key)"
                    ));
                }
            };
            if value.is_empty() {
                return Err(format!("the etcd URL's {name} names no file"));
            }
            *slot = Some(PathBuf::from(value));
        }
        if !tls && (cacert.is_some() || cert.is_some() || key.is_some()) {
            return Err("cacert, cert and key are TLS settings: use etcds:// to speak TLS to etcd".into());
        }
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(
                    "the etcd URL needs both cert and key for a client certificate, or neither".into()
                );
            }
        };
        Ok(EtcdUrl { hosts, user, tls: tls.then_some(EtcdTls { cacert, identity }) })
    }

    /// The URI tonic connects `host` with.
    pub fn endpoint_uri(&self, host: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{host}")
    }
}

impl EtcdTls {
    /// tonic's TLS settings: the files read now, each failure naming its file.
    pub fn client_config(&self) -> Result<ClientTlsConfig, String> {
        let read = |p: &PathBuf, what: &str| {
            std::fs::read(p).map_err(|e| format!("cannot read the etcd {what} {}: {e}", p.display()))
        };
        let mut config = ClientTlsConfig::new();
        config = match &self.cacert {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca, "CA certificate (cacert)")?)),
            None => config.with_webpki_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(
                read(cert, "client certificate (cert)")?,
                read(key, "client key (key)")?,
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_tls_urls_parse() {
        let u = EtcdUrl::parse("etcd://e1:2379,e2:2379/").unwrap();
        assert_eq!(u.hosts, ["e1:2379", "e2:2379"]);
        assert_eq!((u.user, u.tls), (None, None));
        let u = EtcdUrl::parse("etcds://root:s3cret@e1:2379?cacert=/ca.pem&cert=/c.pem&key=/k.pem").unwrap();
        assert_eq!(u.user, Some(("root".into(), "s3cret".into())));
        let tls = u.tls.clone().unwrap();
        assert_eq!(tls.cacert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(tls.identity, Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem"))));
        assert_eq!(u.endpoint_uri("e1:2379"), "https://e1:2379");
        assert_eq!(u.to_string(), "etcds://root@e1:2379", "the password is never shown");
        assert!(!format!("{u:?}").contains("s3cret"));
        assert_eq!(EtcdUrl::parse("etcds://e1:2379").unwrap().tls, Some(EtcdTls::default()));
    }

    #[test]
    fn bad_urls_are_refused_naming_why() {
        for (url, says) in [
            ("http://e1:2379", "etcd:// or etcds://"),
            ("etcd://", "names no endpoint"),
            ("etcd://e1", "not host:port"),
            ("etcd://e1:http", "not host:port"),
            ("etcd://e1:2379?cacert=/ca.pem", "use etcds://"),
            ("etcds://e1:2379?cert=/c.pem", "both cert and key"),
            ("etcds://e1:2379?ca=/ca.pem", "unknown parameter \"ca\""),
            ("etcds://e1:2379?cacert=", "cacert names no file"),
            ("etcd://:pw@e1:2379", "no user name"),
        ] {
            let e = EtcdUrl::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("pw"), "{url}: {e}");
        }
    }

    #[test]
    fn a_missing_tls_file_is_named() {
        let tls = EtcdTls { cacert: Some("/nonexistent/ca.pem".into()), identity: None };
        let e = tls.client_config().unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem") && e.contains("CA certificate"), "{e}");
    }
}
