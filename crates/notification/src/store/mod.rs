//! The notification store port and the choice of backend by URL scheme (`postgres://`,
//! `sqlite://`, `scylla://`). Every backend passes the conformance suite in `tests/it/store.rs`.

mod lite;
mod scylla;
mod sql;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{Change, Group, GroupStats, Notification, Query};
use crate::push::{PushSubscription, VapidKey};

pub use scylla::ScyllaNotificationStore;
pub use sql::{PgNotificationStore, SqliteNotificationStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<StoreError> for agora_kit::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => agora_kit::Error::internal(detail),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait NotificationStore: Send + Sync + 'static {
    async fn migrate(&self) -> StoreResult<()>;
    async fn ping(&self) -> StoreResult<()>;

    /// Applies the changes of event `event_id` in one transaction with the record that it was
    /// handled. Returns false, changing nothing, when it was handled before.
    async fn apply(&self, event_id: i64, now_ms: i64, changes: &[Change]) -> StoreResult<bool>;

    /// The followers who asked to hear of `target_id`'s new statuses.
    async fn subscribers(&self, target_id: i64) -> StoreResult<Vec<i64>>;
    /// The accounts that reblogged, favourited or replied to a status.
    async fn interested(&self, status_id: i64) -> StoreResult<Vec<i64>>;

    /// The recipient's notifications that `query` admits, newest first, leaving out those from
    /// accounts the recipient does not hear from at `now_ms`.
    async fn page(&self, recipient_id: i64, query: &Query, now_ms: i64) -> StoreResult<Vec<Notification>>;
    /// The whole of one of the recipient's groups (`Group::Single` is never asked for).
    async fn group_stats(&self, recipient_id: i64, group: Group, now_ms: i64) -> StoreResult<GroupStats>;
    /// One of the recipient's notifications (none when it is someone else's).
    async fn get(&self, recipient_id: i64, id: i64, now_ms: i64) -> StoreResult<Option<Notification>>;
    /// Removes one of the recipient's notifications; false when there was none.
    async fn dismiss(&self, recipient_id: i64, id: i64) -> StoreResult<bool>;
    /// Removes all of the recipient's notifications; returns how many.
    async fn clear(&self, recipient_id: i64) -> StoreResult<u64>;
    /// How many of the notifications `query` admits are newer than `after_id`, counting up to
    /// `query.limit`.
    async fn unread_count(&self, recipient_id: i64, after_id: i64, query: &Query, now_ms: i64) -> StoreResult<i64>;

    /// Forgets handled-event records older than `before_ms` and expired mutes. Returns the rows
    /// removed.
    async fn prune(&self, before_ms: i64) -> StoreResult<u64>;

    /// Web Push: puts the subscription of its (account, session), replacing the one there was.
    async fn put_push_subscription(&self, s: &PushSubscription) -> StoreResult<()>;
    async fn push_subscription(&self, account_id: i64, session_id: i64) -> StoreResult<Option<PushSubscription>>;
    /// Every subscription of the account (one per session).
    async fn push_subscriptions(&self, account_id: i64) -> StoreResult<Vec<PushSubscription>>;
    /// False when there was none.
    async fn delete_push_subscription(&self, account_id: i64, session_id: i64) -> StoreResult<bool>;
    /// The server's VAPID key; None until one is put.
    async fn vapid_key(&self) -> StoreResult<Option<VapidKey>>;
    /// Puts `key` if there is none yet (`replace`: in any case); returns the key in force after,
    /// so racing first writers all end up with the one that won.
    async fn put_vapid_key(&self, key: &VapidKey, replace: bool) -> StoreResult<VapidKey>;
}

/// Opens the store named by `url`, migrating it first when `migrate_on_start`. SQLite files and
/// their directory are created if missing.
pub async fn connect(url: &str, migrate_on_start: bool) -> StoreResult<Arc<dyn NotificationStore>> {
    let store: Arc<dyn NotificationStore> = match url.split_once("://").map(|(s, _)| s) {
        Some("postgres") | Some("postgresql") => Arc::new(PgNotificationStore::connect(url).await?),
        Some("sqlite") => Arc::new(SqliteNotificationStore::connect(url).await?),
        // The session comes up (and migrates) in the background; readiness says when.
        Some("scylla") => return Ok(Arc::new(ScyllaNotificationStore::open(url, migrate_on_start)?)),
        _ => {
            return Err(StoreError::Unavailable(format!(
                "unsupported notification store url scheme in {} (postgres://, sqlite://, scylla://)",
                agora_kit::config::redact_url(url)
            )));
        }
    };
    if migrate_on_start {
        store.migrate().await?;
    }
    Ok(store)
}
