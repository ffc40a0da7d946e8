//! The HTTP body of an xDS response stream: every push leaves as one gRPC message built from its
//! [`Frame`]'s shared parts, then the stream ends with `grpc-status` trailers.
//!
//! The body also drives the stream itself ([`Driver`]): the stream's loop (admission, then
//! serving) is polled from the body's own poll, on the task HTTP/2 already runs for the response,
//! rather than on a task of its own. A push is then one wake-up (the stream's loop sends and the
//! body takes it in the same poll) instead of two, and a proxy costs one task less. The body is
//! polled whenever the loop has something to wait for (a request, a snapshot change, a timer),
//! except while a push is held back by the client's flow-control window; a client that does not
//! read is not served anyway.
//!
//! This replaces tonic's response encoder on purpose. tonic encodes into a per-stream buffer
//! that keeps the capacity of the largest message the stream ever sent (tens of KiB on every
//! stream of a large edge); here a push owns only its own chunks, large resources go out as
//! the very bytes every other stream sends, and nothing is kept once HTTP/2 has written them.
//! Requests are read off the HTTP/2 body by `xds::inbound` (gRPC framing, a size limit, prost),
//! not by tonic either. Does not own what the loop does (`server`).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::future::BoxFuture;

use bytes::Bytes;
use http_body::{Body, Frame as BodyFrame};
use tokio::sync::mpsc;
use tonic::Status;
use tonic::codegen::http::{self, HeaderMap, HeaderValue, header};

use crate::encode::Frame;

/// Pushes (or the stream's final status) from the stream's task.
pub type PushReceiver = mpsc::Receiver<Result<Frame, Status>>;

/// The serving phase of a stream's loop.
pub type Serving = BoxFuture<'static, ()>;

/// A stream's loop, in its two phases: admission, which ends with the serving future (or with
/// nothing when the stream ended there), then serving. Each phase is its own allocation, so what
/// admission needed is freed when serving starts.
pub enum Driver {
    Admitting(BoxFuture<'static, Option<Serving>>),
    Serving(Serving),
    Done,
}

impl Driver {
    /// Polls the loop as far as it goes now; `Ready` once it has ended.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self {
                Driver::Admitting(f) => match f.as_mut().poll(cx) {
                    Poll::Ready(Some(serving)) => *self = Driver::Serving(serving),
                    Poll::Ready(None) => *self = Driver::Done,
                    Poll::Pending => return Poll::Pending,
                },
                Driver::Serving(f) => {
                    ready!(f.as_mut().poll(cx));
                    *self = Driver::Done;
                }
                Driver::Done => return Poll::Ready(()),
            }
        }
    }
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::Admitting(_) => "Admitting",
            Driver::Serving(_) => "Serving",
            Driver::Done => "Done",
        })
    }
}

/// The body of one xDS stream's response.
#[derive(Debug)]
pub struct PushBody {
    /// The stream's loop, which sends into `rx`; polled before `rx` on every poll.
    driver: Driver,
    rx: PushReceiver,
    /// Chunks of the push being sent.
    chunks: VecDeque<Bytes>,
    done: bool,
}

impl PushBody {
    /// A body that runs the stream's loop itself, which sends into `rx`.
    pub fn driven(rx: PushReceiver, driver: Driver) -> PushBody {
        PushBody { driver, rx, chunks: VecDeque::new(), done: false }
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
        // The loop first: it reads requests, watches snapshots and sends what it has to send.
        // When it ends, its sender goes with it and `rx` ends after what it sent.
        let _ = this.driver.poll(cx);
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
        let collected = PushBody::driven(rx, Driver::Done).collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        let bytes = collected.to_bytes();
        assert_eq!(bytes[0], 0, "not compressed");
        assert_eq!(u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize, wire.len());
        assert_eq!(&bytes[5..], &wire[..]);
        assert_eq!(trailers["grpc-status"], "3");
        assert!(trailers["grpc-message"].to_str().unwrap().contains("names%20too%20long"));
    }

    /// Sets its flag when dropped.
    struct Dropped(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_driven_body_runs_the_loop_itself_and_frees_admission_when_serving_starts() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let (tx, rx) = mpsc::channel(1);
        let admission_dropped = Arc::new(AtomicBool::new(false));
        let seen = admission_dropped.clone();
        let guard = Dropped(admission_dropped.clone());
        let admitting = Driver::Admitting(Box::pin(async move {
            tokio::task::yield_now().await;
            let _held = guard;
            let serving: Serving = Box::pin(async move {
                assert!(seen.load(Ordering::SeqCst), "admission is freed before serving runs");
                // More pushes than the channel holds: only the body taking them lets the loop on.
                for v in ["v1", "v2", "v3"] {
                    let frame = sotw_frame(flotilla_shared::ResourceType::Cluster, v, v, &[]);
                    tx.send(Ok(frame)).await.expect("body alive");
                }
            });
            Some(serving)
        }));
        // Nothing is spawned: the loop runs only because the body is polled.
        let collected = PushBody::driven(rx, admitting).collect().await.expect("body");
        assert!(admission_dropped.load(Ordering::SeqCst));
        assert_eq!(collected.trailers().expect("trailers")["grpc-status"], "0");
        let bytes = collected.to_bytes();
        let mut messages = 0;
        let mut rest = &bytes[..];
        while rest.len() >= 5 {
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            rest = &rest[5 + len..];
            messages += 1;
        }
        assert_eq!(messages, 3, "every push the loop sent");
    }

    #[tokio::test]
    async fn a_stream_that_ends_cleanly_says_ok() {
        let (tx, rx) = mpsc::channel(1);
        drop(tx);
        let collected = PushBody::driven(rx, Driver::Done).collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    }
}
