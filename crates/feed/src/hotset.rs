//! The hot set: the newest entries of each home timeline kept in a cache (Redis sorted sets, or
//! memory), so most home reads never touch SQL. It is only a copy: a timeline is "warm" once
//! filled from the store, and a read is answered from it only when it provably holds the same
//! entries the store would return; otherwise the caller falls back to SQL.
//!
//! A fill racing a fan-out must not lose the new status: in Redis, writers add to a home whether
//! it is warm or not, and cold partial homes expire quickly; in memory, a newest-page miss opens
//! the home to writers before the caller reads the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::domain::Window;

/// What a hot timeline holds per status: enough to apply a viewer's filter set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotEntry {
    pub status_id: i64,
    pub author_id: i64,
    pub reblog_of_author_id: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("hot set unavailable: {0}")]
pub struct HotSetError(pub String);

#[async_trait]
pub trait HotSet: Send + Sync + 'static {
    /// Adds entries to an account's home, keeping the newest `capacity`.
    async fn insert(&self, account_id: i64, entries: &[HotEntry]) -> Result<(), HotSetError>;
    async fn remove(&self, account_id: i64, status_ids: &[i64]) -> Result<(), HotSetError>;
    /// Warms a home with its newest entries as read from the store; `complete` when they are
    /// the whole timeline. The caller reads the store only after a newest-window `page` found
    /// the home cold: entries inserted since that miss must survive the fill.
    async fn fill(&self, account_id: i64, newest: &[HotEntry], complete: bool) -> Result<(), HotSetError>;
    /// The window's entries in walk order, if the home is warm and holds everything the store
    /// would answer; `None` means ask the store.
    async fn page(&self, account_id: i64, window: &Window) -> Result<Option<Vec<HotEntry>>, HotSetError>;
    /// Makes a home cold (after a rebuild).
    async fn forget(&self, account_id: i64) -> Result<(), HotSetError>;
    async fn ping(&self) -> Result<(), HotSetError>;
    fn capacity(&self) -> usize;
}

/// Whether entries read from a warm timeline answer `window` exactly. The timeline holds every
/// entry at or above its lowest id (`floor`); below that only a complete timeline is sure.
fn covers(window: &Window, got: usize, floor: Option<i64>, complete: bool) -> bool {
    if complete {
        return true;
    }
    let Some(floor) = floor else { return false };
    if window.lower.is_some_and(|l| l >= floor) {
        return true;
    }
    !window.ascending && got >= window.limit
}

/// Entries a home keeps when `AGORA_FEED_HOT_SET_SIZE` is not set: Redis keeps Mastodon's 800;
/// the process's own memory (`agora dev`), where every active home costs 16 bytes an entry,
/// keeps 200 and reads deeper pages from the store.
pub fn default_capacity(url: &str) -> usize {
    if scheme(url) == Some("memory") { 200 } else { 800 }
}

fn scheme(url: &str) -> Option<&str> {
    url.split_once("://").map(|(s, _)| s)
}

/// Picks the adapter by URL: `memory://` or `redis://host:port`.
pub async fn connect(url: &str, capacity: usize) -> Result<Arc<dyn HotSet>, HotSetError> {
    match scheme(url) {
        Some("memory") => Ok(Arc::new(MemoryHotSet::new(capacity))),
        Some("redis") | Some("rediss") => Ok(Arc::new(RedisHotSet::connect(url, capacity).await?)),
        _ => Err(HotSetError(format!(
            "unsupported feed cache url {} (memory://, redis://)",
            agora_kit::config::redact_url(url)
        ))),
    }
}

/// One home in memory: entries ascending by id, packed to 16 bytes each (authors as indexes
/// into [`Authors`]), so 10,000 homes of 200 entries hold about 32 MiB at most.
#[derive(Default)]
struct MemoryTimeline {
    warm: bool,
    complete: bool,
    entries: Vec<Packed>,
}

/// A [`HotEntry`] in memory: the status id, and its author and reblogged author as indexes.
#[derive(Debug, Clone, Copy)]
struct Packed {
    status_id: i64,
    author: u32,
    reblog_of_author: u32,
}

impl MemoryTimeline {
    fn add(&mut self, e: Packed) {
        if self.entries.len() == self.entries.capacity() {
            // A quarter more at a time, not double: 10,000 homes warmed with 160 entries each
            // held 256 slots apiece when the vector doubled its way there.
            self.entries.reserve_exact((self.entries.len() / 4).max(8));
        }
        if self.entries.last().is_none_or(|last| last.status_id < e.status_id) {
            // Fan-out mostly brings the newest id.
            self.entries.push(e);
            return;
        }
        match self.entries.binary_search_by_key(&e.status_id, |x| x.status_id) {
            Ok(i) => self.entries[i] = e,
            Err(i) => self.entries.insert(i, e),
        }
    }

    fn trim(&mut self, capacity: usize) {
        if self.entries.len() > capacity {
            let excess = self.entries.len() - capacity;
            self.entries.drain(..excess);
            self.complete = false;
        }
    }
}

/// Homes the memory adapter holds at most. Cold homes (a fill announced, not done) go first;
/// past that the whole set is dropped (reads fall back to SQL).
const MEMORY_MAX_HOMES: usize = 20_000;

/// Everything the memory adapter holds, behind one lock: the homes, and the authors their
/// entries name (separate fields, so a home and the authors can be borrowed at once).
struct Homes {
    timelines: HashMap<i64, MemoryTimeline>,
    authors: Authors,
}

/// The account ids entries name, by index (index 0 is "none", id 0). Authors are never forgotten
/// while the process runs: one slot (12 bytes) per account that ever reached a home.
struct Authors {
    ids: Vec<i64>,
    index: HashMap<i64, u32>,
}

impl Authors {
    fn index(&mut self, account_id: i64) -> u32 {
        if let Some(&i) = self.index.get(&account_id) {
            return i;
        }
        let i = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        self.ids.push(account_id);
        self.index.insert(account_id, i);
        i
    }

    fn pack(&mut self, e: &HotEntry) -> Packed {
        Packed {
            status_id: e.status_id,
            author: self.index(e.author_id),
            reblog_of_author: self.index(e.reblog_of_author_id),
        }
    }

    fn unpack(&self, p: &Packed) -> HotEntry {
        let id = |i: u32| self.ids.get(i as usize).copied().unwrap_or_default();
        HotEntry { status_id: p.status_id, author_id: id(p.author), reblog_of_author_id: id(p.reblog_of_author) }
    }
}

impl Homes {
    fn new() -> Self {
        Self { timelines: HashMap::new(), authors: Authors { ids: vec![0], index: HashMap::from([(0, 0)]) } }
    }

    fn make_room(&mut self, account_id: i64) {
        let all = &mut self.timelines;
        if all.len() >= MEMORY_MAX_HOMES && !all.contains_key(&account_id) {
            all.retain(|_, t| t.warm);
            if all.len() >= MEMORY_MAX_HOMES {
                all.clear();
            }
        }
    }
}

/// The hot set in this process (the embedded default). Unlike Redis, which keeps what a fan-out
/// adds to a cold home for a while, it keeps entries only for homes that are warm or about to be
/// filled: a newest-page miss announces the fill, so an insert racing the fill's store read is
/// kept, and homes nobody reads cost nothing.
pub struct MemoryHotSet {
    capacity: usize,
    homes: Mutex<Homes>,
}

impl MemoryHotSet {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), homes: Mutex::new(Homes::new()) }
    }
}

#[async_trait]
impl HotSet for MemoryHotSet {
    async fn insert(&self, account_id: i64, entries: &[HotEntry]) -> Result<(), HotSetError> {
        let mut homes = self.homes.lock();
        let Homes { timelines, authors } = &mut *homes;
        let Some(t) = timelines.get_mut(&account_id) else { return Ok(()) };
        for e in entries {
            t.add(authors.pack(e));
        }
        t.trim(self.capacity);
        Ok(())
    }

    async fn remove(&self, account_id: i64, status_ids: &[i64]) -> Result<(), HotSetError> {
        let mut homes = self.homes.lock();
        if let Some(t) = homes.timelines.get_mut(&account_id) {
            t.entries.retain(|e| !status_ids.contains(&e.status_id));
        }
        Ok(())
    }

    async fn fill(&self, account_id: i64, newest: &[HotEntry], complete: bool) -> Result<(), HotSetError> {
        let mut homes = self.homes.lock();
        homes.make_room(account_id);
        let Homes { timelines, authors } = &mut *homes;
        let t = timelines.entry(account_id).or_default();
        t.entries.reserve_exact(newest.len());
        for e in newest {
            t.add(authors.pack(e));
        }
        t.warm = true;
        t.complete = complete;
        t.trim(self.capacity);
        Ok(())
    }

    async fn page(&self, account_id: i64, w: &Window) -> Result<Option<Vec<HotEntry>>, HotSetError> {
        let mut homes = self.homes.lock();
        let Some(t) = homes.timelines.get(&account_id).filter(|t| t.warm) else {
            if w.upper.is_none() && w.lower.is_none() {
                // The caller reads the store next and fills: from now on inserts are kept.
                homes.make_room(account_id);
                homes.timelines.entry(account_id).or_default();
            }
            return Ok(None);
        };
        let inside = t.entries.iter().filter(|e| w.contains(e.status_id));
        let got: Vec<HotEntry> = if w.ascending {
            inside.take(w.limit).map(|p| homes.authors.unpack(p)).collect()
        } else {
            inside.rev().take(w.limit).map(|p| homes.authors.unpack(p)).collect()
        };
        let floor = t.entries.first().map(|e| e.status_id);
        Ok(covers(w, got.len(), floor, t.complete).then_some(got))
    }

    async fn forget(&self, account_id: i64) -> Result<(), HotSetError> {
        self.homes.lock().timelines.remove(&account_id);
        Ok(())
    }

    async fn ping(&self) -> Result<(), HotSetError> {
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Hot set in Redis: one sorted set per home, all scores 0 so members order by their text.
/// Members are `<id, 20 digits>:<author>:<reblogged author>`, so lexicographic order is id order
/// (scores are doubles and cannot hold 64-bit ids exactly). Two marker members sort after every
/// id: `w` (warm) and `c` (complete).
pub struct RedisHotSet {
    client: fred::clients::Client,
    capacity: usize,
}

/// How long a warm home stays cached without reads, and a cold partial one at all.
const WARM_TTL: Duration = Duration::from_secs(2 * 24 * 3600);
const COLD_TTL: Duration = Duration::from_secs(600);

// Trims to ARGV[1] ids (markers excluded) and drops `c` when anything was trimmed.
const TRIM: &str = "local function trim(key, cap) \
  local markers = 0 \
  if redis.call('ZSCORE', key, 'w') then markers = markers + 1 end \
  if redis.call('ZSCORE', key, 'c') then markers = markers + 1 end \
  local n = redis.call('ZCARD', key) - markers \
  if n > cap then \
    redis.call('ZREMRANGEBYRANK', key, 0, n - cap - 1) \
    redis.call('ZREM', key, 'c') \
  end \
end ";

const INSERT_BODY: &str = "for i = 3, #ARGV do redis.call('ZADD', KEYS[1], 0, ARGV[i]) end \
trim(KEYS[1], tonumber(ARGV[1])) \
if not redis.call('ZSCORE', KEYS[1], 'w') then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end \
return 1";

const FILL_BODY: &str = "for i = 4, #ARGV do redis.call('ZADD', KEYS[1], 0, ARGV[i]) end \
redis.call('ZADD', KEYS[1], 0, 'w') \
if ARGV[2] == '1' then redis.call('ZADD', KEYS[1], 0, 'c') else redis.call('ZREM', KEYS[1], 'c') end \
trim(KEYS[1], tonumber(ARGV[1])) \
redis.call('PEXPIRE', KEYS[1], ARGV[3]) \
return 1";

const REMOVE: &str = "for i = 1, #ARGV do \
  redis.call('ZREMRANGEBYLEX', KEYS[1], '[' .. ARGV[i] .. ':', '(' .. ARGV[i] .. ';') \
end return 1";

// ARGV: upper bound, lower bound, limit, ascending, ttl. Returns nil when cold, else
// {complete, floor member, members}.
const PAGE: &str = "if not redis.call('ZSCORE', KEYS[1], 'w') then return false end \
local complete = 0 \
if redis.call('ZSCORE', KEYS[1], 'c') then complete = 1 end \
local first = redis.call('ZRANGE', KEYS[1], 0, 0)[1] or '' \
local items \
if ARGV[4] == '1' then items = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[1], 'LIMIT', 0, tonumber(ARGV[3])) \
else items = redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3])) end \
redis.call('PEXPIRE', KEYS[1], ARGV[5]) \
return {complete, first, items}";

fn redis_key(account_id: i64) -> String {
    format!("agora:feed:home:{account_id}")
}

fn padded(id: i64) -> String {
    format!("{id:020}")
}

fn member(e: &HotEntry) -> String {
    format!("{}:{}:{}", padded(e.status_id), e.author_id, e.reblog_of_author_id)
}

fn parse_member(m: &str) -> Option<HotEntry> {
    let mut parts = m.split(':');
    Some(HotEntry {
        status_id: parts.next()?.parse().ok()?,
        author_id: parts.next()?.parse().ok()?,
        reblog_of_author_id: parts.next()?.parse().ok()?,
    })
}

fn redis_err(e: fred::error::Error) -> HotSetError {
    HotSetError(e.to_string())
}

impl RedisHotSet {
    pub async fn connect(url: &str, capacity: usize) -> Result<Self, HotSetError> {
        let client = agora_client::redis::connect(url, Duration::from_secs(2)).await.map_err(redis_err)?;
        Ok(Self { client, capacity: capacity.max(1) })
    }

    async fn eval(&self, script: String, key: String, args: Vec<String>) -> Result<fred::types::Value, HotSetError> {
        use fred::interfaces::LuaInterface as _;
        self.client.eval(script, vec![key], args).await.map_err(redis_err)
    }
}

#[async_trait]
impl HotSet for RedisHotSet {
    async fn insert(&self, account_id: i64, entries: &[HotEntry]) -> Result<(), HotSetError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut args = vec![self.capacity.to_string(), COLD_TTL.as_millis().to_string()];
        args.extend(entries.iter().map(member));
        self.eval(format!("{TRIM}{INSERT_BODY}"), redis_key(account_id), args).await?;
        Ok(())
    }

    async fn remove(&self, account_id: i64, status_ids: &[i64]) -> Result<(), HotSetError> {
        if status_ids.is_empty() {
            return Ok(());
        }
        let args = status_ids.iter().map(|id| padded(*id)).collect();
        self.eval(REMOVE.to_owned(), redis_key(account_id), args).await?;
        Ok(())
    }

    async fn fill(&self, account_id: i64, newest: &[HotEntry], complete: bool) -> Result<(), HotSetError> {
        let mut args = vec![
            self.capacity.to_string(),
            if complete { "1" } else { "0" }.to_owned(),
            WARM_TTL.as_millis().to_string(),
        ];
        args.extend(newest.iter().map(member));
        self.eval(format!("{TRIM}{FILL_BODY}"), redis_key(account_id), args).await?;
        Ok(())
    }

    async fn page(&self, account_id: i64, w: &Window) -> Result<Option<Vec<HotEntry>>, HotSetError> {
        // Every id member sorts below "a"; a member for id N sorts above "N" and below "N;".
        let upper = w.upper.map_or_else(|| "(a".to_owned(), |u| format!("({}", padded(u)));
        let lower = w.lower.map_or_else(|| "-".to_owned(), |l| format!("({};", padded(l)));
        let args = vec![
            upper,
            lower,
            w.limit.to_string(),
            if w.ascending { "1" } else { "0" }.to_owned(),
            WARM_TTL.as_millis().to_string(),
        ];
        let value = self.eval(PAGE.to_owned(), redis_key(account_id), args).await?;
        if value.is_null() {
            return Ok(None);
        }
        let mut parts = value.into_array().into_iter();
        let complete = parts.next().and_then(|v| v.as_i64()).unwrap_or(0) == 1;
        let floor = parts.next().and_then(|v| v.as_string()).and_then(|m| parse_member(&m)).map(|e| e.status_id);
        let got: Vec<HotEntry> = parts
            .next()
            .map(|v| v.into_array())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.as_string())
            .filter_map(|m| parse_member(&m))
            .collect();
        Ok(covers(w, got.len(), floor, complete).then_some(got))
    }

    async fn forget(&self, account_id: i64) -> Result<(), HotSetError> {
        use fred::interfaces::KeysInterface as _;
        self.client.del::<i64, _>(redis_key(account_id)).await.map_err(redis_err)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), HotSetError> {
        use fred::interfaces::ClientLike as _;
        self.client.ping::<String>(None).await.map(|_| ()).map_err(redis_err)
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_and_sort_by_id() {
        let a = HotEntry { status_id: 99, author_id: 7, reblog_of_author_id: 0 };
        let b = HotEntry { status_id: 100, author_id: 1, reblog_of_author_id: 3 };
        assert_eq!(parse_member(&member(&a)), Some(a));
        assert!(member(&a) < member(&b));
        assert!(member(&b).as_str() < "a");
        assert!(parse_member("w").is_none());
    }
}
