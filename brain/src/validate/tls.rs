//! TLS material checks: every PEM parses, the private key matches the certificate, the
//! certificate is within its validity dates, and the chain leads to the given CA. Each problem
//! names the secret field it is about.

use std::time::{SystemTime, UNIX_EPOCH};

use x509_parser::pem::Pem;
use x509_parser::prelude::X509Certificate;

use super::Errors;
use crate::model::Secret;

fn pems(path: &str, text: &str, errs: &mut Errors) -> Vec<Pem> {
    let mut out = Vec::new();
    for (i, pem) in Pem::iter_from_buffer(text.as_bytes()).enumerate() {
        match pem {
            Ok(p) => out.push(p),
            Err(e) => {
                errs.add(path, format!("(PEM block {i})"), format!("not valid PEM: {e}"));
                return Vec::new();
            }
        }
    }
    if out.is_empty() {
        errs.add(path, "(no PEM block)", "expected at least one PEM block (-----BEGIN ...-----)");
    }
    out
}

fn certs<'a>(path: &str, blocks: &'a [Pem], errs: &mut Errors) -> Vec<X509Certificate<'a>> {
    let mut out = Vec::new();
    for (i, p) in blocks.iter().enumerate() {
        if p.label != "CERTIFICATE" {
            errs.add(path, p.label.clone(), format!("PEM block {i} is a {:?}, not a CERTIFICATE", p.label));
            continue;
        }
        match p.parse_x509() {
            Ok(c) => out.push(c),
            Err(e) => {
                errs.add(path, format!("(certificate {i})"), format!("certificate {i} does not parse: {e}"))
            }
        }
    }
    out
}

fn subject(c: &X509Certificate<'_>) -> String {
    c.subject().to_string()
}

fn check_dates(path: &str, c: &X509Certificate<'_>, now: i64, errs: &mut Errors) {
    let v = c.validity();
    if now < v.not_before.timestamp() {
        errs.add(path, subject(c), format!("certificate {} is not valid until {}", subject(c), v.not_before));
    } else if now > v.not_after.timestamp() {
        errs.add(path, subject(c), format!("certificate {} expired on {}", subject(c), v.not_after));
    }
}

/// Checks one secret; `p` is its JSON path (`spec.secrets[0]`).
pub(super) fn check_secret(errs: &mut Errors, p: &str, s: &Secret) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    if s.certificate_chain.is_none() && s.trusted_ca.is_none() {
        errs.add(
            p.to_string(),
            s.name.clone(),
            "a secret needs certificateChain + privateKey, trustedCa, or both",
        );
        return;
    }
    let ca_path = format!("{p}.trustedCa");
    let ca_blocks = s.trusted_ca.as_deref().map(|t| pems(&ca_path, t, errs)).unwrap_or_default();
    let cas = certs(&ca_path, &ca_blocks, errs);
    for ca in &cas {
        check_dates(&ca_path, ca, now, errs);
    }
    let Some(chain_pem) = &s.certificate_chain else {
        if s.private_key.is_some() {
            errs.add(format!("{p}.privateKey"), "(key)", "privateKey given without certificateChain");
        }
        return;
    };
    let chain_path = format!("{p}.certificateChain");
    let chain_blocks = pems(&chain_path, chain_pem, errs);
    let chain = certs(&chain_path, &chain_blocks, errs);
    for c in &chain {
        check_dates(&chain_path, c, now, errs);
    }
    let key_path = format!("{p}.privateKey");
    match (&s.private_key, chain.first()) {
        (None, _) => errs.add(key_path, "(none)", "certificateChain needs its privateKey"),
        (Some(key), Some(leaf)) => match rcgen::KeyPair::from_pem(key) {
            Err(e) => errs.add(key_path, "(key)", format!("private key does not parse: {e}")),
            Ok(kp) => {
                if rcgen::PublicKeyData::subject_public_key_info(&kp) != leaf.public_key().raw {
                    errs.add(
                        key_path,
                        "(key)",
                        format!("private key does not match certificate {}", subject(leaf)),
                    );
                }
            }
        },
        (Some(_), None) => {}
    }
    // Each certificate must be signed by the next; the last by one of the trusted CAs, if given.
    for pair in chain.windows(2) {
        if pair[0].verify_signature(Some(pair[1].public_key())).is_err() {
            errs.add(
                chain_path.clone(),
                subject(&pair[0]),
                format!(
                    "certificate {} is not signed by the next one in the chain ({})",
                    subject(&pair[0]),
                    subject(&pair[1])
                ),
            );
        }
    }
    if let Some(last) = chain.last()
        && !cas.is_empty()
        && !cas.iter().any(|ca| {
            last.verify_signature(Some(ca.public_key())).is_ok() || ca.tbs_certificate == last.tbs_certificate
        })
    {
        errs.add(
            chain_path,
            subject(last),
            format!("certificate {} does not chain to the trustedCa", subject(last)),
        );
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    use super::*;

    struct Issued {
        cert: String,
        key: String,
    }

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        cert: rcgen::Certificate,
    }

    fn ca() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca { params, key, cert }
    }

    fn leaf(ca: &Ca, expired: bool) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["svc.example".to_string()]).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let issuer = rcgen::Issuer::from_params(&ca.params, &ca.key);
        Issued { cert: params.signed_by(&key, &issuer).unwrap().pem(), key: key.serialize_pem() }
    }

    fn check(s: &Secret) -> Vec<String> {
        let mut errs = Errors::default();
        check_secret(&mut errs, "spec.secrets[0]", s);
        errs.0.into_iter().map(|e| format!("{}: {}", e.path, e.message)).collect()
    }

    fn secret(cert: &str, key: &str, ca: Option<&str>) -> Secret {
        Secret {
            name: "s".into(),
            certificate_chain: Some(cert.into()),
            private_key: Some(key.into()),
            trusted_ca: ca.map(str::to_string),
        }
    }

    #[test]
    fn a_good_chain_passes() {
        let ca = ca();
        let l = leaf(&ca, false);
        assert_eq!(check(&secret(&l.cert, &l.key, Some(&ca.cert.pem()))), Vec::<String>::new());
    }

    #[test]
    fn each_problem_is_named() {
        let ca = ca();
        let other_ca = ca_pair_pem();
        let good = leaf(&ca, false);
        let other = leaf(&ca, false);
        // Key of another certificate.
        let errs = check(&secret(&good.cert, &other.key, None));
        assert!(
            errs.iter().any(|e| e.starts_with("spec.secrets[0].privateKey: private key does not match")),
            "{errs:?}"
        );
        // Expired.
        let old = leaf(&ca, true);
        let errs = check(&secret(&old.cert, &old.key, None));
        assert!(errs.iter().any(|e| e.contains("expired on")), "{errs:?}");
        // Not signed by the given CA.
        let errs = check(&secret(&good.cert, &good.key, Some(&other_ca)));
        assert!(errs.iter().any(|e| e.contains("does not chain to the trustedCa")), "{errs:?}");
        // Garbage.
        let errs =
            check(&secret("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", &good.key, None));
        assert!(errs.iter().any(|e| e.starts_with("spec.secrets[0].certificateChain")), "{errs:?}");
        let errs = check(&secret(&good.cert, "not a key", None));
        assert!(errs.iter().any(|e| e.starts_with("spec.secrets[0].privateKey")), "{errs:?}");
    }

    fn ca_pair_pem() -> String {
        ca().cert.pem()
    }
}
