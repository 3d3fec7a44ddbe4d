//! The post service's hot reads on PostgreSQL, one round trip each: ids travel as one array
//! (`= ANY($1)`), so each text is prepared once whatever the page's length, and a page of
//! statuses comes back with its mentions and tags in the same statement.

use std::sync::LazyLock;

use sqlx::PgPool;

use super::StoreResult;
use super::sql::{STATUS_COLUMNS, StatusRow};
use crate::domain::{MentionRecord, StatusRecord};

#[derive(sqlx::FromRow)]
struct PageRow {
    #[sqlx(flatten)]
    status: StatusRow,
    mention_ids: Vec<i64>,
    mention_names: Vec<String>,
    tags: Vec<String>,
}

/// Statuses with their mentions (by username) and tags (by name), in the order of `ids`.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {STATUS_COLUMNS}, \
         ARRAY(SELECT m.account_id FROM status_mentions m WHERE m.status_id = statuses.id ORDER BY m.username) \
           AS mention_ids, \
         ARRAY(SELECT m.username FROM status_mentions m WHERE m.status_id = statuses.id ORDER BY m.username) \
           AS mention_names, \
         ARRAY(SELECT t.tag FROM status_tags t WHERE t.status_id = statuses.id ORDER BY t.tag) AS tags \
         FROM statuses WHERE id = ANY($1)"
    )
});

pub(super) async fn statuses(pool: &PgPool, ids: &[i64]) -> StoreResult<Vec<StatusRecord>> {
    let rows: Vec<PageRow> = sqlx::query_as(sqlx::AssertSqlSafe(PAGE.as_str())).bind(ids).fetch_all(pool).await?;
    let mut by_id: std::collections::HashMap<i64, StatusRecord> = rows
        .into_iter()
        .map(|r| {
            let mut s = StatusRecord::from(r.status);
            s.mentions = r
                .mention_ids
                .into_iter()
                .zip(r.mention_names)
                .map(|(account_id, username)| MentionRecord { account_id, username })
                .collect();
            s.tags = r.tags;
            (s.id, s)
        })
        .collect();
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// (kind, status id) rows for the viewer's reblogs, favourites, bookmarks and pins among `ids`.
pub(super) async fn viewer_marks(pool: &PgPool, viewer: i64, ids: &[i64]) -> StoreResult<Vec<(i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT CAST(0 AS BIGINT), reblog_of_id FROM statuses WHERE account_id = $1 AND reblog_of_id = ANY($2) \
         UNION ALL SELECT CAST(1 AS BIGINT), status_id FROM favourites WHERE account_id = $1 AND status_id = ANY($2) \
         UNION ALL SELECT CAST(2 AS BIGINT), status_id FROM bookmarks WHERE account_id = $1 AND status_id = ANY($2) \
         UNION ALL SELECT CAST(3 AS BIGINT), status_id FROM pins WHERE account_id = $1 AND status_id = ANY($2)",
    )
    .bind(viewer)
    .bind(ids)
    .fetch_all(pool)
    .await?)
}

/// `(viewer, kind)` rows for the viewers among `viewers` who reblogged, favourited, bookmarked or
/// pinned `status_id` (kinds as in [`viewer_marks`]).
pub(super) async fn viewers_marks(pool: &PgPool, status_id: i64, viewers: &[i64]) -> StoreResult<Vec<(i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT account_id, CAST(0 AS BIGINT) FROM statuses WHERE reblog_of_id = $1 AND account_id = ANY($2) \
         UNION ALL SELECT account_id, CAST(1 AS BIGINT) FROM favourites WHERE status_id = $1 AND account_id = ANY($2) \
         UNION ALL SELECT account_id, CAST(2 AS BIGINT) FROM bookmarks WHERE status_id = $1 AND account_id = ANY($2) \
         UNION ALL SELECT account_id, CAST(3 AS BIGINT) FROM pins WHERE status_id = $1 AND account_id = ANY($2)",
    )
    .bind(status_id)
    .bind(viewers)
    .fetch_all(pool)
    .await?)
}

/// (account, statuses, newest status time) rows for the accounts among `ids` that have posted.
pub(super) async fn account_stats(pool: &PgPool, ids: &[i64]) -> StoreResult<Vec<(i64, i64, Option<i64>)>> {
    Ok(sqlx::query_as(
        "SELECT account_id, statuses_count, last_status_at_ms FROM account_stats WHERE account_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?)
}
