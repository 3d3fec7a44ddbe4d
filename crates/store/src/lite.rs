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
//!
//! A [`SqliteWriter`] does the same for the hot writes: one OS thread owns a read-write
//! connection, and a unit of work (one closure, however many statements) costs one hop to it and
//! one back, not two per statement. Units queued while the thread is busy are committed together
//! (group commit), each inside a savepoint of its own, so one unit's failure undoes only that
//! unit; every caller hears back only after the commit that holds its unit.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use agora_events::outbox::OutboxError;
use agora_events::outbox::sqlite as outbox;
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};
use sqlx::sqlite::SqliteConnectOptions;

/// Idle connections kept; more are opened when more threads read at once, then closed.
const MAX_IDLE: usize = 8;
/// Prepared statements kept per connection (the hot reads are a few dozen texts).
const STATEMENT_CACHE: usize = 64;
/// Page cache per connection, in KiB (SQLite's `cache_size` when negative). In WAL mode a
/// connection drops its whole cache whenever another one has committed since its last read, so
/// under writes a large per-connection cache holds memory and little else; the OS page cache
/// serves the re-reads. Readers and the sqlx pools keep 512 KiB, the writer (whose cache stays
/// valid across its own commits) 4 MiB.
pub(crate) const READER_CACHE_SIZE: &str = "-512";
pub(crate) const POOL_CACHE_SIZE: &str = "-512";
const WRITER_CACHE_SIZE: &str = "-4096";

/// Read-only connections to one SQLite file, used on the calling thread. Clones share the idle
/// connections.
#[derive(Clone)]
pub struct SqliteReader {
    path: PathBuf,
    store: &'static str,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl SqliteReader {
    /// Reads on the file of `url` (the same `sqlite://` URL the store's pool was opened with,
    /// after that pool created the file and switched it to WAL). `store` names it in metrics.
    pub fn new(url: &str, store: &'static str) -> Result<Self, sqlx::Error> {
        Ok(Self { path: path_of(url)?, store, idle: Arc::new(Mutex::new(Vec::new())) })
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "query_only", true)?;
        conn.pragma_update(None, "cache_size", READER_CACHE_SIZE)?;
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
            None => self.open().map_err(|e| failed(self.store, "read", e))?,
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
        out.map_err(|e| failed(self.store, "read", e))
    }
}

fn failed(store: &'static str, side: &'static str, e: rusqlite::Error) -> sqlx::Error {
    if matches!(e, rusqlite::Error::QueryReturnedNoRows) {
        return sqlx::Error::RowNotFound;
    }
    if side == "read" {
        metrics::counter!("agora_store_sqlite_read_errors_total", "store" => store).increment(1);
    } else {
        metrics::counter!("agora_store_sqlite_write_errors_total", "store" => store).increment(1);
    }
    sqlx::Error::Protocol(format!("sqlite {side} on the {store} store: {e}"))
}

fn path_of(url: &str) -> Result<PathBuf, sqlx::Error> {
    Ok(SqliteConnectOptions::from_str(url)?.get_filename().to_path_buf())
}

/// How long a connection of ours waits for another writer (a sqlx connection on the same file)
/// before SQLITE_BUSY: short sleeps first, so a collision costs a fraction of a millisecond
/// rather than SQLite's default back-off of 1, 2, 5, 10 … ms; about 5 s in all.
fn busy(attempt: i32) -> bool {
    match attempt {
        0..50 => std::thread::sleep(Duration::from_micros(100)),
        50..5050 => std::thread::sleep(Duration::from_millis(1)),
        _ => return false,
    }
    true
}

/// Most units committed together.
const GROUP: usize = 64;

/// What a queued unit does once its group's commit is known: sends the caller its answer.
type Finish = Box<dyn FnOnce(&rusqlite::Result<()>) + Send>;
/// A queued unit: runs on the writer's connection inside the group's transaction.
type Job = Box<dyn FnOnce(&Connection) -> Finish + Send>;

/// One thread owning a read-write connection to one SQLite file; see the module docs. Clones
/// share the thread.
#[derive(Clone)]
pub struct SqliteWriter {
    jobs: mpsc::Sender<Job>,
    store: &'static str,
}

impl SqliteWriter {
    /// Writes on the file of `url` (the store's `sqlite://` URL, after its pool created the file,
    /// switched it to WAL and migrated it). `store` names it in metrics and the thread's name.
    pub fn new(url: &str, store: &'static str) -> Result<Self, sqlx::Error> {
        let path = path_of(url)?;
        let conn = Self::open(&path).map_err(|e| failed(store, "write", e))?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("sqlite-w-{store}"))
            .spawn(move || Self::run(conn, queue, store))
            .map_err(sqlx::Error::Io)?;
        Ok(Self { jobs, store })
    }

    fn open(path: &Path) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_handler(Some(busy))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "cache_size", WRITER_CACHE_SIZE)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    /// The thread: takes what is queued (up to [`GROUP`] units), runs it in one transaction,
    /// commits, answers. Ends when the store (every sender) is gone.
    fn run(conn: Connection, queue: mpsc::Receiver<Job>, store: &'static str) {
        let mut finishes: Vec<Finish> = Vec::with_capacity(GROUP);
        while let Ok(first) = queue.recv() {
            let started = Instant::now();
            if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                // No transaction to run it in: the unit is dropped unrun and its caller hears so.
                tracing::warn!(store, error = %e, "sqlite writer could not begin");
                drop(first);
                continue;
            }
            let mut job = Some(first);
            while let Some(j) = job.take() {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| j(&conn))) {
                    Ok(finish) => finishes.push(finish),
                    // The unit's savepoint is still open: undo what it wrote; its caller hears
                    // that it was dropped.
                    Err(_) => {
                        let _ = conn.execute_batch("ROLLBACK TO unit; RELEASE unit");
                    }
                }
                if finishes.len() < GROUP {
                    job = queue.try_recv().ok();
                }
            }
            let committed = conn.execute_batch("COMMIT").inspect_err(|_| {
                let _ = conn.execute_batch("ROLLBACK");
            });
            metrics::histogram!("agora_store_sqlite_write_group_size", "store" => store).record(finishes.len() as f64);
            metrics::histogram!("agora_store_sqlite_write_group_seconds", "store" => store)
                .record(started.elapsed().as_secs_f64());
            for f in finishes.drain(..) {
                f(&committed);
            }
        }
    }

    /// Runs `f` as one unit of work on the writer's thread and waits for its commit. `f`'s
    /// statements commit together or not at all: if `f` fails, everything it wrote is undone and
    /// its error comes back. The unit runs to its end even if the caller stops waiting, so a
    /// cancelled request never leaves half of it written.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, sqlx::Error> {
        let started = Instant::now();
        let (answer, answered) = tokio::sync::oneshot::channel::<rusqlite::Result<T>>();
        let job: Job = Box::new(move |conn: &Connection| -> Finish {
            let out = match conn.execute_batch("SAVEPOINT unit") {
                Ok(()) => match f(conn) {
                    Ok(v) => conn.execute_batch("RELEASE unit").map(|()| v),
                    Err(e) => {
                        let _ = conn.execute_batch("ROLLBACK TO unit; RELEASE unit");
                        Err(e)
                    }
                },
                Err(e) => Err(e),
            };
            Box::new(move |committed: &rusqlite::Result<()>| {
                let out = match committed {
                    Ok(()) => out,
                    Err(e) => Err(clone_error(e)),
                };
                let _ = answer.send(out);
            })
        });
        let store = self.store;
        let dropped = || sqlx::Error::Protocol(format!("the {store} store's writer dropped a unit of work"));
        self.jobs.send(job).map_err(|_| dropped())?;
        let out = answered.await.map_err(|_| dropped())?;
        metrics::histogram!("agora_store_sqlite_write_seconds", "store" => store)
            .record(started.elapsed().as_secs_f64());
        out.map_err(|e| failed(store, "write", e))
    }
}

/// rusqlite errors are not Clone; a group's commit failure goes to every unit in it.
fn clone_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => rusqlite::Error::SqliteFailure(*code, msg.clone()),
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

/// The outbox table of a store whose writes go through a [`SqliteWriter`]: the relay's deletes
/// are units on that same writer (a second writer on the file would make each wait for the
/// other), its reads run inline on the store's reader.
pub struct LiteOutbox {
    reader: SqliteReader,
    writer: SqliteWriter,
}

impl LiteOutbox {
    /// Over the store's own reader and writer (clones share their connections).
    pub fn new(reader: SqliteReader, writer: SqliteWriter) -> Self {
        Self { reader, writer }
    }
}

#[async_trait::async_trait]
impl agora_events::outbox::OutboxStore for LiteOutbox {
    async fn pending(&self, limit: usize) -> Result<Vec<agora_events::outbox::PendingEvent>, OutboxError> {
        let rows = self.reader.read(|c| {
            c.prepare_cached(outbox::PENDING)?
                .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(agora_events::outbox::decode_rows(rows))
    }

    async fn remove(&self, ids: &[i64]) -> Result<(), OutboxError> {
        let list = id_list(ids);
        self.writer.write(move |c| c.prepare_cached(outbox::REMOVE)?.execute([list])).await?;
        Ok(())
    }

    async fn backlog(&self) -> Result<i64, OutboxError> {
        Ok(self.reader.read(|c| c.query_row(outbox::BACKLOG, [], |r| r.get(0)))?)
    }
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
