//! The SQLite timeline store's page read (every account, public and tag timeline page, and home
//! pages the hot set does not hold), run on the calling thread by [`agora_store::lite`]. Filters
//! are parameters, so the two statements (newest first, oldest first) stay prepared.

use std::sync::LazyLock;

use rusqlite::Connection;

use super::sql::{ENTRY_COLUMNS, EntryRow};
use crate::domain::{Entry, EntryFilter, Window};

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
