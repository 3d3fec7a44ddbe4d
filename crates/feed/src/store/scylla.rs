//! The timeline store on ScyllaDB (`scylla://…/keyspace`). The data model is in
//! `migrations/scylla/` and ARCHITECTURE.md: partitions keyed by what each query asks for,
//! timelines split into time buckets, derived indexes written in the same logged batch as the
//! entry they index, so an entry can always be found again to be deleted.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use agora_store::scylla::{self as cql, Migration, Scylla, ScyllaError, Statements};
use async_trait::async_trait;
use futures::future::try_join_all;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::{Activity, AuthorScope, Recorded, Removed, StoreError, StoreResult, TimelineStore};
use crate::domain::{Entry, EntryFilter, Marker, StatusFacts, TagUse, TimelineKey, Visibility, Window};

mod conversations;

pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "init", cql: include_str!("../../migrations/scylla/0001_init.cql") },
    Migration {
        version: 2,
        name: "conversations",
        cql: include_str!("../../migrations/scylla/0002_conversations.cql"),
    },
];

/// Trend and bookkeeping rows are spread over this many partitions.
const SHARDS: i32 = 16;

/// ~6.2 days of snowflake ids per timeline partition.
fn bucket(status_id: i64) -> i64 {
    status_id >> 51
}

fn shard_of(id: i64) -> i32 {
    id.rem_euclid(i64::from(SHARDS)) as i32
}

impl From<ScyllaError> for StoreError {
    fn from(e: ScyllaError) -> Self {
        match e {
            ScyllaError::NotReady(_) => StoreError::NotReady(e.to_string()),
            ScyllaError::Failed(_) => StoreError::Unavailable(e.to_string()),
        }
    }
}

const ENTRY_COLUMNS: &str =
    "status_id, author_id, reblog_of_id, reblog_of_author_id, in_reply_to_account_id, visibility, has_media";
type EntryRow = (i64, i64, i64, i64, i64, String, bool);

fn entry_of(r: EntryRow) -> Entry {
    Entry {
        status_id: r.0,
        author_id: r.1,
        reblog_of_id: r.2,
        reblog_of_author_id: r.3,
        in_reply_to_account_id: r.4,
        visibility: Visibility::parse(&r.5),
        has_media: r.6,
    }
}

const STATUS_COLUMNS: &str = "id, account_id, created_at_ms, visibility, in_reply_to_id, in_reply_to_account_id, \
     reblog_of_id, reblog_of_account_id, mention_ids, tags, has_media, sensitive, deleted";
#[allow(clippy::type_complexity)]
type StatusRow = (
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<Vec<i64>>,
    Option<Vec<String>>,
    Option<bool>,
    Option<bool>,
    Option<bool>,
);

fn facts_of(r: StatusRow) -> (StatusFacts, bool) {
    (
        StatusFacts {
            id: r.0,
            account_id: r.1.unwrap_or_default(),
            created_at_ms: r.2.unwrap_or_default(),
            visibility: Visibility::parse(r.3.as_deref().unwrap_or("direct")),
            in_reply_to_id: r.4.unwrap_or_default(),
            in_reply_to_account_id: r.5.unwrap_or_default(),
            reblog_of_id: r.6.unwrap_or_default(),
            reblog_of_account_id: r.7.unwrap_or_default(),
            mention_ids: r.8.unwrap_or_default(),
            tags: r.9.unwrap_or_default(),
            has_media: r.10.unwrap_or_default(),
            sensitive: r.11.unwrap_or_default(),
        },
        r.12.unwrap_or_default(),
    )
}

/// Every statement the store runs, prepared once the schema exists.
pub struct Prepared {
    status_get: PreparedStatement,
    status_put: PreparedStatement,
    status_edit: PreparedStatement,
    status_tombstone: PreparedStatement,
    entry_put: PreparedStatement,
    entry_get: PreparedStatement,
    entry_del: PreparedStatement,
    entry_media: PreparedStatement,
    bucket_put: PreparedStatement,
    buckets: PreparedStatement,
    page_desc: PreparedStatement,
    page_asc: PreparedStatement,
    any_entry: PreparedStatement,
    placement_put: PreparedStatement,
    placements: PreparedStatement,
    placement_del: PreparedStatement,
    author_put: PreparedStatement,
    author_entries: PreparedStatement,
    author_del: PreparedStatement,
    original_claim: PreparedStatement,
    original_get: PreparedStatement,
    original_release: PreparedStatement,
    large_put: PreparedStatement,
    large_del: PreparedStatement,
    large_all: PreparedStatement,
    activity_get: PreparedStatement,
    activity_touch: PreparedStatement,
    activity_rebuild: PreparedStatement,
    activity_accounts: PreparedStatement,
    status_accounts: PreparedStatement,
    hidden_put: PreparedStatement,
    hidden_del: PreparedStatement,
    hidden_of: PreparedStatement,
    markers_of: PreparedStatement,
    marker_get: PreparedStatement,
    marker_create: PreparedStatement,
    marker_bump: PreparedStatement,
    tag_time_put: PreparedStatement,
    tag_time_del: PreparedStatement,
    tag_time_since: PreparedStatement,
    tag_time_prune: PreparedStatement,
    tag_status_put: PreparedStatement,
    tag_status_of: PreparedStatement,
    tag_status_del: PreparedStatement,
    tag_status_del_one: PreparedStatement,
    eng_put: PreparedStatement,
    eng_get: PreparedStatement,
    eng_del: PreparedStatement,
    eng_of_status: PreparedStatement,
    eng_del_status: PreparedStatement,
    eng_time_put: PreparedStatement,
    eng_time_del: PreparedStatement,
    eng_time_since: PreparedStatement,
    eng_time_prune: PreparedStatement,
    processed_get: PreparedStatement,
    processed_put: PreparedStatement,
    processed_del: PreparedStatement,
    processed_time_put: PreparedStatement,
    processed_time_before: PreparedStatement,
    processed_time_prune: PreparedStatement,
    conv: conversations::Statements,
}

impl Statements for Prepared {
    async fn prepare(s: &Session) -> Result<Self, ScyllaError> {
        let p = |cql: String, idempotent: bool| async move { cql::prepare(s, &cql, idempotent).await };
        Ok(Self {
            status_get: p(format!("SELECT {STATUS_COLUMNS} FROM statuses WHERE id = ?"), true).await?,
            status_put: p(
                "INSERT INTO statuses (id, account_id, created_at_ms, visibility, in_reply_to_id, \
                 in_reply_to_account_id, reblog_of_id, reblog_of_account_id, mention_ids, tags, has_media, \
                 sensitive, deleted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, false)"
                    .into(),
                true,
            )
            .await?,
            status_edit: p(
                "UPDATE statuses SET mention_ids = ?, tags = ?, has_media = ?, sensitive = ? WHERE id = ?".into(),
                true,
            )
            .await?,
            status_tombstone: p("UPDATE statuses SET account_id = ?, deleted = true WHERE id = ?".into(), true)
                .await?,
            entry_put: p(
                format!(
                    "INSERT INTO timeline_entries (timeline, bucket, {ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                true,
            )
            .await?,
            entry_get: p(
                format!("SELECT {ENTRY_COLUMNS} FROM timeline_entries WHERE timeline = ? AND bucket = ? AND status_id = ?"),
                true,
            )
            .await?,
            entry_del: p("DELETE FROM timeline_entries WHERE timeline = ? AND bucket = ? AND status_id = ?".into(), true).await?,
            entry_media: p(
                "UPDATE timeline_entries SET has_media = ? WHERE timeline = ? AND bucket = ? AND status_id = ? IF EXISTS".into(),
                false,
            )
            .await?,
            bucket_put: p("INSERT INTO timeline_buckets (timeline, bucket) VALUES (?, ?)".into(), true).await?,
            buckets: p("SELECT bucket FROM timeline_buckets WHERE timeline = ?".into(), true).await?,
            page_desc: p(
                format!(
                    "SELECT {ENTRY_COLUMNS} FROM timeline_entries WHERE timeline = ? AND bucket = ? AND status_id < ? \
                     AND status_id > ? ORDER BY status_id DESC"
                ),
                true,
            )
            .await?,
            page_asc: p(
                format!(
                    "SELECT {ENTRY_COLUMNS} FROM timeline_entries WHERE timeline = ? AND bucket = ? AND status_id < ? \
                     AND status_id > ? ORDER BY status_id ASC"
                ),
                true,
            )
            .await?,
            any_entry: p("SELECT status_id FROM timeline_entries WHERE timeline = ? AND bucket = ? LIMIT 1".into(), true).await?,
            placement_put: p("INSERT INTO placements (status_id, timeline, entry_id) VALUES (?, ?, ?)".into(), true)
                .await?,
            placements: p("SELECT timeline, entry_id FROM placements WHERE status_id = ?".into(), true).await?,
            placement_del: p(
                "DELETE FROM placements WHERE status_id = ? AND timeline = ? AND entry_id = ?".into(),
                true,
            )
            .await?,
            author_put: p(
                "INSERT INTO author_entries (timeline, author_id, entry_id, role, visibility) VALUES (?, ?, ?, ?, ?)"
                    .into(),
                true,
            )
            .await?,
            author_entries: p(
                "SELECT entry_id, role, visibility FROM author_entries WHERE timeline = ? AND author_id = ?".into(),
                true,
            )
            .await?,
            author_del: p(
                "DELETE FROM author_entries WHERE timeline = ? AND author_id = ? AND entry_id = ? AND role = ?".into(),
                true,
            )
            .await?,
            original_claim: p(
                "INSERT INTO home_originals (timeline, original_id, entry_id) VALUES (?, ?, ?) IF NOT EXISTS".into(),
                false,
            )
            .await?,
            original_get: p(
                "SELECT entry_id FROM home_originals WHERE timeline = ? AND original_id = ?".into(),
                true,
            )
            .await?,
            original_release: p(
                "DELETE FROM home_originals WHERE timeline = ? AND original_id = ? IF entry_id = ?".into(),
                false,
            )
            .await?,
            large_put: p(
                "INSERT INTO large_accounts (shard, account_id, followers, updated_at_ms) VALUES (0, ?, ?, ?)".into(),
                true,
            )
            .await?,
            large_del: p("DELETE FROM large_accounts WHERE shard = 0 AND account_id = ?".into(), true).await?,
            large_all: p("SELECT account_id FROM large_accounts WHERE shard = 0".into(), true).await?,
            activity_get: p(
                "SELECT last_active_ms, needs_rebuild FROM activity WHERE account_id = ?".into(),
                true,
            )
            .await?,
            activity_touch: p(
                "INSERT INTO activity (account_id, last_active_ms, needs_rebuild) VALUES (?, ?, false)".into(),
                true,
            )
            .await?,
            activity_rebuild: p("UPDATE activity SET needs_rebuild = true WHERE account_id = ?".into(), true).await?,
            activity_accounts: p("SELECT account_id FROM activity".into(), true).await?,
            status_accounts: p("SELECT account_id FROM statuses".into(), true).await?,
            hidden_put: p("INSERT INTO hidden_reblogs (target_id, follower_id) VALUES (?, ?)".into(), true).await?,
            hidden_del: p("DELETE FROM hidden_reblogs WHERE target_id = ? AND follower_id = ?".into(), true).await?,
            hidden_of: p("SELECT follower_id FROM hidden_reblogs WHERE target_id = ?".into(), true).await?,
            markers_of: p(
                "SELECT timeline, last_read_id, version, updated_at_ms FROM markers WHERE account_id = ?".into(),
                true,
            )
            .await?,
            marker_get: p(
                "SELECT last_read_id, version, updated_at_ms FROM markers WHERE account_id = ? AND timeline = ?".into(),
                true,
            )
            .await?,
            marker_create: p(
                "INSERT INTO markers (account_id, timeline, last_read_id, version, updated_at_ms) \
                 VALUES (?, ?, ?, 1, ?) IF NOT EXISTS"
                    .into(),
                false,
            )
            .await?,
            marker_bump: p(
                "UPDATE markers SET last_read_id = ?, version = ?, updated_at_ms = ? \
                 WHERE account_id = ? AND timeline = ? IF version = ?"
                    .into(),
                false,
            )
            .await?,
            tag_time_put: p(
                "INSERT INTO tag_uses_by_time (shard, used_at_ms, status_id, tag, account_id) VALUES (?, ?, ?, ?, ?)"
                    .into(),
                true,
            )
            .await?,
            tag_time_del: p(
                "DELETE FROM tag_uses_by_time WHERE shard = ? AND used_at_ms = ? AND status_id = ? AND tag = ?".into(),
                true,
            )
            .await?,
            tag_time_since: p(
                "SELECT tag, account_id, used_at_ms FROM tag_uses_by_time WHERE shard = ? AND used_at_ms >= ?".into(),
                true,
            )
            .await?,
            tag_time_prune: p("DELETE FROM tag_uses_by_time WHERE shard = ? AND used_at_ms < ?".into(), true).await?,
            tag_status_put: p(
                "INSERT INTO tag_uses_by_status (status_id, tag, used_at_ms) VALUES (?, ?, ?)".into(),
                true,
            )
            .await?,
            tag_status_of: p("SELECT tag, used_at_ms FROM tag_uses_by_status WHERE status_id = ?".into(), true).await?,
            tag_status_del: p("DELETE FROM tag_uses_by_status WHERE status_id = ?".into(), true).await?,
            tag_status_del_one: p("DELETE FROM tag_uses_by_status WHERE status_id = ? AND tag = ?".into(), true)
                .await?,
            eng_put: p(
                "INSERT INTO engagements (status_id, account_id, kind, at_ms) VALUES (?, ?, ?, ?) IF NOT EXISTS".into(),
                false,
            )
            .await?,
            eng_get: p(
                "SELECT at_ms FROM engagements WHERE status_id = ? AND account_id = ? AND kind = ?".into(),
                true,
            )
            .await?,
            eng_del: p("DELETE FROM engagements WHERE status_id = ? AND account_id = ? AND kind = ?".into(), true)
                .await?,
            eng_of_status: p("SELECT account_id, kind, at_ms FROM engagements WHERE status_id = ?".into(), true).await?,
            eng_del_status: p("DELETE FROM engagements WHERE status_id = ?".into(), true).await?,
            eng_time_put: p(
                "INSERT INTO engagements_by_time (shard, at_ms, status_id, account_id, kind) VALUES (?, ?, ?, ?, ?)"
                    .into(),
                true,
            )
            .await?,
            eng_time_del: p(
                "DELETE FROM engagements_by_time WHERE shard = ? AND at_ms = ? AND status_id = ? AND account_id = ? \
                 AND kind = ?"
                    .into(),
                true,
            )
            .await?,
            eng_time_since: p(
                "SELECT status_id, at_ms FROM engagements_by_time WHERE shard = ? AND at_ms >= ?".into(),
                true,
            )
            .await?,
            eng_time_prune: p("DELETE FROM engagements_by_time WHERE shard = ? AND at_ms < ?".into(), true).await?,
            processed_get: p(
                "SELECT processed_at_ms FROM processed_events WHERE consumer = ? AND event_id = ?".into(),
                true,
            )
            .await?,
            processed_put: p(
                "INSERT INTO processed_events (consumer, event_id, processed_at_ms) VALUES (?, ?, ?)".into(),
                true,
            )
            .await?,
            processed_del: p("DELETE FROM processed_events WHERE consumer = ? AND event_id = ?".into(), true).await?,
            processed_time_put: p(
                "INSERT INTO processed_by_time (shard, processed_at_ms, consumer, event_id) VALUES (?, ?, ?, ?)".into(),
                true,
            )
            .await?,
            processed_time_before: p(
                "SELECT consumer, event_id FROM processed_by_time WHERE shard = ? AND processed_at_ms < ?".into(),
                true,
            )
            .await?,
            processed_time_prune: p(
                "DELETE FROM processed_by_time WHERE shard = ? AND processed_at_ms < ?".into(),
                true,
            )
            .await?,
            conv: conversations::Statements::prepare(s).await?,
        })
    }
}

/// The timeline store on ScyllaDB.
pub struct ScyllaTimelineStore {
    db: Arc<Scylla<Prepared>>,
}

impl ScyllaTimelineStore {
    /// Opens the store; the session comes up in the background (see agora_store::scylla).
    pub fn open(url: &str, migrate_on_start: bool) -> StoreResult<Self> {
        let db = Scylla::open(url, MIGRATIONS, migrate_on_start).map_err(StoreError::Unavailable)?;
        Ok(Self { db })
    }

    fn ready(&self) -> StoreResult<(&Session, &Prepared)> {
        Ok(self.db.ready()?)
    }

    /// Writes `entry` into `timeline` with its bucket, placements and author index, in one
    /// logged batch: an entry never exists without the rows that find it again.
    async fn put_entry(&self, timeline: &str, e: &Entry) -> StoreResult<()> {
        let (s, q) = self.ready()?;
        let b = bucket(e.status_id);
        let entry_values = (
            timeline,
            b,
            e.status_id,
            e.author_id,
            e.reblog_of_id,
            e.reblog_of_author_id,
            e.in_reply_to_account_id,
            e.visibility.as_str(),
            e.has_media,
        );
        let authored = (timeline, e.author_id, e.status_id, "authored", e.visibility.as_str());
        if e.reblog_of_id != 0 {
            let reblogged = (timeline, e.reblog_of_author_id, e.status_id, "reblogged", e.visibility.as_str());
            cql::batch(
                s,
                &[&q.entry_put, &q.bucket_put, &q.placement_put, &q.placement_put, &q.author_put, &q.author_put],
                (
                    entry_values,
                    (timeline, b),
                    (e.status_id, timeline, e.status_id),
                    (e.reblog_of_id, timeline, e.status_id),
                    authored,
                    reblogged,
                ),
                true,
            )
            .await?;
        } else {
            cql::batch(
                s,
                &[&q.entry_put, &q.bucket_put, &q.placement_put, &q.author_put],
                (entry_values, (timeline, b), (e.status_id, timeline, e.status_id), authored),
                true,
            )
            .await?;
        }
        Ok(())
    }

    async fn get_entry(&self, timeline: &str, status_id: i64) -> StoreResult<Option<Entry>> {
        let (s, q) = self.ready()?;
        let row: Option<EntryRow> = cql::row(s, &q.entry_get, (timeline, bucket(status_id), status_id)).await?;
        Ok(row.map(entry_of))
    }

    /// Removes one entry with every index row that points at it, and its claim on a home's
    /// original. Removing what is not there is a no-op.
    async fn drop_entry(&self, timeline: &str, e: &Entry) -> StoreResult<()> {
        let (s, q) = self.ready()?;
        let b = bucket(e.status_id);
        if e.reblog_of_id != 0 {
            cql::batch(
                s,
                &[&q.entry_del, &q.placement_del, &q.placement_del, &q.author_del, &q.author_del],
                (
                    (timeline, b, e.status_id),
                    (e.status_id, timeline, e.status_id),
                    (e.reblog_of_id, timeline, e.status_id),
                    (timeline, e.author_id, e.status_id, "authored"),
                    (timeline, e.reblog_of_author_id, e.status_id, "reblogged"),
                ),
                true,
            )
            .await?;
        } else {
            cql::batch(
                s,
                &[&q.entry_del, &q.placement_del, &q.author_del],
                (
                    (timeline, b, e.status_id),
                    (e.status_id, timeline, e.status_id),
                    (timeline, e.author_id, e.status_id, "authored"),
                ),
                true,
            )
            .await?;
        }
        if timeline.starts_with("home:") {
            let original = if e.reblog_of_id != 0 { e.reblog_of_id } else { e.status_id };
            cql::applied(s, &q.original_release, (timeline, original, e.status_id)).await?;
        }
        Ok(())
    }

    async fn buckets(&self, timeline: &str) -> StoreResult<Vec<i64>> {
        let (s, q) = self.ready()?;
        let rows: Vec<(i64,)> = cql::rows(s, &q.buckets, (timeline,)).await?;
        Ok(rows.into_iter().map(|(b,)| b).collect())
    }

    async fn status_row(&self, id: i64) -> StoreResult<Option<(StatusFacts, bool)>> {
        let (s, q) = self.ready()?;
        let row: Option<StatusRow> = cql::row(s, &q.status_get, (id,)).await?;
        Ok(row.map(facts_of))
    }
}

fn keep(e: &Entry, f: &EntryFilter) -> bool {
    (!f.only_media || e.has_media)
        && (!f.exclude_replies || !e.replies_to_other())
        && (!f.exclude_reblogs || e.reblog_of_id == 0)
        && (f.visibilities.is_empty() || f.visibilities.contains(&e.visibility))
}

#[async_trait]
impl TimelineStore for ScyllaTimelineStore {
    async fn migrate(&self) -> StoreResult<()> {
        Ok(self.db.migrate(MIGRATIONS).await?)
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(self.db.ping().await?)
    }

    async fn processed(&self, consumer: &str, event_id: i64) -> StoreResult<bool> {
        let (s, q) = self.ready()?;
        let row: Option<(Option<i64>,)> = cql::row(s, &q.processed_get, (consumer, event_id)).await?;
        Ok(row.is_some())
    }

    async fn mark_processed(&self, consumer: &str, event_id: i64) -> StoreResult<()> {
        let (s, q) = self.ready()?;
        let now = agora_kit::time::now_ms();
        if cql::row::<(Option<i64>,)>(s, &q.processed_get, (consumer, event_id)).await?.is_some() {
            return Ok(());
        }
        cql::batch(
            s,
            &[&q.processed_put, &q.processed_time_put],
            ((consumer, event_id, now), (shard_of(event_id), now, consumer, event_id)),
            true,
        )
        .await?;
        Ok(())
    }

    async fn record_status(&self, f: &StatusFacts) -> StoreResult<Recorded> {
        let (s, q) = self.ready()?;
        let outcome = match self.status_row(f.id).await? {
            Some((_, true)) => return Ok(Recorded::Deleted),
            Some((old, false)) => {
                cql::exec(s, &q.status_edit, (&f.mention_ids, &f.tags, f.has_media, f.sensitive, f.id)).await?;
                Recorded::Known(old)
            }
            None => {
                cql::exec(
                    s,
                    &q.status_put,
                    (
                        f.id,
                        f.account_id,
                        f.created_at_ms,
                        f.visibility.as_str(),
                        f.in_reply_to_id,
                        f.in_reply_to_account_id,
                        f.reblog_of_id,
                        f.reblog_of_account_id,
                        &f.mention_ids,
                        &f.tags,
                        f.has_media,
                        f.sensitive,
                    ),
                )
                .await?;
                Recorded::New
            }
        };
        // A delete that raced this write wins: the tombstone is checked again.
        if matches!(self.status_row(f.id).await?, Some((_, true))) {
            return Ok(Recorded::Deleted);
        }
        Ok(outcome)
    }

    async fn status(&self, id: i64) -> StoreResult<Option<StatusFacts>> {
        Ok(self.status_row(id).await?.filter(|(_, deleted)| !deleted).map(|(f, _)| f))
    }

    async fn delete_status(&self, id: i64, account_id: i64) -> StoreResult<Vec<Removed>> {
        let (s, q) = self.ready()?;
        cql::exec(s, &q.status_tombstone, (account_id, id)).await?;
        let placed: Vec<(String, i64)> = cql::rows(s, &q.placements, (id,)).await?;
        let mut removed = Vec::new();
        for (timeline, entry_id) in placed {
            if let Some(e) = self.get_entry(&timeline, entry_id).await? {
                self.drop_entry(&timeline, &e).await?;
                removed.push(Removed { timeline, status_id: entry_id });
            } else {
                cql::exec(s, &q.placement_del, (id, &timeline, entry_id)).await?;
            }
        }
        // Trend inputs of the status go too.
        let uses: Vec<(String, i64)> = cql::rows(s, &q.tag_status_of, (id,)).await?;
        for (tag, at) in uses {
            cql::exec(s, &q.tag_time_del, (shard_of(id), at, id, &tag)).await?;
        }
        cql::exec(s, &q.tag_status_del, (id,)).await?;
        let engagements: Vec<(i64, String, i64)> = cql::rows(s, &q.eng_of_status, (id,)).await?;
        for (account, kind, at) in engagements {
            cql::exec(s, &q.eng_time_del, (shard_of(id), at, id, account, &kind)).await?;
        }
        cql::exec(s, &q.eng_del_status, (id,)).await?;
        removed.sort_by(|a, b| (&a.timeline, a.status_id).cmp(&(&b.timeline, b.status_id)));
        Ok(removed)
    }

    async fn insert(&self, timelines: &[String], entry: &Entry) -> StoreResult<()> {
        try_join_all(timelines.iter().map(|t| self.put_entry(t, entry))).await?;
        Ok(())
    }

    async fn insert_home(&self, recipients: &[i64], entry: &Entry) -> StoreResult<Vec<i64>> {
        let mut received = Vec::with_capacity(recipients.len());
        // Bounded concurrency: a large fan-out must not open thousands of requests at once.
        for chunk in recipients.chunks(64) {
            let outcomes = try_join_all(chunk.iter().map(|r| async move {
                let timeline = TimelineKey::home(*r);
                let (s, q) = self.ready()?;
                if entry.reblog_of_id == 0 {
                    // An original claims its place too (if a reblog of it came first, that one
                    // keeps the claim; the original is shown anyway).
                    cql::applied(s, &q.original_claim, (&timeline, entry.status_id, entry.status_id)).await?;
                    self.put_entry(&timeline, entry).await?;
                    return Ok::<_, StoreError>(Some(*r));
                }
                // One entry per original in a home: the first to claim it (the original, or
                // one reblog) is shown; a redelivered reblog finds its own claim.
                let claimed =
                    cql::applied(s, &q.original_claim, (&timeline, entry.reblog_of_id, entry.status_id)).await?;
                let holder: Option<(i64,)> = if claimed {
                    Some((entry.status_id,))
                } else {
                    cql::row(s, &q.original_get, (&timeline, entry.reblog_of_id)).await?
                };
                if holder.map(|(h,)| h) == Some(entry.status_id) {
                    self.put_entry(&timeline, entry).await?;
                    Ok(Some(*r))
                } else {
                    Ok(None)
                }
            }))
            .await?;
            received.extend(outcomes.into_iter().flatten());
        }
        Ok(received)
    }

    async fn retag(&self, entry: &Entry, tags: &[String]) -> StoreResult<()> {
        let (s, q) = self.ready()?;
        let placed: Vec<(String, i64)> = cql::rows(s, &q.placements, (entry.status_id,)).await?;
        for (timeline, entry_id) in placed.iter().filter(|(t, id)| t.starts_with("tag:") && *id == entry.status_id) {
            if let Some(e) = self.get_entry(timeline, *entry_id).await? {
                self.drop_entry(timeline, &e).await?;
            }
        }
        let timelines: Vec<String> = tags.iter().map(|t| TimelineKey::tag(t)).collect();
        self.insert(&timelines, entry).await
    }

    async fn set_media(&self, status_id: i64, has_media: bool) -> StoreResult<()> {
        let (s, q) = self.ready()?;
        let placed: Vec<(String, i64)> = cql::rows(s, &q.placements, (status_id,)).await?;
        for (timeline, entry_id) in placed.iter().filter(|(_, id)| *id == status_id) {
            // IF EXISTS: never resurrect an entry removed meanwhile as a row of nulls.
            cql::applied(s, &q.entry_media, (has_media, timeline, bucket(*entry_id), *entry_id)).await?;
        }
        Ok(())
    }

    async fn remove_author(&self, timeline: &str, author_id: i64, scope: AuthorScope) -> StoreResult<Vec<i64>> {
        let (s, q) = self.ready()?;
        let rows: Vec<(i64, String, Option<String>)> = cql::rows(s, &q.author_entries, (timeline, author_id)).await?;
        let mut removed = BTreeSet::new();
        for (entry_id, role, visibility) in rows {
            let goes = match scope {
                AuthorScope::Authored => role == "authored" && visibility.as_deref() != Some("direct"),
                AuthorScope::Everything => true,
            };
            if !goes {
                continue;
            }
            match self.get_entry(timeline, entry_id).await? {
                Some(e) => self.drop_entry(timeline, &e).await?,
                None => cql::exec(s, &q.author_del, (timeline, author_id, entry_id, &role)).await?,
            }
            removed.insert(entry_id);
        }
        Ok(removed.into_iter().collect())
    }

    async fn page(&self, timeline: &str, w: &Window, f: &EntryFilter) -> StoreResult<Vec<Entry>> {
        let (s, q) = self.ready()?;
        let upper = w.upper.unwrap_or(i64::MAX);
        let lower = w.lower.unwrap_or(i64::MIN);
        let mut buckets: Vec<i64> =
            self.buckets(timeline).await?.into_iter().filter(|b| *b <= bucket(upper) && *b >= bucket(lower)).collect();
        if w.ascending {
            buckets.reverse();
        }
        let statement = if w.ascending { &q.page_asc } else { &q.page_desc };
        let mut out = Vec::with_capacity(w.limit);
        for b in buckets {
            // Filters are applied here (no ALLOW FILTERING): read the bucket page by page until
            // the page is full.
            use futures::TryStreamExt as _;
            let pager = s.execute_iter(statement.clone(), (timeline, b, upper, lower)).await.map_err(cql::failed)?;
            let mut rows = pager.rows_stream::<EntryRow>().map_err(cql::failed)?;
            while let Some(row) = rows.try_next().await.map_err(cql::failed)? {
                let e = entry_of(row);
                if keep(&e, f) {
                    out.push(e);
                    if out.len() >= w.limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn has_entries(&self, timeline: &str) -> StoreResult<bool> {
        let (s, q) = self.ready()?;
        for b in self.buckets(timeline).await? {
            let row: Option<(i64,)> = cql::row(s, &q.any_entry, (timeline, b)).await?;
            if row.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn set_large_account(&self, account_id: i64, followers: Option<i64>) -> StoreResult<()> {
        let (s, q) = self.ready()?;
        match followers {
            Some(n) => cql::exec(s, &q.large_put, (account_id, n, agora_kit::time::now_ms())).await?,
            None => cql::exec(s, &q.large_del, (account_id,)).await?,
        }
        Ok(())
    }

    async fn large_accounts(&self) -> StoreResult<Vec<i64>> {
        let (s, q) = self.ready()?;
        let rows: Vec<(i64,)> = cql::rows(s, &q.large_all, ()).await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn activity(&self, account_id: i64) -> StoreResult<Option<Activity>> {
        let (s, q) = self.ready()?;
        let row: Option<(Option<i64>, Option<bool>)> = cql::row(s, &q.activity_get, (account_id,)).await?;
        Ok(row.map(|(last, rebuild)| Activity {
            last_active_ms: last.unwrap_or_default(),
            needs_rebuild: rebuild.unwrap_or_default(),
        }))
    }

    async fn touch(&self, account_id: i64, now_ms: i64) -> StoreResult<()> {
        let (s, q) = self.ready()?;
        cql::exec(s, &q.activity_touch, (account_id, now_ms)).await?;
        Ok(())
    }

    async fn inactive_among(&self, ids: &[i64], cutoff_ms: i64) -> StoreResult<Vec<i64>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(64) {
            let found = try_join_all(chunk.iter().map(|id| async move {
                let (s, q) = self.ready()?;
                let row: Option<(Option<i64>, Option<bool>)> = cql::row(s, &q.activity_get, (*id,)).await?;
                Ok::<_, StoreError>(match row {
                    Some((Some(last), _)) if last < cutoff_ms => Some(*id),
                    _ => None,
                })
            }))
            .await?;
            out.extend(found.into_iter().flatten());
        }
        Ok(out)
    }

    async fn mark_needs_rebuild(&self, ids: &[i64]) -> StoreResult<()> {
        for chunk in ids.chunks(64) {
            try_join_all(chunk.iter().map(|id| async move {
                let (s, q) = self.ready()?;
                cql::exec(s, &q.activity_rebuild, (*id,)).await?;
                Ok::<_, StoreError>(())
            }))
            .await?;
        }
        Ok(())
    }

    async fn set_hides_reblogs(&self, follower: i64, target: i64, hides: bool) -> StoreResult<()> {
        let (s, q) = self.ready()?;
        if hides {
            cql::exec(s, &q.hidden_put, (target, follower)).await?;
        } else {
            cql::exec(s, &q.hidden_del, (target, follower)).await?;
        }
        Ok(())
    }

    async fn hiding_reblogs(&self, target: i64, candidates: &[i64]) -> StoreResult<Vec<i64>> {
        let (s, q) = self.ready()?;
        let hiding: HashSet<i64> =
            cql::rows::<(i64,)>(s, &q.hidden_of, (target,)).await?.into_iter().map(|(id,)| id).collect();
        Ok(candidates.iter().copied().filter(|c| hiding.contains(c)).collect())
    }

    async fn known_accounts(&self) -> StoreResult<Vec<i64>> {
        let (s, q) = self.ready()?;
        let mut all: BTreeSet<i64> = BTreeSet::new();
        for stmt in [&q.status_accounts, &q.activity_accounts] {
            let rows: Vec<(Option<i64>,)> = cql::rows(s, stmt, ()).await?;
            all.extend(rows.into_iter().filter_map(|(id,)| id));
        }
        Ok(all.into_iter().collect())
    }

    async fn record_tag_uses(&self, status_id: i64, account_id: i64, tags: &[String], at_ms: i64) -> StoreResult<()> {
        let (s, q) = self.ready()?;
        let shard = shard_of(status_id);
        let old: Vec<(String, i64)> = cql::rows(s, &q.tag_status_of, (status_id,)).await?;
        for (tag, at) in &old {
            if !tags.contains(tag) || *at != at_ms {
                cql::batch(
                    s,
                    &[&q.tag_time_del, &q.tag_status_del_one],
                    ((shard, *at, status_id, tag), (status_id, tag)),
                    true,
                )
                .await?;
            }
        }
        for tag in tags {
            cql::batch(
                s,
                &[&q.tag_time_put, &q.tag_status_put],
                ((shard, at_ms, status_id, tag, account_id), (status_id, tag, at_ms)),
                true,
            )
            .await?;
        }
        Ok(())
    }

    async fn tag_uses_since(&self, since_ms: i64) -> StoreResult<Vec<TagUse>> {
        let shards = try_join_all((0..SHARDS).map(|shard| async move {
            let (s, q) = self.ready()?;
            let rows: Vec<(String, Option<i64>, i64)> = cql::rows(s, &q.tag_time_since, (shard, since_ms)).await?;
            Ok::<_, StoreError>(rows)
        }))
        .await?;
        Ok(shards
            .into_iter()
            .flatten()
            .map(|(tag, account, used_at_ms)| TagUse { tag, account_id: account.unwrap_or_default(), used_at_ms })
            .collect())
    }

    async fn set_engagement(
        &self,
        status_id: i64,
        account_id: i64,
        kind: &str,
        at_ms: i64,
        present: bool,
    ) -> StoreResult<()> {
        let (s, q) = self.ready()?;
        let shard = shard_of(status_id);
        if present {
            // The first time counts (its time stays); a repeat changes nothing.
            if cql::applied(s, &q.eng_put, (status_id, account_id, kind, at_ms)).await? {
                cql::exec(s, &q.eng_time_put, (shard, at_ms, status_id, account_id, kind)).await?;
            }
        } else if let Some((at,)) = cql::row::<(Option<i64>,)>(s, &q.eng_get, (status_id, account_id, kind)).await? {
            if let Some(at) = at {
                cql::exec(s, &q.eng_time_del, (shard, at, status_id, account_id, kind)).await?;
            }
            cql::exec(s, &q.eng_del, (status_id, account_id, kind)).await?;
        }
        Ok(())
    }

    async fn engagements_since(&self, since_ms: i64) -> StoreResult<Vec<(i64, i64)>> {
        let shards = try_join_all((0..SHARDS).map(|shard| async move {
            let (s, q) = self.ready()?;
            let rows: Vec<(i64, i64)> = cql::rows(s, &q.eng_time_since, (shard, since_ms)).await?;
            Ok::<_, StoreError>(rows)
        }))
        .await?;
        let all: Vec<(i64, i64)> = shards.into_iter().flatten().collect();
        // The statuses they are about must be public, non-sensitive, top-level and undeleted.
        let mut eligible: HashMap<i64, bool> = HashMap::new();
        for (id, _) in &all {
            if !eligible.contains_key(id) {
                let ok = matches!(
                    self.status_row(*id).await?,
                    Some((f, false)) if f.visibility == Visibility::Public && !f.sensitive
                        && f.reblog_of_id == 0 && f.in_reply_to_id == 0
                );
                eligible.insert(*id, ok);
            }
        }
        let mut out: Vec<(i64, i64)> = all.into_iter().filter(|(id, _)| eligible[id]).collect();
        out.sort_unstable();
        Ok(out)
    }

    async fn prune(&self, before_ms: i64) -> StoreResult<u64> {
        let (s, q) = self.ready()?;
        let mut removed = 0u64;
        for shard in 0..SHARDS {
            let old_uses: Vec<(String, Option<i64>, i64)> = cql::rows(s, &q.tag_time_since, (shard, i64::MIN)).await?;
            removed += old_uses.iter().filter(|(_, _, at)| *at < before_ms).count() as u64;
            cql::exec(s, &q.tag_time_prune, (shard, before_ms)).await?;
            let old_engagements: Vec<(i64, i64)> = cql::rows(s, &q.eng_time_since, (shard, i64::MIN)).await?;
            removed += old_engagements.iter().filter(|(_, at)| *at < before_ms).count() as u64;
            cql::exec(s, &q.eng_time_prune, (shard, before_ms)).await?;
            let old_events: Vec<(String, i64)> = cql::rows(s, &q.processed_time_before, (shard, before_ms)).await?;
            for (consumer, event_id) in &old_events {
                cql::exec(s, &q.processed_del, (consumer, *event_id)).await?;
            }
            removed += old_events.len() as u64;
            cql::exec(s, &q.processed_time_prune, (shard, before_ms)).await?;
        }
        Ok(removed)
    }

    async fn markers(&self, account_id: i64) -> StoreResult<Vec<Marker>> {
        let (s, q) = self.ready()?;
        let rows: Vec<(String, Option<i64>, Option<i64>, Option<i64>)> =
            cql::rows(s, &q.markers_of, (account_id,)).await?;
        Ok(rows
            .into_iter()
            .map(|(timeline, last, version, at)| Marker {
                timeline,
                last_read_id: last.unwrap_or_default(),
                version: version.unwrap_or_default(),
                updated_at_ms: at.unwrap_or_default(),
            })
            .collect())
    }

    async fn save_marker(
        &self,
        account_id: i64,
        timeline: &str,
        last_read_id: i64,
        now_ms: i64,
    ) -> StoreResult<Marker> {
        let (s, q) = self.ready()?;
        // Versions move by compare-and-set, so two devices saving at once never share a version.
        for _ in 0..16 {
            let current: Option<(Option<i64>, Option<i64>, Option<i64>)> =
                cql::row(s, &q.marker_get, (account_id, timeline)).await?;
            let saved = match current {
                None => {
                    cql::applied(s, &q.marker_create, (account_id, timeline, last_read_id, now_ms)).await?.then_some(1)
                }
                Some((_, version, _)) => {
                    let v = version.unwrap_or_default();
                    cql::applied(s, &q.marker_bump, (last_read_id, v + 1, now_ms, account_id, timeline, v))
                        .await?
                        .then_some(v + 1)
                }
            };
            if let Some(version) = saved {
                return Ok(Marker { timeline: timeline.to_owned(), last_read_id, version, updated_at_ms: now_ms });
            }
        }
        Err(StoreError::Unavailable("marker kept changing under concurrent saves".into()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A cluster not reached yet (a feed replica just started, or Cassandra down) answers 503,
    /// which clients and load balancers retry, never an opaque 500.
    #[tokio::test]
    async fn a_cluster_not_reached_yet_answers_unavailable() {
        let store = ScyllaTimelineStore::open("scylla://127.0.0.1:1/agora_never_reached", false).unwrap();
        let e = agora_kit::Error::from(store.markers(1).await.unwrap_err());
        assert_eq!(e.kind, agora_kit::ErrorKind::Unavailable);
        assert_eq!(e.kind.http_status().as_u16(), 503);
    }
}
