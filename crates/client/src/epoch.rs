//! Epochs: what lets a service cache facts another service owns and still never serve one that
//! changed. Each account has an epoch, an opaque number. The owner of a fact about an account
//! (the graph service for relationships and follower counts, the user service for profiles) gives
//! the account a new epoch after every change has committed and before it answers; a cache keeps
//! the epoch it read *before* fetching, and an entry is good only while the account still has
//! that epoch. So the read after a block, a mute or a profile change misses the cache, in every
//! process, with no wait for an event.
//!
//! Adapters: `memory://NAME` (one map per name in this process: the services of `agora dev` share
//! it) and `redis://…` (every process of the per-service shape). An epoch that Redis has lost
//! (a restart, an expiry) comes back as a new random number, never as an old one, so a lost epoch
//! can only cause a miss. An empty URL or `none` means no epochs: nothing is cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

/// The longest a cache entry guarded by epochs is used, whatever the epochs say: what a failed
/// bump (Redis down, a crash between a commit and its bump) can cost at most.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// The state of one account's cached facts; equal epochs mean nothing changed in between.
pub type Epoch = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochError(pub String);

impl std::fmt::Display for EpochError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epochs unavailable: {}", self.0)
    }
}

impl std::error::Error for EpochError {}

#[async_trait]
pub trait Epochs: Send + Sync + 'static {
    /// The epoch of each of `ids`, in order. An account without one gets one now.
    async fn current(&self, ids: &[i64]) -> Result<Vec<Epoch>, EpochError>;
    /// Gives each of `ids` a new epoch: every cache entry read under an older one is stale.
    async fn bump(&self, ids: &[i64]) -> Result<(), EpochError>;
}

/// Bumps `ids` after a change has committed. A failure is logged and counted, not returned: the
/// change stands, and caches bound the age of what they hold (see [`crate::graph_facts`]).
pub async fn bump_after_commit(epochs: Option<&Arc<dyn Epochs>>, ids: &[i64]) {
    let Some(epochs) = epochs else { return };
    match epochs.bump(ids).await {
        Ok(()) => metrics::counter!("agora_epoch_bumps_total", "result" => "ok").increment(ids.len() as u64),
        Err(e) => {
            metrics::counter!("agora_epoch_bumps_total", "result" => "error").increment(ids.len() as u64);
            tracing::warn!(error = %e, "could not bump epochs; caches may serve the old facts until they expire");
        }
    }
}

/// The epochs of `ids` for a cache named `cache`, or `None` when there is nothing to cache under:
/// no epochs configured, or they cannot be read (then the caller asks the owner of the facts; the
/// failure is counted and logged).
pub async fn for_cache(epochs: Option<&Arc<dyn Epochs>>, ids: &[i64], cache: &'static str) -> Option<Vec<Epoch>> {
    match epochs?.current(ids).await {
        Ok(e) => Some(e),
        Err(e) => {
            metrics::counter!("agora_epoch_read_errors_total", "cache" => cache).increment(1);
            tracing::warn!(error = %e, cache, "epochs unreadable; reading past the cache");
            None
        }
    }
}

/// Epochs in this process.
#[derive(Default)]
pub struct MemoryEpochs {
    next: AtomicU64,
    map: Mutex<HashMap<i64, Epoch>>,
}

impl MemoryEpochs {
    fn fresh(&self) -> Epoch {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }
}

#[async_trait]
impl Epochs for MemoryEpochs {
    async fn current(&self, ids: &[i64]) -> Result<Vec<Epoch>, EpochError> {
        let mut map = self.map.lock();
        Ok(ids.iter().map(|id| *map.entry(*id).or_insert_with(|| self.fresh())).collect())
    }

    async fn bump(&self, ids: &[i64]) -> Result<(), EpochError> {
        let mut map = self.map.lock();
        for id in ids {
            map.insert(*id, self.fresh());
        }
        Ok(())
    }
}

static NAMED: LazyLock<Mutex<HashMap<String, Weak<MemoryEpochs>>>> = LazyLock::new(Default::default);

/// The in-process epochs named `name`, shared by everyone in this process who asks for it.
pub fn named(name: &str) -> Arc<MemoryEpochs> {
    let mut all = NAMED.lock();
    all.retain(|_, w| w.strong_count() > 0);
    if let Some(e) = all.get(name).and_then(Weak::upgrade) {
        return e;
    }
    let e = Arc::new(MemoryEpochs::default());
    all.insert(name.to_owned(), Arc::downgrade(&e));
    e
}

/// Epochs in Redis, one key per account (`agora:epoch:ID`, expiring a week after its last
/// change; an expired one reads as a new epoch).
pub struct RedisEpochs {
    client: crate::redis::Client,
}

const KEY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// KEYS: the accounts; ARGV: a random candidate per key, then the TTL in ms.
const CURRENT: &str = "local out = {} \
for i, k in ipairs(KEYS) do \
  local v = redis.call('GET', k) \
  if not v then v = ARGV[i] redis.call('SET', k, v, 'PX', ARGV[#KEYS + 1]) end \
  out[i] = v \
end \
return out";

const BUMP: &str = "for i, k in ipairs(KEYS) do redis.call('SET', k, ARGV[i], 'PX', ARGV[#KEYS + 1]) end return 1";

fn key(id: i64) -> String {
    format!("agora:epoch:{id}")
}

impl RedisEpochs {
    pub async fn connect(url: &str) -> Result<Self, EpochError> {
        let client =
            crate::redis::connect(url, Duration::from_millis(500)).await.map_err(|e| EpochError(e.to_string()))?;
        Ok(Self { client })
    }

    async fn run<T: fred::types::FromValue>(&self, script: &str, ids: &[i64]) -> Result<T, EpochError> {
        use fred::interfaces::LuaInterface as _;
        let keys: Vec<String> = ids.iter().map(|id| key(*id)).collect();
        let mut args: Vec<String> = ids.iter().map(|_| rand::random::<u64>().to_string()).collect();
        args.push(KEY_TTL.as_millis().to_string());
        self.client.eval(script, keys, args).await.map_err(|e| EpochError(e.to_string()))
    }
}

#[async_trait]
impl Epochs for RedisEpochs {
    async fn current(&self, ids: &[i64]) -> Result<Vec<Epoch>, EpochError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        use fred::interfaces::KeysInterface as _;
        // The common case is one MGET; only accounts without an epoch run the script.
        let keys: Vec<String> = ids.iter().map(|id| key(*id)).collect();
        let mut got: Vec<Option<String>> = if keys.len() == 1 {
            vec![self.client.get(&keys[0]).await.map_err(|e| EpochError(e.to_string()))?]
        } else {
            self.client.mget(keys).await.map_err(|e| EpochError(e.to_string()))?
        };
        let missing: Vec<i64> = ids.iter().zip(&got).filter(|(_, v)| v.is_none()).map(|(id, _)| *id).collect();
        if !missing.is_empty() {
            let assigned: Vec<String> = self.run(CURRENT, &missing).await?;
            let mut assigned = assigned.into_iter();
            for v in got.iter_mut().filter(|v| v.is_none()) {
                *v = assigned.next();
            }
        }
        got.into_iter()
            .map(|v| {
                let v = v.ok_or_else(|| EpochError("no epoch assigned".into()))?;
                v.parse().map_err(|_| EpochError(format!("not an epoch: {v:?}")))
            })
            .collect()
    }

    async fn bump(&self, ids: &[i64]) -> Result<(), EpochError> {
        if ids.is_empty() {
            return Ok(());
        }
        let _: i64 = self.run(BUMP, ids).await?;
        Ok(())
    }
}

/// Picks the adapter by URL: empty or `none` (no epochs), `memory://[NAME]`, `redis://…`.
pub async fn connect(url: &str) -> Result<Option<Arc<dyn Epochs>>, EpochError> {
    let url = url.trim();
    if url.is_empty() || url == "none" {
        return Ok(None);
    }
    match url.split_once("://") {
        Some(("memory", "")) => Ok(Some(Arc::new(MemoryEpochs::default()))),
        Some(("memory", name)) => Ok(Some(named(name))),
        Some(("redis" | "rediss", _)) => Ok(Some(Arc::new(RedisEpochs::connect(url).await?))),
        _ => Err(EpochError(format!("unsupported epochs url {url:?} (none, memory://NAME, redis://…)"))),
    }
}

/// The epochs setting every service reads: `AGORA_EPOCHS_URL` (default: none).
pub fn url_from_env(env: &dyn agora_kit::config::Env) -> String {
    agora_kit::config::string(env, "AGORA_EPOCHS_URL", "")
}
