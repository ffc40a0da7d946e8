//! The etcd store: configs in the etcd every Kubernetes control plane already runs, spoken to
//! over etcd's v3 gRPC API (the client generated from etcd's own definitions, `flotilla-proto`).
//! Same contract as the other backends (`store::tests`), same decisions (`logic`).
//!
//! Owns the key layout and the transaction of a write. Every write reads the heads and names it
//! depends on, computes the change in Rust (`logic`), then commits one etcd transaction whose
//! compares say "each head is still at the `mod_revision` read, each name still holds what was
//! read (or still does not exist)" and whose success branch puts and deletes everything; a failed
//! compare retries from the top, so racing writers give one winner per version and lose nothing.
//! etcd acknowledges a transaction once it is in the raft log on a quorum, fsynced.
//!
//! History does not use etcd's MVCC history (compaction would drop it): every revision is its own
//! key. Re-encrypting secrets commits one transaction per config (head and revisions together),
//! not one for the whole store: etcd caps operations per transaction (`--max-txn-ops`, 128 by
//! default), and a re-encryption interrupted half-way is finished by the next one. A batch
//! (`import`) is one transaction and so is bounded by the same cap and by `--max-request-bytes`.
//! It does not elect a leader.
//!
//! Keys, under a prefix (`flotilla` by default): `{p}/head/{id}`, `{p}/name/{namespace}/{name}`
//! (the id), `{p}/rev/{id}/{version:020}`, `{p}/audit/{entry id}` (UUIDv7: time-ordered).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use flotilla_proto::etcd::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcd::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, compare, range_request,
    request_op,
};
use flotilla_proto::etcd::mvccpb::KeyValue;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

pub use super::etcd_auth::TokenAuth;
use super::etcd_url::{EtcdTls, EtcdUrl};
use super::logic::{self, Change};
use super::optimistic::{self, ATTEMPTS, back_off};
use super::{AuditEntry, AuditFilter};
use super::{
    ConfigRecord, ListFilter, Revision, SecretMap, Step, Store, StoreError, Write, Written,
    map_revision_secrets, map_secrets,
};

#[derive(Debug, Clone)]
pub struct EtcdStore {
    kv: KvClient<EtcdChannel>,
    channel: EtcdChannel,
    auth: TokenAuth,
    prefix: String,
    /// The watch on the heads, started by the first [`Store::changes`].
    feed: Arc<std::sync::OnceLock<super::ChangeFeed>>,
}

fn backend(e: impl Into<super::BackendError>) -> StoreError {
    StoreError::Backend(e.into())
}

fn etcd_error(e: tonic::Status) -> StoreError {
    backend(format!("etcd: {}", describe(&e)))
}

/// A status's message with the causes under it (a transport error says little on its own: the
/// TLS alert or refused connection is in its sources).
pub fn describe(status: &tonic::Status) -> String {
    let mut out = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let m = e.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        source = e.source();
    }
    out
}

fn parse<T: serde::de::DeserializeOwned>(raw: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(raw).map_err(|e| backend(format!("unreadable {what} in etcd: {e}")))
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(backend)
}

/// The end of the range of every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// "Still what was read": the key's `mod_revision`, or that it does not exist.
pub fn unchanged(key: &[u8], read: Option<&KeyValue>) -> Compare {
    let (target, union) = match read {
        Some(kv) => (compare::CompareTarget::Mod, compare::TargetUnion::ModRevision(kv.mod_revision)),
        None => (compare::CompareTarget::Create, compare::TargetUnion::CreateRevision(0)),
    };
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: target as i32,
        key: key.to_vec(),
        target_union: Some(union),
        ..Default::default()
    }
}

/// A put of `key`, bound to the etcd `lease` (0: none).
pub fn put(key: Vec<u8>, value: Vec<u8>, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key,
            value,
            lease,
            ..Default::default()
        })),
    }
}

fn delete(key: Vec<u8>) -> RequestOp {
    delete_range(key, Vec::new())
}

/// A delete of the keys from `key` up to `range_end` (empty: `key` alone).
fn delete_range(key: Vec<u8>, range_end: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key,
            range_end,
            ..Default::default()
        })),
    }
}

/// One transaction being built: compares by key (the first read of each) and operations by key
/// (the last one wins: etcd refuses two operations on one key in a transaction).
#[derive(Default)]
pub(super) struct Txn {
    compares: BTreeMap<Vec<u8>, Compare>,
    ops: BTreeMap<Vec<u8>, RequestOp>,
}

impl Txn {
    fn guard(&mut self, key: &[u8], read: Option<&KeyValue>) {
        self.compares.entry(key.to_vec()).or_insert_with(|| unchanged(key, read));
    }

    pub(super) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.insert(key.clone(), put(key, value, 0));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.ops.insert(key.clone(), delete(key));
    }

    /// Deletes every key under `prefix`; operations on keys under it planned before are dropped
    /// (etcd refuses a transaction whose operations overlap).
    fn delete_prefix(&mut self, prefix: Vec<u8>) {
        self.ops.retain(|k, _| !k.starts_with(&prefix));
        self.ops.insert(prefix.clone(), delete_range(prefix.clone(), prefix_end(&prefix)));
    }

    fn request(self) -> TxnRequest {
        TxnRequest {
            compare: self.compares.into_values().collect(),
            success: self.ops.into_values().collect(),
            failure: Vec::new(),
        }
    }
}

impl EtcdStore {
    /// Connects to `url`: `etcd://[user:password@]host:2379[,host2:2379…]` (every endpoint of the
    /// cluster; requests go to any that answers; with a user, etcd's authentication).
    pub async fn connect(url: &str) -> Result<EtcdStore, StoreError> {
        let (channel, auth, hosts) = channel_and_auth(url).await.map_err(backend)?;
        let store = EtcdStore {
            kv: KvClient::new(channel.clone()),
            channel,
            auth,
            prefix: "flotilla".to_string(),
            feed: Arc::default(),
        };
        // Fail at start, naming the cause, rather than at the first write.
        let probe = RangeRequest { key: b"flotilla-probe".to_vec(), limit: 1, ..Default::default() };
        tokio::time::timeout(Duration::from_secs(10), store.kv.clone().range(probe))
            .await
            .map_err(|_| backend(format!("cannot reach etcd at {hosts}: no answer in 10 s")))?
            .map_err(|e| backend(format!("cannot reach etcd at {hosts}: {}", describe(&e))))?;
        Ok(store)
    }

    /// Once per store (a key under `done/` says it was done): removes the revisions of configs
    /// that no longer exist, left by deletions made before a deletion took its history with it.
    /// One keys-only request per config id; each removal is a transaction that holds only while
    /// the config's head is absent. Returns how many configs' revisions went.
    pub async fn remove_orphaned_history(&self) -> Result<usize, StoreError> {
        let done = self.key(&["done", "orphaned-revisions-removed"]);
        if self.get_kv(&done).await?.is_some() {
            return Ok(0);
        }
        let all = self.key(&["rev", ""]);
        let end = prefix_end(&all);
        let mut from = all.clone();
        let mut removed = 0;
        loop {
            let req = RangeRequest {
                key: from,
                range_end: end.clone(),
                limit: 1,
                keys_only: true,
                ..Default::default()
            };
            let answer = self.auth.call(|| async { self.kv.clone().range(req.clone()).await });
            let Some(first) = answer.await.map_err(etcd_error)?.into_inner().kvs.into_iter().next() else {
                break;
            };
            // "<prefix>/rev/<id>/<version>": this id's keys, then on to the next id's.
            let rest = first.key.get(all.len()..).unwrap_or_default();
            let id = rest.split(|b| *b == b'/').next().unwrap_or_default().to_vec();
            let mut revs = all.clone();
            revs.extend_from_slice(&id);
            revs.push(b'/');
            from = prefix_end(&revs);
            let head = self.key(&["head", &String::from_utf8_lossy(&id)]);
            if self.get_kv(&head).await?.is_some() {
                continue;
            }
            let mut txn = Txn::default();
            txn.guard(&head, None);
            txn.delete_prefix(revs);
            removed += usize::from(self.commit(txn).await?);
        }
        let req = TxnRequest {
            success: vec![put(done, Utc::now().to_rfc3339().into_bytes(), 0)],
            ..Default::default()
        };
        let answer = self.auth.call(|| async { self.kv.clone().txn(req.clone()).await });
        answer.await.map_err(etcd_error)?;
        Ok(removed)
    }

    /// Uses `prefix` for every key (several Flotillas on one etcd, tests).
    pub fn with_prefix(mut self, prefix: &str) -> EtcdStore {
        self.prefix = prefix.to_string();
        self.feed = Arc::default();
        self
    }

    pub(super) fn key(&self, parts: &[&str]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        for p in parts {
            k.push('/');
            k.push_str(p);
        }
        k.into_bytes()
    }

    fn head_key(&self, id: Uuid) -> Vec<u8> {
        self.key(&["head", &id.to_string()])
    }

    fn name_key(&self, namespace: &str, name: &str) -> Vec<u8> {
        self.key(&["name", namespace, name])
    }

    pub(super) fn rev_key(&self, id: Uuid, version: u64) -> Vec<u8> {
        self.key(&["rev", &id.to_string(), &format!("{version:020}")])
    }

    async fn range(
        &self,
        key: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: i64,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let req = RangeRequest { key, range_end: end.unwrap_or_default(), limit, ..Default::default() };
        let answer = self.auth.call(|| async { self.kv.clone().range(req.clone()).await });
        Ok(answer.await.map_err(etcd_error)?.into_inner().kvs)
    }

    async fn get_kv(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.range(key.to_vec(), None, 1).await?.into_iter().next())
    }

    /// Every key under `prefix`, in key order.
    pub(super) async fn scan(&self, prefix: Vec<u8>) -> Result<Vec<KeyValue>, StoreError> {
        let end = prefix_end(&prefix);
        self.range(prefix, Some(end), 0).await
    }

    pub(super) async fn commit(&self, txn: Txn) -> Result<bool, StoreError> {
        let req = txn.request();
        let answer = self.auth.call(|| async { self.kv.clone().txn(req.clone()).await });
        Ok(answer.await.map_err(etcd_error)?.into_inner().succeeded)
    }

    /// One attempt at a batch; `None` when a concurrent write changed what it read.
    async fn attempt(&self, ws: &[Write], author: &str) -> Result<Option<Vec<Written>>, StoreError> {
        let now = Utc::now();
        let mut txn = Txn::default();
        let mut heads: HashMap<Uuid, Option<ConfigRecord>> = HashMap::new();
        let mut names: HashMap<Vec<u8>, Option<Uuid>> = HashMap::new();
        let mut out = Vec::with_capacity(ws.len());
        for w in ws.iter().cloned() {
            let change: Change = match w.step() {
                Step::Create { config, apply } => {
                    let key = self.name_key(config.namespace(), &config.metadata.name);
                    let taken = match names.get(&key) {
                        Some(held) => *held,
                        None => {
                            let kv = self.get_kv(&key).await?;
                            txn.guard(&key, kv.as_ref());
                            match kv {
                                Some(kv) => Some(
                                    Uuid::parse_str(&String::from_utf8_lossy(&kv.value)).map_err(backend)?,
                                ),
                                None => None,
                            }
                        }
                    };
                    logic::create(config, apply, taken, author, now)?
                }
                Step::Modify { id, change } => {
                    let current = match heads.get(&id) {
                        Some(head) => head.clone(),
                        None => {
                            let key = self.head_key(id);
                            let kv = self.get_kv(&key).await?;
                            txn.guard(&key, kv.as_ref());
                            kv.map(|kv| parse::<ConfigRecord>(&kv.value, "config")).transpose()?
                        }
                    };
                    logic::modify(change, current.ok_or(StoreError::NotFound(id))?, author, now)?
                }
            };
            if let Some(rec) = &change.put {
                txn.put(self.head_key(rec.id), json(rec)?);
                let name = self.name_key(&rec.namespace, &rec.name);
                txn.put(name.clone(), rec.id.to_string().into_bytes());
                heads.insert(rec.id, Some(rec.clone()));
                names.insert(name, Some(rec.id));
            }
            if let Some(rec) = &change.remove {
                txn.delete(self.head_key(rec.id));
                let name = self.name_key(&rec.namespace, &rec.name);
                txn.delete(name.clone());
                // Its history goes with it: nothing reads a deleted config's revisions, and they
                // would keep its private keys.
                txn.delete_prefix(self.key(&["rev", &rec.id.to_string(), ""]));
                heads.insert(rec.id, None);
                names.insert(name, None);
            }
            if let (Some(rev), Some(id)) = (&change.revision, change.put.as_ref().map(|r| r.id)) {
                txn.put(self.rev_key(id, rev.version), json(rev)?);
            }
            out.push(change.written);
        }
        Ok(self.commit(txn).await?.then_some(out))
    }
}

/// A channel to etcd that carries the user's token, when the URL names a user.
pub type EtcdChannel = tonic::service::interceptor::InterceptedService<Channel, TokenAuth>;

/// A gRPC channel to every endpoint of `url` (see [`EtcdUrl`]: `etcd://` or `etcds://` for TLS,
/// `[user:password@]host:2379[,host2:2379…]`, the TLS files as `?cacert=…&cert=…&key=…`),
/// authenticated as the user when one is named (`etcd_auth`: the token is renewed every minute
/// while the channel lives, and at once when etcd refuses it), and the URL without its password
/// (for messages). Shared with the etcd lease (`ha::etcd`).
pub async fn channel(url: &str) -> Result<(EtcdChannel, String), String> {
    channel_and_auth(url).await.map(|(channel, _, hosts)| (channel, hosts))
}

/// [`channel`], and its [`TokenAuth`]: calls made through [`TokenAuth::call`] get a new token
/// when etcd refuses the one they carried.
pub async fn channel_and_auth(url: &str) -> Result<(EtcdChannel, TokenAuth, String), String> {
    let url = EtcdUrl::parse(url)?;
    let tls = url.tls.as_ref().map(EtcdTls::client_config).transpose()?;
    let hosts = url.to_string();
    let mut endpoints = Vec::new();
    for host in &url.hosts {
        let mut e = Endpoint::from_shared(url.endpoint_uri(host))
            .map_err(|e| format!("invalid etcd endpoint {host:?}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        if let Some(tls) = &tls {
            // The name the server's certificate must carry: the host as written.
            let name = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
            e = e
                .tls_config(tls.clone().domain_name(name.trim_start_matches('[').trim_end_matches(']')))
                .map_err(|e| format!("TLS settings for etcd endpoint {host:?}: {e}"))?;
        }
        endpoints.push(e);
    }
    let user = url.user;
    let plain = Channel::balance_list(endpoints.into_iter());
    let auth = match user {
        Some((name, password)) => {
            TokenAuth::user(plain.clone(), name, password).await.map_err(|e| format!("{hosts}: {e}"))?
        }
        None => TokenAuth::default(),
    };
    Ok((tonic::service::interceptor::InterceptedService::new(plain, auth.clone()), auth, hosts))
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn write_many(&self, ws: Vec<Write>, author: &str) -> Result<Vec<Written>, StoreError> {
        optimistic::retry("the write", || self.attempt(&ws, author)).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<ConfigRecord>, StoreError> {
        self.get_kv(&self.head_key(id)).await?.map(|kv| parse(&kv.value, "config")).transpose()
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ConfigRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.scan(self.key(&["head", ""])).await? {
            let rec: ConfigRecord = parse(&kv.value, "config")?;
            if filter.matches(&rec) {
                out.push(rec);
            }
        }
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(out)
    }

    async fn history(&self, id: Uuid) -> Result<Vec<Revision>, StoreError> {
        let kvs = self.scan(self.key(&["rev", &id.to_string(), ""])).await?;
        kvs.iter().map(|kv| parse(&kv.value, "revision")).collect()
    }

    async fn trim_history(&self, id: Uuid, keep: usize) -> Result<usize, StoreError> {
        if keep == 0 {
            return Ok(0);
        }
        let prefix = self.key(&["rev", &id.to_string(), ""]);
        let req = RangeRequest {
            key: prefix.clone(),
            range_end: prefix_end(&prefix),
            keys_only: true,
            ..Default::default()
        };
        let answer = self.auth.call(|| async { self.kv.clone().range(req.clone()).await });
        let keys = answer.await.map_err(etcd_error)?.into_inner().kvs;
        let Some(first_kept) = keys.len().checked_sub(keep).and_then(|i| keys.get(i)) else { return Ok(0) };
        // Revision keys sort by version (zero-padded): everything before the first kept one.
        let req = DeleteRangeRequest { key: prefix, range_end: first_kept.key.clone(), ..Default::default() };
        let answer = self.auth.call(|| async { self.kv.clone().delete_range(req.clone()).await });
        let deleted = answer.await.map_err(etcd_error)?.into_inner().deleted;
        Ok(usize::try_from(deleted).unwrap_or(0))
    }

    async fn rewrite_secrets(&self, f: SecretMap) -> Result<usize, StoreError> {
        let mut changed = 0;
        for head in self.scan(self.key(&["head", ""])).await? {
            let mut rec: ConfigRecord = parse(&head.value, "config")?;
            for attempt in 0..ATTEMPTS {
                let mut txn = Txn::default();
                let mut n = 0;
                let key = self.head_key(rec.id);
                let kv = if attempt == 0 { Some(head.clone()) } else { self.get_kv(&key).await? };
                let Some(kv) = kv else { break };
                if attempt > 0 {
                    rec = parse(&kv.value, "config")?;
                }
                txn.guard(&key, Some(&kv));
                let m = map_secrets(&mut rec.config, &*f)
                    + rec.applied_config.as_mut().map_or(0, |c| map_secrets(c, &*f));
                if m > 0 {
                    n += m;
                    txn.put(key.clone(), json(&rec)?);
                }
                for rkv in self.scan(self.key(&["rev", &rec.id.to_string(), ""])).await? {
                    let mut rev: Revision = parse(&rkv.value, "revision")?;
                    let m = map_revision_secrets(&mut rev, &*f);
                    if m > 0 {
                        n += m;
                        txn.guard(&rkv.key, Some(&rkv));
                        txn.put(rkv.key.clone(), json(&rev)?);
                    }
                }
                if n == 0 || self.commit(txn).await? {
                    changed += n;
                    break;
                }
                back_off(attempt).await;
            }
        }
        Ok(changed)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let req = PutRequest {
            key: self.key(&["audit", &entry.id.to_string()]),
            value: json(entry)?,
            ..Default::default()
        };
        self.auth.call(|| async { self.kv.clone().put(req.clone()).await }).await.map_err(etcd_error)?;
        Ok(())
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        const PAGE: i64 = 256;
        let start = self.key(&["audit", ""]);
        let mut end = prefix_end(&start);
        let mut out = Vec::new();
        loop {
            // Newest first: pages from the end of the range (entry ids are time-ordered).
            let req = RangeRequest {
                key: start.clone(),
                range_end: end.clone(),
                limit: PAGE,
                sort_order: range_request::SortOrder::Descend as i32,
                sort_target: range_request::SortTarget::Key as i32,
                ..Default::default()
            };
            let answer = self.auth.call(|| async { self.kv.clone().range(req.clone()).await });
            let kvs = answer.await.map_err(etcd_error)?.into_inner().kvs;
            let Some(last) = kvs.last() else { return Ok(out) };
            end = last.key.clone();
            for kv in &kvs {
                let e: AuditEntry = parse(&kv.value, "audit entry")?;
                if !filter.take(e, &mut out) {
                    return Ok(out);
                }
            }
            if (kvs.len() as i64) < PAGE {
                return Ok(out);
            }
        }
    }

    /// A watch on every head under the prefix (each config write puts its head; audit entries
    /// and the HA keys are not watched).
    fn changes(&self) -> Option<super::ChangeFeed> {
        let heads = self.key(&["head", ""]);
        let end = prefix_end(&heads);
        Some(self.feed.get_or_init(|| super::etcd_watch::follow(self.channel.clone(), heads, end)).clone())
    }
}
