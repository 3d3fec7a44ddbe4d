//! Reads on SQLite with no thread hop.
//!
//! sqlx runs every SQLite connection on an OS thread of its own and sends each statement there
//! and its rows back over channels: two context switches per statement, which under load cost
//! more than the statements themselves. A [`SqliteReader`] keeps read-only connections to the same
//! file and runs a whole read (one closure, one or several statements) on the calling thread.
//!
//! That is safe to do on an async worker because, in WAL mode, a reader never waits for a writer
//! or another reader: the closure is CPU work on pages in memory, like rendering a response. A
//! connection is held only while its closure runs, and a closure cannot yield, so at most one
//! connection per thread is ever in use and taking one never waits. Writes stay on the sqlx pool
//! (one writer at a time, with its transactions made cancellation-safe by [`crate::begin`]), and
//! a write that has returned is visible to the next read here.

use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};
use sqlx::sqlite::SqliteConnectOptions;

/// Idle connections kept; more are opened when more threads read at once, then closed.
const MAX_IDLE: usize = 8;
/// Prepared statements kept per connection (the hot reads are a few dozen texts).
const STATEMENT_CACHE: usize = 64;

/// Read-only connections to one SQLite file, used on the calling thread.
pub struct SqliteReader {
    path: PathBuf,
    store: &'static str,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteReader {
    /// Reads on the file of `url` (the same `sqlite://` URL the store's pool was opened with,
    /// after that pool created the file and switched it to WAL). `store` names it in metrics.
    pub fn new(url: &str, store: &'static str) -> Result<Self, sqlx::Error> {
        let opts = SqliteConnectOptions::from_str(url)?;
        let path = opts.get_filename().to_path_buf();
        Ok(Self { path, store, idle: Mutex::new(Vec::new()) })
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "query_only", true)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    /// Runs `f` on a read-only connection, on this thread. Several statements in `f` see one
    /// snapshot only inside a transaction `f` opens itself.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, sqlx::Error> {
        let started = Instant::now();
        let taken = self.idle.lock().pop();
        let conn = match taken {
            Some(c) => c,
            None => self.open().map_err(|e| failed(self.store, e))?,
        };
        let out = f(&conn);
        {
            let mut idle = self.idle.lock();
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        metrics::histogram!("agora_store_sqlite_read_seconds", "store" => self.store)
            .record(started.elapsed().as_secs_f64());
        out.map_err(|e| failed(self.store, e))
    }
}

fn failed(store: &'static str, e: rusqlite::Error) -> sqlx::Error {
    if matches!(e, rusqlite::Error::QueryReturnedNoRows) {
        return sqlx::Error::RowNotFound;
    }
    metrics::counter!("agora_store_sqlite_read_errors_total", "store" => store).increment(1);
    sqlx::Error::Protocol(format!("sqlite read on the {store} store: {e}"))
}

/// Ids as one JSON array parameter, for `IN (SELECT value FROM json_each(?N))`: one statement
/// text whatever the number of ids, so it stays prepared.
pub fn id_list(ids: &[i64]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(2 + ids.len() * 20);
    s.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{id}");
    }
    s.push(']');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists_are_json_arrays() {
        assert_eq!(id_list(&[]), "[]");
        assert_eq!(id_list(&[1, -2, 30]), "[1,-2,30]");
    }
}
