//! Idempotent consumers: remember which event ids a consumer has handled, so redelivery changes
//! nothing. SQL consumers record the id in the same transaction as the state change
//! ([`pg::first_time`], [`sqlite::first_time`]); stateless ones use [`MemoryDedupe`].
//!
//! Table: `processed_events (consumer TEXT, event_id BIGINT, processed_at_ms BIGINT, PRIMARY KEY (consumer, event_id))`.

use std::collections::{HashSet, VecDeque};

use parking_lot::Mutex;

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
