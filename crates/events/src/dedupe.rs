//! Idempotent consumers: remember which event ids a consumer has handled, so redelivery changes
//! nothing. SQL consumers record the id in the same transaction as the state change
//! ([`pg::first_time`], [`sqlite::first_time`]); stateless ones use [`MemoryDedupe`].
//!
//! Table: `processed_events (consumer TEXT, event_id BIGINT, processed_at_ms BIGINT, PRIMARY KEY (consumer, event_id))`.

use std::collections::{HashSet, VecDeque};

use parking_lot::Mutex;

/// Handled-event records are kept this long: longer than a topic's retention, so a redelivery is
/// always recognised.
pub const KEEP_PROCESSED: std::time::Duration = std::time::Duration::from_secs(8 * 24 * 3600);

/// Every hour until `shutdown`, calls `prune` with the cut-off of [`KEEP_PROCESSED`] (ms): a
/// consumer's store forgets handled-event records (and whatever else ages with them) older than
/// that. `store` names it in the logs.
pub async fn prune_periodically<F, Fut, E>(store: &'static str, shutdown: agora_kit::Shutdown, prune: F)
where
    F: Fn(i64) -> Fut,
    Fut: std::future::Future<Output = Result<u64, E>>,
    E: std::fmt::Display,
{
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let before = agora_kit::time::now_ms() - KEEP_PROCESSED.as_millis() as i64;
        match prune(before).await {
            Ok(n) => tracing::debug!(store, removed = n, "pruned bookkeeping"),
            Err(e) => tracing::warn!(store, error = %e, "pruning failed; will retry"),
        }
    }
}

/// Bounded in-memory dedupe window (the newest `capacity` ids per instance).
pub struct MemoryDedupe {
    inner: Mutex<(HashSet<i64>, VecDeque<i64>)>,
    capacity: usize,
}

impl MemoryDedupe {
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new((HashSet::new(), VecDeque::new())), capacity }
    }

    /// True the first time `event_id` is seen.
    pub fn first_time(&self, event_id: i64) -> bool {
        let mut guard = self.inner.lock();
        let (set, order) = &mut *guard;
        if !set.insert(event_id) {
            return false;
        }
        order.push_back(event_id);
        if order.len() > self.capacity
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        true
    }
}

pub mod pg {
    use sqlx::PgConnection;

    /// Records `event_id` for `consumer` in the caller's transaction; false if already handled.
    pub async fn first_time(conn: &mut PgConnection, consumer: &str, event_id: i64) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "INSERT INTO processed_events (consumer, event_id, processed_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(event_id)
        .bind(agora_kit::time::now_ms())
        .execute(conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

pub mod sqlite {
    use sqlx::SqliteConnection;

    pub async fn first_time(conn: &mut SqliteConnection, consumer: &str, event_id: i64) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "INSERT INTO processed_events (consumer, event_id, processed_at_ms) VALUES (?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(event_id)
        .bind(agora_kit::time::now_ms())
        .execute(conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_window_forgets_oldest() {
        let d = MemoryDedupe::new(2);
        assert!(d.first_time(1));
        assert!(!d.first_time(1));
        assert!(d.first_time(2));
        assert!(d.first_time(3));
        assert!(d.first_time(1), "1 fell out of the window");
    }
}
