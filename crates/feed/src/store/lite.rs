//! The SQLite timeline store's page read (every account, public and tag timeline page, and home
//! pages the hot set does not hold), run on the calling thread by [`agora_store::lite`]. Filters
//! are parameters, so the two statements (newest first, oldest first) stay prepared. The
//! fan-out's reads and writes follow (writes as units on the store's `SqliteWriter`).

use std::sync::LazyLock;

use agora_store::lite::id_list;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::sql::{
    DELETE_ENGAGEMENT, ENTRY_COLUMNS, EntryRow, INSERT_ENGAGEMENT, INSERT_ENTRY, INSERT_REBLOG, INSERT_TAG_USE,
    STATUS_COLUMNS, StatusRow, TOUCH, UPSERT_STATUS, join_ids,
};
use super::{Activity, Recorded};
use crate::domain::{Entry, EntryFilter, StatusFacts, TimelineKey, Window};

fn select(order: &str) -> String {
    format!(
        "SELECT {ENTRY_COLUMNS} FROM entries WHERE timeline = ?1 AND status_id < ?2 AND status_id > ?3 \
         AND (?4 = 0 OR has_media = TRUE) \
         AND (?5 = 0 OR in_reply_to_account_id = 0 OR in_reply_to_account_id = author_id) \
         AND (?6 = 0 OR reblog_of_id = 0) \
         AND (?7 = '' OR instr(?7, ' ' || visibility || ' ') > 0) \
         ORDER BY status_id {order} LIMIT ?8"
    )
}

static NEWEST_FIRST: LazyLock<String> = LazyLock::new(|| select("DESC"));
static OLDEST_FIRST: LazyLock<String> = LazyLock::new(|| select("ASC"));

pub fn page(c: &Connection, timeline: &str, w: &Window, f: &EntryFilter) -> rusqlite::Result<Vec<Entry>> {
    let mut st = c.prepare_cached(if w.ascending { &OLDEST_FIRST } else { &NEWEST_FIRST })?;
    let visibilities = if f.visibilities.is_empty() {
        String::new()
    } else {
        f.visibilities.iter().fold(String::from(" "), |s, v| s + v.as_str() + " ")
    };
    let params = (
        timeline,
        w.upper.unwrap_or(i64::MAX),
        w.lower.unwrap_or(i64::MIN),
        f.only_media,
        f.exclude_replies,
        f.exclude_reblogs,
        visibilities,
        w.limit as i64,
    );
    st.query_map(params, |r| {
        Ok(Entry::from(EntryRow {
            status_id: r.get(0)?,
            author_id: r.get(1)?,
            reblog_of_id: r.get(2)?,
            reblog_of_author_id: r.get(3)?,
            in_reply_to_account_id: r.get(4)?,
            visibility: r.get(5)?,
            has_media: r.get(6)?,
        }))
    })?
    .collect()
}

// ---- the fan-out's reads and writes ---------------------------------------------------------
// Each write below is one unit on the store's `SqliteWriter` (one hop to its thread, committed
// with whatever else was queued); the reads run on the calling thread.

fn entry_params<'a>(timeline: &'a str, e: &'a Entry) -> impl rusqlite::Params + 'a {
    (
        timeline,
        e.status_id,
        e.author_id,
        e.reblog_of_id,
        e.reblog_of_author_id,
        e.in_reply_to_account_id,
        e.visibility.as_str(),
        e.has_media,
    )
}

pub fn processed(c: &Connection, consumer: &str, event_id: i64) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT 1 FROM processed_events WHERE consumer = ?1 AND event_id = ?2")?
        .exists(params![consumer, event_id])
}

pub fn mark_processed(c: &Connection, consumer: &str, event_id: i64, now_ms: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO processed_events (consumer, event_id, processed_at_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
    )?
    .execute(params![consumer, event_id, now_ms])?;
    Ok(())
}

/// Records (or replaces) a status's facts; see `TimelineStore::record_status`.
pub fn record_status(c: &Connection, s: &StatusFacts) -> rusqlite::Result<Recorded> {
    let old = c
        .prepare_cached(&format!("SELECT {STATUS_COLUMNS} FROM statuses WHERE id = ?1"))?
        .query_row([s.id], |r| {
            Ok(StatusRow {
                id: r.get(0)?,
                account_id: r.get(1)?,
                created_at_ms: r.get(2)?,
                visibility: r.get(3)?,
                in_reply_to_id: r.get(4)?,
                in_reply_to_account_id: r.get(5)?,
                reblog_of_id: r.get(6)?,
                reblog_of_account_id: r.get(7)?,
                mention_ids: r.get(8)?,
                tags: r.get(9)?,
                has_media: r.get(10)?,
                sensitive: r.get(11)?,
                deleted: r.get(12)?,
            })
        })
        .optional()?;
    let outcome = match old {
        Some(row) if row.deleted => return Ok(Recorded::Deleted),
        Some(row) => Recorded::Known(row.into()),
        None => Recorded::New,
    };
    c.prepare_cached(UPSERT_STATUS)?.execute(params![
        s.id,
        s.account_id,
        s.created_at_ms,
        s.visibility.as_str(),
        s.in_reply_to_id,
        s.in_reply_to_account_id,
        s.reblog_of_id,
        s.reblog_of_account_id,
        join_ids(&s.mention_ids),
        s.tags.join(" "),
        s.has_media,
        s.sensitive
    ])?;
    Ok(outcome)
}

pub fn insert(c: &Connection, timelines: &[String], e: &Entry) -> rusqlite::Result<()> {
    let mut st = c.prepare_cached(INSERT_ENTRY)?;
    for t in timelines {
        st.execute(entry_params(t, e))?;
    }
    Ok(())
}

/// Writes `e` into the homes of `recipients`; returns those whose home now holds it (all of them
/// for an original; for a reblog, those that did not already show the original or a reblog).
pub fn insert_home(c: &Connection, recipients: &[i64], e: &Entry) -> rusqlite::Result<Vec<i64>> {
    if e.reblog_of_id == 0 {
        let mut st = c.prepare_cached(INSERT_ENTRY)?;
        for r in recipients {
            st.execute(entry_params(&TimelineKey::home(*r), e))?;
        }
        return Ok(recipients.to_vec());
    }
    let mut st = c.prepare_cached(INSERT_REBLOG)?;
    let mut holds = c.prepare_cached("SELECT 1 FROM entries WHERE timeline = ?1 AND status_id = ?2")?;
    let mut received = Vec::new();
    for r in recipients {
        let timeline = TimelineKey::home(*r);
        // Not inserted: skipped as a duplicate, or already there (a redelivery).
        if st.execute(entry_params(&timeline, e))? == 1 || holds.exists(params![timeline, e.status_id])? {
            received.push(*r);
        }
    }
    Ok(received)
}

pub fn inactive_among(c: &Connection, ids: &[i64], cutoff_ms: i64) -> rusqlite::Result<Vec<i64>> {
    c.prepare_cached(
        "SELECT account_id FROM activity WHERE last_active_ms < ?1 AND account_id IN (SELECT value FROM json_each(?2))",
    )?
    .query_map(params![cutoff_ms, id_list(ids)], |r| r.get(0))?
    .collect()
}

pub fn mark_needs_rebuild(c: &Connection, ids: &[i64]) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE activity SET needs_rebuild = TRUE WHERE account_id IN (SELECT value FROM json_each(?1))")?
        .execute([id_list(ids)])?;
    Ok(())
}

pub fn activity(c: &Connection, account_id: i64) -> rusqlite::Result<Option<Activity>> {
    c.prepare_cached("SELECT last_active_ms, needs_rebuild FROM activity WHERE account_id = ?1")?
        .query_row([account_id], |r| Ok(Activity { last_active_ms: r.get(0)?, needs_rebuild: r.get(1)? }))
        .optional()
}

pub fn has_entries(c: &Connection, timeline: &str) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT 1 FROM entries WHERE timeline = ?1 LIMIT 1")?.exists([timeline])
}

pub fn touch(c: &Connection, account_id: i64, now_ms: i64) -> rusqlite::Result<()> {
    c.prepare_cached(TOUCH)?.execute(params![account_id, now_ms])?;
    Ok(())
}

pub fn record_tag_uses(
    c: &Connection,
    status_id: i64,
    account_id: i64,
    tags: &[String],
    at_ms: i64,
) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM tag_uses WHERE status_id = ?1")?.execute([status_id])?;
    let mut st = c.prepare_cached(INSERT_TAG_USE)?;
    for t in tags {
        st.execute(params![t, status_id, account_id, at_ms])?;
    }
    Ok(())
}

pub fn set_engagement(
    c: &Connection,
    status_id: i64,
    account_id: i64,
    kind: &str,
    at_ms: i64,
    present: bool,
) -> rusqlite::Result<()> {
    if present {
        c.prepare_cached(INSERT_ENGAGEMENT)?.execute(params![status_id, account_id, kind, at_ms])?;
    } else {
        c.prepare_cached(DELETE_ENGAGEMENT)?.execute(params![status_id, account_id, kind])?;
    }
    Ok(())
}
