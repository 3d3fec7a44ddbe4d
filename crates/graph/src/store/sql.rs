//! The PostgreSQL and SQLite graph stores. Both speak the same SQL (numbered `$N` parameters work
//! on both engines), so one body is instantiated per engine by `sql_graph_store!`; only connection
//! set-up, migrations, the outbox helpers and how a pair of accounts is locked differ.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use agora_events::outbox::OutboxStore;
use agora_kit::pagination::Page;
use agora_store::lite::SqliteReader;
use async_trait::async_trait;
use sqlx::{PgPool, SqlitePool};

use super::lite;
use super::{ChangeEvent, GraphStore, Refusal, StoreError, StoreResult};
use crate::domain::{
    ChangeKind, Counts, Entry, FamiliarFollowers, FilterSet, FollowerIds, GraphChange, NewFollow, NewMute,
    Relationship, Suggestion, mute_is_live,
};

/// `$first, $first+1, …` for an `IN (…)` list of `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Completes a listing query (`base` selects `id, <account>` and binds `binds`) with the
/// Mastodon page bounds. Returns the SQL and whether rows come oldest first (to be reversed).
fn paged(base: &str, binds: &mut Vec<i64>, page: &Page) -> (String, bool) {
    let mut sql = base.to_owned();
    if let Some(max) = page.max_id {
        binds.push(max);
        sql.push_str(&format!(" AND id < ${}", binds.len()));
    }
    if let Some(lower) = page.since_id.into_iter().chain(page.min_id).max() {
        binds.push(lower);
        sql.push_str(&format!(" AND id > ${}", binds.len()));
    }
    // min_id asks for the entries just above it, so walk up from there and flip afterwards.
    let ascending = page.min_id.is_some();
    sql.push_str(if ascending { " ORDER BY id ASC" } else { " ORDER BY id DESC" });
    binds.push(page.limit as i64);
    sql.push_str(&format!(" LIMIT ${}", binds.len()));
    (sql, ascending)
}

fn languages_text(languages: &[String]) -> String {
    languages.join(",")
}

fn languages_list(text: &str) -> Vec<String> {
    text.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// The advisory lock key of an unordered pair of accounts: every write touching the pair takes
/// it, so a follow and a block between the same two accounts cannot interleave.
fn pair_key(a: i64, b: i64) -> i64 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    lo.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as i64).rotate_left(31) ^ hi
}

/// Ids passed to `IN (…)` at most this many at a time.
const IN_CHUNK: usize = 500;

macro_rules! sql_graph_store {
    ($store:ident, $db:ty, $outbox:path, $begin:expr, $lock_pair:expr) => {
        type Tx = sqlx::Transaction<'static, $db>;

        impl $store {
            async fn write_tx(&self, a: i64, b: i64) -> StoreResult<Tx> {
                let mut tx = agora_store::begin(&self.pool, $begin).await?;
                let lock: Option<&'static str> = $lock_pair;
                if let Some(sql) = lock {
                    sqlx::query(sql).bind(pair_key(a, b)).execute(&mut *tx).await?;
                }
                Ok(tx)
            }

            async fn fetch<T>(&self, sql: String, binds: &[i64]) -> StoreResult<Vec<T>>
            where
                T: for<'r> sqlx::FromRow<'r, <$db as sqlx::Database>::Row> + Send + Unpin,
            {
                let mut q = sqlx::query_as::<_, T>(sqlx::AssertSqlSafe(sql));
                for b in binds {
                    q = q.bind(*b);
                }
                Ok(q.fetch_all(&self.pool).await?)
            }

            async fn list(&self, base: &str, mut binds: Vec<i64>, page: &Page) -> StoreResult<Vec<Entry>> {
                let (sql, ascending) = paged(base, &mut binds, page);
                let mut rows: Vec<(i64, i64)> = self.fetch(sql, &binds).await?;
                if ascending {
                    rows.reverse();
                }
                Ok(rows.into_iter().map(|(cursor_id, account_id)| Entry { cursor_id, account_id }).collect())
            }

            /// Rows of `(other, …)` for `sql`, whose `$1` is `account_id`, `$2` optionally
            /// `extra`, then an `IN` list of `ids` in place of `{ids}`.
            async fn follower_page(&self, account_id: i64, after_id: i64, limit: i64) -> StoreResult<(Vec<(i64, i64)>, i64)> {
                let rows: Vec<(i64, i64)> = sqlx::query_as(FOLLOWER_PAGE)
                .bind(account_id)
                .bind(after_id)
                .bind(limit + 1)
                .fetch_all(&self.pool)
                .await?;
                let total: i64 = sqlx::query_scalar(FOLLOWER_COUNT).bind(account_id).fetch_one(&self.pool).await?;
                Ok((rows, total))
            }

            async fn about<T>(&self, sql: &str, account_id: i64, extra: Option<i64>, ids: &[i64]) -> StoreResult<Vec<T>>
            where
                T: for<'r> sqlx::FromRow<'r, <$db as sqlx::Database>::Row> + Send + Unpin,
            {
                let mut out = Vec::new();
                for chunk in ids.chunks(IN_CHUNK) {
                    let mut binds = vec![account_id];
                    binds.extend(extra);
                    let list = placeholders(binds.len() + 1, chunk.len());
                    binds.extend_from_slice(chunk);
                    out.extend(self.fetch::<T>(sql.replace("{ids}", &list), &binds).await?);
                }
                Ok(out)
            }

            async fn record(
                tx: &mut Tx,
                changes: &mut Vec<GraphChange>,
                change: GraphChange,
                event: &ChangeEvent<'_>,
            ) -> StoreResult<()> {
                let env = event(&change);
                $outbox(&mut **tx, &agora_events::topic_for(&env.r#type), &env).await?;
                changes.push(change);
                Ok(())
            }

            /// Deletes the follow (or, with `table = follow_requests`, the request) of
            /// `follower` to `followee`, announcing it as graph.unfollowed.
            async fn drop_edge(
                tx: &mut Tx,
                table: Edge,
                follower: i64,
                followee: i64,
                changes: &mut Vec<GraphChange>,
                event: &ChangeEvent<'_>,
            ) -> StoreResult<()> {
                let sql = match table {
                    Edge::Follow => "DELETE FROM follows WHERE account_id = $1 AND target_id = $2",
                    Edge::Request => "DELETE FROM follow_requests WHERE account_id = $1 AND target_id = $2",
                };
                let done = sqlx::query(sql).bind(follower).bind(followee).execute(&mut **tx).await?;
                if done.rows_affected() > 0 {
                    let change = GraphChange::new(ChangeKind::Unfollowed, follower, followee);
                    Self::record(tx, changes, change, event).await?;
                }
                Ok(())
            }
        }

        #[async_trait]
        impl GraphStore for $store {
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

            async fn follow(
                &self,
                f: &NewFollow,
                locked: bool,
                event: &ChangeEvent<'_>,
            ) -> StoreResult<Vec<GraphChange>> {
                let mut tx = self.write_tx(f.account_id, f.target_id).await?;
                let blockers: Vec<i64> = sqlx::query_scalar(
                    "SELECT account_id FROM blocks \
                     WHERE (account_id = $1 AND target_id = $2) OR (account_id = $2 AND target_id = $1)",
                )
                .bind(f.account_id)
                .bind(f.target_id)
                .fetch_all(&mut *tx)
                .await?;
                if blockers.contains(&f.target_id) {
                    return Err(StoreError::Refused(Refusal::BlockedBy));
                }
                if !blockers.is_empty() {
                    return Err(StoreError::Refused(Refusal::Blocking));
                }
                let languages = languages_text(&f.languages);
                let mut changes = Vec::new();
                let following: Option<(bool, bool)> = sqlx::query_as(
                    "SELECT show_reblogs, notify FROM follows WHERE account_id = $1 AND target_id = $2",
                )
                .bind(f.account_id)
                .bind(f.target_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((showed_reblogs, notified)) = following {
                    sqlx::query(
                        "UPDATE follows SET show_reblogs = $3, notify = $4, languages = $5 \
                         WHERE account_id = $1 AND target_id = $2",
                    )
                    .bind(f.account_id)
                    .bind(f.target_id)
                    .bind(f.show_reblogs)
                    .bind(f.notify)
                    .bind(&languages)
                    .execute(&mut *tx)
                    .await?;
                    // Home timelines depend on show_reblogs and notifications on notify, so a
                    // change of either is news.
                    if (showed_reblogs, notified) != (f.show_reblogs, f.notify) {
                        let change = GraphChange {
                            show_reblogs: f.show_reblogs,
                            notify: f.notify,
                            ..GraphChange::new(ChangeKind::Followed, f.account_id, f.target_id)
                        };
                        Self::record(&mut tx, &mut changes, change, event).await?;
                    }
                    agora_store::commit(tx).await?;
                    return Ok(changes);
                }
                let updated_request = sqlx::query(
                    "UPDATE follow_requests SET show_reblogs = $3, notify = $4, languages = $5 \
                     WHERE account_id = $1 AND target_id = $2",
                )
                .bind(f.account_id)
                .bind(f.target_id)
                .bind(f.show_reblogs)
                .bind(f.notify)
                .bind(&languages)
                .execute(&mut *tx)
                .await?;
                if updated_request.rows_affected() == 0 {
                    let (sql, kind) = if locked {
                        (
                            "INSERT INTO follow_requests (id, account_id, target_id, show_reblogs, notify, languages, created_at_ms) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (account_id, target_id) DO NOTHING",
                            ChangeKind::FollowRequested,
                        )
                    } else {
                        (
                            "INSERT INTO follows (id, account_id, target_id, show_reblogs, notify, languages, created_at_ms) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (account_id, target_id) DO NOTHING",
                            ChangeKind::Followed,
                        )
                    };
                    let inserted = sqlx::query(sql)
                        .bind(f.id)
                        .bind(f.account_id)
                        .bind(f.target_id)
                        .bind(f.show_reblogs)
                        .bind(f.notify)
                        .bind(&languages)
                        .bind(f.created_at_ms)
                        .execute(&mut *tx)
                        .await?;
                    if inserted.rows_affected() > 0 {
                        let change = GraphChange {
                            show_reblogs: f.show_reblogs,
                            notify: f.notify,
                            ..GraphChange::new(kind, f.account_id, f.target_id)
                        };
                        Self::record(&mut tx, &mut changes, change, event).await?;
                    }
                }
                agora_store::commit(tx).await?;
                Ok(changes)
            }

            async fn unfollow(
                &self,
                account_id: i64,
                target_id: i64,
                event: &ChangeEvent<'_>,
            ) -> StoreResult<Vec<GraphChange>> {
                let mut tx = self.write_tx(account_id, target_id).await?;
                let mut changes = Vec::new();
                Self::drop_edge(&mut tx, Edge::Follow, account_id, target_id, &mut changes, event).await?;
                Self::drop_edge(&mut tx, Edge::Request, account_id, target_id, &mut changes, event).await?;
                agora_store::commit(tx).await?;
                Ok(changes)
            }

            async fn remove_follower(
                &self,
                account_id: i64,
                follower_id: i64,
                event: &ChangeEvent<'_>,
            ) -> StoreResult<Vec<GraphChange>> {
                let mut tx = self.write_tx(account_id, follower_id).await?;
                let mut changes = Vec::new();
                Self::drop_edge(&mut tx, Edge::Follow, follower_id, account_id, &mut changes, event).await?;
                agora_store::commit(tx).await?;
                Ok(changes)
            }

            async fn authorize_request(
                &self,
                account_id: i64,
                requester_id: i64,
                follow_id: i64,
                now_ms: i64,
                event: &ChangeEvent<'_>,
            ) -> StoreResult<Vec<GraphChange>> {
                let mut tx = self.write_tx(account_id, requester_id).await?;
                let request: Option<(bool, bool, String)> = sqlx::query_as(
                    "DELETE FROM follow_requests WHERE account_id = $1 AND target_id = $2 \
                     RETURNING show_reblogs, notify, languages",
                )
                .bind(requester_id)
                .bind(account_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((show_reblogs, notify, languages)) = request else {
                    return Err(StoreError::NotFound);
                };
                let inserted = sqlx::query(
                    "INSERT INTO follows (id, account_id, target_id, show_reblogs, notify, languages, created_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (account_id, target_id) DO NOTHING",
                )
                .bind(follow_id)
                .bind(requester_id)
                .bind(account_id)
                .bind(show_reblogs)
                .bind(notify)
                .bind(&languages)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                let mut changes = Vec::new();
                if inserted.rows_affected() > 0 {
                    let change = GraphChange {
                        show_reblogs,
                        notify,
                        ..GraphChange::new(ChangeKind::Followed, requester_id, account_id)
                    };
                    Self::record(&mut tx, &mut changes, change, event).await?;
                }
                agora_store::commit(tx).await?;
                Ok(changes)
            }

            async fn reject_request(
                &self,
                account_id: i64,
                requester_id: i64,
                event: &ChangeEvent<'_>,
            ) -> StoreResult<Vec<GraphChange>> {
                let mut tx = self.write_tx(account_id, requester_id).await?;
                let mut changes = Vec::new();
                Self::drop_edge(&mut tx, Edge::Request, requester_id, account_id, &mut changes, event).await?;
                if changes.is_empty() {
                    return Err(StoreError::NotFound);
                }
                agora_store::commit(tx).await?;
                Ok(changes)
            }

            async fn block(
                &self,
                id: i64,
                account_id: i64,
                target_id: i64,
                now_ms: i64,
                event: &ChangeEvent<'_>,
            ) -> StoreResult<Vec<GraphChange>> {
                let mut tx = self.write_tx(account_id, target_id).await?;
                let mut changes = Vec::new();
                for (edge, from, to) in [
                    (Edge::Follow, account_id, target_id),
                    (Edge::Follow, target_id, account_id),
                    (Edge::Request, account_id, target_id),
                    (Edge::Request, target_id, account_id),
                ] {
                    Self::drop_edge(&mut tx, edge, from, to, &mut changes, event).await?;
                }
                let inserted = sqlx::query(
                    "INSERT INTO blocks (id, account_id, target_id, created_at_ms) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (account_id, target_id) DO NOTHING",
                )
                .bind(id)
                .bind(account_id)
                .bind(target_id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() > 0 {
                    let change = GraphChange::new(ChangeKind::Blocked, account_id, target_id);
                    Self::record(&mut tx, &mut changes, change, event).await?;
                }
                agora_store::commit(tx).await?;
                Ok(changes)
            }

            async fn unblock(
                &self,
                account_id: i64,
                target_id: i64,
                event: &ChangeEvent<'_>,
            ) -> StoreResult<Vec<GraphChange>> {
                let mut tx = self.write_tx(account_id, target_id).await?;
                let done = sqlx::query("DELETE FROM blocks WHERE account_id = $1 AND target_id = $2")
                    .bind(account_id)
                    .bind(target_id)
                    .execute(&mut *tx)
                    .await?;
                let mut changes = Vec::new();
                if done.rows_affected() > 0 {
                    let change = GraphChange::new(ChangeKind::Unblocked, account_id, target_id);
                    Self::record(&mut tx, &mut changes, change, event).await?;
                }
                agora_store::commit(tx).await?;
                Ok(changes)
            }

            async fn mute(&self, m: &NewMute, event: &ChangeEvent<'_>) -> StoreResult<Vec<GraphChange>> {
                let mut tx = self.write_tx(m.account_id, m.target_id).await?;
                let existing: Option<(bool, i64)> = sqlx::query_as(
                    "SELECT notifications, expires_at_ms FROM mutes WHERE account_id = $1 AND target_id = $2",
                )
                .bind(m.account_id)
                .bind(m.target_id)
                .fetch_optional(&mut *tx)
                .await?;
                let changed = match existing {
                    Some((notifications, expires)) if mute_is_live(expires, m.created_at_ms) => {
                        if (notifications, expires) == (m.notifications, m.expires_at_ms) {
                            false
                        } else {
                            sqlx::query(
                                "UPDATE mutes SET notifications = $3, expires_at_ms = $4 \
                                 WHERE account_id = $1 AND target_id = $2",
                            )
                            .bind(m.account_id)
                            .bind(m.target_id)
                            .bind(m.notifications)
                            .bind(m.expires_at_ms)
                            .execute(&mut *tx)
                            .await?;
                            true
                        }
                    }
                    _ => {
                        // An expired mute is as good as none: replace it, with a fresh cursor.
                        sqlx::query("DELETE FROM mutes WHERE account_id = $1 AND target_id = $2")
                            .bind(m.account_id)
                            .bind(m.target_id)
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query(
                            "INSERT INTO mutes (id, account_id, target_id, notifications, expires_at_ms, created_at_ms) \
                             VALUES ($1, $2, $3, $4, $5, $6)",
                        )
                        .bind(m.id)
                        .bind(m.account_id)
                        .bind(m.target_id)
                        .bind(m.notifications)
                        .bind(m.expires_at_ms)
                        .bind(m.created_at_ms)
                        .execute(&mut *tx)
                        .await?;
                        true
                    }
                };
                let mut changes = Vec::new();
                if changed {
                    let change = GraphChange {
                        mute_notifications: m.notifications,
                        mute_expires_at_ms: m.expires_at_ms,
                        ..GraphChange::new(ChangeKind::Muted, m.account_id, m.target_id)
                    };
                    Self::record(&mut tx, &mut changes, change, event).await?;
                }
                agora_store::commit(tx).await?;
                Ok(changes)
            }

            async fn unmute(
                &self,
                account_id: i64,
                target_id: i64,
                now_ms: i64,
                event: &ChangeEvent<'_>,
            ) -> StoreResult<Vec<GraphChange>> {
                let mut tx = self.write_tx(account_id, target_id).await?;
                let removed: Option<i64> = sqlx::query_scalar(
                    "DELETE FROM mutes WHERE account_id = $1 AND target_id = $2 RETURNING expires_at_ms",
                )
                .bind(account_id)
                .bind(target_id)
                .fetch_optional(&mut *tx)
                .await?;
                let mut changes = Vec::new();
                // An expired mute already ended; removing its row is housekeeping, not news.
                if removed.is_some_and(|expires| mute_is_live(expires, now_ms)) {
                    let change = GraphChange::new(ChangeKind::Unmuted, account_id, target_id);
                    Self::record(&mut tx, &mut changes, change, event).await?;
                }
                agora_store::commit(tx).await?;
                Ok(changes)
            }

            async fn dismiss_suggestion(&self, account_id: i64, target_id: i64, now_ms: i64) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO suggestion_dismissals (account_id, target_id, created_at_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (account_id, target_id) DO NOTHING",
                )
                .bind(account_id)
                .bind(target_id)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn relationships(&self, me: i64, ids: &[i64], now_ms: i64) -> StoreResult<Vec<Relationship>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                if let Some(r) = self.reader() {
                    return Ok(relationships_from(ids, r.read(|c| lite::relationship_facts(c, me, now_ms, ids))?));
                }
                let facts: Vec<RelationshipFact> =
                    self.about::<RelationshipFact>(RELATIONSHIP_FACTS, me, Some(now_ms), ids).await?;
                Ok(relationships_from(ids, facts))
            }

            async fn followers(&self, account_id: i64, page: &Page) -> StoreResult<Vec<Entry>> {
                self.list("SELECT id, account_id FROM follows WHERE target_id = $1", vec![account_id], page).await
            }

            async fn following(&self, account_id: i64, page: &Page) -> StoreResult<Vec<Entry>> {
                self.list("SELECT id, target_id FROM follows WHERE account_id = $1", vec![account_id], page).await
            }

            async fn follow_requests(&self, account_id: i64, page: &Page) -> StoreResult<Vec<Entry>> {
                self.list("SELECT id, account_id FROM follow_requests WHERE target_id = $1", vec![account_id], page)
                    .await
            }

            async fn blocks(&self, account_id: i64, page: &Page) -> StoreResult<Vec<Entry>> {
                self.list("SELECT id, target_id FROM blocks WHERE account_id = $1", vec![account_id], page).await
            }

            async fn mutes(&self, account_id: i64, page: &Page, now_ms: i64) -> StoreResult<Vec<Entry>> {
                self.list(
                    "SELECT id, target_id FROM mutes WHERE account_id = $1 AND (expires_at_ms = 0 OR expires_at_ms > $2)",
                    vec![account_id, now_ms],
                    page,
                )
                .await
            }

            async fn follower_ids(&self, account_id: i64, after_id: i64, limit: i64) -> StoreResult<FollowerIds> {
                // One row more than asked tells whether another page follows.
                let (mut rows, total) = if let Some(r) = self.reader() {
                    r.read(|c| lite::follower_page(c, account_id, after_id, limit))?
                } else {
                    self.follower_page(account_id, after_id, limit).await?
                };
                let more = rows.len() as i64 > limit;
                rows.truncate(limit.max(0) as usize);
                let next_after_id = if more { rows.last().map(|r| r.0).unwrap_or(0) } else { 0 };
                Ok(FollowerIds { follower_ids: rows.into_iter().map(|r| r.1).collect(), next_after_id, total })
            }

            async fn filter_followers(&self, account_id: i64, candidates: &[i64]) -> StoreResult<Vec<i64>> {
                let found: HashSet<i64> = if let Some(r) = self.reader() {
                    r.read(|c| lite::followers_among(c, account_id, candidates))?.into_iter().collect()
                } else {
                    self.about::<(i64,)>(
                        FOLLOWERS_AMONG,
                        account_id,
                        None,
                        candidates,
                    )
                    .await?
                    .into_iter()
                    .map(|(id,)| id)
                    .collect()
                };
                let mut seen = HashSet::new();
                Ok(candidates.iter().copied().filter(|c| found.contains(c) && seen.insert(*c)).collect())
            }

            async fn familiar_followers(&self, me: i64, ids: &[i64]) -> StoreResult<Vec<FamiliarFollowers>> {
                let rows: Vec<(i64, i64)> = self
                    .about(
                        "SELECT f2.target_id, f2.account_id FROM follows f1 \
                         JOIN follows f2 ON f2.account_id = f1.target_id \
                         WHERE f1.account_id = $1 AND f2.target_id IN ({ids}) ORDER BY f2.id DESC",
                        me,
                        None,
                        ids,
                    )
                    .await?;
                let mut by_target: HashMap<i64, Vec<i64>> = HashMap::new();
                for (target, follower) in rows {
                    by_target.entry(target).or_default().push(follower);
                }
                Ok(ids
                    .iter()
                    .map(|&id| FamiliarFollowers { id, account_ids: by_target.get(&id).cloned().unwrap_or_default() })
                    .collect())
            }

            async fn suggestions(&self, me: i64, limit: i64, now_ms: i64) -> StoreResult<Vec<Suggestion>> {
                let rows: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT f2.target_id, COUNT(*) AS mutuals FROM follows f1 \
                     JOIN follows f2 ON f2.account_id = f1.target_id \
                     WHERE f1.account_id = $1 AND f2.target_id <> $1 \
                       AND NOT EXISTS (SELECT 1 FROM follows x WHERE x.account_id = $1 AND x.target_id = f2.target_id) \
                       AND NOT EXISTS (SELECT 1 FROM follow_requests r WHERE r.account_id = $1 AND r.target_id = f2.target_id) \
                       AND NOT EXISTS (SELECT 1 FROM blocks b WHERE (b.account_id = $1 AND b.target_id = f2.target_id) \
                                                               OR (b.account_id = f2.target_id AND b.target_id = $1)) \
                       AND NOT EXISTS (SELECT 1 FROM mutes m WHERE m.account_id = $1 AND m.target_id = f2.target_id \
                                                              AND (m.expires_at_ms = 0 OR m.expires_at_ms > $2)) \
                       AND NOT EXISTS (SELECT 1 FROM suggestion_dismissals d WHERE d.account_id = $1 AND d.target_id = f2.target_id) \
                     GROUP BY f2.target_id ORDER BY mutuals DESC, f2.target_id ASC LIMIT $3",
                )
                .bind(me)
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(account_id, mutuals)| Suggestion { account_id, mutuals }).collect())
            }

            async fn filter_set(&self, me: i64, now_ms: i64) -> StoreResult<FilterSet> {
                // One round trip on every timeline read.
                if let Some(r) = self.reader() {
                    return Ok(filter_set_from(r.read(|c| lite::filter_facts(c, me, now_ms))?));
                }
                let rows: Vec<(i64, i64)> =
                    sqlx::query_as(FILTER_FACTS).bind(me).bind(now_ms).fetch_all(&self.pool).await?;
                Ok(filter_set_from(rows))
            }

            async fn counts(&self, ids: &[i64]) -> StoreResult<Vec<Counts>> {
                if let Some(r) = self.reader() {
                    return Ok(counts_from(ids, r.read(|c| lite::count_facts(c, ids))?));
                }
                let mut facts = Vec::new();
                for chunk in ids.chunks(IN_CHUNK) {
                    let sql = COUNT_FACTS.replace("{list}", &placeholders(1, chunk.len()));
                    facts.extend(self.fetch::<(i64, i64, i64)>(sql, chunk).await?);
                }
                Ok(counts_from(ids, facts))
            }
        }
    };
}

/// Every fact a relationship needs, in one statement: (kind, other account, two flags,
/// languages). Mutes come first so the placeholders appear in order ($1, $2, then the ids in
/// `{ids}`).
pub(super) const RELATIONSHIP_FACTS: &str = "SELECT CAST(0 AS BIGINT), target_id, notifications, FALSE, '' FROM mutes WHERE account_id = $1 \
     AND (expires_at_ms = 0 OR expires_at_ms > $2) AND target_id IN ({ids}) \
     UNION ALL SELECT CAST(1 AS BIGINT), target_id, show_reblogs, notify, languages FROM follows \
     WHERE account_id = $1 AND target_id IN ({ids}) \
     UNION ALL SELECT CAST(2 AS BIGINT), target_id, show_reblogs, notify, languages FROM follow_requests \
     WHERE account_id = $1 AND target_id IN ({ids}) \
     UNION ALL SELECT CAST(3 AS BIGINT), account_id, FALSE, FALSE, '' FROM follows \
     WHERE target_id = $1 AND account_id IN ({ids}) \
     UNION ALL SELECT CAST(4 AS BIGINT), account_id, FALSE, FALSE, '' FROM follow_requests \
     WHERE target_id = $1 AND account_id IN ({ids}) \
     UNION ALL SELECT CAST(5 AS BIGINT), target_id, FALSE, FALSE, '' FROM blocks \
     WHERE account_id = $1 AND target_id IN ({ids}) \
     UNION ALL SELECT CAST(6 AS BIGINT), account_id, FALSE, FALSE, '' FROM blocks \
     WHERE target_id = $1 AND account_id IN ({ids})";

pub(super) type RelationshipFact = (i64, i64, bool, bool, String);

fn relationships_from(ids: &[i64], facts: Vec<RelationshipFact>) -> Vec<Relationship> {
    type Options = (i64, bool, bool, String);
    let mut following: HashMap<i64, Options> = HashMap::new();
    let mut requested: HashMap<i64, Options> = HashMap::new();
    let mut muting: HashMap<i64, bool> = HashMap::new();
    let (mut followed_by, mut requested_by, mut blocking, mut blocked_by) =
        (HashSet::new(), HashSet::new(), HashSet::new(), HashSet::new());
    for (kind, id, a, b, languages) in facts {
        match kind {
            0 => {
                muting.insert(id, a);
            }
            1 => {
                following.insert(id, (id, a, b, languages));
            }
            2 => {
                requested.insert(id, (id, a, b, languages));
            }
            3 => {
                followed_by.insert(id);
            }
            4 => {
                requested_by.insert(id);
            }
            5 => {
                blocking.insert(id);
            }
            _ => {
                blocked_by.insert(id);
            }
        }
    }
    ids.iter()
        .map(|&id| {
            let options = following.get(&id).or_else(|| requested.get(&id));
            Relationship {
                id,
                following: following.contains_key(&id),
                showing_reblogs: options.is_some_and(|o| o.1),
                notifying: options.is_some_and(|o| o.2),
                languages: options.map(|o| languages_list(&o.3)).unwrap_or_default(),
                followed_by: followed_by.contains(&id),
                blocking: blocking.contains(&id),
                blocked_by: blocked_by.contains(&id),
                muting: muting.contains_key(&id),
                muting_notifications: muting.get(&id).copied().unwrap_or(false),
                requested: requested.contains_key(&id),
                requested_by: requested_by.contains(&id),
            }
        })
        .collect()
}

/// A viewer's blocks (0), blocks of the viewer (1) and live mutes (2), sorted by account.
pub(super) const FILTER_FACTS: &str = "SELECT CAST(0 AS BIGINT), target_id FROM blocks WHERE account_id = $1 \
     UNION ALL SELECT CAST(1 AS BIGINT), account_id FROM blocks WHERE target_id = $1 \
     UNION ALL SELECT CAST(2 AS BIGINT), target_id FROM mutes WHERE account_id = $1 \
     AND (expires_at_ms = 0 OR expires_at_ms > $2) ORDER BY 2";

fn filter_set_from(rows: Vec<(i64, i64)>) -> FilterSet {
    let mut set = FilterSet::default();
    for (kind, id) in rows {
        match kind {
            0 => set.blocking.push(id),
            1 => set.blocked_by.push(id),
            _ => set.muting.push(id),
        }
    }
    set
}

/// Both counts of the accounts in `{list}` in one statement: (0 = followers | 1 = following, id,
/// count).
/// A page of `(follow id, follower)` after `$2`, oldest follow first, at most `$3` rows.
pub(super) const FOLLOWER_PAGE: &str =
    "SELECT id, account_id FROM follows WHERE target_id = $1 AND id > $2 ORDER BY id ASC LIMIT $3";
pub(super) const FOLLOWER_COUNT: &str = "SELECT COUNT(*) FROM follows WHERE target_id = $1";
/// Which of `{ids}` follow `$1`.
pub(super) const FOLLOWERS_AMONG: &str =
    "SELECT account_id FROM follows WHERE target_id = $1 AND account_id IN ({ids})";
pub(super) const COUNT_FACTS: &str = "SELECT CAST(0 AS BIGINT), target_id, COUNT(*) FROM follows \
     WHERE target_id IN ({list}) GROUP BY target_id \
     UNION ALL SELECT CAST(1 AS BIGINT), account_id, COUNT(*) FROM follows WHERE account_id IN ({list}) \
     GROUP BY account_id";

fn counts_from(ids: &[i64], facts: Vec<(i64, i64, i64)>) -> Vec<Counts> {
    let mut followers: HashMap<i64, i64> = HashMap::new();
    let mut following: HashMap<i64, i64> = HashMap::new();
    for (kind, id, n) in facts {
        if kind == 0 {
            followers.insert(id, n);
        } else {
            following.insert(id, n);
        }
    }
    ids.iter()
        .map(|&id| Counts {
            id,
            followers_count: followers.get(&id).copied().unwrap_or(0),
            following_count: following.get(&id).copied().unwrap_or(0),
        })
        .collect()
}

/// Which of the two follow tables an edge lives in.
#[derive(Debug, Clone, Copy)]
enum Edge {
    Follow,
    Request,
}

/// Graph store on PostgreSQL.
pub struct PgGraphStore {
    pool: PgPool,
    outbox: Arc<dyn OutboxStore>,
}

impl PgGraphStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = agora_store::postgres(url).await?;
        let outbox = Arc::new(agora_events::outbox::pg::PgOutbox::new(pool.clone(), url, "graph"));
        Ok(Self { pool, outbox })
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        sqlx::migrate!("./migrations/postgres")
    }

    fn reader(&self) -> Option<&SqliteReader> {
        None
    }
}

mod pg_impl {
    use super::*;
    // READ COMMITTED alone would let a follow and a block of the same pair both commit; the
    // transaction-scoped advisory lock on the pair serializes them.
    sql_graph_store!(
        PgGraphStore,
        sqlx::Postgres,
        agora_events::outbox::pg::insert,
        "BEGIN",
        Some("SELECT pg_advisory_xact_lock($1)")
    );
}

/// Graph store on SQLite (the embedded default). Writes go through the sqlx pool; the reads of
/// every timeline page (relationships, the filter set, counts) run on the calling thread through
/// [`SqliteReader`] (see `lite.rs`).
pub struct SqliteGraphStore {
    pool: SqlitePool,
    reader: SqliteReader,
    outbox: Arc<dyn OutboxStore>,
}

impl SqliteGraphStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = agora_store::sqlite(url).await?;
        let reader = SqliteReader::new(url, "graph")?;
        let outbox = Arc::new(agora_events::outbox::sqlite::SqliteOutbox::new(pool.clone()));
        Ok(Self { pool, reader, outbox })
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        sqlx::migrate!("./migrations/sqlite")
    }

    fn reader(&self) -> Option<&SqliteReader> {
        Some(&self.reader)
    }
}

mod sqlite_impl {
    use super::*;
    // IMMEDIATE takes the write lock up front: writers are serialized, which also keeps every
    // pair's check-then-write atomic, so no pair lock is needed.
    sql_graph_store!(SqliteGraphStore, sqlx::Sqlite, agora_events::outbox::sqlite::insert, "BEGIN IMMEDIATE", None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_bound_and_order() {
        let mut binds = vec![7];
        let page = Page { max_id: Some(100), since_id: Some(5), min_id: None, limit: 3 };
        let (sql, asc) = paged("SELECT id, x FROM t WHERE a = $1", &mut binds, &page);
        assert_eq!(sql, "SELECT id, x FROM t WHERE a = $1 AND id < $2 AND id > $3 ORDER BY id DESC LIMIT $4");
        assert_eq!(binds, vec![7, 100, 5, 3]);
        assert!(!asc);
        let mut binds = vec![7];
        let page = Page { max_id: None, since_id: None, min_id: Some(9), limit: 2 };
        let (sql, asc) = paged("SELECT id, x FROM t WHERE a = $1", &mut binds, &page);
        assert!(sql.ends_with("AND id > $2 ORDER BY id ASC LIMIT $3"));
        assert!(asc);
    }

    #[test]
    fn pair_keys_ignore_order() {
        assert_eq!(pair_key(3, 9), pair_key(9, 3));
        assert_ne!(pair_key(3, 9), pair_key(3, 10));
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(languages_list(&languages_text(&["en".into(), "de".into()])), vec!["en", "de"]);
        assert!(languages_list("").is_empty());
    }
}
