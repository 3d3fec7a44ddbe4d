//! The PostgreSQL and SQLite post stores. Both speak the same SQL (numbered `$N` parameters work
//! on both engines), so one body is instantiated per engine by `sql_post_store!`; only
//! connection set-up, migrations and the outbox helpers differ.
//!
//! Counters (replies, reblogs, favourites) change in the same transaction as the row that
//! justifies them, and only when that row was really inserted or removed, so they stay exact
//! under concurrent calls.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{PgPool, SqlitePool};

use super::{
    AccountStats, Bounds, Deleted, Entry, IDEMPOTENCY_WINDOW_MS, Inserted, MAX_PINS, NewStatus, PageRead, PostStore,
    ReactionCount, StatusEdit, StatusEvent, StoreError, StoreResult, ViewerMarks,
};
use crate::domain::{EditRecord, MentionRecord, StatusRecord, Visibility};
use agora_events::Envelope;
use agora_events::outbox::OutboxStore;
use agora_store::lite::{SqliteReader, SqliteWriter};

use super::lite;

pub(super) const STATUS_COLUMNS: &str = "id, account_id, text, content, spoiler_text, sensitive, visibility, language, \
     in_reply_to_id, in_reply_to_account_id, reblog_of_id, replies_count, reblogs_count, favourites_count, \
     edited_at_ms, deleted, created_at_ms, application_name";

#[derive(sqlx::FromRow)]
pub(super) struct StatusRow {
    pub(super) id: i64,
    pub(super) account_id: i64,
    pub(super) text: String,
    pub(super) content: String,
    pub(super) spoiler_text: String,
    pub(super) sensitive: bool,
    pub(super) visibility: String,
    pub(super) language: String,
    pub(super) in_reply_to_id: Option<i64>,
    pub(super) in_reply_to_account_id: Option<i64>,
    pub(super) reblog_of_id: Option<i64>,
    pub(super) replies_count: i64,
    pub(super) reblogs_count: i64,
    pub(super) favourites_count: i64,
    pub(super) edited_at_ms: Option<i64>,
    pub(super) deleted: bool,
    pub(super) created_at_ms: i64,
    pub(super) application_name: String,
}

impl From<StatusRow> for StatusRecord {
    fn from(r: StatusRow) -> Self {
        StatusRecord {
            id: r.id,
            account_id: r.account_id,
            text: r.text,
            content: r.content,
            spoiler_text: r.spoiler_text,
            sensitive: r.sensitive,
            visibility: Visibility::parse(&r.visibility),
            language: r.language,
            in_reply_to_id: r.in_reply_to_id,
            in_reply_to_account_id: r.in_reply_to_account_id,
            reblog_of_id: r.reblog_of_id,
            replies_count: r.replies_count,
            reblogs_count: r.reblogs_count,
            favourites_count: r.favourites_count,
            edited_at_ms: r.edited_at_ms,
            deleted: r.deleted,
            created_at_ms: r.created_at_ms,
            application_name: r.application_name,
            mentions: Vec::new(),
            tags: Vec::new(),
        }
    }
}

/// Status counts for each of `ids` from (account, statuses, newest status time) rows; zero for an
/// account with none.
fn stats_from(ids: &[i64], rows: Vec<(i64, i64, Option<i64>)>) -> Vec<AccountStats> {
    let by_id: HashMap<i64, (i64, i64)> = rows.into_iter().map(|(a, n, last)| (a, (n, last.unwrap_or(0)))).collect();
    ids.iter()
        .map(|id| {
            let (statuses_count, last_status_at_ms) = by_id.get(id).copied().unwrap_or((0, 0));
            AccountStats { account_id: *id, statuses_count, last_status_at_ms }
        })
        .collect()
}

/// A viewer's marks from (kind, status id) rows: 0 reblogged, 1 favourited, 2 bookmarked,
/// 3 pinned.
fn marks_from(rows: Vec<(i64, i64)>) -> ViewerMarks {
    let mut marks = ViewerMarks::default();
    for (kind, id) in rows {
        add_mark(&mut marks, kind, id);
    }
    marks
}

fn add_mark(marks: &mut ViewerMarks, kind: i64, id: i64) {
    match kind {
        0 => marks.reblogged.insert(id),
        1 => marks.favourited.insert(id),
        2 => marks.bookmarked.insert(id),
        _ => marks.pinned.insert(id),
    };
}

/// A new status as the store holds it once inserted: no counts yet, mentions once per account by
/// username and tags once each by name (the order a read gives them in).
fn as_inserted(s: &NewStatus) -> StatusRecord {
    let mut mentions: Vec<MentionRecord> = Vec::with_capacity(s.mentions.len());
    for m in &s.mentions {
        if !mentions.iter().any(|k| k.account_id == m.account_id) {
            mentions.push(m.clone());
        }
    }
    mentions.sort_by(|a, b| a.username.cmp(&b.username));
    let mut tags = s.tags.clone();
    tags.sort();
    tags.dedup();
    StatusRecord {
        id: s.id,
        account_id: s.account_id,
        text: s.text.clone(),
        content: s.content.clone(),
        spoiler_text: s.spoiler_text.clone(),
        sensitive: s.sensitive,
        visibility: s.visibility,
        language: s.language.clone(),
        in_reply_to_id: s.in_reply_to_id,
        in_reply_to_account_id: s.in_reply_to_account_id,
        reblog_of_id: s.reblog_of_id,
        replies_count: 0,
        reblogs_count: 0,
        favourites_count: 0,
        edited_at_ms: None,
        deleted: false,
        created_at_ms: s.created_at_ms,
        application_name: s.application_name.clone(),
        mentions,
        tags,
    }
}

/// `(lower, upper)` exclusive id bounds and whether to read oldest first.
fn bounds_sql(b: &Bounds) -> (i64, i64, bool) {
    let lower = b.since_id.into_iter().chain(b.min_id).max().unwrap_or(i64::MIN);
    (lower, b.max_id.unwrap_or(i64::MAX), b.min_id.is_some())
}

/// Statement texts both paths run (numbered `$N` parameters work in rusqlite too).
pub(super) const INSERT_STATUS: &str = "INSERT INTO statuses (id, account_id, text, content, spoiler_text, sensitive, \
     visibility, language, in_reply_to_id, in_reply_to_account_id, reblog_of_id, created_at_ms, application_name, \
     idempotency_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING";
pub(super) const INSERT_MENTION: &str =
    "INSERT INTO status_mentions (status_id, account_id, username) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
pub(super) const INSERT_TAG: &str = "INSERT INTO status_tags (status_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING";
/// A key older than the window no longer counts: freed for a new status.
pub(super) const RELEASE_EXPIRED_KEY: &str =
    "UPDATE statuses SET idempotency_key = NULL WHERE account_id = $1 AND idempotency_key = $2 AND created_at_ms < $3";
pub(super) const BY_IDEMPOTENCY_KEY: &str = "SELECT id FROM statuses WHERE account_id = $1 AND idempotency_key = $2";
pub(super) const COUNT_REPLY: &str = "UPDATE statuses SET replies_count = replies_count + 1 WHERE id = $1";

macro_rules! sql_post_store {
    ($store:ident, $db:ty, $outbox:path, $begin:expr, $lock_account:expr) => {
        type Conn = <$db as sqlx::Database>::Connection;
        type Tx = sqlx::Transaction<'static, $db>;

        /// Statuses with their mentions and tags, in the order of `ids`.
        async fn load(conn: &mut Conn, ids: &[i64]) -> StoreResult<Vec<StatusRecord>> {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut qb = sqlx::QueryBuilder::<$db>::new(format!("SELECT {STATUS_COLUMNS} FROM statuses WHERE id IN ("));
            push_ids(&mut qb, ids);
            let rows: Vec<StatusRow> = qb.build_query_as().fetch_all(&mut *conn).await?;
            let mut by_id: HashMap<i64, StatusRecord> =
                rows.into_iter().map(|r| (r.id, StatusRecord::from(r))).collect();

            let mut qb = sqlx::QueryBuilder::<$db>::new(
                "SELECT status_id, account_id, username FROM status_mentions WHERE status_id IN (",
            );
            push_ids(&mut qb, ids);
            qb.push(" ORDER BY status_id, username");
            let mentions: Vec<(i64, i64, String)> = qb.build_query_as().fetch_all(&mut *conn).await?;
            for (sid, account_id, username) in mentions {
                if let Some(s) = by_id.get_mut(&sid) {
                    s.mentions.push(MentionRecord { account_id, username });
                }
            }

            let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT status_id, tag FROM status_tags WHERE status_id IN (");
            push_ids(&mut qb, ids);
            qb.push(" ORDER BY status_id, tag");
            let tags: Vec<(i64, String)> = qb.build_query_as().fetch_all(&mut *conn).await?;
            for (sid, tag) in tags {
                if let Some(s) = by_id.get_mut(&sid) {
                    s.tags.push(tag);
                }
            }
            Ok(ids.iter().filter_map(|id| by_id.get(id).cloned()).collect())
        }

        async fn load_one(conn: &mut Conn, id: i64) -> StoreResult<Option<StatusRecord>> {
            Ok(load(conn, &[id]).await?.pop())
        }

        fn push_ids(qb: &mut sqlx::QueryBuilder<$db>, ids: &[i64]) {
            let mut list = qb.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            qb.push(")");
        }

        /// Inserts the row unless a unique rule (idempotency key, one reblog per account) already
        /// holds it; true if inserted.
        async fn insert_status(tx: &mut Tx, s: &NewStatus) -> StoreResult<bool> {
            let done = sqlx::query(INSERT_STATUS)
            .bind(s.id)
            .bind(s.account_id)
            .bind(&s.text)
            .bind(&s.content)
            .bind(&s.spoiler_text)
            .bind(s.sensitive)
            .bind(s.visibility.as_str())
            .bind(&s.language)
            .bind(s.in_reply_to_id)
            .bind(s.in_reply_to_account_id)
            .bind(s.reblog_of_id)
            .bind(s.created_at_ms)
            .bind(&s.application_name)
            .bind(s.idempotency_key.as_deref())
            .execute(&mut **tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            write_mentions_and_tags(tx, s.id, &s.mentions, &s.tags).await?;
            Ok(true)
        }

        async fn write_mentions_and_tags(
            tx: &mut Tx,
            id: i64,
            mentions: &[MentionRecord],
            tags: &[String],
        ) -> StoreResult<()> {
            for m in mentions {
                sqlx::query(INSERT_MENTION)
                .bind(id)
                .bind(m.account_id)
                .bind(&m.username)
                .execute(&mut **tx)
                .await?;
            }
            for t in tags {
                sqlx::query(INSERT_TAG)
                    .bind(id)
                    .bind(t)
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(())
        }

        /// NotFound unless status `id` is there and not deleted.
        async fn require_live(tx: &mut Tx, id: i64) -> StoreResult<()> {
            let live: Option<i64> = sqlx::query_scalar("SELECT id FROM statuses WHERE id = $1 AND deleted = FALSE")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
            live.map(|_| ()).ok_or(StoreError::NotFound)
        }

        async fn announce(tx: &mut Tx, env: &Envelope) -> StoreResult<()> {
            $outbox(&mut **tx, &agora_events::topic_for(&env.r#type), env).await?;
            Ok(())
        }

        impl $store {
            async fn write_tx(&self) -> Result<Tx, sqlx::Error> {
                agora_store::begin(&self.pool, $begin).await
            }

            /// A page of `(cursor, id)` pairs from `select`, which must select `id, <target>` and
            /// end in a WHERE clause on `$1`.
            async fn entries(&self, select: &str, key: i64, b: Bounds) -> StoreResult<Vec<Entry>> {
                let (lower, upper, oldest_first) = bounds_sql(&b);
                let order = if oldest_first { "ASC" } else { "DESC" };
                let rows: Vec<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{select} AND id > $2 AND id < $3 ORDER BY id {order} LIMIT $4"
                )))
                .bind(key)
                .bind(lower)
                .bind(upper)
                .bind(b.limit as i64)
                .fetch_all(&self.pool)
                .await?;
                let mut out: Vec<Entry> = rows.into_iter().map(|(cursor, id)| Entry { cursor, id }).collect();
                if oldest_first {
                    out.reverse();
                }
                Ok(out)
            }
        }

        #[async_trait]
        impl PostStore for $store {
            async fn migrate(&self) -> StoreResult<()> {
                self.migrator().run(&self.pool).await.map_err(|e| StoreError::Unavailable(e.to_string()))
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            fn outbox(&self) -> Arc<dyn OutboxStore> {
                Arc::clone(&self.outbox)
            }

            async fn create_status(&self, s: &NewStatus, event: &StatusEvent<'_>) -> StoreResult<Inserted> {
                if let (Some(w), Some(r)) = (self.writer(), self.reader()) {
                    // The row as it will be written, and its event, built before the unit goes to
                    // the writer's thread.
                    let created = as_inserted(s);
                    let env = event(&created);
                    let new = s.clone();
                    if w.write(move |c| lite::create_status(c, &new, &env)).await?.is_some() {
                        return Ok(Inserted::New(created));
                    }
                    let (account, key) = (s.account_id, s.idempotency_key.clone());
                    let first = r.read(|c| lite::by_idempotency_key(c, account, key.as_deref()))?;
                    let first = match first {
                        Some(id) => r.read(|c| lite::statuses(c, &[id]))?.pop(),
                        None => None,
                    };
                    return first
                        .map(Inserted::Existing)
                        .ok_or_else(|| StoreError::Unavailable(format!("status id {} collided", s.id)));
                }
                let mut tx = self.write_tx().await?;
                if let Some(key) = &s.idempotency_key {
                    // A key older than the window no longer counts: free it for this status.
                    sqlx::query(RELEASE_EXPIRED_KEY)
                    .bind(s.account_id)
                    .bind(key)
                    .bind(s.created_at_ms - IDEMPOTENCY_WINDOW_MS)
                    .execute(&mut *tx)
                    .await?;
                }
                if !insert_status(&mut tx, s).await? {
                    let first: Option<i64> =
                        sqlx::query_scalar(BY_IDEMPOTENCY_KEY)
                            .bind(s.account_id)
                            .bind(s.idempotency_key.as_deref())
                            .fetch_optional(&mut *tx)
                            .await?;
                    let first = match first {
                        Some(id) => load_one(&mut tx, id).await?,
                        None => None,
                    };
                    tx.rollback().await?;
                    return first
                        .map(Inserted::Existing)
                        .ok_or_else(|| StoreError::Unavailable(format!("status id {} collided", s.id)));
                }
                if let Some(parent) = s.in_reply_to_id {
                    sqlx::query(COUNT_REPLY)
                        .bind(parent)
                        .execute(&mut *tx)
                        .await?;
                }
                // The row as it was just written, without reading it back.
                let created = as_inserted(s);
                announce(&mut tx, &event(&created)).await?;
                agora_store::commit(tx).await?;
                Ok(Inserted::New(created))
            }

            async fn reblog(&self, s: &NewStatus, event: &StatusEvent<'_>) -> StoreResult<Inserted> {
                let original = s.reblog_of_id.ok_or(StoreError::NotFound)?;
                let mut tx = self.write_tx().await?;
                let live: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM statuses WHERE id = $1 AND deleted = FALSE AND reblog_of_id IS NULL",
                )
                .bind(original)
                .fetch_optional(&mut *tx)
                .await?;
                if live.is_none() {
                    return Err(StoreError::NotFound);
                }
                if !insert_status(&mut tx, s).await? {
                    let existing: Option<i64> =
                        sqlx::query_scalar("SELECT id FROM statuses WHERE account_id = $1 AND reblog_of_id = $2")
                            .bind(s.account_id)
                            .bind(original)
                            .fetch_optional(&mut *tx)
                            .await?;
                    let existing = match existing {
                        Some(id) => load_one(&mut tx, id).await?,
                        None => None,
                    };
                    tx.rollback().await?;
                    return existing
                        .map(Inserted::Existing)
                        .ok_or_else(|| StoreError::Unavailable(format!("status id {} collided", s.id)));
                }
                // Re-checked under the row lock: a delete of the original that committed since
                // the check above wins, and this reblog is not written.
                let bumped = sqlx::query(
                    "UPDATE statuses SET reblogs_count = reblogs_count + 1 WHERE id = $1 AND deleted = FALSE",
                )
                .bind(original)
                .execute(&mut *tx)
                .await?;
                if bumped.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Err(StoreError::NotFound);
                }
                let created = load_one(&mut tx, s.id).await?.ok_or(StoreError::NotFound)?;
                announce(&mut tx, &event(&created)).await?;
                agora_store::commit(tx).await?;
                Ok(Inserted::New(created))
            }

            async fn unreblog(
                &self,
                account_id: i64,
                original_id: i64,
                event: &StatusEvent<'_>,
            ) -> StoreResult<Option<StatusRecord>> {
                let mut tx = self.write_tx().await?;
                let id: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM statuses WHERE account_id = $1 AND reblog_of_id = $2")
                        .bind(account_id)
                        .bind(original_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(id) = id else {
                    return Ok(None);
                };
                let Some(reblog) = load_one(&mut tx, id).await? else {
                    return Ok(None);
                };
                remove_reblog(&mut tx, &reblog, event).await?;
                agora_store::commit(tx).await?;
                Ok(Some(reblog))
            }

            async fn delete_status(&self, id: i64, now_ms: i64, event: &StatusEvent<'_>) -> StoreResult<Option<Deleted>> {
                let mut tx = self.write_tx().await?;
                let Some(mut status) = load_one(&mut tx, id).await? else {
                    return Ok(None);
                };
                if status.deleted {
                    return Ok(None);
                }
                if status.reblog_of_id.is_some() {
                    // Deleting a reblog is undoing it.
                    remove_reblog(&mut tx, &status, event).await?;
                    agora_store::commit(tx).await?;
                    return Ok(Some(Deleted { status, reblogs: Vec::new() }));
                }
                let done = sqlx::query("UPDATE statuses SET deleted = TRUE, deleted_at_ms = $1 WHERE id = $2 AND deleted = FALSE")
                    .bind(now_ms)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Ok(None);
                }
                status.deleted = true;
                let reblog_ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM statuses WHERE reblog_of_id = $1 ORDER BY id")
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                let reblogs = load(&mut tx, &reblog_ids).await?;
                sqlx::query("DELETE FROM statuses WHERE reblog_of_id = $1").bind(id).execute(&mut *tx).await?;
                for r in &reblogs {
                    announce(&mut tx, &event(r)).await?;
                }
                sqlx::query("DELETE FROM pins WHERE status_id = $1").bind(id).execute(&mut *tx).await?;
                if let Some(parent) = status.in_reply_to_id {
                    sqlx::query("UPDATE statuses SET replies_count = replies_count - 1 WHERE id = $1 AND replies_count > 0")
                        .bind(parent)
                        .execute(&mut *tx)
                        .await?;
                }
                announce(&mut tx, &event(&status)).await?;
                agora_store::commit(tx).await?;
                Ok(Some(Deleted { status, reblogs }))
            }

            async fn edit_status(&self, id: i64, e: &StatusEdit, event: &StatusEvent<'_>) -> StoreResult<StatusRecord> {
                let mut tx = self.write_tx().await?;
                let current = load_one(&mut tx, id).await?.filter(|s| !s.deleted).ok_or(StoreError::NotFound)?;
                let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM status_edits WHERE status_id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                let mut rows = Vec::new();
                if versions == 0 {
                    rows.push((e.edit_ids[0], current.content.clone(), current.spoiler_text.clone(), current.sensitive, current.created_at_ms));
                }
                rows.push((e.edit_ids[1], e.content.clone(), e.spoiler_text.clone(), e.sensitive, e.edited_at_ms));
                for (edit_id, content, spoiler, sensitive, at) in rows {
                    sqlx::query(
                        "INSERT INTO status_edits (id, status_id, content, spoiler_text, sensitive, created_at_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(edit_id)
                    .bind(id)
                    .bind(content)
                    .bind(spoiler)
                    .bind(sensitive)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(
                    "UPDATE statuses SET text = $1, content = $2, spoiler_text = $3, sensitive = $4, language = $5, \
                     edited_at_ms = $6 WHERE id = $7",
                )
                .bind(&e.text)
                .bind(&e.content)
                .bind(&e.spoiler_text)
                .bind(e.sensitive)
                .bind(&e.language)
                .bind(e.edited_at_ms)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM status_mentions WHERE status_id = $1").bind(id).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM status_tags WHERE status_id = $1").bind(id).execute(&mut *tx).await?;
                write_mentions_and_tags(&mut tx, id, &e.mentions, &e.tags).await?;
                let edited = load_one(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
                announce(&mut tx, &event(&edited)).await?;
                agora_store::commit(tx).await?;
                Ok(edited)
            }

            async fn history(&self, id: i64) -> StoreResult<Vec<EditRecord>> {
                let rows: Vec<(String, String, bool, i64)> = sqlx::query_as(
                    "SELECT content, spoiler_text, sensitive, created_at_ms FROM status_edits WHERE status_id = $1 ORDER BY id",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                if !rows.is_empty() {
                    return Ok(rows
                        .into_iter()
                        .map(|(content, spoiler_text, sensitive, created_at_ms)| EditRecord {
                            content,
                            spoiler_text,
                            sensitive,
                            created_at_ms,
                        })
                        .collect());
                }
                let mut conn = self.pool.acquire().await?;
                let s = load_one(&mut conn, id).await?.ok_or(StoreError::NotFound)?;
                Ok(vec![EditRecord {
                    content: s.content,
                    spoiler_text: s.spoiler_text,
                    sensitive: s.sensitive,
                    created_at_ms: s.created_at_ms,
                }])
            }

            async fn statuses(&self, ids: &[i64]) -> StoreResult<Vec<StatusRecord>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                self.hot_statuses(ids).await
            }

            async fn replies(&self, parent_ids: &[i64]) -> StoreResult<Vec<StatusRecord>> {
                if parent_ids.is_empty() {
                    return Ok(Vec::new());
                }
                if let Some(r) = self.reader() {
                    return Ok(r.read(|c| lite::replies(c, parent_ids))?);
                }
                let mut conn = self.pool.acquire().await?;
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT id FROM statuses WHERE in_reply_to_id IN (");
                push_ids(&mut qb, parent_ids);
                qb.push(" ORDER BY id");
                let ids: Vec<i64> = qb.build_query_scalar().fetch_all(&mut *conn).await?;
                load(&mut conn, &ids).await
            }

            async fn account_statuses(
                &self,
                account_id: i64,
                max_id: Option<i64>,
                limit: usize,
            ) -> StoreResult<Vec<StatusRecord>> {
                if let Some(r) = self.reader() {
                    let max_id = max_id.unwrap_or(i64::MAX);
                    return Ok(r.read(|c| lite::account_statuses(c, account_id, max_id, limit as i64))?);
                }
                let mut conn = self.pool.acquire().await?;
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT id FROM statuses WHERE account_id = $1 AND deleted = FALSE AND id < $2 ORDER BY id DESC LIMIT $3",
                )
                .bind(account_id)
                .bind(max_id.unwrap_or(i64::MAX))
                .bind(limit as i64)
                .fetch_all(&mut *conn)
                .await?;
                load(&mut conn, &ids).await
            }

            async fn account_stats(&self, account_ids: &[i64]) -> StoreResult<Vec<AccountStats>> {
                if account_ids.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(stats_from(account_ids, self.hot_stats(account_ids).await?))
            }

            async fn viewer_marks(&self, viewer: i64, ids: &[i64]) -> StoreResult<ViewerMarks> {
                if ids.is_empty() {
                    return Ok(ViewerMarks::default());
                }
                Ok(marks_from(self.hot_marks(viewer, ids).await?))
            }

            async fn marks_of_viewers(
                &self,
                status_id: i64,
                viewers: &[i64],
            ) -> StoreResult<HashMap<i64, ViewerMarks>> {
                if viewers.is_empty() {
                    return Ok(HashMap::new());
                }
                let mut out: HashMap<i64, ViewerMarks> = HashMap::new();
                for (viewer, kind) in self.hot_viewers_marks(status_id, viewers).await? {
                    add_mark(out.entry(viewer).or_default(), kind, status_id);
                }
                Ok(out)
            }

            async fn page_for(&self, viewer: Option<i64>, ids: &[i64]) -> StoreResult<PageRead> {
                if ids.is_empty() {
                    return Ok(PageRead::default());
                }
                let Some(r) = self.reader() else {
                    return PageRead::load(self, viewer, self.statuses(ids).await?).await;
                };
                let (records, originals, marks) = r.read(|c| lite::page(c, viewer, ids))?;
                Ok(PageRead { records, originals, marks: marks_from(marks) })
            }

            async fn favourite(&self, fav_id: i64, account_id: i64, status_id: i64, event: &Envelope) -> StoreResult<bool> {
                let mut tx = self.write_tx().await?;
                require_live(&mut tx, status_id).await?;
                let done = sqlx::query(
                    "INSERT INTO favourites (id, account_id, status_id, created_at_ms) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(fav_id)
                .bind(account_id)
                .bind(status_id)
                .bind(event.occurred_at_ms)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                // Re-checked under the row lock, so a favourite never outlives a concurrent delete.
                let bumped = sqlx::query(
                    "UPDATE statuses SET favourites_count = favourites_count + 1 WHERE id = $1 AND deleted = FALSE",
                )
                .bind(status_id)
                .execute(&mut *tx)
                .await?;
                if bumped.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Err(StoreError::NotFound);
                }
                announce(&mut tx, event).await?;
                agora_store::commit(tx).await?;
                Ok(true)
            }

            async fn unfavourite(&self, account_id: i64, status_id: i64, event: &Envelope) -> StoreResult<bool> {
                let mut tx = self.write_tx().await?;
                let done = sqlx::query("DELETE FROM favourites WHERE account_id = $1 AND status_id = $2")
                    .bind(account_id)
                    .bind(status_id)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                sqlx::query("UPDATE statuses SET favourites_count = favourites_count - 1 WHERE id = $1 AND favourites_count > 0")
                    .bind(status_id)
                    .execute(&mut *tx)
                    .await?;
                announce(&mut tx, event).await?;
                agora_store::commit(tx).await?;
                Ok(true)
            }

            async fn favourited_by(&self, status_id: i64, b: Bounds) -> StoreResult<Vec<Entry>> {
                self.entries("SELECT id, account_id FROM favourites WHERE status_id = $1", status_id, b).await
            }

            async fn reblogged_by(&self, status_id: i64, b: Bounds) -> StoreResult<Vec<Entry>> {
                self.entries("SELECT id, account_id FROM statuses WHERE reblog_of_id = $1", status_id, b).await
            }

            async fn favourites_of(&self, account_id: i64, b: Bounds) -> StoreResult<Vec<Entry>> {
                self.entries("SELECT id, status_id FROM favourites WHERE account_id = $1", account_id, b).await
            }

            async fn bookmark(&self, id: i64, account_id: i64, status_id: i64) -> StoreResult<bool> {
                let done = sqlx::query(
                    "INSERT INTO bookmarks (id, account_id, status_id, created_at_ms) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(account_id)
                .bind(status_id)
                .bind(agora_kit::time::now_ms())
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn unbookmark(&self, account_id: i64, status_id: i64) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM bookmarks WHERE account_id = $1 AND status_id = $2")
                    .bind(account_id)
                    .bind(status_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn bookmarks_of(&self, account_id: i64, b: Bounds) -> StoreResult<Vec<Entry>> {
                self.entries("SELECT id, status_id FROM bookmarks WHERE account_id = $1", account_id, b).await
            }

            async fn pin(&self, id: i64, account_id: i64, status_id: i64) -> StoreResult<bool> {
                let mut tx = self.write_tx().await?;
                // Count-then-insert must not interleave with another pin by the same account.
                let lock: &str = $lock_account;
                if !lock.is_empty() {
                    sqlx::query(sqlx::AssertSqlSafe(lock)).bind(account_id).execute(&mut *tx).await?;
                }
                let pinned: Vec<i64> = sqlx::query_scalar("SELECT status_id FROM pins WHERE account_id = $1")
                    .bind(account_id)
                    .fetch_all(&mut *tx)
                    .await?;
                if pinned.contains(&status_id) {
                    return Ok(false);
                }
                if pinned.len() as i64 >= MAX_PINS {
                    return Err(StoreError::TooManyPins);
                }
                sqlx::query(
                    "INSERT INTO pins (id, account_id, status_id, created_at_ms) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(account_id)
                .bind(status_id)
                .bind(agora_kit::time::now_ms())
                .execute(&mut *tx)
                .await?;
                agora_store::commit(tx).await?;
                Ok(true)
            }

            async fn unpin(&self, account_id: i64, status_id: i64) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM pins WHERE account_id = $1 AND status_id = $2")
                    .bind(account_id)
                    .bind(status_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn pinned_of(&self, account_id: i64) -> StoreResult<Vec<Entry>> {
                let rows: Vec<(i64, i64)> =
                    sqlx::query_as("SELECT id, status_id FROM pins WHERE account_id = $1 ORDER BY id DESC")
                        .bind(account_id)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(|(cursor, id)| Entry { cursor, id }).collect())
            }

            async fn add_reaction(
                &self,
                id: i64,
                status_id: i64,
                account_id: i64,
                emoji: &str,
                event: &Envelope,
            ) -> StoreResult<bool> {
                let mut tx = self.write_tx().await?;
                require_live(&mut tx, status_id).await?;
                let done = sqlx::query(
                    "INSERT INTO reactions (id, status_id, account_id, emoji, created_at_ms) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(status_id)
                .bind(account_id)
                .bind(emoji)
                .bind(event.occurred_at_ms)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                announce(&mut tx, event).await?;
                agora_store::commit(tx).await?;
                Ok(true)
            }

            async fn remove_reaction(
                &self,
                status_id: i64,
                account_id: i64,
                emoji: &str,
                event: &Envelope,
            ) -> StoreResult<bool> {
                let mut tx = self.write_tx().await?;
                let done = sqlx::query("DELETE FROM reactions WHERE status_id = $1 AND account_id = $2 AND emoji = $3")
                    .bind(status_id)
                    .bind(account_id)
                    .bind(emoji)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reactions WHERE status_id = $1 AND account_id = $2")
                    .bind(status_id)
                    .bind(account_id)
                    .fetch_one(&mut *tx)
                    .await?;
                if left == 0 {
                    announce(&mut tx, event).await?;
                }
                agora_store::commit(tx).await?;
                Ok(true)
            }

            async fn reactions(&self, status_id: i64, viewer: Option<i64>) -> StoreResult<Vec<ReactionCount>> {
                let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                    "SELECT emoji, COUNT(*), SUM(CASE WHEN account_id = $2 THEN 1 ELSE 0 END) FROM reactions \
                     WHERE status_id = $1 GROUP BY emoji ORDER BY COUNT(*) DESC, MIN(id)",
                )
                .bind(status_id)
                .bind(viewer.unwrap_or(0))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(emoji, count, me)| ReactionCount { emoji, count, me: me > 0 }).collect())
            }
        }

        /// Deletes a reblog row, decrements its original's count and announces it.
        async fn remove_reblog(tx: &mut Tx, reblog: &StatusRecord, event: &StatusEvent<'_>) -> StoreResult<()> {
            sqlx::query("DELETE FROM statuses WHERE id = $1").bind(reblog.id).execute(&mut **tx).await?;
            sqlx::query("UPDATE statuses SET reblogs_count = reblogs_count - 1 WHERE id = $1 AND reblogs_count > 0")
                .bind(reblog.reblog_of_id)
                .execute(&mut **tx)
                .await?;
            announce(tx, &event(reblog)).await
        }
    };
}

/// Post store on PostgreSQL.
pub struct PgPostStore {
    pool: PgPool,
    outbox: Arc<dyn OutboxStore>,
}

impl PgPostStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = agora_store::postgres(url).await?;
        let outbox = Arc::new(agora_events::outbox::pg::PgOutbox::new(pool.clone(), url, "post"));
        Ok(Self { pool, outbox })
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        sqlx::migrate!("./migrations/postgres")
    }

    fn reader(&self) -> Option<&SqliteReader> {
        None
    }

    // The hot reads: one round trip each, ids as one array.
    async fn hot_statuses(&self, ids: &[i64]) -> StoreResult<Vec<StatusRecord>> {
        super::pg::statuses(&self.pool, ids).await
    }

    async fn hot_stats(&self, ids: &[i64]) -> StoreResult<Vec<(i64, i64, Option<i64>)>> {
        super::pg::account_stats(&self.pool, ids).await
    }

    async fn hot_marks(&self, viewer: i64, ids: &[i64]) -> StoreResult<Vec<(i64, i64)>> {
        super::pg::viewer_marks(&self.pool, viewer, ids).await
    }

    async fn hot_viewers_marks(&self, status_id: i64, viewers: &[i64]) -> StoreResult<Vec<(i64, i64)>> {
        super::pg::viewers_marks(&self.pool, status_id, viewers).await
    }

    fn writer(&self) -> Option<&SqliteWriter> {
        None
    }
}

mod pg_impl {
    use super::*;
    // A transaction-scoped advisory lock per account (in the two-key space, apart from the
    // outbox relay's single-key lock) serialises that account's pins.
    sql_post_store!(
        PgPostStore,
        sqlx::Postgres,
        agora_events::outbox::pg::insert,
        "BEGIN",
        "SELECT pg_advisory_xact_lock(5, ($1 % 2147483647)::int)"
    );
}

/// Post store on SQLite (the embedded default).
///
/// The hot reads (statuses, timelines, counts, the viewer's marks) run on the calling thread
/// through [`SqliteReader`], a new status is one unit on the [`SqliteWriter`]'s thread (see
/// `lite.rs`), and the other writes go through the sqlx pool.
pub struct SqlitePostStore {
    pool: SqlitePool,
    reader: SqliteReader,
    writer: SqliteWriter,
    outbox: Arc<dyn OutboxStore>,
}

impl SqlitePostStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = agora_store::sqlite(url).await?;
        let reader = SqliteReader::new(url, "post")?;
        let writer = SqliteWriter::new(url, "post")?;
        // The relay deletes through the same writer as the statuses it announces.
        let outbox = Arc::new(agora_store::lite::LiteOutbox::new(reader.clone(), writer.clone()));
        Ok(Self { pool, reader, writer, outbox })
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        sqlx::migrate!("./migrations/sqlite")
    }

    fn reader(&self) -> Option<&SqliteReader> {
        Some(&self.reader)
    }

    // The hot reads, on the calling thread.
    async fn hot_statuses(&self, ids: &[i64]) -> StoreResult<Vec<StatusRecord>> {
        Ok(self.reader.read(|c| lite::statuses(c, ids))?)
    }

    async fn hot_stats(&self, ids: &[i64]) -> StoreResult<Vec<(i64, i64, Option<i64>)>> {
        Ok(self.reader.read(|c| lite::account_stats(c, ids))?)
    }

    async fn hot_marks(&self, viewer: i64, ids: &[i64]) -> StoreResult<Vec<(i64, i64)>> {
        Ok(self.reader.read(|c| lite::viewer_marks(c, viewer, ids))?)
    }

    async fn hot_viewers_marks(&self, status_id: i64, viewers: &[i64]) -> StoreResult<Vec<(i64, i64)>> {
        Ok(self.reader.read(|c| lite::viewers_marks(c, status_id, viewers))?)
    }

    fn writer(&self) -> Option<&SqliteWriter> {
        Some(&self.writer)
    }
}

mod sqlite_impl {
    use super::*;
    // IMMEDIATE takes the write lock up front, so a read-then-write transaction never fails
    // with SQLITE_BUSY halfway through, and serialises writers, so no further lock is needed.
    sql_post_store!(SqlitePostStore, sqlx::Sqlite, agora_events::outbox::sqlite::insert, "BEGIN IMMEDIATE", "");
}
