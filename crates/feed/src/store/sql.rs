//! The PostgreSQL and SQLite timeline stores. Both speak the same SQL (numbered `$N` parameters
//! work on both engines), so one body is instantiated per engine by `sql_timeline_store!`; only
//! connection set-up and migrations differ.

use agora_store::lite::{SqliteReader, SqliteWriter};
use async_trait::async_trait;
use sqlx::{PgPool, SqlitePool};

use super::lite;

use super::{Activity, AuthorScope, Recorded, Removed, StoreError, StoreResult, TimelineStore};
use crate::domain::{Entry, EntryFilter, Marker, StatusFacts, TagUse, Visibility, Window};

pub(super) const ENTRY_COLUMNS: &str =
    "status_id, author_id, reblog_of_id, reblog_of_author_id, in_reply_to_account_id, visibility, has_media";
pub(super) const STATUS_COLUMNS: &str = "id, account_id, created_at_ms, visibility, in_reply_to_id, in_reply_to_account_id, \
     reblog_of_id, reblog_of_account_id, mention_ids, tags, has_media, sensitive, deleted";

#[derive(sqlx::FromRow)]
pub(super) struct EntryRow {
    pub(super) status_id: i64,
    pub(super) author_id: i64,
    pub(super) reblog_of_id: i64,
    pub(super) reblog_of_author_id: i64,
    pub(super) in_reply_to_account_id: i64,
    pub(super) visibility: String,
    pub(super) has_media: bool,
}

impl From<EntryRow> for Entry {
    fn from(r: EntryRow) -> Self {
        Entry {
            status_id: r.status_id,
            author_id: r.author_id,
            reblog_of_id: r.reblog_of_id,
            reblog_of_author_id: r.reblog_of_author_id,
            in_reply_to_account_id: r.in_reply_to_account_id,
            visibility: Visibility::parse(&r.visibility),
            has_media: r.has_media,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct StatusRow {
    pub(super) id: i64,
    pub(super) account_id: i64,
    pub(super) created_at_ms: i64,
    pub(super) visibility: String,
    pub(super) in_reply_to_id: i64,
    pub(super) in_reply_to_account_id: i64,
    pub(super) reblog_of_id: i64,
    pub(super) reblog_of_account_id: i64,
    pub(super) mention_ids: String,
    pub(super) tags: String,
    pub(super) has_media: bool,
    pub(super) sensitive: bool,
    pub(super) deleted: bool,
}

/// Statement texts both paths use (numbered parameters work on both engines).
pub(super) const UPSERT_STATUS: &str = "INSERT INTO statuses (id, account_id, created_at_ms, visibility, in_reply_to_id, \
     in_reply_to_account_id, reblog_of_id, reblog_of_account_id, mention_ids, tags, has_media, sensitive) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (id) DO UPDATE SET mention_ids = excluded.mention_ids, tags = excluded.tags, \
     has_media = excluded.has_media, sensitive = excluded.sensitive";
pub(super) const INSERT_ENTRY: &str = "INSERT INTO entries (timeline, status_id, author_id, reblog_of_id, \
     reblog_of_author_id, in_reply_to_account_id, visibility, has_media) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT DO NOTHING";
/// A reblog goes in unless the timeline already shows its original or another reblog of it.
pub(super) const INSERT_REBLOG: &str = "INSERT INTO entries (timeline, status_id, author_id, reblog_of_id, \
     reblog_of_author_id, in_reply_to_account_id, visibility, has_media) \
     SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE NOT EXISTS (\
       SELECT 1 FROM entries WHERE timeline = $1 AND (status_id = $4 OR reblog_of_id = $4)) \
     ON CONFLICT DO NOTHING";
pub(super) const TOUCH: &str = "INSERT INTO activity (account_id, last_active_ms, needs_rebuild) VALUES ($1, $2, FALSE) \
     ON CONFLICT (account_id) DO UPDATE SET last_active_ms = excluded.last_active_ms, needs_rebuild = FALSE";
pub(super) const INSERT_TAG_USE: &str =
    "INSERT INTO tag_uses (tag, status_id, account_id, used_at_ms) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
pub(super) const INSERT_ENGAGEMENT: &str =
    "INSERT INTO engagements (status_id, account_id, kind, at_ms) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
pub(super) const DELETE_ENGAGEMENT: &str =
    "DELETE FROM engagements WHERE status_id = $1 AND account_id = $2 AND kind = $3";

impl From<StatusRow> for StatusFacts {
    fn from(r: StatusRow) -> Self {
        StatusFacts {
            id: r.id,
            account_id: r.account_id,
            created_at_ms: r.created_at_ms,
            visibility: Visibility::parse(&r.visibility),
            in_reply_to_id: r.in_reply_to_id,
            in_reply_to_account_id: r.in_reply_to_account_id,
            reblog_of_id: r.reblog_of_id,
            reblog_of_account_id: r.reblog_of_account_id,
            mention_ids: r.mention_ids.split_ascii_whitespace().filter_map(|s| s.parse().ok()).collect(),
            tags: r.tags.split_ascii_whitespace().map(str::to_owned).collect(),
            has_media: r.has_media,
            sensitive: r.sensitive,
        }
    }
}

#[derive(sqlx::FromRow)]
struct MarkerRow {
    timeline: String,
    last_read_id: i64,
    version: i64,
    updated_at_ms: i64,
}

impl From<MarkerRow> for Marker {
    fn from(r: MarkerRow) -> Self {
        Marker {
            timeline: r.timeline,
            last_read_id: r.last_read_id,
            version: r.version,
            updated_at_ms: r.updated_at_ms,
        }
    }
}

pub(super) fn join_ids(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(" ")
}

/// Large `IN (…)` lists are split so no statement exceeds the engines' parameter limits.
const CHUNK: usize = 500;

macro_rules! sql_timeline_store {
    ($store:ident, $db:ty, $begin:expr) => {
        impl $store {
            async fn write_tx(&self) -> Result<sqlx::Transaction<'static, $db>, sqlx::Error> {
                agora_store::begin(&self.pool, $begin).await
            }
        }

        async fn insert_entry(
            conn: &mut <$db as sqlx::Database>::Connection,
            timeline: &str,
            e: &Entry,
        ) -> Result<bool, sqlx::Error> {
            let done = sqlx::query(INSERT_ENTRY)
            .bind(timeline)
            .bind(e.status_id)
            .bind(e.author_id)
            .bind(e.reblog_of_id)
            .bind(e.reblog_of_author_id)
            .bind(e.in_reply_to_account_id)
            .bind(e.visibility.as_str())
            .bind(e.has_media)
            .execute(conn)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        /// Inserts a reblog unless the timeline already shows its original or another reblog.
        /// True when the timeline now holds this reblog.
        async fn insert_reblog(
            conn: &mut <$db as sqlx::Database>::Connection,
            timeline: &str,
            e: &Entry,
        ) -> Result<bool, sqlx::Error> {
            let done = sqlx::query(INSERT_REBLOG)
            .bind(timeline)
            .bind(e.status_id)
            .bind(e.author_id)
            .bind(e.reblog_of_id)
            .bind(e.reblog_of_author_id)
            .bind(e.in_reply_to_account_id)
            .bind(e.visibility.as_str())
            .bind(e.has_media)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() == 1 {
                return Ok(true);
            }
            // Not inserted: either skipped as a duplicate, or already there (a redelivery).
            let row: Option<(i64,)> = sqlx::query_as("SELECT status_id FROM entries WHERE timeline = $1 AND status_id = $2")
                .bind(timeline)
                .bind(e.status_id)
                .fetch_optional(&mut *conn)
                .await?;
            Ok(row.is_some())
        }

        #[async_trait]
        impl TimelineStore for $store {
            async fn migrate(&self) -> StoreResult<()> {
                self.migrator().run(&self.pool).await.map_err(|e| StoreError::Unavailable(e.to_string()))
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn processed(&self, consumer: &str, event_id: i64) -> StoreResult<bool> {
                if let Some(r) = self.reader() {
                    return Ok(r.read(|c| lite::processed(c, consumer, event_id))?);
                }
                let row: Option<(i64,)> =
                    sqlx::query_as("SELECT event_id FROM processed_events WHERE consumer = $1 AND event_id = $2")
                        .bind(consumer)
                        .bind(event_id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.is_some())
            }

            async fn mark_processed(&self, consumer: &str, event_id: i64) -> StoreResult<()> {
                if let Some(w) = self.writer() {
                    let (consumer, now) = (consumer.to_owned(), agora_kit::time::now_ms());
                    return Ok(w.write(move |c| lite::mark_processed(c, &consumer, event_id, now)).await?);
                }
                sqlx::query(
                    "INSERT INTO processed_events (consumer, event_id, processed_at_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(consumer)
                .bind(event_id)
                .bind(agora_kit::time::now_ms())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn record_status(&self, s: &StatusFacts) -> StoreResult<Recorded> {
                if let Some(w) = self.writer() {
                    let s = s.clone();
                    return Ok(w.write(move |c| lite::record_status(c, &s)).await?);
                }
                let mut tx = self.write_tx().await?;
                let old: Option<StatusRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {STATUS_COLUMNS} FROM statuses WHERE id = $1"
                )))
                .bind(s.id)
                .fetch_optional(&mut *tx)
                .await?;
                let outcome = match old {
                    Some(row) if row.deleted => return Ok(Recorded::Deleted),
                    Some(row) => Recorded::Known(row.into()),
                    None => Recorded::New,
                };
                sqlx::query(UPSERT_STATUS)
                .bind(s.id)
                .bind(s.account_id)
                .bind(s.created_at_ms)
                .bind(s.visibility.as_str())
                .bind(s.in_reply_to_id)
                .bind(s.in_reply_to_account_id)
                .bind(s.reblog_of_id)
                .bind(s.reblog_of_account_id)
                .bind(join_ids(&s.mention_ids))
                .bind(s.tags.join(" "))
                .bind(s.has_media)
                .bind(s.sensitive)
                .execute(&mut *tx)
                .await?;
                agora_store::commit(tx).await?;
                Ok(outcome)
            }

            async fn status(&self, id: i64) -> StoreResult<Option<StatusFacts>> {
                let row: Option<StatusRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {STATUS_COLUMNS} FROM statuses WHERE id = $1 AND deleted = FALSE"
                )))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(StatusFacts::from))
            }

            async fn delete_status(&self, id: i64, account_id: i64) -> StoreResult<Vec<Removed>> {
                let mut tx = self.write_tx().await?;
                sqlx::query(
                    "INSERT INTO statuses (id, account_id, created_at_ms, visibility, deleted) \
                     VALUES ($1, $2, 0, 'direct', TRUE) ON CONFLICT (id) DO UPDATE SET deleted = TRUE",
                )
                .bind(id)
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "DELETE FROM entries WHERE status_id = $1 OR reblog_of_id = $1 RETURNING timeline, status_id",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM tag_uses WHERE status_id = $1").bind(id).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM engagements WHERE status_id = $1").bind(id).execute(&mut *tx).await?;
                agora_store::commit(tx).await?;
                Ok(rows.into_iter().map(|(timeline, status_id)| Removed { timeline, status_id }).collect())
            }

            async fn insert(&self, timelines: &[String], entry: &Entry) -> StoreResult<()> {
                if let Some(w) = self.writer() {
                    let (timelines, entry) = (timelines.to_vec(), entry.clone());
                    return Ok(w.write(move |c| lite::insert(c, &timelines, &entry)).await?);
                }
                let mut tx = self.write_tx().await?;
                for t in timelines {
                    insert_entry(&mut *tx, t, entry).await?;
                }
                agora_store::commit(tx).await?;
                Ok(())
            }

            async fn insert_home(&self, recipients: &[i64], entry: &Entry) -> StoreResult<Vec<i64>> {
                if let Some(w) = self.writer() {
                    let (recipients, entry) = (recipients.to_vec(), entry.clone());
                    return Ok(w.write(move |c| lite::insert_home(c, &recipients, &entry)).await?);
                }
                if entry.reblog_of_id == 0 {
                    // An original lands in every home it is sent to: one multi-row statement per
                    // chunk (atomic on its own) instead of one statement per follower.
                    for chunk in recipients.chunks(CHUNK) {
                        let mut qb = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO entries (timeline, status_id, author_id, reblog_of_id, reblog_of_author_id, \
                             in_reply_to_account_id, visibility, has_media) ",
                        );
                        qb.push_values(chunk, |mut row, r| {
                            row.push_bind(crate::domain::TimelineKey::home(*r))
                                .push_bind(entry.status_id)
                                .push_bind(entry.author_id)
                                .push_bind(entry.reblog_of_id)
                                .push_bind(entry.reblog_of_author_id)
                                .push_bind(entry.in_reply_to_account_id)
                                .push_bind(entry.visibility.as_str())
                                .push_bind(entry.has_media);
                        });
                        qb.push(" ON CONFLICT DO NOTHING");
                        qb.build().execute(&self.pool).await?;
                    }
                    return Ok(recipients.to_vec());
                }
                let mut received = Vec::new();
                for chunk in recipients.chunks(CHUNK) {
                    let mut tx = self.write_tx().await?;
                    for r in chunk {
                        let timeline = crate::domain::TimelineKey::home(*r);
                        let holds = if entry.reblog_of_id != 0 {
                            insert_reblog(&mut *tx, &timeline, entry).await?
                        } else {
                            insert_entry(&mut *tx, &timeline, entry).await?;
                            true
                        };
                        if holds {
                            received.push(*r);
                        }
                    }
                    agora_store::commit(tx).await?;
                }
                Ok(received)
            }

            async fn retag(&self, entry: &Entry, tags: &[String]) -> StoreResult<()> {
                let mut tx = self.write_tx().await?;
                sqlx::query("DELETE FROM entries WHERE status_id = $1 AND timeline LIKE 'tag:%'")
                    .bind(entry.status_id)
                    .execute(&mut *tx)
                    .await?;
                for t in tags {
                    insert_entry(&mut *tx, &crate::domain::TimelineKey::tag(t), entry).await?;
                }
                agora_store::commit(tx).await?;
                Ok(())
            }

            async fn set_media(&self, status_id: i64, has_media: bool) -> StoreResult<()> {
                sqlx::query("UPDATE entries SET has_media = $2 WHERE status_id = $1")
                    .bind(status_id)
                    .bind(has_media)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn remove_author(&self, timeline: &str, author_id: i64, scope: AuthorScope) -> StoreResult<Vec<i64>> {
                let sql = match scope {
                    AuthorScope::Authored => {
                        "DELETE FROM entries WHERE timeline = $1 AND author_id = $2 AND visibility <> 'direct' \
                         RETURNING status_id"
                    }
                    AuthorScope::Everything => {
                        "DELETE FROM entries WHERE timeline = $1 AND (author_id = $2 OR reblog_of_author_id = $2) \
                         RETURNING status_id"
                    }
                };
                let rows: Vec<(i64,)> =
                    sqlx::query_as(sql).bind(timeline).bind(author_id).fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(|(id,)| id).collect())
            }

            async fn page(&self, timeline: &str, w: &Window, f: &EntryFilter) -> StoreResult<Vec<Entry>> {
                if let Some(r) = self.reader() {
                    return Ok(r.read(|c| lite::page(c, timeline, w, f))?);
                }
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE timeline = "));
                qb.push_bind(timeline.to_owned());
                if let Some(u) = w.upper {
                    qb.push(" AND status_id < ").push_bind(u);
                }
                if let Some(l) = w.lower {
                    qb.push(" AND status_id > ").push_bind(l);
                }
                if f.only_media {
                    qb.push(" AND has_media = TRUE");
                }
                if f.exclude_replies {
                    qb.push(" AND (in_reply_to_account_id = 0 OR in_reply_to_account_id = author_id)");
                }
                if f.exclude_reblogs {
                    qb.push(" AND reblog_of_id = 0");
                }
                if !f.visibilities.is_empty() {
                    qb.push(" AND visibility IN (");
                    let mut list = qb.separated(", ");
                    for v in &f.visibilities {
                        list.push_bind(v.as_str());
                    }
                    qb.push(")");
                }
                qb.push(if w.ascending { " ORDER BY status_id ASC LIMIT " } else { " ORDER BY status_id DESC LIMIT " });
                qb.push_bind(w.limit as i64);
                let rows: Vec<EntryRow> = qb.build_query_as().fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(Entry::from).collect())
            }

            async fn has_entries(&self, timeline: &str) -> StoreResult<bool> {
                if let Some(r) = self.reader() {
                    return Ok(r.read(|c| lite::has_entries(c, timeline))?);
                }
                let row: Option<(i64,)> = sqlx::query_as("SELECT status_id FROM entries WHERE timeline = $1 LIMIT 1")
                    .bind(timeline)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.is_some())
            }

            async fn set_large_account(&self, account_id: i64, followers: Option<i64>) -> StoreResult<()> {
                match followers {
                    Some(n) => {
                        sqlx::query(
                            "INSERT INTO large_accounts (account_id, followers, updated_at_ms) VALUES ($1, $2, $3) \
                             ON CONFLICT (account_id) DO UPDATE SET followers = excluded.followers, \
                             updated_at_ms = excluded.updated_at_ms",
                        )
                        .bind(account_id)
                        .bind(n)
                        .bind(agora_kit::time::now_ms())
                        .execute(&self.pool)
                        .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM large_accounts WHERE account_id = $1")
                            .bind(account_id)
                            .execute(&self.pool)
                            .await?;
                    }
                }
                Ok(())
            }

            async fn large_accounts(&self) -> StoreResult<Vec<i64>> {
                let rows: Vec<(i64,)> = sqlx::query_as("SELECT account_id FROM large_accounts ORDER BY account_id")
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(|(id,)| id).collect())
            }

            async fn activity(&self, account_id: i64) -> StoreResult<Option<Activity>> {
                if let Some(r) = self.reader() {
                    return Ok(r.read(|c| lite::activity(c, account_id))?);
                }
                let row: Option<(i64, bool)> =
                    sqlx::query_as("SELECT last_active_ms, needs_rebuild FROM activity WHERE account_id = $1")
                        .bind(account_id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|(last_active_ms, needs_rebuild)| Activity { last_active_ms, needs_rebuild }))
            }

            async fn touch(&self, account_id: i64, now_ms: i64) -> StoreResult<()> {
                if let Some(w) = self.writer() {
                    return Ok(w.write(move |c| lite::touch(c, account_id, now_ms)).await?);
                }
                sqlx::query(TOUCH)
                .bind(account_id)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn inactive_among(&self, ids: &[i64], cutoff_ms: i64) -> StoreResult<Vec<i64>> {
                if let Some(r) = self.reader() {
                    return Ok(r.read(|c| lite::inactive_among(c, ids, cutoff_ms))?);
                }
                let mut out = Vec::new();
                for chunk in ids.chunks(CHUNK) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT account_id FROM activity WHERE last_active_ms < ");
                    qb.push_bind(cutoff_ms).push(" AND account_id IN (");
                    let mut list = qb.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    qb.push(")");
                    let rows: Vec<(i64,)> = qb.build_query_as().fetch_all(&self.pool).await?;
                    out.extend(rows.into_iter().map(|(id,)| id));
                }
                Ok(out)
            }

            async fn mark_needs_rebuild(&self, ids: &[i64]) -> StoreResult<()> {
                if let Some(w) = self.writer() {
                    let ids = ids.to_vec();
                    return Ok(w.write(move |c| lite::mark_needs_rebuild(c, &ids)).await?);
                }
                for chunk in ids.chunks(CHUNK) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE activity SET needs_rebuild = TRUE WHERE account_id IN (");
                    let mut list = qb.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    qb.push(")");
                    qb.build().execute(&self.pool).await?;
                }
                Ok(())
            }

            async fn set_hides_reblogs(&self, follower: i64, target: i64, hides: bool) -> StoreResult<()> {
                let sql = if hides {
                    "INSERT INTO hidden_reblogs (follower_id, target_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
                } else {
                    "DELETE FROM hidden_reblogs WHERE follower_id = $1 AND target_id = $2"
                };
                sqlx::query(sql).bind(follower).bind(target).execute(&self.pool).await?;
                Ok(())
            }

            async fn hiding_reblogs(&self, target: i64, candidates: &[i64]) -> StoreResult<Vec<i64>> {
                let mut out = Vec::new();
                for chunk in candidates.chunks(CHUNK) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT follower_id FROM hidden_reblogs WHERE target_id = ");
                    qb.push_bind(target).push(" AND follower_id IN (");
                    let mut list = qb.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    qb.push(")");
                    let rows: Vec<(i64,)> = qb.build_query_as().fetch_all(&self.pool).await?;
                    out.extend(rows.into_iter().map(|(id,)| id));
                }
                Ok(out)
            }

            async fn known_accounts(&self) -> StoreResult<Vec<i64>> {
                let rows: Vec<(i64,)> = sqlx::query_as(
                    "SELECT account_id FROM statuses UNION SELECT account_id FROM activity ORDER BY 1",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(id,)| id).collect())
            }

            async fn record_tag_uses(&self, status_id: i64, account_id: i64, tags: &[String], at_ms: i64) -> StoreResult<()> {
                if let Some(w) = self.writer() {
                    let tags = tags.to_vec();
                    return Ok(w.write(move |c| lite::record_tag_uses(c, status_id, account_id, &tags, at_ms)).await?);
                }
                let mut tx = self.write_tx().await?;
                sqlx::query("DELETE FROM tag_uses WHERE status_id = $1").bind(status_id).execute(&mut *tx).await?;
                for t in tags {
                    sqlx::query(INSERT_TAG_USE)
                    .bind(t)
                    .bind(status_id)
                    .bind(account_id)
                    .bind(at_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                agora_store::commit(tx).await?;
                Ok(())
            }

            async fn tag_uses_since(&self, since_ms: i64) -> StoreResult<Vec<TagUse>> {
                let rows: Vec<(String, i64, i64)> =
                    sqlx::query_as("SELECT tag, account_id, used_at_ms FROM tag_uses WHERE used_at_ms >= $1")
                        .bind(since_ms)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(|(tag, account_id, used_at_ms)| TagUse { tag, account_id, used_at_ms }).collect())
            }

            async fn set_engagement(
                &self,
                status_id: i64,
                account_id: i64,
                kind: &str,
                at_ms: i64,
                present: bool,
            ) -> StoreResult<()> {
                if let Some(w) = self.writer() {
                    let kind = kind.to_owned();
                    return Ok(w.write(move |c| lite::set_engagement(c, status_id, account_id, &kind, at_ms, present)).await?);
                }
                if present {
                    sqlx::query(INSERT_ENGAGEMENT)
                    .bind(status_id)
                    .bind(account_id)
                    .bind(kind)
                    .bind(at_ms)
                    .execute(&self.pool)
                    .await?;
                } else {
                    sqlx::query(DELETE_ENGAGEMENT)
                        .bind(status_id)
                        .bind(account_id)
                        .bind(kind)
                        .execute(&self.pool)
                        .await?;
                }
                Ok(())
            }

            async fn engagements_since(&self, since_ms: i64) -> StoreResult<Vec<(i64, i64)>> {
                let rows: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT e.status_id, e.at_ms FROM engagements e JOIN statuses s ON s.id = e.status_id \
                     WHERE e.at_ms >= $1 AND s.deleted = FALSE AND s.visibility = 'public' AND s.sensitive = FALSE \
                     AND s.reblog_of_id = 0 AND s.in_reply_to_id = 0",
                )
                .bind(since_ms)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows)
            }

            async fn prune(&self, before_ms: i64) -> StoreResult<u64> {
                let mut removed = 0;
                for sql in [
                    "DELETE FROM processed_events WHERE processed_at_ms < $1",
                    "DELETE FROM tag_uses WHERE used_at_ms < $1",
                    "DELETE FROM engagements WHERE at_ms < $1",
                ] {
                    removed += sqlx::query(sql).bind(before_ms).execute(&self.pool).await?.rows_affected();
                }
                Ok(removed)
            }

            async fn markers(&self, account_id: i64) -> StoreResult<Vec<Marker>> {
                let rows: Vec<MarkerRow> = sqlx::query_as(
                    "SELECT timeline, last_read_id, version, updated_at_ms FROM markers WHERE account_id = $1 \
                     ORDER BY timeline",
                )
                .bind(account_id)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Marker::from).collect())
            }

            async fn save_marker(
                &self,
                account_id: i64,
                timeline: &str,
                last_read_id: i64,
                now_ms: i64,
            ) -> StoreResult<Marker> {
                let row: MarkerRow = sqlx::query_as(
                    "INSERT INTO markers (account_id, timeline, last_read_id, version, updated_at_ms) \
                     VALUES ($1, $2, $3, 1, $4) ON CONFLICT (account_id, timeline) DO UPDATE SET \
                     last_read_id = excluded.last_read_id, version = markers.version + 1, \
                     updated_at_ms = excluded.updated_at_ms \
                     RETURNING timeline, last_read_id, version, updated_at_ms",
                )
                .bind(account_id)
                .bind(timeline)
                .bind(last_read_id)
                .bind(now_ms)
                .fetch_one(&self.pool)
                .await?;
                Ok(row.into())
            }
        }
    };
}

/// Timeline store on PostgreSQL.
pub struct PgTimelineStore {
    pub(super) pool: PgPool,
}

impl PgTimelineStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = agora_store::postgres(url).await?;
        Ok(Self { pool })
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        sqlx::migrate!("./migrations/postgres")
    }

    fn reader(&self) -> Option<&SqliteReader> {
        None
    }

    fn writer(&self) -> Option<&SqliteWriter> {
        None
    }
}

mod pg_impl {
    use super::*;
    sql_timeline_store!(PgTimelineStore, sqlx::Postgres, "BEGIN");
}

/// Timeline store on SQLite (the embedded default). Timeline pages and the fan-out's lookups are
/// read on the calling thread through [`SqliteReader`]; the fan-out's writes are units on the
/// [`SqliteWriter`]'s thread (see `lite.rs`); the rarer writes go through the sqlx pool.
pub struct SqliteTimelineStore {
    pub(super) pool: SqlitePool,
    reader: SqliteReader,
    writer: SqliteWriter,
}

impl SqliteTimelineStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = agora_store::sqlite(url).await?;
        let reader = SqliteReader::new(url, "feed")?;
        let writer = SqliteWriter::new(url, "feed")?;
        Ok(Self { pool, reader, writer })
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        sqlx::migrate!("./migrations/sqlite")
    }

    fn reader(&self) -> Option<&SqliteReader> {
        Some(&self.reader)
    }

    fn writer(&self) -> Option<&SqliteWriter> {
        Some(&self.writer)
    }
}

mod sqlite_impl {
    use super::*;
    // IMMEDIATE takes the write lock up front, so a read-then-write transaction never fails
    // with SQLITE_BUSY halfway through.
    sql_timeline_store!(SqliteTimelineStore, sqlx::Sqlite, "BEGIN IMMEDIATE");
}
