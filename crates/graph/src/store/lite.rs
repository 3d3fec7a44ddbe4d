//! The SQLite graph store's reads on every timeline page (relationship facts, the filter set,
//! counts), run on the calling thread by [`agora_store::lite`]. The statements are the ones the
//! sqlx path runs, with the id list passed as one JSON parameter so each stays prepared.

use std::sync::LazyLock;

use agora_store::lite::id_list;
use rusqlite::Connection;

use super::sql::{
    COUNT_FACTS, FILTER_FACTS, FOLLOWER_COUNT, FOLLOWER_PAGE, FOLLOWERS_AMONG, RELATIONSHIP_FACTS, RelationshipFact,
};

const IDS: &str = "SELECT value FROM json_each(?3)";

static RELATIONSHIPS: LazyLock<String> =
    LazyLock::new(|| RELATIONSHIP_FACTS.replace("{ids}", IDS).replace("$1", "?1").replace("$2", "?2"));
static FILTER: LazyLock<String> = LazyLock::new(|| FILTER_FACTS.replace("$1", "?1").replace("$2", "?2"));
static AMONG: LazyLock<String> = LazyLock::new(|| FOLLOWERS_AMONG.replace("{ids}", "SELECT value FROM json_each($2)"));
static COUNTS: LazyLock<String> = LazyLock::new(|| COUNT_FACTS.replace("{list}", "SELECT value FROM json_each(?1)"));

pub fn relationship_facts(
    c: &Connection,
    me: i64,
    now_ms: i64,
    ids: &[i64],
) -> rusqlite::Result<Vec<RelationshipFact>> {
    let mut st = c.prepare_cached(&RELATIONSHIPS)?;
    st.query_map((me, now_ms, id_list(ids)), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?.collect()
}

pub fn filter_facts(c: &Connection, me: i64, now_ms: i64) -> rusqlite::Result<Vec<(i64, i64)>> {
    let mut st = c.prepare_cached(&FILTER)?;
    st.query_map((me, now_ms), |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
}

pub fn count_facts(c: &Connection, ids: &[i64]) -> rusqlite::Result<Vec<(i64, i64, i64)>> {
    let mut st = c.prepare_cached(&COUNTS)?;
    st.query_map([id_list(ids)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect()
}

/// A page of `(follow id, follower id)` after `after_id`, with one row more than `limit` when
/// another page follows, and the follower count: the fan-out's read, one snapshot.
pub fn follower_page(
    c: &Connection,
    account_id: i64,
    after_id: i64,
    limit: i64,
) -> rusqlite::Result<(Vec<(i64, i64)>, i64)> {
    c.execute_batch("BEGIN")?;
    let page = (|| {
        let rows = c
            .prepare_cached(FOLLOWER_PAGE)?
            .query_map((account_id, after_id, limit + 1), |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let total = c.prepare_cached(FOLLOWER_COUNT)?.query_row([account_id], |r| r.get(0))?;
        Ok((rows, total))
    })();
    c.execute_batch("COMMIT")?;
    page
}

/// Which of `candidates` follow `account_id`.
pub fn followers_among(c: &Connection, account_id: i64, candidates: &[i64]) -> rusqlite::Result<Vec<i64>> {
    c.prepare_cached(&AMONG)?.query_map((account_id, id_list(candidates)), |r| r.get(0))?.collect()
}
