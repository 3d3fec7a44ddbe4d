//! Transactional outbox. A service writes its state change and the event's envelope in the same
//! database transaction ([`pg::insert`], [`sqlite::insert`]); the [`OutboxRelay`] publishes what is
//! pending, in id order, and deletes each row once the bus has accepted it. A crash between publish
//! and delete republishes: consumers dedupe by event id.
//!
//! Each service's migrations create the table:
//! `outbox (id BIGINT PRIMARY KEY, topic TEXT NOT NULL, envelope BYTEA|BLOB NOT NULL, created_at_ms BIGINT NOT NULL)`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prost::Message as _;
use tokio::sync::Notify;

use crate::{Envelope, EventBus};
use agora_kit::Shutdown;

#[derive(Debug, thiserror::Error)]
#[error("outbox store: {0}")]
pub struct OutboxError(pub String);

impl From<sqlx::Error> for OutboxError {
    fn from(e: sqlx::Error) -> Self {
        OutboxError(e.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub id: i64,
    pub topic: String,
    pub envelope: Envelope,
}

/// The relay's view of a service's outbox table.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Oldest pending events first.
    async fn pending(&self, limit: usize) -> Result<Vec<PendingEvent>, OutboxError>;
    async fn remove(&self, ids: &[i64]) -> Result<(), OutboxError>;
    async fn backlog(&self) -> Result<i64, OutboxError>;
    /// Whether this process should relay now. With several replicas only one leads, so events
    /// keep their order. Default: always.
    async fn lead(&self) -> Result<bool, OutboxError> {
        Ok(true)
    }
}

/// Publishes pending outbox rows until shutdown.
pub struct OutboxRelay {
    store: Arc<dyn OutboxStore>,
    bus: Arc<dyn EventBus>,
    wake: Arc<Notify>,
    batch: usize,
    service: String,
}

impl OutboxRelay {
    pub fn new(service: &str, store: Arc<dyn OutboxStore>, bus: Arc<dyn EventBus>) -> Self {
        Self { store, bus, wake: Arc::new(Notify::new()), batch: 256, service: service.to_owned() }
    }

    /// Notify this after committing a transaction that wrote to the outbox, to publish at once
    /// instead of at the next poll.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Publishes one batch. Returns how many events went out, or the first failure (events
    /// published before it are removed from the outbox).
    pub async fn publish_batch(&self) -> Result<usize, OutboxError> {
        let rows = self.store.pending(self.batch).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let events: Vec<(String, Envelope)> = rows.iter().map(|r| (r.topic.clone(), r.envelope.clone())).collect();
        let (accepted, failure) = match self.bus.publish_all(&events).await {
            Ok(n) if n < rows.len() => (n, Some(OutboxError(format!("the bus accepted {n} of {} events", rows.len())))),
            Ok(n) => (n, None),
            Err(e) => (0, Some(OutboxError(e.to_string()))),
        };
        if accepted > 0 {
            let done: Vec<i64> = rows[..accepted].iter().map(|r| r.id).collect();
            self.store.remove(&done).await?;
            metrics::counter!("agora_outbox_published_total", "service" => self.service.clone())
                .increment(done.len() as u64);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(accepted),
        }
    }

    pub async fn run(self, shutdown: Shutdown) {
        const IDLE_POLL: Duration = Duration::from_millis(500);
        const MAX_BACKOFF: Duration = Duration::from_secs(10);
        let mut backoff = Duration::from_millis(100);
        let mut last_gauge = Instant::now() - Duration::from_secs(10);
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if last_gauge.elapsed() >= Duration::from_secs(1) {
                last_gauge = Instant::now();
                if let Ok(n) = self.store.backlog().await {
                    metrics::gauge!("agora_outbox_backlog", "service" => self.service.clone()).set(n as f64);
                }
            }
            let wait = match self.store.lead().await {
                Ok(false) => Duration::from_secs(2),
                Ok(true) => match self.publish_batch().await {
                    Ok(0) => IDLE_POLL,
                    Ok(_) => {
                        backoff = Duration::from_millis(100);
                        continue;
                    }
                    Err(e) => {
                        metrics::counter!("agora_outbox_publish_errors_total", "service" => self.service.clone())
                            .increment(1);
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox publish failed");
                        let jitter = Duration::from_millis(rand::random::<u64>() % 50);
                        let wait = backoff + jitter;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        // Failing: do not let a wake-up cut the backoff short.
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        continue;
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "outbox leadership check failed");
                    Duration::from_secs(2)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // Last chance to hand over what is pending; anything left goes out on the next start.
        if matches!(self.store.lead().await, Ok(true)) {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.publish_batch()).await;
        }
    }
}

/// Pending events from `(id, topic, envelope bytes)` rows; an undecodable row is logged and left.
pub fn decode_rows(rows: Vec<(i64, String, Vec<u8>)>) -> Vec<PendingEvent> {
    rows.into_iter()
        .filter_map(|(id, topic, bytes)| match Envelope::decode(bytes.as_slice()) {
            Ok(envelope) => Some(PendingEvent { id, topic, envelope }),
            Err(e) => {
                tracing::error!(id, error = %e, "undecodable outbox row left in place");
                None
            }
        })
        .collect()
}

/// PostgreSQL outbox helpers.
pub mod pg {
    use super::*;
    use sqlx::{Connection, PgConnection, PgPool};

    /// Writes `envelope` to the outbox inside the caller's transaction.
    pub async fn insert(conn: &mut PgConnection, topic: &str, envelope: &Envelope) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO outbox (id, topic, envelope, created_at_ms) VALUES ($1, $2, $3, $4)")
            .bind(envelope.id)
            .bind(topic)
            .bind(envelope.encode_to_vec())
            .bind(envelope.occurred_at_ms)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Outbox over a pool; one replica at a time leads, by a session advisory lock.
    pub struct PgOutbox {
        pool: PgPool,
        url: String,
        lock_key: i64,
        leader: tokio::sync::Mutex<Option<PgConnection>>,
    }

    impl PgOutbox {
        /// `service` names the outbox for the advisory lock, so services sharing one database
        /// do not exclude each other.
        pub fn new(pool: PgPool, url: &str, service: &str) -> Self {
            let lock_key = service.bytes().fold(0x0a60_7a00_i64, |h, b| h.wrapping_mul(31).wrapping_add(i64::from(b)));
            Self { pool, url: url.to_owned(), lock_key, leader: tokio::sync::Mutex::new(None) }
        }
    }

    #[async_trait]
    impl OutboxStore for PgOutbox {
        async fn pending(&self, limit: usize) -> Result<Vec<PendingEvent>, OutboxError> {
            let rows: Vec<(i64, String, Vec<u8>)> =
                sqlx::query_as("SELECT id, topic, envelope FROM outbox ORDER BY id LIMIT $1")
                    .bind(limit as i64)
                    .fetch_all(&self.pool)
                    .await?;
            Ok(decode_rows(rows))
        }

        async fn remove(&self, ids: &[i64]) -> Result<(), OutboxError> {
            sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(ids).execute(&self.pool).await?;
            Ok(())
        }

        async fn backlog(&self) -> Result<i64, OutboxError> {
            Ok(sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&self.pool).await?)
        }

        async fn lead(&self) -> Result<bool, OutboxError> {
            let mut leader = self.leader.lock().await;
            if let Some(conn) = leader.as_mut() {
                if conn.ping().await.is_ok() {
                    return Ok(true);
                }
                *leader = None;
            }
            let mut conn = PgConnection::connect(&self.url).await?;
            let got: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(self.lock_key).fetch_one(&mut conn).await?;
            if got {
                *leader = Some(conn);
            }
            Ok(got)
        }
    }
}

/// SQLite outbox helpers (single process: no leadership needed).
pub mod sqlite {
    use super::*;
    use sqlx::{SqliteConnection, SqlitePool};

    /// Statement texts of the SQLite outbox, for [`SqliteOutbox`] and for stores that run their
    /// outbox on rusqlite connections (`agora_store::lite::LiteOutbox`).
    pub const INSERT: &str = "INSERT INTO outbox (id, topic, envelope, created_at_ms) VALUES (?1, ?2, ?3, ?4)";
    pub const PENDING: &str = "SELECT id, topic, envelope FROM outbox ORDER BY id LIMIT ?1";
    /// The ids as one JSON array.
    pub const REMOVE: &str = "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?1))";
    pub const BACKLOG: &str = "SELECT count(*) FROM outbox";

    pub async fn insert(conn: &mut SqliteConnection, topic: &str, envelope: &Envelope) -> Result<(), sqlx::Error> {
        sqlx::query(INSERT)
            .bind(envelope.id)
            .bind(topic)
            .bind(envelope.encode_to_vec())
            .bind(envelope.occurred_at_ms)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// [`insert`] for a unit of work on a rusqlite connection (`agora_store::lite::SqliteWriter`).
    pub fn insert_lite(conn: &rusqlite::Connection, topic: &str, envelope: &Envelope) -> rusqlite::Result<()> {
        conn.prepare_cached(INSERT)?.execute(rusqlite::params![
            envelope.id,
            topic,
            envelope.encode_to_vec(),
            envelope.occurred_at_ms
        ])?;
        Ok(())
    }

    pub struct SqliteOutbox {
        pool: SqlitePool,
    }

    impl SqliteOutbox {
        pub fn new(pool: SqlitePool) -> Self {
            Self { pool }
        }
    }

    #[async_trait]
    impl OutboxStore for SqliteOutbox {
        async fn pending(&self, limit: usize) -> Result<Vec<PendingEvent>, OutboxError> {
            let rows: Vec<(i64, String, Vec<u8>)> =
                sqlx::query_as(PENDING).bind(limit as i64).fetch_all(&self.pool).await?;
            Ok(decode_rows(rows))
        }

        async fn remove(&self, ids: &[i64]) -> Result<(), OutboxError> {
            // One statement (one hop to sqlx's connection thread), however many ids.
            let list = serde_json::to_string(ids).map_err(|e| OutboxError(e.to_string()))?;
            sqlx::query(REMOVE).bind(list).execute(&self.pool).await?;
            Ok(())
        }

        async fn backlog(&self) -> Result<i64, OutboxError> {
            Ok(sqlx::query_scalar(BACKLOG).fetch_one(&self.pool).await?)
        }
    }
}
