//! The post store port and the choice of backend by URL scheme (`postgres://`, `sqlite://`).
//! Every backend passes the conformance suite in `tests/it/store.rs`.
//!
//! Every write that other services must hear about takes the event (or a function building it
//! from the stored row) and writes it to the outbox in the same transaction, and only when the
//! write changed something: favouriting twice announces nothing.

mod lite;
mod pg;
mod sql;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{EditRecord, MentionRecord, StatusRecord, Visibility};
use agora_events::Envelope;
use agora_events::outbox::OutboxStore;

pub use sql::{PgPostStore, SqlitePostStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The account already has the most pins allowed.
    #[error("too many pins")]
    TooManyPins,
    #[error("store unavailable: {0}")]
    Unavailable(String),
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
            StoreError::NotFound => agora_kit::Error::new(agora_kit::ErrorKind::NotFound, "Record not found"),
            StoreError::TooManyPins => {
                agora_kit::Error::invalid("id", "ERR_LIMIT", "You have already pinned the maximum number of statuses")
            }
            StoreError::Unavailable(detail) => agora_kit::Error::internal(detail),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Builds the event announcing a change to a status, from the row as stored.
pub type StatusEvent<'a> = dyn Fn(&StatusRecord) -> Envelope + Send + Sync + 'a;

/// Most pins an account may have.
pub const MAX_PINS: i64 = 5;

/// Idempotency keys are honoured for this long.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 3600 * 1000;

/// A status (or reblog) to insert.
#[derive(Debug, Clone)]
pub struct NewStatus {
    pub id: i64,
    pub account_id: i64,
    pub text: String,
    pub content: String,
    pub spoiler_text: String,
    pub sensitive: bool,
    pub visibility: Visibility,
    pub language: String,
    pub in_reply_to_id: Option<i64>,
    pub in_reply_to_account_id: Option<i64>,
    pub reblog_of_id: Option<i64>,
    pub created_at_ms: i64,
    pub application_name: String,
    pub idempotency_key: Option<String>,
    pub mentions: Vec<MentionRecord>,
    pub tags: Vec<String>,
}

/// The new version of an edited status.
#[derive(Debug, Clone)]
pub struct StatusEdit {
    pub text: String,
    pub content: String,
    pub spoiler_text: String,
    pub sensitive: bool,
    pub language: String,
    pub mentions: Vec<MentionRecord>,
    pub tags: Vec<String>,
    pub edited_at_ms: i64,
    /// Id for the history row of the new version (and one more for the original, if first edit).
    pub edit_ids: [i64; 2],
}

/// Outcome of an insert that may find its row already there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Written now, with its event.
    New(StatusRecord),
    /// Already there (same idempotency key, or the same reblog); nothing written.
    Existing(StatusRecord),
}

impl Inserted {
    pub fn status(&self) -> &StatusRecord {
        match self {
            Inserted::New(s) | Inserted::Existing(s) => s,
        }
    }

    pub fn into_status(self) -> StatusRecord {
        match self {
            Inserted::New(s) | Inserted::Existing(s) => s,
        }
    }
}

/// A status deleted, with the reblogs of it that went with it.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub status: StatusRecord,
    pub reblogs: Vec<StatusRecord>,
}

/// Cursor bounds for a list, newest first (or the oldest just above `min_id` when set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bounds {
    pub max_id: Option<i64>,
    pub since_id: Option<i64>,
    pub min_id: Option<i64>,
    pub limit: usize,
}

/// An entry of a list: the row id used as cursor and the id it points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub cursor: i64,
    pub id: i64,
}

/// The caller's marks on a set of statuses.
#[derive(Debug, Clone, Default)]
pub struct ViewerMarks {
    pub favourited: std::collections::HashSet<i64>,
    pub reblogged: std::collections::HashSet<i64>,
    pub bookmarked: std::collections::HashSet<i64>,
    pub pinned: std::collections::HashSet<i64>,
}

/// A page of statuses as one viewer reads it (see [`PostStore::page_for`]).
#[derive(Debug, Clone, Default)]
pub struct PageRead {
    /// The statuses asked for, in request order, deleted ones included.
    pub records: Vec<StatusRecord>,
    /// The originals of the reblogs among them.
    pub originals: Vec<StatusRecord>,
    /// The viewer's marks on every status and original named (none without a viewer).
    pub marks: ViewerMarks,
}

impl PageRead {
    /// The originals `records` reblog, each once.
    pub fn original_ids(records: &[StatusRecord]) -> Vec<i64> {
        let mut ids: Vec<i64> = records.iter().filter_map(|r| r.reblog_of_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The statuses a viewer's marks on `records` are about: a reblog's marks are its original's.
    pub fn mark_targets(records: &[StatusRecord]) -> Vec<i64> {
        records.iter().map(|r| r.reblog_of_id.unwrap_or(r.id)).collect()
    }

    /// Completes `records` into a page with two more reads through `store`: the originals of
    /// their reblogs, then the viewer's marks.
    pub async fn load<S: PostStore + ?Sized>(
        store: &S,
        viewer: Option<i64>,
        records: Vec<StatusRecord>,
    ) -> StoreResult<Self> {
        let originals = store.statuses(&Self::original_ids(&records)).await?;
        let marks = match viewer {
            Some(v) if !records.is_empty() => store.viewer_marks(v, &Self::mark_targets(&records)).await?,
            _ => ViewerMarks::default(),
        };
        Ok(Self { records, originals, marks })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionCount {
    pub emoji: String,
    pub count: i64,
    pub me: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountStats {
    pub account_id: i64,
    pub statuses_count: i64,
    pub last_status_at_ms: i64,
}

#[async_trait]
pub trait PostStore: Send + Sync + 'static {
    async fn migrate(&self) -> StoreResult<()>;
    async fn ping(&self) -> StoreResult<()>;
    /// The outbox of this store's database, for the relay.
    fn outbox(&self) -> Arc<dyn OutboxStore>;

    /// Inserts a status with its mentions and tags, bumps its parent's reply count and writes
    /// `event`, all in one transaction. With an idempotency key already used by the same account
    /// within [`IDEMPOTENCY_WINDOW_MS`], writes nothing and returns the first status.
    async fn create_status(&self, status: &NewStatus, event: &StatusEvent<'_>) -> StoreResult<Inserted>;
    /// Inserts a reblog row (`reblog_of_id` set) and bumps the original's reblog count, unless the
    /// account already reblogged it: then returns the existing reblog. NotFound if the original
    /// is missing or deleted.
    async fn reblog(&self, reblog: &NewStatus, event: &StatusEvent<'_>) -> StoreResult<Inserted>;
    /// Removes `account_id`'s reblog of `original_id`; None if there was none.
    async fn unreblog(
        &self,
        account_id: i64,
        original_id: i64,
        event: &StatusEvent<'_>,
    ) -> StoreResult<Option<StatusRecord>>;
    /// Marks a status deleted, removes its reblogs (one event each, then one for the status),
    /// its pins, and decrements its parent's reply count. None if it was already gone.
    async fn delete_status(&self, id: i64, now_ms: i64, event: &StatusEvent<'_>) -> StoreResult<Option<Deleted>>;
    /// Applies an edit, keeping the previous versions in the history.
    async fn edit_status(&self, id: i64, edit: &StatusEdit, event: &StatusEvent<'_>) -> StoreResult<StatusRecord>;
    /// Every version, oldest first (just the current one if never edited).
    async fn history(&self, id: i64) -> StoreResult<Vec<EditRecord>>;

    /// Statuses by id in request order, deleted ones included (callers filter); unknown ids skipped.
    async fn statuses(&self, ids: &[i64]) -> StoreResult<Vec<StatusRecord>>;
    /// Direct replies to any of `parent_ids`, oldest first, deleted ones included.
    async fn replies(&self, parent_ids: &[i64]) -> StoreResult<Vec<StatusRecord>>;
    /// Non-deleted statuses and reblogs of an account with id < `max_id` (None = newest), newest first.
    async fn account_statuses(
        &self,
        account_id: i64,
        max_id: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<StatusRecord>>;
    async fn account_stats(&self, account_ids: &[i64]) -> StoreResult<Vec<AccountStats>>;
    async fn viewer_marks(&self, viewer: i64, status_ids: &[i64]) -> StoreResult<ViewerMarks>;
    /// Each of `viewers`' marks on one status, in one read: the viewers who reblogged,
    /// favourited, bookmarked or pinned it (viewers with none are absent).
    async fn marks_of_viewers(&self, status_id: i64, viewers: &[i64]) -> StoreResult<HashMap<i64, ViewerMarks>>;
    /// What rendering `ids` for `viewer` needs from the store: the statuses, the originals of
    /// their reblogs and the viewer's marks, in one unit of work where the store allows (SQLite:
    /// one read on the calling thread).
    async fn page_for(&self, viewer: Option<i64>, ids: &[i64]) -> StoreResult<PageRead> {
        PageRead::load(self, viewer, self.statuses(ids).await?).await
    }

    /// Adds a favourite and bumps the count; false (and no event) if it was already there.
    /// NotFound if the status is missing or deleted.
    async fn favourite(&self, fav_id: i64, account_id: i64, status_id: i64, event: &Envelope) -> StoreResult<bool>;
    async fn unfavourite(&self, account_id: i64, status_id: i64, event: &Envelope) -> StoreResult<bool>;
    async fn favourited_by(&self, status_id: i64, bounds: Bounds) -> StoreResult<Vec<Entry>>;
    /// Accounts that reblogged `status_id`; the cursor is the reblog's id.
    async fn reblogged_by(&self, status_id: i64, bounds: Bounds) -> StoreResult<Vec<Entry>>;
    /// The statuses `account_id` favourited; the cursor is the favourite's id.
    async fn favourites_of(&self, account_id: i64, bounds: Bounds) -> StoreResult<Vec<Entry>>;

    async fn bookmark(&self, id: i64, account_id: i64, status_id: i64) -> StoreResult<bool>;
    async fn unbookmark(&self, account_id: i64, status_id: i64) -> StoreResult<bool>;
    async fn bookmarks_of(&self, account_id: i64, bounds: Bounds) -> StoreResult<Vec<Entry>>;

    /// Pins; false if already pinned; TooManyPins past [`MAX_PINS`].
    async fn pin(&self, id: i64, account_id: i64, status_id: i64) -> StoreResult<bool>;
    async fn unpin(&self, account_id: i64, status_id: i64) -> StoreResult<bool>;
    /// Newest pin first; cursor = pin id.
    async fn pinned_of(&self, account_id: i64) -> StoreResult<Vec<Entry>>;

    /// Adds the reaction and announces `event` with it; false if it was there; NotFound if the
    /// status is gone.
    async fn add_reaction(
        &self,
        id: i64,
        status_id: i64,
        account_id: i64,
        emoji: &str,
        event: &Envelope,
    ) -> StoreResult<bool>;
    /// Removes the reaction; false if it was not there. `event` is announced with it when the
    /// account has no reaction to the status left.
    async fn remove_reaction(
        &self,
        status_id: i64,
        account_id: i64,
        emoji: &str,
        event: &Envelope,
    ) -> StoreResult<bool>;
    /// Counts per emoji, most used first; `me` relative to `viewer`.
    async fn reactions(&self, status_id: i64, viewer: Option<i64>) -> StoreResult<Vec<ReactionCount>>;
}

/// Opens the store named by `url`. SQLite files and their directory are created if missing.
pub async fn connect(url: &str) -> StoreResult<Arc<dyn PostStore>> {
    match url.split_once("://").map(|(s, _)| s) {
        Some("postgres") | Some("postgresql") => Ok(Arc::new(PgPostStore::connect(url).await?)),
        Some("sqlite") => Ok(Arc::new(SqlitePostStore::connect(url).await?)),
        _ => Err(StoreError::Unavailable(format!(
            "unsupported post store url scheme in {} (postgres://, sqlite://)",
            agora_kit::config::redact_url(url)
        ))),
    }
}
