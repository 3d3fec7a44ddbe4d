//! The SQLite store's units of work in rusqlite, run on the store's writer thread or inline on
//! its reader: the same statement texts as the sqlx path (`$N` parameters bind by position in
//! both).

use rusqlite::{Connection, params};

use super::sql::{
    ABOUT_STATUS_GONE, ADD, BETWEEN_GONE, FOLLOW_REQUEST_GONE, INTERACTED, INTERACTIONS_GONE, PROCESSED, REMOVE,
    SUBSCRIBE, SUPPRESS, UNINTERACTED, UNSUBSCRIBE, UNSUPPRESS,
};
use crate::domain::{Change, Notification};

fn add(c: &Connection, n: &Notification, now_ms: i64) -> rusqlite::Result<usize> {
    c.prepare_cached(ADD)?.execute(params![
        n.id,
        n.recipient_id,
        n.kind.as_str(),
        n.account_id,
        n.status_id,
        n.created_at_ms,
        now_ms
    ])
}

/// One event's changes with its handled-event record; false, changing nothing, when the event
/// was handled before.
pub fn apply(c: &Connection, event_id: i64, now_ms: i64, changes: &[Change]) -> rusqlite::Result<bool> {
    if c.prepare_cached(PROCESSED)?.execute(params![event_id, now_ms])? == 0 {
        return Ok(false);
    }
    for change in changes {
        match change {
            Change::Add(n) => {
                add(c, n, now_ms)?;
            }
            Change::Remove { recipient_id, kind, account_id, status_id } => {
                c.prepare_cached(REMOVE)?.execute(params![
                    kind.as_str(),
                    account_id,
                    status_id,
                    recipient_id.unwrap_or(0)
                ])?;
            }
            Change::Renew(n) => {
                c.prepare_cached(REMOVE)?.execute(params![
                    n.kind.as_str(),
                    n.account_id,
                    n.status_id,
                    n.recipient_id
                ])?;
                add(c, n, now_ms)?;
            }
            Change::RemoveAboutStatus { status_id } => {
                c.prepare_cached(ABOUT_STATUS_GONE)?.execute(params![status_id])?;
                c.prepare_cached(INTERACTIONS_GONE)?.execute(params![status_id])?;
            }
            Change::Followed(n) => {
                let requested =
                    c.prepare_cached(FOLLOW_REQUEST_GONE)?.execute(params![n.recipient_id, n.account_id])?;
                if requested == 0 {
                    add(c, n, now_ms)?;
                }
            }
            Change::Suppress { recipient_id, account_id, reason, expires_at_ms } => {
                c.prepare_cached(SUPPRESS)?.execute(params![
                    recipient_id,
                    account_id,
                    reason.as_str(),
                    expires_at_ms
                ])?;
                c.prepare_cached(BETWEEN_GONE)?.execute(params![account_id, recipient_id])?;
            }
            Change::Unsuppress { recipient_id, account_id, reason } => {
                c.prepare_cached(UNSUPPRESS)?.execute(params![recipient_id, account_id, reason.as_str()])?;
            }
            Change::Subscribe { target_id, follower_id } => {
                c.prepare_cached(SUBSCRIBE)?.execute(params![target_id, follower_id])?;
            }
            Change::Unsubscribe { target_id, follower_id } => {
                c.prepare_cached(UNSUBSCRIBE)?.execute(params![target_id, follower_id])?;
            }
            Change::Interacted { status_id, account_id, how } => {
                c.prepare_cached(INTERACTED)?.execute(params![status_id, account_id, how.as_str()])?;
            }
            Change::Uninteracted { status_id, account_id, how } => {
                c.prepare_cached(UNINTERACTED)?.execute(params![status_id, account_id, how.as_str()])?;
            }
        }
    }
    Ok(true)
}

/// The ids one single-parameter query answers.
pub fn ids(c: &Connection, sql: &str, arg: i64) -> rusqlite::Result<Vec<i64>> {
    c.prepare_cached(sql)?.query_map(params![arg], |r| r.get(0))?.collect()
}
