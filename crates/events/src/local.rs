//! The embedded bus for `agora dev` and tests: a durable log in one SQLite file (`sqlite://PATH`)
//! or in an in-memory SQLite database (`memory://`), with a stored cursor per consumer group and
//! topic. It keeps Kafka's promise: an event it accepted reaches every group at least once, also
//! across a crash of the process, because the log and the cursors are on disk and a cursor only
//! moves past events the group acked.
//!
//! Each topic is one partition, so per-key order holds trivially; within a group one member at
//! a time consumes a topic (a second member waits, like an idle Kafka member with no partition).
//! It must never move a cursor past an event that was not acked.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use prost::Message as _;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::Notify;

use crate::Envelope;
use crate::bus::{BusError, Delivery, EventBus, Subscription};

/// How many events one read takes from the log.
const FETCH: i64 = 256;
/// Events per INSERT statement when publishing a batch (three parameters each, far below
/// SQLite's limit on parameters).
const PUBLISH_CHUNK: usize = 128;
/// Acked progress is written at least this often while a group is busy, and at once when it is
/// caught up; a crash loses at most this much progress (those events are delivered again).
const COMMIT_EVERY: Duration = Duration::from_millis(50);
/// A subscriber also looks at the log this often without being woken (another process may have
/// appended to the same file).
const POLL: Duration = Duration::from_secs(1);
/// Events every known group has passed are deleted this long after they were appended; events
/// some group still needs are deleted only after [`LocalSettings::retention`].
const KEEP_CONSUMED: Duration = Duration::from_secs(60);

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS bus_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        envelope BLOB NOT NULL,
        appended_at_ms INTEGER NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS bus_log_topic_seq ON bus_log (topic, seq)",
    "CREATE TABLE IF NOT EXISTS bus_cursors (
        consumer_group TEXT NOT NULL,
        topic TEXT NOT NULL,
        next_seq INTEGER NOT NULL,
        PRIMARY KEY (consumer_group, topic)
    )",
];

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

/// Settings parsed from `sqlite://PATH[?retention_hours=N]` or `memory://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSettings {
    /// `None`: an in-memory database (gone with the process).
    pub path: Option<String>,
    /// The longest an event is kept for a group that has not consumed it (default 7 days).
    pub retention: Duration,
}

impl LocalSettings {
    pub fn parse(url: &str) -> Result<Self, BusError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| BusError::Config(format!("{url:?} is not a url")))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut s = LocalSettings { path: None, retention: Duration::from_secs(7 * 24 * 3600) };
        match scheme {
            "memory" => {}
            "sqlite" if !location.is_empty() => s.path = Some(location.to_owned()),
            "sqlite" => return Err(BusError::Config("sqlite:// bus url names no file".into())),
            _ => return Err(BusError::Config(format!("{url:?} is not a memory:// or sqlite:// url"))),
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "retention_hours" => {
                    let h: u64 = v
                        .parse()
                        .ok()
                        .filter(|h| *h > 0)
                        .ok_or_else(|| BusError::Config("retention_hours must be a positive number".into()))?;
                    s.retention = Duration::from_secs(h * 3600);
                }
                _ => return Err(BusError::Config(format!("unknown bus url option {k}"))),
            }
        }
        Ok(s)
    }
}

struct Shared {
    pool: SqlitePool,
    /// Woken on every append and whenever a topic's consumer leaves.
    notify: Notify,
    /// Which member of a group consumes a topic: (group, topic) → member.
    leases: Mutex<HashMap<(String, String), u64>>,
    next_member: AtomicU64,
    retention: Duration,
    last_trim: Mutex<Instant>,
}

/// The embedded [`EventBus`].
#[derive(Clone)]
pub struct LocalBus {
    shared: Arc<Shared>,
}

impl LocalBus {
    pub async fn connect(url: &str) -> Result<Self, BusError> {
        let settings = LocalSettings::parse(url)?;
        let (opts, max) = match &settings.path {
            Some(path) => {
                if let Some(parent) = std::path::Path::new(path).parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent).map_err(unavailable)?;
                }
                let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
                    .map_err(|e| BusError::Config(e.to_string()))?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // A commit survives a crash of the process (the WAL is written before the
                    // call returns); only a power loss can take the last commits with it.
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5));
                (opts, 4)
            }
            // One connection: every connection to `:memory:` would be a database of its own.
            None => (SqliteConnectOptions::from_str("sqlite::memory:").map_err(unavailable)?, 1),
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(unavailable)?;
        // One connection sets the file up (the switch to WAL needs the database to itself),
        // before the pool opens any other.
        {
            let mut conn = pool.acquire().await.map_err(unavailable)?;
            for stmt in SCHEMA {
                sqlx::query(*stmt).execute(&mut *conn).await.map_err(unavailable)?;
            }
        }
        Ok(Self {
            shared: Arc::new(Shared {
                pool,
                notify: Notify::new(),
                leases: Mutex::new(HashMap::new()),
                next_member: AtomicU64::new(1),
                retention: settings.retention,
                last_trim: Mutex::new(Instant::now()),
            }),
        })
    }

    /// Deletes what no group needs any more, at most once a minute.
    async fn maybe_trim(&self) {
        {
            let mut last = self.shared.last_trim.lock();
            if last.elapsed() < Duration::from_secs(60) {
                return;
            }
            *last = Instant::now();
        }
        let now = agora_kit::time::now_ms();
        let consumed_before = now - KEEP_CONSUMED.as_millis() as i64;
        let expired_before = now - self.shared.retention.as_millis() as i64;
        let result = sqlx::query(
            "DELETE FROM bus_log WHERE appended_at_ms < ?1 OR (appended_at_ms < ?2 AND seq < \
             (SELECT MIN(c.next_seq) FROM bus_cursors c WHERE c.topic = bus_log.topic))",
        )
        .bind(expired_before)
        .bind(consumed_before)
        .execute(&self.shared.pool)
        .await;
        match result {
            Ok(done) => tracing::debug!(deleted = done.rows_affected(), "bus log trimmed"),
            Err(e) => tracing::warn!(error = %e, "bus log trim failed"),
        }
    }
}

#[async_trait]
impl EventBus for LocalBus {
    async fn publish(&self, topic: &str, envelope: &Envelope) -> Result<(), BusError> {
        self.publish_all(&[(topic.to_owned(), envelope.clone())]).await.map(|_| ())
    }

    async fn publish_all(&self, events: &[(String, Envelope)]) -> Result<usize, BusError> {
        if events.is_empty() {
            return Ok(0);
        }
        let now = agora_kit::time::now_ms();
        let mut tx = self.shared.pool.begin().await.map_err(unavailable)?;
        // One statement per chunk, not per event: each statement is a round trip to sqlx's
        // connection thread. Rows of one INSERT take their sequence numbers in VALUES order.
        for chunk in events.chunks(PUBLISH_CHUNK) {
            let mut insert = sqlx::QueryBuilder::new("INSERT INTO bus_log (topic, envelope, appended_at_ms) ");
            insert.push_values(chunk, |mut row, (topic, envelope)| {
                row.push_bind(topic.as_str()).push_bind(envelope.encode_to_vec()).push_bind(now);
            });
            insert.build().execute(&mut *tx).await.map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        self.shared.notify.notify_waiters();
        self.maybe_trim().await;
        Ok(events.len())
    }

    async fn subscribe(&self, topics: &[String], group: &str) -> Result<Box<dyn Subscription>, BusError> {
        for t in topics {
            // A new group starts from the oldest retained event.
            sqlx::query("INSERT OR IGNORE INTO bus_cursors (consumer_group, topic, next_seq) VALUES (?, ?, 0)")
                .bind(group)
                .bind(t)
                .execute(&self.shared.pool)
                .await
                .map_err(unavailable)?;
        }
        Ok(Box::new(LocalSubscription {
            shared: Arc::clone(&self.shared),
            member: self.shared.next_member.fetch_add(1, Ordering::Relaxed),
            group: group.to_owned(),
            topics: topics.iter().map(|t| TopicState::new(t)).collect(),
            next_topic: 0,
            last_commit: Instant::now(),
            step: None,
        }))
    }

    async fn ensure_topics(&self, _topics: &[String]) -> Result<(), BusError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), BusError> {
        sqlx::query("SELECT 1").execute(&self.shared.pool).await.map(|_| ()).map_err(unavailable)
    }
}

/// One topic as a subscription sees it.
struct TopicState {
    topic: String,
    /// Whether this member holds the topic's lease for its group, and from where it reads.
    leased: bool,
    /// Next sequence number to read from the log.
    read_from: i64,
    buffer: VecDeque<Delivery>,
    /// Everything below this was acked; what is stored may lag behind it.
    acked: i64,
    stored: i64,
}

impl TopicState {
    fn new(topic: &str) -> Self {
        Self { topic: topic.to_owned(), leased: false, read_from: 0, buffer: VecDeque::new(), acked: 0, stored: 0 }
    }
}

struct LocalSubscription {
    shared: Arc<Shared>,
    member: u64,
    group: String,
    topics: Vec<TopicState>,
    next_topic: usize,
    last_commit: Instant,
    /// The database step `next` is waiting for, if any (see [`Step`]).
    step: Option<tokio::task::JoinHandle<Result<Step, BusError>>>,
}

/// Log rows as read: (seq, envelope bytes).
type Rows = Vec<(i64, Vec<u8>)>;

/// What one database step of `next` found. The consumer selects on `next` and drops it whenever
/// a handler finishes first, so `next` runs its reads and its cursor commit on tasks of their own
/// and keeps the task across such a drop: the next call waits for the same step instead of
/// starting it again. (Dropped in the middle of a statement, a pooled connection was closed and a
/// new one opened, with an OS thread of its own: about thirty a second under a steady compose
/// load in `agora dev`.)
enum Step {
    /// Newly leased topics (by index) and the group's stored cursor of each.
    Acquired(Vec<(usize, i64)>),
    /// Rows read per topic index, each from the `read_from` it had when the read started.
    Filled(Vec<(usize, Rows)>),
    /// Cursors stored.
    Committed(Vec<(String, i64)>),
}

impl LocalSubscription {
    /// Waits for the step a dropped `next` left running, and applies what it found.
    async fn finish_step(&mut self) -> Result<bool, BusError> {
        let Some(handle) = self.step.as_mut() else { return Ok(false) };
        // Waiting on the handle by reference: if this call is dropped, the step stays in `self`.
        let done = handle.await;
        self.step = None;
        match done.map_err(unavailable)?? {
            Step::Acquired(cursors) => {
                for (i, cursor) in cursors {
                    let t = &mut self.topics[i];
                    t.leased = true;
                    t.read_from = cursor;
                    t.acked = cursor;
                    t.stored = cursor;
                }
                Ok(false)
            }
            Step::Filled(found) => {
                let mut any = false;
                for (i, rows) in found {
                    any |= self.apply(i, rows);
                }
                Ok(any)
            }
            Step::Committed(stored) => {
                for (topic, next) in stored {
                    if let Some(t) = self.topics.iter_mut().find(|t| t.topic == topic) {
                        t.stored = t.stored.max(next);
                    }
                }
                self.last_commit = Instant::now();
                Ok(false)
            }
        }
    }

    /// Runs `step` on a task of its own and waits for it (see [`Step`]).
    async fn run_step(
        &mut self,
        step: impl std::future::Future<Output = Result<Step, BusError>> + Send + 'static,
    ) -> Result<bool, BusError> {
        debug_assert!(self.step.is_none(), "a bus step was started while another one runs");
        self.step = Some(tokio::spawn(step));
        self.finish_step().await
    }

    /// Takes the lease of every topic no other member of the group holds; a newly leased
    /// topic resumes from the group's stored cursor.
    async fn acquire(&mut self) -> Result<(), BusError> {
        let wanted: Vec<(usize, String)> = {
            let mut leases = self.shared.leases.lock();
            self.topics
                .iter()
                .enumerate()
                .filter(|(_, t)| !t.leased)
                .filter(|(_, t)| {
                    let holder = leases.entry((self.group.clone(), t.topic.clone())).or_insert(self.member);
                    *holder == self.member
                })
                .map(|(i, t)| (i, t.topic.clone()))
                .collect()
        };
        if wanted.is_empty() {
            return Ok(());
        }
        let (shared, group) = (Arc::clone(&self.shared), self.group.clone());
        self.run_step(async move {
            let mut cursors = Vec::with_capacity(wanted.len());
            for (i, topic) in wanted {
                let cursor: Option<i64> =
                    sqlx::query_scalar("SELECT next_seq FROM bus_cursors WHERE consumer_group = ? AND topic = ?")
                        .bind(&group)
                        .bind(&topic)
                        .fetch_optional(&shared.pool)
                        .await
                        .map_err(unavailable)?;
                cursors.push((i, cursor.unwrap_or(0)));
            }
            Ok(Step::Acquired(cursors))
        })
        .await
        .map(|_| ())
    }

    /// Reads the next events of every leased topic whose buffer ran dry. True if any arrived.
    async fn fill(&mut self) -> Result<bool, BusError> {
        let dry: Vec<(usize, String, i64)> = self
            .topics
            .iter()
            .enumerate()
            .filter(|(_, t)| t.leased && t.buffer.is_empty())
            .map(|(i, t)| (i, t.topic.clone(), t.read_from))
            .collect();
        if dry.is_empty() {
            return Ok(false);
        }
        let shared = Arc::clone(&self.shared);
        self.run_step(async move {
            let mut found = Vec::with_capacity(dry.len());
            for (i, topic, from) in dry {
                let rows: Rows = sqlx::query_as(
                    "SELECT seq, envelope FROM bus_log WHERE topic = ? AND seq >= ? ORDER BY seq LIMIT ?",
                )
                .bind(&topic)
                .bind(from)
                .bind(FETCH)
                .fetch_all(&shared.pool)
                .await
                .map_err(unavailable)?;
                found.push((i, rows));
            }
            Ok(Step::Filled(found))
        })
        .await
    }

    /// Queues the rows read for topic `i` (those past what it already read). True if any.
    fn apply(&mut self, i: usize, rows: Rows) -> bool {
        let t = &mut self.topics[i];
        let mut any = false;
        for (seq, bytes) in rows {
            if seq < t.read_from {
                continue;
            }
            t.read_from = seq + 1;
            match Envelope::decode(bytes.as_slice()) {
                Ok(envelope) => {
                    t.buffer.push_back(Delivery { topic: t.topic.clone(), partition: 0, offset: seq, envelope });
                    any = true;
                }
                Err(e) => {
                    // Cannot happen for what publish wrote; skipping beats wedging the group.
                    tracing::error!(seq, topic = %t.topic, error = %e, "undecodable bus log entry skipped");
                    if t.buffer.is_empty() && t.acked == seq {
                        t.acked = seq + 1;
                    }
                }
            }
        }
        any
    }

    fn take(&mut self) -> Option<Delivery> {
        let n = self.topics.len();
        for i in 0..n {
            let idx = (self.next_topic + i) % n;
            if let Some(d) = self.topics[idx].buffer.pop_front() {
                self.next_topic = idx + 1;
                return Some(d);
            }
        }
        None
    }

    fn pending(&self) -> Vec<(String, i64)> {
        self.topics.iter().filter(|t| t.acked > t.stored).map(|t| (t.topic.clone(), t.acked)).collect()
    }

    /// Stores acked progress that is not stored yet.
    async fn commit(&mut self) -> Result<(), BusError> {
        let pending = self.pending();
        if pending.is_empty() {
            return Ok(());
        }
        let (shared, group) = (Arc::clone(&self.shared), self.group.clone());
        self.run_step(async move {
            store_cursors(&shared, &group, &pending).await?;
            Ok(Step::Committed(pending))
        })
        .await
        .map(|_| ())
    }
}

/// Moves the group's stored cursors forward to `pending` (topic, next seq), in one transaction;
/// a cursor never moves back.
async fn store_cursors(shared: &Shared, group: &str, pending: &[(String, i64)]) -> Result<(), BusError> {
    let mut tx = shared.pool.begin().await.map_err(unavailable)?;
    for (topic, next) in pending {
        sqlx::query("UPDATE bus_cursors SET next_seq = MAX(next_seq, ?) WHERE consumer_group = ? AND topic = ?")
            .bind(next)
            .bind(group)
            .bind(topic)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
    }
    tx.commit().await.map_err(unavailable)
}

#[async_trait]
impl Subscription for LocalSubscription {
    async fn next(&mut self) -> Result<Delivery, BusError> {
        let shared = Arc::clone(&self.shared);
        loop {
            let notified = shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // A step an earlier, dropped call left running comes first.
            self.finish_step().await?;
            if let Some(d) = self.take() {
                return Ok(d);
            }
            self.acquire().await?;
            if self.fill().await? {
                continue;
            }
            // Caught up: store what was acked before waiting.
            self.commit().await?;
            let _ = tokio::time::timeout(POLL, notified).await;
        }
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        // The step of a dropped `next` finishes first: one step at a time, in order.
        self.finish_step().await?;
        let Some(t) = self.topics.iter_mut().find(|t| t.topic == delivery.topic && t.leased) else {
            return Ok(());
        };
        t.acked = t.acked.max(delivery.offset + 1);
        let caught_up = t.buffer.is_empty();
        if caught_up || self.last_commit.elapsed() >= COMMIT_EVERY {
            self.commit().await?;
        }
        Ok(())
    }
}

impl Drop for LocalSubscription {
    /// Leaving stores the acked progress (as a Kafka consumer commits on close) and only then
    /// hands the topics to another member, so it resumes exactly after the last ack. After a
    /// crash, nothing runs here: the stored cursor may lag by [`COMMIT_EVERY`], and those events
    /// are delivered again.
    fn drop(&mut self) {
        let shared = Arc::clone(&self.shared);
        let group = self.group.clone();
        let member = self.member;
        let topics: Vec<String> = self.topics.iter().map(|t| t.topic.clone()).collect();
        let pending = self.pending();
        let release = move |shared: &Shared| {
            {
                let mut leases = shared.leases.lock();
                for topic in topics {
                    let key = (group.clone(), topic);
                    if leases.get(&key) == Some(&member) {
                        leases.remove(&key);
                    }
                }
            }
            // A waiting member of the same group may take over.
            shared.notify.notify_waiters();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if !pending.is_empty() => {
                let group = self.group.clone();
                rt.spawn(async move {
                    if let Err(e) = store_cursors(&shared, &group, &pending).await {
                        tracing::warn!(error = %e, "bus cursors not stored on leave; events will be redelivered");
                    }
                    release(&shared);
                });
            }
            _ => release(&self.shared),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(LocalSettings::parse("memory://").unwrap().path, None);
        let s = LocalSettings::parse("sqlite:///var/agora/bus.db?retention_hours=2").unwrap();
        assert_eq!(s.path.as_deref(), Some("/var/agora/bus.db"));
        assert_eq!(s.retention, Duration::from_secs(7200));
        assert_eq!(LocalSettings::parse("sqlite://.agora/bus.db").unwrap().path.as_deref(), Some(".agora/bus.db"));
        assert!(LocalSettings::parse("sqlite://").is_err());
        assert!(LocalSettings::parse("sqlite://x.db?retention_hours=0").is_err());
        assert!(LocalSettings::parse("sqlite://x.db?nope=1").is_err());
    }
}
