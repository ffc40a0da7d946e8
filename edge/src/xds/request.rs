//! What a stream's loop reads off the wire: a request decoded whole, or — the usual request on
//! a busy Delta stream — a plain ACK, decoded lean. A plain ACK carries only its type URL and the
//! nonce it answers; decoding it whole builds a boxed ~600-byte message and two strings that are
//! dropped again at once, once per push. Here its two fields are read in place: a known type URL
//! becomes the type's own `&'static str`, the nonce (ours: at most 21 characters) is copied inline.
//! Anything else — names, a node, an error, an unknown type URL, a foreign nonce, any other
//! field — is decoded whole, so the lean path never changes what a request means.
//!
//! Owns the wire scan that tells the two apart and [`DeltaView`], what the Delta state machine
//! reads of either. Not the framing (`inbound`) nor what a request means (`delta`).

use std::collections::HashMap;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::rpc::Status;
use flotilla_shared::ResourceType;
use prost::Message;

/// A request type the stream's loop can decode from one gRPC message.
pub trait Decode: Sized + Send + 'static {
    fn decode(body: &[u8]) -> Result<Self, prost::DecodeError>;
}

impl Decode for Box<DiscoveryRequest> {
    fn decode(body: &[u8]) -> Result<Self, prost::DecodeError> {
        let mut req = Box::<DiscoveryRequest>::default();
        req.merge(body)?;
        Ok(req)
    }
}

/// One Delta request as decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum DeltaRequest {
    Whole(Box<DeltaDiscoveryRequest>),
    Ack(Ack),
}

impl Decode for DeltaRequest {
    fn decode(body: &[u8]) -> Result<Self, prost::DecodeError> {
        if let Some(ack) = Ack::scan(body) {
            return Ok(DeltaRequest::Ack(ack));
        }
        let mut req = Box::<DeltaDiscoveryRequest>::default();
        req.merge(body)?;
        Ok(DeltaRequest::Whole(req))
    }
}

impl DeltaRequest {
    pub fn view(&self) -> DeltaView<'_> {
        match self {
            DeltaRequest::Whole(req) => DeltaView::from(&**req),
            DeltaRequest::Ack(ack) => DeltaView {
                type_url: ack.kind.map_or("", ResourceType::type_url),
                kind: ack.kind,
                response_nonce: ack.nonce(),
                subscribe: &[],
                unsubscribe: &[],
                initial_versions: None,
                error: None,
            },
        }
    }

    pub fn node(&self) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        match self {
            DeltaRequest::Whole(req) => req.node.as_ref(),
            DeltaRequest::Ack(_) => None,
        }
    }
}

impl From<DeltaDiscoveryRequest> for DeltaRequest {
    fn from(req: DeltaDiscoveryRequest) -> Self {
        DeltaRequest::Whole(Box::new(req))
    }
}

/// The longest nonce kept inline: ours are a `u64` in decimal (20) or `s` and one (21).
const NONCE_MAX: usize = 22;

/// A plain ACK: the type it answers and the nonce, nothing else.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// `None`: the type URL was left out (a per-type stream may).
    kind: Option<ResourceType>,
    len: u8,
    nonce: [u8; NONCE_MAX],
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack")
            .field("kind", &self.kind)
            .field("nonce", &String::from_utf8_lossy(self.nonce()))
            .finish()
    }
}

impl Ack {
    /// The answer to a push of `kind` with `nonce` (`None` if the nonce is not one an edge
    /// sends — ASCII, at most 22 bytes: such a request is decoded whole).
    pub fn new(kind: Option<ResourceType>, nonce: &[u8]) -> Option<Ack> {
        if nonce.len() > NONCE_MAX || !nonce.is_ascii() {
            return None;
        }
        let mut out = Ack { kind, len: nonce.len() as u8, nonce: [0; NONCE_MAX] };
        out.nonce[..nonce.len()].copy_from_slice(nonce);
        Some(out)
    }

    pub fn kind(&self) -> Option<ResourceType> {
        self.kind
    }

    pub fn nonce(&self) -> &[u8] {
        &self.nonce[..usize::from(self.len)]
    }

    /// The request in `body` if it is a plain ACK: fields 2 (type URL, a known one or empty) and
    /// 6 (response nonce) only, each a one-byte key and a one-byte length (anything longer is
    /// no ACK of ours). `None`: decode it whole, which also refuses what is malformed.
    fn scan(mut body: &[u8]) -> Option<Ack> {
        /// Field 2 and field 6, length-delimited: `(tag << 3) | 2`.
        const TYPE_URL: u8 = 2 << 3 | 2;
        const NONCE: u8 = 6 << 3 | 2;
        let (mut type_url, mut nonce): (&[u8], &[u8]) = (b"", b"");
        while let [key, len, rest @ ..] = body {
            if *len >= 0x80 {
                return None;
            }
            let value = rest.get(..usize::from(*len))?;
            // A field repeated on the wire: the last one counts, as in a whole decode.
            match *key {
                TYPE_URL => type_url = value,
                NONCE => nonce = value,
                _ => return None,
            }
            body = &rest[value.len()..];
        }
        if !body.is_empty() {
            return None;
        }
        let kind = match type_url {
            b"" => None,
            url => Some(ResourceType::ALL.into_iter().find(|k| k.type_url().as_bytes() == url)?),
        };
        Ack::new(kind, nonce)
    }
}

/// What the Delta state machine reads of a request, whole or a lean ACK.
#[derive(Debug, Clone, Copy)]
pub struct DeltaView<'a> {
    pub type_url: &'a str,
    /// `type_url`'s type when the decoder already knows it (a lean ACK); `None`: look it up.
    pub kind: Option<ResourceType>,
    /// Compared as bytes: ours are ASCII.
    pub response_nonce: &'a [u8],
    pub subscribe: &'a [String],
    pub unsubscribe: &'a [String],
    /// `None`: none sent (the map is empty).
    pub initial_versions: Option<&'a HashMap<String, String>>,
    pub error: Option<&'a Status>,
}

impl<'a> From<&'a DeltaDiscoveryRequest> for DeltaView<'a> {
    fn from(req: &'a DeltaDiscoveryRequest) -> Self {
        DeltaView {
            type_url: &req.type_url,
            kind: None,
            response_nonce: req.response_nonce.as_bytes(),
            subscribe: &req.resource_names_subscribe,
            unsubscribe: &req.resource_names_unsubscribe,
            initial_versions: (!req.initial_resource_versions.is_empty())
                .then_some(&req.initial_resource_versions),
            error: req.error_detail.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::Node;

    fn decoded(req: &DeltaDiscoveryRequest) -> DeltaRequest {
        DeltaRequest::decode(&req.encode_to_vec()).expect("decodes")
    }

    fn ack(type_url: &str, nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_ack_is_decoded_lean_and_reads_as_the_whole_request_would() {
        for kind in ResourceType::ALL {
            for nonce in ["", "1", "s18446744073709551615", "18446744073709551615"] {
                let whole = ack(kind.type_url(), nonce);
                let lean = decoded(&whole);
                assert!(matches!(lean, DeltaRequest::Ack(_)), "{kind:?} {nonce:?}: {lean:?}");
                let (a, b) = (lean.view(), DeltaView::from(&whole));
                assert_eq!((a.type_url, a.response_nonce), (b.type_url, b.response_nonce));
                assert_eq!(a.kind, Some(kind), "the lean ACK knows its type");
                assert!(a.subscribe.is_empty() && a.unsubscribe.is_empty());
                assert!(a.initial_versions.is_none() && a.error.is_none() && lean.node().is_none());
            }
        }
        // A per-type stream's ACK may leave the type out; an empty request is one too.
        assert_eq!(decoded(&ack("", "7")).view().response_nonce, b"7");
        assert!(matches!(decoded(&DeltaDiscoveryRequest::default()), DeltaRequest::Ack(_)));
    }

    #[test]
    fn anything_more_than_a_plain_ack_is_decoded_whole() {
        let eds = ResourceType::Endpoint.type_url();
        let cases = [
            DeltaDiscoveryRequest { resource_names_subscribe: vec!["a".into()], ..ack(eds, "1") },
            DeltaDiscoveryRequest { resource_names_unsubscribe: vec!["a".into()], ..ack(eds, "1") },
            DeltaDiscoveryRequest {
                initial_resource_versions: [("a".to_string(), "v".to_string())].into(),
                ..ack(eds, "")
            },
            DeltaDiscoveryRequest {
                error_detail: Some(Status { code: 3, message: "bad".into(), details: vec![] }),
                ..ack(eds, "1")
            },
            DeltaDiscoveryRequest {
                node: Some(Node { id: "n".into(), ..Default::default() }),
                ..ack(eds, "1")
            },
            ack("type.googleapis.com/some.Unknown", "1"),
            ack(eds, "a nonce that no edge ever sent, too long"),
        ];
        for req in cases {
            match decoded(&req) {
                DeltaRequest::Whole(whole) => assert_eq!(*whole, req),
                lean => panic!("decoded lean: {req:?} → {lean:?}"),
            }
        }
    }

    #[test]
    fn the_last_of_a_repeated_field_counts_and_bad_bytes_are_refused_as_a_whole_decode_refuses_them() {
        let mut wire = ack(ResourceType::Cluster.type_url(), "1").encode_to_vec();
        wire.extend(ack("", "2").encode_to_vec()); // only the nonce: an empty type URL is not sent
        let lean = DeltaRequest::decode(&wire).expect("decodes");
        assert_eq!(lean, DeltaRequest::Ack(Ack::new(Some(ResourceType::Cluster), b"2").expect("short")));
        assert_eq!(
            lean.view().response_nonce,
            DeltaView::from(&DeltaDiscoveryRequest::decode(&wire[..]).expect("whole")).response_nonce
        );
        // Truncated inside the nonce; a nonce that is not UTF-8: both refused, as prost refuses them.
        let ok = ack(ResourceType::Cluster.type_url(), "12").encode_to_vec();
        assert!(DeltaRequest::decode(&ok[..ok.len() - 1]).is_err());
        let mut bad = ok.clone();
        *bad.last_mut().expect("nonce") = 0xff;
        assert!(DeltaRequest::decode(&bad).is_err());
    }
}
