//! The graph store port and the choice of backend by URL scheme (`postgres://`, `sqlite://`,
//! `scylla://`).
//! Every backend passes the conformance suite in `tests/it/store.rs`.
//!
//! Every write is one transaction that also writes the event of each change it made to the
//! outbox, and returns those changes; a write that changes nothing writes no event.

mod lite;
mod scylla;
mod sql;

use std::sync::Arc;

use agora_events::Envelope;
use agora_events::outbox::OutboxStore;
use agora_kit::pagination::Page;
use async_trait::async_trait;

use crate::domain::{
    Counts, Entry, FamiliarFollowers, FilterSet, FollowerIds, GraphChange, NewFollow, NewMute, Relationship, Suggestion,
};

pub use scylla::ScyllaGraphStore;
pub use sql::{PgGraphStore, SqliteGraphStore};

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The target blocks the actor.
    BlockedBy,
    /// The actor blocks the target.
    Blocking,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("refused: {0:?}")]
    Refused(Refusal),
    #[error("not found")]
    NotFound,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store's cluster has not been reached yet (still connecting, or down): 503, not 500.
    #[error("store not ready: {0}")]
    NotReady(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if matches!(e, sqlx::Error::RowNotFound) {
            return StoreError::NotFound;
        }
        StoreError::Unavailable(e.to_string())
    }
}

impl From<StoreError> for agora_kit::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(Refusal::BlockedBy) => {
                agora_kit::Error::forbidden("You are not allowed to follow this account")
            }
            StoreError::Refused(Refusal::Blocking) => {
                agora_kit::Error::forbidden("You are blocking this account; unblock it before following it")
            }
            StoreError::NotFound => agora_kit::Error::not_found("Record"),
            StoreError::Unavailable(detail) => agora_kit::Error::internal(detail),
            StoreError::NotReady(detail) => agora_kit::Error::not_ready(detail),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Builds the event announcing a change (written in the same transaction as the change).
pub type ChangeEvent<'a> = dyn Fn(&GraphChange) -> Envelope + Send + Sync + 'a;

#[async_trait]
pub trait GraphStore: Send + Sync + 'static {
    async fn migrate(&self) -> StoreResult<()>;
    async fn ping(&self) -> StoreResult<()>;
    /// The outbox of this store's database, for the relay.
    fn outbox(&self) -> Arc<dyn OutboxStore>;

    /// Follows, or asks to follow when `locked`. Already following or requested: the options are
    /// updated; a changed `show_reblogs` on a follow is announced again, nothing else is.
    /// Refused when either account blocks the other.
    async fn follow(&self, follow: &NewFollow, locked: bool, event: &ChangeEvent<'_>) -> StoreResult<Vec<GraphChange>>;
    /// Removes the follow of `account_id` to `target_id` and any pending request.
    async fn unfollow(&self, account_id: i64, target_id: i64, event: &ChangeEvent<'_>)
    -> StoreResult<Vec<GraphChange>>;
    /// Removes the follow of `follower_id` to `account_id` (a pending request stays).
    async fn remove_follower(
        &self,
        account_id: i64,
        follower_id: i64,
        event: &ChangeEvent<'_>,
    ) -> StoreResult<Vec<GraphChange>>;
    /// Turns the request of `requester_id` to follow `account_id` into a follow with row id
    /// `follow_id`. NotFound when there is no such request.
    async fn authorize_request(
        &self,
        account_id: i64,
        requester_id: i64,
        follow_id: i64,
        now_ms: i64,
        event: &ChangeEvent<'_>,
    ) -> StoreResult<Vec<GraphChange>>;
    /// Drops the request of `requester_id` to follow `account_id`. NotFound when there is none.
    async fn reject_request(
        &self,
        account_id: i64,
        requester_id: i64,
        event: &ChangeEvent<'_>,
    ) -> StoreResult<Vec<GraphChange>>;
    /// Blocks, removing follows and pending requests in both directions.
    async fn block(
        &self,
        id: i64,
        account_id: i64,
        target_id: i64,
        now_ms: i64,
        event: &ChangeEvent<'_>,
    ) -> StoreResult<Vec<GraphChange>>;
    async fn unblock(&self, account_id: i64, target_id: i64, event: &ChangeEvent<'_>) -> StoreResult<Vec<GraphChange>>;
    /// Mutes, or updates a live mute; an expired mute is replaced as if it were not there.
    async fn mute(&self, mute: &NewMute, event: &ChangeEvent<'_>) -> StoreResult<Vec<GraphChange>>;
    async fn unmute(
        &self,
        account_id: i64,
        target_id: i64,
        now_ms: i64,
        event: &ChangeEvent<'_>,
    ) -> StoreResult<Vec<GraphChange>>;
    async fn dismiss_suggestion(&self, account_id: i64, target_id: i64, now_ms: i64) -> StoreResult<()>;

    /// `account_id`'s relationship to each of `ids`, in that order.
    async fn relationships(&self, account_id: i64, ids: &[i64], now_ms: i64) -> StoreResult<Vec<Relationship>>;
    /// Accepted followers of `account_id`, newest follow first (Mastodon page rules).
    async fn followers(&self, account_id: i64, page: &Page) -> StoreResult<Vec<Entry>>;
    async fn following(&self, account_id: i64, page: &Page) -> StoreResult<Vec<Entry>>;
    /// Pending requests to follow `account_id`.
    async fn follow_requests(&self, account_id: i64, page: &Page) -> StoreResult<Vec<Entry>>;
    async fn blocks(&self, account_id: i64, page: &Page) -> StoreResult<Vec<Entry>>;
    /// Live mutes only.
    async fn mutes(&self, account_id: i64, page: &Page, now_ms: i64) -> StoreResult<Vec<Entry>>;
    /// Accepted followers with follow id > `after_id`, ascending, at most `limit`.
    async fn follower_ids(&self, account_id: i64, after_id: i64, limit: i64) -> StoreResult<FollowerIds>;
    /// Which of `candidates` follow `account_id`, in candidate order.
    async fn filter_followers(&self, account_id: i64, candidates: &[i64]) -> StoreResult<Vec<i64>>;
    /// Per id (in order): the accounts `account_id` follows that follow it, newest follow first.
    async fn familiar_followers(&self, account_id: i64, ids: &[i64]) -> StoreResult<Vec<FamiliarFollowers>>;
    /// Friends of friends, most mutuals first, then lowest id; see the proto for the exclusions.
    async fn suggestions(&self, account_id: i64, limit: i64, now_ms: i64) -> StoreResult<Vec<Suggestion>>;
    async fn filter_set(&self, account_id: i64, now_ms: i64) -> StoreResult<FilterSet>;
    /// Follower and following counts per id, in order.
    async fn counts(&self, ids: &[i64]) -> StoreResult<Vec<Counts>>;
}

/// Opens the store named by `url`, migrating it first when `migrate_on_start`. SQLite files and
/// their directory are created if missing. A ScyllaDB store returns at once and connects (and
/// migrates) in the background, so a cluster that is down makes the service not ready, not dead.
pub async fn connect(url: &str, migrate_on_start: bool) -> StoreResult<Arc<dyn GraphStore>> {
    let store: Arc<dyn GraphStore> = match url.split_once("://").map(|(s, _)| s) {
        Some("postgres") | Some("postgresql") => Arc::new(PgGraphStore::connect(url).await?),
        Some("sqlite") => Arc::new(SqliteGraphStore::connect(url).await?),
        Some("scylla") => return Ok(ScyllaGraphStore::open(url, migrate_on_start)?),
        _ => {
            return Err(StoreError::Unavailable(format!(
                "unsupported graph store url scheme in {} (postgres://, sqlite://, scylla://)",
                agora_kit::config::redact_url(url)
            )));
        }
    };
    if migrate_on_start {
        store.migrate().await?;
    }
    Ok(store)
}
