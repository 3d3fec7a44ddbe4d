//! The timeline store port and the choice of backend by URL scheme (`postgres://`, `sqlite://`).
//! Everything in it is derived from post and graph events and can be rebuilt. Every backend
//! passes the conformance suite in `tests/it/store.rs`.

mod conversations;
mod lite;
mod scylla;
mod sql;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{Conversation, Entry, EntryFilter, Marker, StatusFacts, TagUse, Window};

pub use scylla::ScyllaTimelineStore;
pub use sql::{PgTimelineStore, SqliteTimelineStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store's cluster has not been reached yet (still connecting, or down): 503, not 500.
    #[error("store not ready: {0}")]
    NotReady(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<StoreError> for agora_kit::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => agora_kit::Error::internal(detail),
            StoreError::NotReady(detail) => agora_kit::Error::not_ready(detail),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What recording a status did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// First time seen.
    New,
    /// Seen before; the facts were replaced (an edit, or a redelivery).
    Known(StatusFacts),
    /// The status was deleted earlier; it must not come back.
    Deleted,
}

/// A status id removed from a timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub timeline: String,
    pub status_id: i64,
}

/// Whether an account reads its home timeline, and whether fan-out skipped it meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    pub last_active_ms: i64,
    pub needs_rebuild: bool,
}

/// Which of an author's entries leave a timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorScope {
    /// Their statuses and their reblogs (an unfollow); direct messages stay.
    Authored,
    /// Also others' reblogs of their statuses, and direct messages (a block or mute).
    Everything,
}

/// What removing a status did to one account's conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationChange {
    pub account_id: i64,
    pub conversation_id: i64,
    /// The conversation as it is now; None when its last status went and it went with it.
    pub now: Option<Conversation>,
}

/// Mastodon conversations (direct statuses grouped per account by thread and participants).
/// Part of every timeline store; the rules that decide who gets which are the feed's.
#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    /// Adds `status_id` (by `author_id`) to `account_id`'s conversation of `thread_id` with
    /// exactly `participants` (ascending), creating it with the status's id if there is none.
    /// The conversation becomes unread or read as `unread` says, and its last status is the
    /// newest it holds. None when it already held the status (a redelivery changes nothing).
    async fn add_to_conversation(
        &self,
        account_id: i64,
        thread_id: i64,
        participants: &[i64],
        status_id: i64,
        author_id: i64,
        unread: bool,
    ) -> StoreResult<Option<Conversation>>;
    /// The thread a status of some conversation belongs to.
    async fn thread_of(&self, status_id: i64) -> StoreResult<Option<i64>>;
    /// Takes a (deleted) status out of every conversation holding it; a conversation left
    /// without statuses goes.
    async fn remove_from_conversations(&self, status_id: i64) -> StoreResult<Vec<ConversationChange>>;
    /// The account's conversations inside `window`, which bounds their last status ids, in
    /// walk order (newest last status first, or oldest first for ascending windows).
    async fn conversations(&self, account_id: i64, window: &Window) -> StoreResult<Vec<Conversation>>;
    async fn conversation(&self, account_id: i64, id: i64) -> StoreResult<Option<Conversation>>;
    /// Marks the conversation read; None when the account has no such conversation.
    async fn read_conversation(&self, account_id: i64, id: i64) -> StoreResult<Option<Conversation>>;
    /// Removes the conversation for the account alone (its statuses stay); false when there was
    /// none. A later status of the thread begins a new one.
    async fn delete_conversation(&self, account_id: i64, id: i64) -> StoreResult<bool>;
}

#[async_trait]
pub trait TimelineStore: ConversationStore + Send + Sync + 'static {
    async fn migrate(&self) -> StoreResult<()>;
    async fn ping(&self) -> StoreResult<()>;

    /// Whether `consumer` already handled `event_id`.
    async fn processed(&self, consumer: &str, event_id: i64) -> StoreResult<bool>;
    async fn mark_processed(&self, consumer: &str, event_id: i64) -> StoreResult<()>;

    /// Stores the facts of a status (replacing earlier ones), unless it was deleted.
    async fn record_status(&self, status: &StatusFacts) -> StoreResult<Recorded>;
    async fn status(&self, id: i64) -> StoreResult<Option<StatusFacts>>;
    /// Tombstones the status and removes it and every reblog of it from every timeline.
    async fn delete_status(&self, id: i64, account_id: i64) -> StoreResult<Vec<Removed>>;

    /// Places `entry` in each timeline (a no-op where it already is).
    async fn insert(&self, timelines: &[String], entry: &Entry) -> StoreResult<()>;
    /// Places `entry` in the home timelines of `recipients`. A reblog is skipped where the home
    /// already holds its original or another reblog of it. Returns the recipients whose home now
    /// holds the entry (newly or from an earlier delivery).
    async fn insert_home(&self, recipients: &[i64], entry: &Entry) -> StoreResult<Vec<i64>>;
    /// Replaces the tag timelines a status is in (an edit may change its tags).
    async fn retag(&self, entry: &Entry, tags: &[String]) -> StoreResult<()>;
    /// Updates whether every copy of a status carries media.
    async fn set_media(&self, status_id: i64, has_media: bool) -> StoreResult<()>;
    /// Removes an author's entries from a timeline; returns the removed status ids.
    async fn remove_author(&self, timeline: &str, author_id: i64, scope: AuthorScope) -> StoreResult<Vec<i64>>;
    /// Entries of `timeline` inside `window`, in walk order (newest first, or oldest first for
    /// ascending windows).
    async fn page(&self, timeline: &str, window: &Window, filter: &EntryFilter) -> StoreResult<Vec<Entry>>;
    async fn has_entries(&self, timeline: &str) -> StoreResult<bool>;

    /// Records (or, with `None`, clears) that an author is too large for fan-out.
    async fn set_large_account(&self, account_id: i64, followers: Option<i64>) -> StoreResult<()>;
    async fn large_accounts(&self) -> StoreResult<Vec<i64>>;

    async fn activity(&self, account_id: i64) -> StoreResult<Option<Activity>>;
    /// Marks the account active now and its home up to date.
    async fn touch(&self, account_id: i64, now_ms: i64) -> StoreResult<()>;
    /// Those of `ids` last active before `cutoff_ms` (never-seen accounts count as active).
    async fn inactive_among(&self, ids: &[i64], cutoff_ms: i64) -> StoreResult<Vec<i64>>;
    async fn mark_needs_rebuild(&self, ids: &[i64]) -> StoreResult<()>;

    /// Remembers that `follower` follows `target` without wanting its reblogs (or forgets it).
    async fn set_hides_reblogs(&self, follower: i64, target: i64, hides: bool) -> StoreResult<()>;
    /// Those of `candidates` who follow `target` without its reblogs.
    async fn hiding_reblogs(&self, target: i64, candidates: &[i64]) -> StoreResult<Vec<i64>>;

    /// Every account the store knows of (authors and readers), for a full rebuild.
    async fn known_accounts(&self) -> StoreResult<Vec<i64>>;

    /// Replaces the tag uses of a status.
    async fn record_tag_uses(&self, status_id: i64, account_id: i64, tags: &[String], at_ms: i64) -> StoreResult<()>;
    async fn tag_uses_since(&self, since_ms: i64) -> StoreResult<Vec<TagUse>>;
    /// Adds (or with `present == false` removes) a favourite or reblog of a status.
    async fn set_engagement(
        &self,
        status_id: i64,
        account_id: i64,
        kind: &str,
        at_ms: i64,
        present: bool,
    ) -> StoreResult<()>;
    /// (status id, when) of engagements since `since_ms` with public, non-sensitive, top-level,
    /// undeleted statuses.
    async fn engagements_since(&self, since_ms: i64) -> StoreResult<Vec<(i64, i64)>>;

    /// Forgets handled-event records and trend inputs older than `before_ms`. Returns the rows
    /// removed.
    async fn prune(&self, before_ms: i64) -> StoreResult<u64>;

    async fn markers(&self, account_id: i64) -> StoreResult<Vec<Marker>>;
    /// Saves a marker, bumping its version.
    async fn save_marker(&self, account_id: i64, timeline: &str, last_read_id: i64, now_ms: i64)
    -> StoreResult<Marker>;
}

/// Opens the store named by `url`, migrating it first when `migrate_on_start`. SQLite files and
/// their directory are created if missing. A ScyllaDB store returns at once and connects (and
/// migrates) in the background, so a cluster that is down makes the service not ready, not dead.
pub async fn connect(url: &str, migrate_on_start: bool) -> StoreResult<Arc<dyn TimelineStore>> {
    let store: Arc<dyn TimelineStore> = match url.split_once("://").map(|(s, _)| s) {
        Some("postgres") | Some("postgresql") => Arc::new(PgTimelineStore::connect(url).await?),
        Some("sqlite") => Arc::new(SqliteTimelineStore::connect(url).await?),
        Some("scylla") => return Ok(Arc::new(ScyllaTimelineStore::open(url, migrate_on_start)?)),
        _ => {
            return Err(StoreError::Unavailable(format!(
                "unsupported feed store url scheme in {} (postgres://, sqlite://, scylla://)",
                agora_kit::config::redact_url(url)
            )));
        }
    };
    if migrate_on_start {
        store.migrate().await?;
    }
    Ok(store)
}
