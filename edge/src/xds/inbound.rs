//! The request side of an xDS stream: gRPC length-prefixed messages read off the HTTP/2 request
//! body and decoded with prost.
//!
//! Owns the framing (compression flag, 4-byte length, size limit) and the buffer. It replaces
//! tonic's `Streaming` for one reason: that buffer keeps the capacity of the largest request a
//! stream ever sent, and an Envoy's first EDS subscription names every cluster (tens of KB with
//! 1,000 clusters), so every stream kept that much for its lifetime. Here a buffer grown past
//! [`KEEP`] is released once it is empty. Responses are not written here (see [`super::body`]).

use std::marker::PhantomData;
use std::pin::Pin;

use bytes::{Buf, BufMut, BytesMut};
use tonic::Status;
use tonic::codegen::{Body, StdError};

use super::request::Decode;

/// Initial buffer per stream: an ACK is a few hundred bytes.
const START: usize = 1024;
/// Capacity a stream may keep between requests; a larger buffer is dropped once drained.
const KEEP: usize = 4096;
/// gRPC message prefix: compression flag (1 byte) and big-endian length (4 bytes).
const PREFIX: usize = 5;

pub struct Inbound<Req, B> {
    body: Pin<Box<B>>,
    buf: BytesMut,
    max: usize,
    ended: bool,
    _req: PhantomData<fn() -> Req>,
}

impl<Req, B> Inbound<Req, B>
where
    Req: Decode,
    B: Body,
    B::Error: Into<StdError>,
{
    /// Requests of at most `max` bytes each from `body`.
    pub fn new(body: B, max: usize) -> Self {
        Inbound {
            body: Box::pin(body),
            buf: BytesMut::with_capacity(START),
            max,
            ended: false,
            _req: PhantomData,
        }
    }

    /// The next request, `None` when the client half-closed the stream. Cancel-safe: data read
    /// before a cancellation stays buffered for the next call. A whole message comes boxed
    /// (`request`): a stream's serving future (one per proxy) awaits this for its whole life, and a
    /// request held inline in what the wait yields would widen that future by the size of the
    /// message (~600 bytes) twice over.
    pub async fn message(&mut self) -> Result<Option<Req>, Status> {
        loop {
            if let Some(req) = self.decode()? {
                return Ok(Some(req));
            }
            if self.ended {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let msg =
                    format!("the stream ended inside a request ({} bytes of it received)", self.buf.len());
                return Err(Status::internal(msg));
            }
            match std::future::poll_fn(|cx| self.body.as_mut().poll_frame(cx)).await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.put(data); // trailers carry nothing for us
                    }
                }
                Some(Err(e)) => return Err(Status::from_error(e.into())),
                None => self.ended = true,
            }
        }
    }

    /// Decodes one buffered request, if a whole one is there.
    fn decode(&mut self) -> Result<Option<Req>, Status> {
        let Some(prefix) = self.buf.get(..PREFIX) else { return Ok(None) };
        if prefix[0] != 0 {
            return Err(Status::internal(
                "request message is marked compressed but the stream has no grpc-encoding; send uncompressed",
            ));
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > self.max {
            let msg = format!("request message is {len} bytes, the limit is {} bytes", self.max);
            return Err(Status::out_of_range(msg));
        }
        let Some(body) = self.buf.get(PREFIX..PREFIX + len) else {
            self.buf.reserve(PREFIX + len - self.buf.len());
            return Ok(None);
        };
        let req =
            Req::decode(body).map_err(|e| Status::invalid_argument(format!("malformed xDS request: {e}")))?;
        self.buf.advance(PREFIX + len);
        if self.buf.is_empty() && self.buf.capacity() > KEEP {
            self.buf = BytesMut::with_capacity(START);
        }
        Ok(Some(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
    use prost::Message;

    use crate::xds::request::DeltaRequest;

    type Frames = futures::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, std::io::Error>>>;

    fn body(chunks: Vec<Vec<u8>>) -> http_body_util::StreamBody<Frames> {
        let frames: Vec<_> = chunks.into_iter().map(|c| Ok(http_body::Frame::data(Bytes::from(c)))).collect();
        http_body_util::StreamBody::new(futures::stream::iter(frames))
    }

    fn framed(req: &DeltaDiscoveryRequest) -> Vec<u8> {
        let msg = req.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        out.extend_from_slice(&msg);
        out
    }

    fn subscribe(n: usize) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            resource_names_subscribe: (0..n).map(|i| format!("cluster-{i:05}")).collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn requests_split_across_frames_and_a_large_one_leaves_no_large_buffer() {
        let (big, ack) = (framed(&subscribe(2_000)), framed(&DeltaDiscoveryRequest::default()));
        let mut all = big.clone();
        all.extend_from_slice(&ack);
        // Cut at arbitrary points, including inside the prefix.
        let chunks = vec![all[..3].to_vec(), all[3..1000].to_vec(), all[1000..].to_vec()];
        let mut inbound = Inbound::<DeltaRequest, _>::new(body(chunks), 1 << 20);
        let first = inbound.message().await.unwrap().unwrap();
        assert_eq!(first.view().subscribe.len(), 2_000);
        assert!(inbound.message().await.unwrap().is_some());
        assert!(inbound.buf.capacity() <= KEEP, "kept {} bytes", inbound.buf.capacity());
        assert!(inbound.message().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_compressed_and_truncated_requests_are_refused_naming_why() {
        let big = framed(&subscribe(100));
        let mut inbound = Inbound::<DeltaRequest, _>::new(body(vec![big.clone()]), 100);
        let err = inbound.message().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        assert!(err.message().contains("limit is 100 bytes"), "{}", err.message());

        let mut compressed = big.clone();
        compressed[0] = 1;
        let mut inbound = Inbound::<DeltaRequest, _>::new(body(vec![compressed]), 1 << 20);
        assert!(inbound.message().await.unwrap_err().message().contains("compressed"));

        let mut inbound = Inbound::<DeltaRequest, _>::new(body(vec![big[..40].to_vec()]), 1 << 20);
        assert!(inbound.message().await.unwrap_err().message().contains("ended inside a request"));

        let garbage = vec![0, 0, 0, 0, 3, 0xff, 0xff, 0xff];
        let mut inbound = Inbound::<DeltaRequest, _>::new(body(vec![garbage]), 1 << 20);
        assert_eq!(inbound.message().await.unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
