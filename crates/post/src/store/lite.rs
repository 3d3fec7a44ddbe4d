//! The SQLite post store's hot reads, run on the calling thread by [`agora_store::lite`]: each is
//! one prepared statement (a status comes with its mentions and tags aggregated in the same row),
//! where the sqlx path takes three and a thread hop for each. The hottest write, a new status,
//! is one unit on the store's [`agora_store::lite::SqliteWriter`].

use std::collections::HashMap;
use std::sync::LazyLock;

use agora_events::Envelope;
use agora_store::lite::id_list;
use rusqlite::{Connection, OptionalExtension as _, Row, params};

use super::sql::{
    BY_IDEMPOTENCY_KEY, COUNT_REPLY, INSERT_MENTION, INSERT_STATUS, INSERT_TAG, RELEASE_EXPIRED_KEY, STATUS_COLUMNS,
    StatusRow,
};
use super::{IDEMPOTENCY_WINDOW_MS, NewStatus, PageRead};
use crate::domain::{MentionRecord, StatusRecord};

/// A status row with its mentions (`id:username`, by username) and tags (by name) aggregated.
fn select(filter: &str) -> String {
    format!(
        "SELECT {STATUS_COLUMNS}, \
           (SELECT string_agg(m.account_id || ':' || m.username, ' ' ORDER BY m.username) \
              FROM status_mentions m WHERE m.status_id = s.id), \
           (SELECT string_agg(t.tag, ' ' ORDER BY t.tag) FROM status_tags t WHERE t.status_id = s.id) \
         FROM statuses s WHERE {filter}"
    )
}

static BY_IDS: LazyLock<String> = LazyLock::new(|| select("s.id IN (SELECT value FROM json_each(?1))"));
static BY_ACCOUNT: LazyLock<String> =
    LazyLock::new(|| select("s.account_id = ?1 AND s.deleted = FALSE AND s.id < ?2 ORDER BY s.id DESC LIMIT ?3"));
static REPLIES: LazyLock<String> =
    LazyLock::new(|| select("s.in_reply_to_id IN (SELECT value FROM json_each(?1)) ORDER BY s.id"));

fn record(r: &Row<'_>) -> rusqlite::Result<StatusRecord> {
    let mentions: Option<String> = r.get(18)?;
    let tags: Option<String> = r.get(19)?;
    let mut s = StatusRecord::from(StatusRow {
        id: r.get(0)?,
        account_id: r.get(1)?,
        text: r.get(2)?,
        content: r.get(3)?,
        spoiler_text: r.get(4)?,
        sensitive: r.get(5)?,
        visibility: r.get(6)?,
        language: r.get(7)?,
        in_reply_to_id: r.get(8)?,
        in_reply_to_account_id: r.get(9)?,
        reblog_of_id: r.get(10)?,
        replies_count: r.get(11)?,
        reblogs_count: r.get(12)?,
        favourites_count: r.get(13)?,
        edited_at_ms: r.get(14)?,
        deleted: r.get(15)?,
        created_at_ms: r.get(16)?,
        application_name: r.get(17)?,
    });
    s.mentions = mentions
        .as_deref()
        .unwrap_or_default()
        .split_ascii_whitespace()
        .filter_map(|pair| {
            let (id, username) = pair.split_once(':')?;
            Some(MentionRecord { account_id: id.parse().ok()?, username: username.to_owned() })
        })
        .collect();
    s.tags = tags.as_deref().unwrap_or_default().split_ascii_whitespace().map(str::to_owned).collect();
    Ok(s)
}

/// Statuses with their mentions and tags, in the order of `ids`.
pub fn statuses(c: &Connection, ids: &[i64]) -> rusqlite::Result<Vec<StatusRecord>> {
    let mut st = c.prepare_cached(&BY_IDS)?;
    let mut by_id: HashMap<i64, StatusRecord> =
        st.query_map([id_list(ids)], record)?.map(|r| r.map(|s| (s.id, s))).collect::<Result<_, _>>()?;
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// A page as [`page`] reads it: statuses, originals, the viewer's marks as (kind, status id).
pub type PageRows = (Vec<StatusRecord>, Vec<StatusRecord>, Vec<(i64, i64)>);

/// What rendering `ids` for `viewer` needs (see `PostStore::page_for`), in one read on one
/// connection: the statuses, the originals of their reblogs, and the viewer's marks as
/// `viewer_marks` rows (none without a viewer).
pub fn page(c: &Connection, viewer: Option<i64>, ids: &[i64]) -> rusqlite::Result<PageRows> {
    let records = statuses(c, ids)?;
    let original_ids = PageRead::original_ids(&records);
    let originals = if original_ids.is_empty() { Vec::new() } else { statuses(c, &original_ids)? };
    let marks = match viewer {
        Some(v) if !records.is_empty() => viewer_marks(c, v, &PageRead::mark_targets(&records))?,
        _ => Vec::new(),
    };
    Ok((records, originals, marks))
}

/// An account's statuses below `max_id`, newest first.
pub fn account_statuses(
    c: &Connection,
    account_id: i64,
    max_id: i64,
    limit: i64,
) -> rusqlite::Result<Vec<StatusRecord>> {
    let mut st = c.prepare_cached(&BY_ACCOUNT)?;
    st.query_map((account_id, max_id, limit), record)?.collect()
}

/// Direct replies to any of `parent_ids`, oldest first.
pub fn replies(c: &Connection, parent_ids: &[i64]) -> rusqlite::Result<Vec<StatusRecord>> {
    let mut st = c.prepare_cached(&REPLIES)?;
    st.query_map([id_list(parent_ids)], record)?.collect()
}

/// (account, statuses, newest status time) for those of `account_ids` with any.
pub fn account_stats(c: &Connection, account_ids: &[i64]) -> rusqlite::Result<Vec<(i64, i64, Option<i64>)>> {
    let mut st = c.prepare_cached(
        "SELECT account_id, statuses_count, last_status_at_ms FROM account_stats \
         WHERE account_id IN (SELECT value FROM json_each(?1))",
    )?;
    st.query_map([id_list(account_ids)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect()
}

/// The viewer's reblogs (0), favourites (1), bookmarks (2) and pins (3) among `ids`, as
/// (kind, status id), in one statement.
pub fn viewer_marks(c: &Connection, viewer: i64, ids: &[i64]) -> rusqlite::Result<Vec<(i64, i64)>> {
    let mut st = c.prepare_cached(
        "WITH ids(id) AS (SELECT value FROM json_each(?2)) \
         SELECT 0, reblog_of_id FROM statuses WHERE account_id = ?1 AND reblog_of_id IN (SELECT id FROM ids) \
         UNION ALL SELECT 1, status_id FROM favourites WHERE account_id = ?1 AND status_id IN (SELECT id FROM ids) \
         UNION ALL SELECT 2, status_id FROM bookmarks WHERE account_id = ?1 AND status_id IN (SELECT id FROM ids) \
         UNION ALL SELECT 3, status_id FROM pins WHERE account_id = ?1 AND status_id IN (SELECT id FROM ids)",
    )?;
    st.query_map((viewer, id_list(ids)), |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
}

/// `(viewer, kind)` rows for the viewers among `viewers` with a mark on `status_id` (kinds as in
/// [`viewer_marks`]).
pub fn viewers_marks(c: &Connection, status_id: i64, viewers: &[i64]) -> rusqlite::Result<Vec<(i64, i64)>> {
    let mut st = c.prepare_cached(
        "WITH v(id) AS (SELECT value FROM json_each(?2)) \
         SELECT account_id, 0 FROM statuses WHERE reblog_of_id = ?1 AND account_id IN (SELECT id FROM v) \
         UNION ALL SELECT account_id, 1 FROM favourites WHERE status_id = ?1 AND account_id IN (SELECT id FROM v) \
         UNION ALL SELECT account_id, 2 FROM bookmarks WHERE status_id = ?1 AND account_id IN (SELECT id FROM v) \
         UNION ALL SELECT account_id, 3 FROM pins WHERE status_id = ?1 AND account_id IN (SELECT id FROM v)",
    )?;
    st.query_map((status_id, id_list(viewers)), |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
}

/// Writes a new status, its mentions, its tags, the parent's reply count and its event as one
/// unit on the writer's thread (see `PostStore::create_status`). `None` when the row was already
/// there (the same idempotency key within the window, or an id collision): nothing is written
/// then but the release of an expired key, which the insert did not need.
pub(super) fn create_status(c: &Connection, s: &NewStatus, env: &Envelope) -> rusqlite::Result<Option<()>> {
    if let Some(key) = &s.idempotency_key {
        c.prepare_cached(RELEASE_EXPIRED_KEY)?.execute(params![
            s.account_id,
            key,
            s.created_at_ms - IDEMPOTENCY_WINDOW_MS
        ])?;
    }
    let inserted = c.prepare_cached(INSERT_STATUS)?.execute(params![
        s.id,
        s.account_id,
        s.text,
        s.content,
        s.spoiler_text,
        s.sensitive,
        s.visibility.as_str(),
        s.language,
        s.in_reply_to_id,
        s.in_reply_to_account_id,
        s.reblog_of_id,
        s.created_at_ms,
        s.application_name,
        s.idempotency_key,
    ])?;
    if inserted == 0 {
        return Ok(None);
    }
    let mut mention = c.prepare_cached(INSERT_MENTION)?;
    for m in &s.mentions {
        mention.execute(params![s.id, m.account_id, m.username])?;
    }
    let mut tag = c.prepare_cached(INSERT_TAG)?;
    for t in &s.tags {
        tag.execute(params![s.id, t])?;
    }
    if let Some(parent) = s.in_reply_to_id {
        c.prepare_cached(COUNT_REPLY)?.execute([parent])?;
    }
    agora_events::outbox::sqlite::insert_lite(c, &agora_events::topic_for(&env.r#type), env)?;
    Ok(Some(()))
}

/// The id of the status `account_id` already wrote with idempotency key `key`.
pub(super) fn by_idempotency_key(c: &Connection, account_id: i64, key: Option<&str>) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached(BY_IDEMPOTENCY_KEY)?.query_row(params![account_id, key], |r| r.get(0)).optional()
}
