//! The Redis store (redis-rs): for teams that already operate Redis and want Flotilla's configs
//! on it. Same contract as the other backends (`store::tests`), same decisions (`logic`).
//!
//! Owns the key layout and the atomic write. Every write is optimistic: the heads and names it
//! depends on are read (each head with its *stamp*, a counter bumped by every write to it), the
//! change is computed in Rust by `logic`, then one Lua script checks that every stamp and name is
//! still what was read and applies all of the batch's changes, or none (Redis runs a script
//! atomically, and logs it to the AOF as one MULTI/EXEC block). A stale read retries from the
//! top, so 50 racing writers give one winner per version and never lose an update.
//!
//! Durability is Redis's: the store refuses a server that does not persist (no AOF, or
//! `appendfsync no`) unless the operator says `--allow-volatile-store`. It does not elect a
//! leader (the HA lease lives in PostgreSQL, Kubernetes or etcd).
//!
//! Keys, under a prefix (`flotilla` by default):
//! - `{p}:head:{id}` the head (JSON `ConfigRecord`), `{p}:stamp:{id}` its stamp
//! - `{p}:name:{namespace}/{name}` the id holding a name; `{p}:ids` the set of ids
//! - `{p}:revs:{id}` the revisions (JSON, a list in version order)
//! - `{p}:audit` the audit log (JSON, a list in time order)

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::Utc;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use uuid::Uuid;

use super::logic::{self, Change};
use super::optimistic::{self, ATTEMPTS, back_off};
use super::{AuditEntry, AuditFilter};
use super::{
    ConfigRecord, ListFilter, Revision, SecretMap, Step, Store, StoreError, Write, Written,
    map_revision_secrets, map_secrets,
};

/// Checks the guards (`KEYS[1..n]` against `ARGV[2..n+1]`, "" meaning absent), then applies the
/// operations, each an opcode in ARGV with its key next in KEYS. 1 when applied, 0 when a guard
/// failed (nothing applied).
const APPLY: &str = r#"
local n = tonumber(ARGV[1])
for i = 1, n do
  local have = redis.call('GET', KEYS[i])
  local want = ARGV[1 + i]
  if want == '' then
    if have then return 0 end
  elseif have ~= want then
    return 0
  end
end
local a, k = n + 2, n + 1
while a <= #ARGV do
  local op = ARGV[a]
  if op == 'SET' or op == 'SADD' or op == 'SREM' or op == 'RPUSH' then
    redis.call(op, KEYS[k], ARGV[a + 1])
    a = a + 2
  elseif op == 'LSET' then
    redis.call(op, KEYS[k], ARGV[a + 1], ARGV[a + 2])
    a = a + 3
  else
    redis.call(op, KEYS[k])
    a = a + 1
  end
  k = k + 1
end
return 1
"#;

#[derive(Clone)]
pub struct RedisStore {
    pub(super) conn: ConnectionManager,
    prefix: String,
    apply: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn backend(e: impl Into<super::BackendError>) -> StoreError {
    StoreError::Backend(e.into())
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(backend)
}

fn parse<T: serde::de::DeserializeOwned>(raw: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| backend(format!("unreadable {what} in Redis: {e}")))
}

/// One write's guards and operations, built up as the batch is computed.
#[derive(Default)]
struct Batch {
    /// Key → the value read ("" when absent); checked again at apply time.
    guards: BTreeMap<String, String>,
    ops: Vec<(&'static str, String, Vec<String>)>,
}

impl Batch {
    fn op(&mut self, op: &'static str, key: String, args: Vec<String>) {
        self.ops.push((op, key, args));
    }

    fn script<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        inv.arg(self.guards.len());
        for (key, want) in &self.guards {
            inv.key(key).arg(want);
        }
        for (op, key, args) in &self.ops {
            inv.key(key).arg(*op);
            for a in args {
                inv.arg(a);
            }
        }
        inv
    }
}

/// A client for `url`: redis-rs's own URL (`redis://` or `rediss://` for TLS, `#insecure` to skip
/// verification), plus, with `rediss://`, the TLS files as query parameters named as etcdctl and
/// `redis-cli` name theirs: `?cacert=ca.pem` (the CA to trust instead of the web roots),
/// `&cert=client.pem&key=client.key` (a client certificate, for `tls-auth-clients yes`).
fn client(url: &str) -> Result<redis::Client, StoreError> {
    let invalid = |e: String| backend(format!("invalid Redis URL: {e}"));
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut cacert, mut cert, mut key, mut rest) = (None, None, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("cacert", v)) => cacert = Some(v),
            Some(("cert", v)) => cert = Some(v),
            Some(("key", v)) => key = Some(v),
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    if cacert.is_none() && cert.is_none() && key.is_none() {
        return redis::Client::open(url).map_err(|e| invalid(e.to_string()));
    }
    if !base.to_ascii_lowercase().starts_with("rediss://") {
        return Err(invalid(
            "cacert, cert and key are TLS settings: use rediss:// to speak TLS to Redis".into(),
        ));
    }
    let read = |p: &str, what: &str| {
        if p.is_empty() {
            return Err(invalid(format!("its {what} names no file")));
        }
        std::fs::read(p).map_err(|e| backend(format!("cannot read the Redis {what} {p}: {e}")))
    };
    let client_tls = match (cert, key) {
        (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
            client_cert: read(c, "client certificate (cert)")?,
            client_key: read(k, "client key (key)")?,
        }),
        (None, None) => None,
        _ => return Err(invalid("it needs both cert and key for a client certificate, or neither".into())),
    };
    let root_cert = cacert.map(|c| read(c, "CA certificate (cacert)")).transpose()?;
    redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls, root_cert })
        .map_err(|e| invalid(e.to_string()))
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`, or `rediss://` for TLS) and
    /// checks that the server persists what it acknowledges, unless `allow_volatile`.
    pub async fn connect(url: &str, allow_volatile: bool) -> Result<RedisStore, StoreError> {
        let client = client(url)?;
        let no_answer = || {
            let hint = if url.to_ascii_lowercase().starts_with("redis://") {
                " (if the server speaks TLS, use rediss://)"
            } else {
                ""
            };
            backend(format!("cannot connect to Redis: no answer in 10 s{hint}"))
        };
        // One plain attempt first: the connection manager retries a refused connection or a
        // failed TLS handshake until the timeout, which would hide why.
        let probe = tokio::time::timeout(Duration::from_secs(10), client.get_multiplexed_async_connection());
        drop(
            probe
                .await
                .map_err(|_| no_answer())?
                .map_err(|e| backend(format!("cannot connect to Redis: {e}")))?,
        );
        let conn = tokio::time::timeout(Duration::from_secs(10), ConnectionManager::new(client))
            .await
            .map_err(|_| no_answer())?
            .map_err(|e| backend(format!("cannot connect to Redis: {e}")))?;
        let store = RedisStore { conn, prefix: "flotilla".to_string(), apply: Script::new(APPLY) };
        if !allow_volatile {
            store.check_persistence().await?;
        }
        Ok(store)
    }

    /// Refuses a server that would lose acknowledged writes on a restart.
    async fn check_persistence(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let setting = |name: &'static str| {
            let mut c = c.clone();
            async move {
                let v: Vec<String> =
                    redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut c).await.map_err(|e| {
                        backend(format!(
                            "cannot read Redis's {name} setting to check that it persists writes ({e}); \
                             start with --allow-volatile-store to use it anyway"
                        ))
                    })?;
                Ok::<_, StoreError>(v.get(1).cloned().unwrap_or_default())
            }
        };
        let aof = setting("appendonly").await?;
        let fsync = setting("appendfsync").await?;
        if aof != "yes" || !matches!(fsync.as_str(), "always" | "everysec") {
            return Err(backend(format!(
                "Redis does not persist what it acknowledges (appendonly {aof}, appendfsync {fsync}): a restart \
                 would lose configs. Set `appendonly yes` and `appendfsync everysec` (or `always`) on the \
                 server, or start with --allow-volatile-store to accept the loss"
            )));
        }
        let _: () = redis::cmd("PING").query_async(&mut c).await.map_err(backend)?;
        Ok(())
    }

    /// Once per store (a `done:` key says it was done): removes the revisions of configs that no
    /// longer exist, left by deletions made before a deletion took its history with it. Each
    /// removal is one script that deletes the list only while the id is not a config's.
    /// Returns how many configs' revisions went.
    pub async fn remove_orphaned_history(&self) -> Result<usize, StoreError> {
        let mut c = self.conn.clone();
        let done = self.key("done", "orphaned-revisions-removed");
        if c.exists(&done).await.map_err(backend)? {
            return Ok(0);
        }
        let orphaned = Script::new(
            "if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return redis.call('DEL', KEYS[2]) end return 0",
        );
        let (pattern, head) = (self.key("revs", "*"), self.key("revs", ""));
        let (mut cursor, mut removed) = (0u64, 0usize);
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .map_err(backend)?;
            for key in keys {
                let Some(id) = key.strip_prefix(&head) else { continue };
                let gone: usize = orphaned
                    .key(self.ids_key())
                    .key(&key)
                    .arg(id)
                    .invoke_async(&mut c)
                    .await
                    .map_err(backend)?;
                removed += gone;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let _: () = c.set(&done, Utc::now().to_rfc3339()).await.map_err(backend)?;
        Ok(removed)
    }

    /// Uses `prefix` for every key (several Flotillas on one Redis, tests).
    pub fn with_prefix(mut self, prefix: &str) -> RedisStore {
        self.prefix = prefix.to_string();
        self
    }

    pub(super) fn key(&self, kind: &str, id: impl std::fmt::Display) -> String {
        format!("{}:{kind}:{id}", self.prefix)
    }

    fn ids_key(&self) -> String {
        format!("{}:ids", self.prefix)
    }

    fn audit_key(&self) -> String {
        format!("{}:audit", self.prefix)
    }

    fn name_key(&self, namespace: &str, name: &str) -> String {
        format!("{}:name:{namespace}/{name}", self.prefix)
    }

    /// The head of `id` with its stamp, read together.
    async fn read_head(&self, id: Uuid) -> Result<Option<(ConfigRecord, String)>, StoreError> {
        let mut c = self.conn.clone();
        let (head, stamp): (Option<String>, Option<String>) = redis::cmd("MGET")
            .arg(self.key("head", id))
            .arg(self.key("stamp", id))
            .query_async(&mut c)
            .await
            .map_err(backend)?;
        match head {
            Some(raw) => Ok(Some((parse(&raw, "config")?, stamp.unwrap_or_default()))),
            None => Ok(None),
        }
    }

    /// One attempt at a batch: reads, decides, and applies if nothing changed since the reads.
    /// `None` when a concurrent write got there first.
    async fn attempt(&self, ws: &[Write], author: &str) -> Result<Option<Vec<Written>>, StoreError> {
        let now = Utc::now();
        let mut batch = Batch::default();
        // What earlier writes of this batch did, so later ones see it.
        let mut heads: HashMap<Uuid, Option<ConfigRecord>> = HashMap::new();
        let mut names: HashMap<String, Option<Uuid>> = HashMap::new();
        let mut out = Vec::with_capacity(ws.len());
        let mut c = self.conn.clone();
        for w in ws.iter().cloned() {
            let change: Change = match w.step() {
                Step::Create { config, apply } => {
                    let key = self.name_key(config.namespace(), &config.metadata.name);
                    let taken = match names.get(&key) {
                        Some(held) => *held,
                        None => {
                            let held: Option<String> = c.get(&key).await.map_err(backend)?;
                            batch
                                .guards
                                .entry(key.clone())
                                .or_insert_with(|| held.clone().unwrap_or_default());
                            held.map(|id| Uuid::parse_str(&id).map_err(backend)).transpose()?
                        }
                    };
                    logic::create(config, apply, taken, author, now)?
                }
                Step::Modify { id, change } => {
                    let current = match heads.get(&id) {
                        Some(head) => head.clone(),
                        None => match self.read_head(id).await? {
                            Some((rec, stamp)) => {
                                batch.guards.entry(self.key("stamp", id)).or_insert(stamp);
                                Some(rec)
                            }
                            None => None,
                        },
                    };
                    logic::modify(change, current.ok_or(StoreError::NotFound(id))?, author, now)?
                }
            };
            if let Some(rec) = &change.put {
                batch.op("SET", self.key("head", rec.id), vec![json(rec)?]);
                batch.op("INCR", self.key("stamp", rec.id), vec![]);
                let name = self.name_key(&rec.namespace, &rec.name);
                batch.op("SET", name.clone(), vec![rec.id.to_string()]);
                batch.op("SADD", self.ids_key(), vec![rec.id.to_string()]);
                heads.insert(rec.id, Some(rec.clone()));
                names.insert(name, Some(rec.id));
            }
            if let Some(rec) = &change.remove {
                batch.op("DEL", self.key("head", rec.id), vec![]);
                batch.op("INCR", self.key("stamp", rec.id), vec![]);
                let name = self.name_key(&rec.namespace, &rec.name);
                batch.op("DEL", name.clone(), vec![]);
                batch.op("SREM", self.ids_key(), vec![rec.id.to_string()]);
                // Its history goes with it: nothing reads a deleted config's revisions, and they
                // would keep its private keys.
                batch.op("DEL", self.key("revs", rec.id), vec![]);
                heads.insert(rec.id, None);
                names.insert(name, None);
            }
            if let (Some(rev), Some(id)) = (&change.revision, change.put.as_ref().map(|r| r.id)) {
                batch.op("RPUSH", self.key("revs", id), vec![json(rev)?]);
            }
            out.push(change.written);
        }
        let applied: i64 = batch.script(&self.apply).invoke_async(&mut c).await.map_err(backend)?;
        Ok((applied == 1).then_some(out))
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn write_many(&self, ws: Vec<Write>, author: &str) -> Result<Vec<Written>, StoreError> {
        optimistic::retry("the write", || self.attempt(&ws, author)).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<ConfigRecord>, StoreError> {
        Ok(self.read_head(id).await?.map(|(rec, _)| rec))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ConfigRecord>, StoreError> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = c.smembers(self.ids_key()).await.map_err(backend)?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(256) {
            let keys: Vec<String> = chunk.iter().map(|id| self.key("head", id)).collect();
            let raws: Vec<Option<String>> =
                redis::cmd("MGET").arg(&keys).query_async(&mut c).await.map_err(backend)?;
            for raw in raws.into_iter().flatten() {
                let rec: ConfigRecord = parse(&raw, "config")?;
                if filter.matches(&rec) {
                    out.push(rec);
                }
            }
        }
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(out)
    }

    async fn history(&self, id: Uuid) -> Result<Vec<Revision>, StoreError> {
        let mut c = self.conn.clone();
        let raws: Vec<String> = c.lrange(self.key("revs", id), 0, -1).await.map_err(backend)?;
        raws.iter().map(|raw| parse(raw, "revision")).collect()
    }

    async fn trim_history(&self, id: Uuid, keep: usize) -> Result<usize, StoreError> {
        if keep == 0 {
            return Ok(0);
        }
        // The list is in version order: its last `keep` entries stay (LTRIM from the end), read
        // and trimmed in one transaction.
        let key = self.key("revs", id);
        let last = -isize::try_from(keep).unwrap_or(isize::MAX);
        let (len,): (usize,) = redis::pipe()
            .atomic()
            .llen(&key)
            .ltrim(&key, last, -1)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(len.saturating_sub(keep))
    }

    async fn rewrite_secrets(&self, f: SecretMap) -> Result<usize, StoreError> {
        for attempt in 0..ATTEMPTS {
            let mut c = self.conn.clone();
            let mut batch = Batch::default();
            let mut changed = 0;
            let ids: Vec<String> = c.smembers(self.ids_key()).await.map_err(backend)?;
            for id in ids {
                let Ok(uuid) = Uuid::parse_str(&id) else { continue };
                let Some((mut rec, stamp)) = self.read_head(uuid).await? else { continue };
                // Every head is guarded: a write between these reads and the apply starts over.
                batch.guards.insert(self.key("stamp", &id), stamp);
                let n = map_secrets(&mut rec.config, &*f)
                    + rec.applied_config.as_mut().map_or(0, |c| map_secrets(c, &*f));
                if n > 0 {
                    changed += n;
                    batch.op("SET", self.key("head", &id), vec![json(&rec)?]);
                    batch.op("INCR", self.key("stamp", &id), vec![]);
                }
                let revs: Vec<String> = c.lrange(self.key("revs", &id), 0, -1).await.map_err(backend)?;
                for (i, raw) in revs.iter().enumerate() {
                    let mut rev: Revision = parse(raw, "revision")?;
                    let n = map_revision_secrets(&mut rev, &*f);
                    if n > 0 {
                        changed += n;
                        batch.op("LSET", self.key("revs", &id), vec![i.to_string(), json(&rev)?]);
                    }
                }
            }
            let applied: i64 = batch.script(&self.apply).invoke_async(&mut c).await.map_err(backend)?;
            if applied == 1 {
                return Ok(changed);
            }
            back_off(attempt).await;
        }
        Err(backend(format!(
            "re-encrypting secrets gave up after {ATTEMPTS} attempts: configs kept changing"
        )))
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = c.rpush(self.audit_key(), json(entry)?).await.map_err(backend)?;
        Ok(())
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        const PAGE: isize = 256;
        let mut c = self.conn.clone();
        let mut out = Vec::new();
        let mut end: isize = -1;
        loop {
            // Newest first: pages from the tail of the list.
            let raws: Vec<String> = c.lrange(self.audit_key(), end - PAGE + 1, end).await.map_err(backend)?;
            if raws.is_empty() {
                return Ok(out);
            }
            for raw in raws.iter().rev() {
                let e: AuditEntry = parse(raw, "audit entry")?;
                if !filter.take(e, &mut out) {
                    return Ok(out);
                }
            }
            if (raws.len() as isize) < PAGE {
                return Ok(out);
            }
            end -= PAGE;
        }
    }
}
