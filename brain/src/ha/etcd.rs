//! The lease in etcd (`--ha-lease-etcd`, or the etcd store's own URL): the leader key
//! `{p}/leader` (holder, URL, epoch) attached to an etcd lease of [`LEASE`], kept alive while the
//! brain renews; when the leader stops renewing, etcd revokes the lease and deletes the key, and
//! the next brain to try takes it in a transaction that also bumps the persisted epoch
//! `{p}/epoch` (the fencing token). Brains seen recently are `{p}/brains/{id}` keys on a 10 s lease
//! of their own. Owns only these keys; the election loop is the parent's.

use std::sync::Mutex;

use flotilla_proto::etcd::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcd::etcdserverpb::lease_client::LeaseClient;
use flotilla_proto::etcd::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest, TxnRequest,
};
use flotilla_proto::etcd::mvccpb::KeyValue;
use serde::{Deserialize, Serialize};

use super::{LEASE, LeaseStore, Members};
use crate::store::{EtcdAuth, EtcdChannel, etcd_put as put, etcd_unchanged as unchanged};

/// How long a brain stays listed without a heartbeat.
const SEEN_TTL: i64 = 10;

#[derive(Debug)]
pub struct EtcdLease {
    kv: KvClient<EtcdChannel>,
    leases: LeaseClient<EtcdChannel>,
    /// Renews the token a call carried when etcd refuses it (a restarted etcd forgets them).
    auth: EtcdAuth,
    prefix: String,
    /// The etcd lease of this brain's heartbeat key.
    seen: Mutex<Option<i64>>,
}

/// What the leader key holds.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    holder: String,
    url: String,
    epoch: u64,
}

fn err(e: tonic::Status) -> String {
    format!("etcd: {}", e.message())
}

impl EtcdLease {
    pub async fn connect(url: &str) -> Result<EtcdLease, String> {
        let (channel, auth, _) = crate::store::etcd_channel_and_auth(url).await?;
        Ok(EtcdLease {
            kv: KvClient::new(channel.clone()),
            leases: LeaseClient::new(channel),
            auth,
            prefix: "flotilla".into(),
            seen: Mutex::new(None),
        })
    }

    fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}/{rest}", self.prefix).into_bytes()
    }

    async fn get(&self, key: Vec<u8>) -> Result<Option<KeyValue>, String> {
        let req = RangeRequest { key, limit: 1, ..Default::default() };
        let answer = self.auth.call(|| async { self.kv.clone().range(req.clone()).await }).await;
        Ok(answer.map_err(err)?.into_inner().kvs.into_iter().next())
    }

    async fn holder(&self) -> Result<Option<(Holder, KeyValue)>, String> {
        Ok(self.get(self.key("leader")).await?.and_then(|kv| {
            let h: Holder = serde_json::from_slice(&kv.value).ok()?;
            Some((h, kv))
        }))
    }

    async fn grant(&self, ttl: i64) -> Result<i64, String> {
        let grant = || async { self.leases.clone().lease_grant(LeaseGrantRequest { ttl, id: 0 }).await };
        Ok(self.auth.call(grant).await.map_err(err)?.into_inner().id)
    }

    /// Renews `lease`; false when it has expired (etcd has deleted its keys).
    async fn keep_alive(&self, lease: i64) -> Result<bool, String> {
        let renew = || async {
            let req = tokio_stream::iter([LeaseKeepAliveRequest { id: lease }]);
            self.leases.clone().lease_keep_alive(req).await?.into_inner().message().await
        };
        Ok(self.auth.call(renew).await.map_err(err)?.is_some_and(|a| a.ttl > 0))
    }

    async fn revoke(&self, lease: i64) {
        let revoke = || async { self.leases.clone().lease_revoke(LeaseRevokeRequest { id: lease }).await };
        let _ = self.auth.call(revoke).await;
    }
}

#[async_trait::async_trait]
impl LeaseStore for EtcdLease {
    fn describe(&self) -> &'static str {
        "etcd"
    }

    async fn try_lead(&self, id: &str, url: &str) -> Result<Option<u64>, String> {
        match self.holder().await? {
            Some((h, kv)) if h.holder == id => Ok(self.keep_alive(kv.lease).await?.then_some(h.epoch)),
            Some(_) => Ok(None),
            None => {
                let epoch_kv = self.get(self.key("epoch")).await?;
                let epoch = epoch_kv
                    .as_ref()
                    .and_then(|kv| String::from_utf8_lossy(&kv.value).parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                let lease = self.grant(LEASE.as_secs().max(2) as i64).await?;
                let holder = Holder { holder: id.into(), url: url.into(), epoch };
                let value = serde_json::to_vec(&holder).map_err(|e| e.to_string())?;
                let txn = TxnRequest {
                    compare: vec![
                        unchanged(&self.key("leader"), None),
                        unchanged(&self.key("epoch"), epoch_kv.as_ref()),
                    ],
                    success: vec![
                        put(self.key("epoch"), epoch.to_string().into_bytes(), 0),
                        put(self.key("leader"), value, lease),
                    ],
                    failure: Vec::new(),
                };
                let answer = self.auth.call(|| async { self.kv.clone().txn(txn.clone()).await }).await;
                let won = answer.map_err(err)?.into_inner().succeeded;
                if won {
                    Ok(Some(epoch))
                } else {
                    self.revoke(lease).await;
                    Ok(None)
                }
            }
        }
    }

    async fn leader_url(&self) -> Option<String> {
        self.holder().await.ok().flatten().map(|(h, _)| h.url)
    }

    async fn heartbeat(&self, id: &str, url: &str) {
        let current = self.seen.lock().map(|s| *s).unwrap_or(None);
        let lease = match current {
            Some(l) if self.keep_alive(l).await.unwrap_or(false) => l,
            _ => match self.grant(SEEN_TTL).await {
                Ok(l) => l,
                Err(_) => return,
            },
        };
        if current != Some(lease) {
            let req = PutRequest {
                key: self.key(&format!("brains/{id}")),
                value: url.as_bytes().to_vec(),
                lease,
                ..Default::default()
            };
            if self.auth.call(|| async { self.kv.clone().put(req.clone()).await }).await.is_ok()
                && let Ok(mut s) = self.seen.lock()
            {
                *s = Some(lease);
            }
        }
    }

    async fn release(&self, id: &str) {
        if let Ok(Some((h, kv))) = self.holder().await
            && h.holder == id
        {
            self.revoke(kv.lease).await;
        }
    }

    async fn members(&self) -> Result<Members, String> {
        let start = self.key("brains/");
        let mut end = start.clone();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let req = RangeRequest { key: start.clone(), range_end: end, ..Default::default() };
        let answer = self.auth.call(|| async { self.kv.clone().range(req.clone()).await }).await;
        let kvs = answer.map_err(err)?.into_inner().kvs;
        let brains = kvs
            .into_iter()
            .map(|kv| {
                let id = String::from_utf8_lossy(&kv.key[start.len()..]).into_owned();
                (id, String::from_utf8_lossy(&kv.value).into_owned())
            })
            .collect();
        let leader = self.holder().await?.map(|(h, _)| (h.holder, h.url, h.epoch));
        Ok((brains, leader))
    }
}
