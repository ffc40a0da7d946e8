//! The HTTP body of an xDS response stream: every push leaves as one gRPC message built from its
//! [`Frame`]'s shared parts, then the stream ends with `grpc-status` trailers.
//!
//! This replaces tonic's response encoder on purpose. tonic encodes into a per-stream buffer
//! that keeps the capacity of the largest message the stream ever sent (tens of KiB on every
//! stream of a large edge); here a push owns only its own chunks, large resources go out as
//! the very bytes every other stream sends, and nothing is kept once HTTP/2 has written them.
//! Requests are read off the HTTP/2 body by `xds::inbound` (gRPC framing, a size limit, prost),
//! not by tonic either.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame as BodyFrame};
use tokio::sync::mpsc;
use tonic::Status;
use tonic::codegen::http::{self, HeaderMap, HeaderValue, header};

use crate::encode::Frame;

/// Pushes (or the stream's final status) from the stream's task.
pub type PushReceiver = mpsc::Receiver<Result<Frame, Status>>;

/// The body of one xDS stream's response.
#[derive(Debug)]
pub struct PushBody {
    rx: PushReceiver,
    /// Chunks of the push being sent.
    chunks: VecDeque<Bytes>,
    done: bool,
}

impl PushBody {
    pub fn new(rx: PushReceiver) -> PushBody {
        PushBody { rx, chunks: VecDeque::new(), done: false }
    }

    /// The whole gRPC response: headers now, pushes as they come, status at the end.
    pub fn into_response(self) -> http::Response<tonic::body::Body> {
        let mut response = http::Response::new(tonic::body::Body::new(self));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        response
    }

    fn end(&mut self, status: &Status) -> BodyFrame<Bytes> {
        self.done = true;
        self.chunks.clear();
        let mut trailers = HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            // A message that cannot be a header value: the code alone still tells the client.
            trailers.clear();
            trailers.insert(Status::GRPC_STATUS, HeaderValue::from(status.code() as i32));
        }
        BodyFrame::trailers(trailers)
    }
}

impl Body for PushBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(chunk) = this.chunks.pop_front() {
            return Poll::Ready(Some(Ok(BodyFrame::data(chunk))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let frame = match ready!(this.rx.poll_recv(cx)) {
            Some(Ok(push)) => match push.into_grpc_chunks() {
                Some(chunks) => {
                    this.chunks = chunks;
                    match this.chunks.pop_front() {
                        Some(chunk) => BodyFrame::data(chunk),
                        None => this.end(&Status::internal("empty push")),
                    }
                }
                None => this.end(&Status::internal("push larger than a gRPC message can be (4 GiB)")),
            },
            Some(Err(status)) => this.end(&status),
            // The stream's task ended without an error: the stream is complete.
            None => this.end(&Status::ok("")),
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.chunks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::sotw_frame;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn pushes_are_grpc_messages_and_the_end_is_a_status() {
        let (tx, rx) = mpsc::channel(4);
        let frame = sotw_frame(flotilla_shared::ResourceType::Cluster, "v1", "n1", &[]);
        let wire = frame.to_bytes();
        tx.send(Ok(frame)).await.unwrap();
        tx.send(Err(Status::invalid_argument("bad request: names too long"))).await.unwrap();
        drop(tx);
        let collected = PushBody::new(rx).collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        let bytes = collected.to_bytes();
        assert_eq!(bytes[0], 0, "not compressed");
        assert_eq!(u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize, wire.len());
        assert_eq!(&bytes[5..], &wire[..]);
        assert_eq!(trailers["grpc-status"], "3");
        assert!(trailers["grpc-message"].to_str().unwrap().contains("names%20too%20long"));
    }

    #[tokio::test]
    async fn a_stream_that_ends_cleanly_says_ok() {
        let (tx, rx) = mpsc::channel(1);
        drop(tx);
        let collected = PushBody::new(rx).collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    }
}
