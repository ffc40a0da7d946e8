//! Notice of writes to the etcd store, from etcd's watch: a follower brain keeps the records it
//! validates against (templates, the configs built on them) in memory for as long as the watch
//! says nothing under the store's prefix changed, instead of reading the whole store on every
//! request.
//!
//! Owns the watch stream and its reconnection; what it yields is a [`ChangeFeed`]: a count of
//! notices while the watch is live, `None` while it is not (connecting, or cut off — then
//! nothing may be cached, since a write may go unseen). It does not decide what to cache (the
//! service does) nor carry the changes themselves (the reader reads the store again).

use std::time::Duration;

use flotilla_proto::etcd::etcdserverpb::watch_client::WatchClient;
use flotilla_proto::etcd::etcdserverpb::{WatchCreateRequest, WatchRequest, watch_request};
use tokio::sync::watch;

use super::ChangeFeed;
use super::etcd::EtcdChannel;

/// How long to wait before watching again after the stream ended or failed.
const RETRY: Duration = Duration::from_secs(1);

/// Starts watching every key from `key` up to `range_end` and returns the feed. The watch runs
/// until every receiver of the feed is gone.
pub fn follow(channel: EtcdChannel, key: Vec<u8>, range_end: Vec<u8>) -> ChangeFeed {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut seen = 0u64;
        while !tx.is_closed() {
            if let Err(e) = watch_once(&channel, &key, &range_end, &tx, &mut seen).await {
                tracing::debug!(message = "etcd watch ended; watching again", error = %e);
            }
            // Cut off: writes from now on may go unseen until the next watch is created.
            tx.send_replace(None);
            tokio::time::sleep(RETRY).await;
        }
    });
    rx
}

/// One watch stream: live once etcd says it is created, a notice for every batch of events,
/// until the stream ends, is cancelled, or every receiver is gone.
async fn watch_once(
    channel: &EtcdChannel,
    key: &[u8],
    range_end: &[u8],
    tx: &watch::Sender<Option<u64>>,
    seen: &mut u64,
) -> Result<(), String> {
    let create =
        WatchCreateRequest { key: key.to_vec(), range_end: range_end.to_vec(), ..Default::default() };
    let first = WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) };
    // The request side stays open while the watch lives (etcd ends a watch whose client closed it).
    let (requests, outbound) = tokio::sync::mpsc::channel::<WatchRequest>(1);
    requests.send(first).await.map_err(|e| e.to_string())?;
    let mut stream = WatchClient::new(channel.clone())
        .watch(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    loop {
        let msg = tokio::select! {
            m = stream.message() => m.map_err(|e| e.message().to_string())?,
            () = tx.closed() => return Ok(()),
        };
        let Some(msg) = msg else { return Err("the stream ended".into()) };
        if msg.canceled {
            return Err(format!("etcd cancelled the watch: {}", msg.cancel_reason));
        }
        if msg.created || !msg.events.is_empty() {
            // Created: whatever a reader lists from now on, a later write will be noticed.
            *seen += 1;
            tx.send_replace(Some(*seen));
        }
    }
}
