//! agora-store: how a service opens its SQL store and runs units of work on it, written once so
//! that every store (and every new service) gets the same, safe behaviour:
//!
//! - [`postgres`] and [`sqlite`] open pools with the settings every store uses (bounded sizes
//!   and acquire timeouts; SQLite in WAL mode with a busy timeout, its directory created);
//! - [`begin`] and [`commit`] run a transaction's start and end on a task of their own, so a
//!   caller that is cancelled in the middle (a client that hangs up, a timeout) can never hand
//!   the pool a connection that is still inside a transaction, nor leave a commit half-sent;
//! - [`lite::SqliteReader`] runs a SQLite read (a page, several statements) on the calling thread
//!   over read-only connections, with none of sqlx's per-statement thread hops.
//!
//! It knows no service's tables and never decides what a unit of work contains.

pub mod lite;
#[cfg(feature = "scylla")]
pub mod scylla;

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Database, PgPool, Pool, SqlitePool, Transaction};

/// A PostgreSQL pool: at most 20 connections, 5 s to get one.
pub async fn postgres(url: &str) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new().max_connections(20).acquire_timeout(Duration::from_secs(5)).connect(url).await
}

/// A SQLite pool on the file of `url` (created, with its directory, if missing): WAL journal,
/// `synchronous = NORMAL` (a commit survives a crash of the process; only a power loss can take
/// the last ones), foreign keys on, a 5 s busy timeout, at most 8 connections, each with a small
/// page cache (the hot reads and writes run on [`lite`]'s connections).
pub async fn sqlite(url: &str) -> Result<SqlitePool, sqlx::Error> {
    let opts = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        .pragma("cache_size", lite::POOL_CACHE_SIZE);
    if let Some(parent) = opts.get_filename().parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    SqlitePoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(10)).connect_with(opts).await
}

/// A store's URL setting (`key`, e.g. `AGORA_GRAPH_DATABASE_URL`): `postgres://`, `sqlite://`, and
/// for the stores that can live on ScyllaDB also `scylla://` (checked here, so a malformed one
/// stops start-up with a message naming the variable).
pub fn database_url(
    env: &dyn agora_kit::config::Env,
    key: &str,
    default: &str,
    scylla: bool,
) -> Result<String, agora_kit::config::ConfigError> {
    let schemes: &[&str] =
        if scylla { &["postgres", "postgresql", "sqlite", "scylla"] } else { &["postgres", "postgresql", "sqlite"] };
    let url = agora_kit::config::url(env, key, default, schemes)?;
    #[cfg(feature = "scylla")]
    if url.starts_with("scylla://") {
        scylla::ScyllaSettings::parse(&url).map_err(|e| agora_kit::config::ConfigError::new(key, &url, e))?;
    }
    Ok(url)
}

fn lost(e: tokio::task::JoinError) -> sqlx::Error {
    sqlx::Error::Protocol(format!("transaction task failed: {e}"))
}

/// Begins a transaction with `statement` (`BEGIN`, `BEGIN IMMEDIATE`, …).
///
/// The start runs on its own task: if the caller is dropped while `BEGIN` is on the wire, the
/// task still sees it through and then drops the transaction, which rolls it back before the
/// connection is used again. (Beginning in the caller's task, a cancellation at that moment
/// returned the connection to the pool already inside a transaction: the next user's `BEGIN`
/// failed with "there is already a transaction in progress" and its autocommit writes were
/// swallowed by the dangling transaction.)
pub async fn begin<DB>(pool: &Pool<DB>, statement: &'static str) -> Result<Transaction<'static, DB>, sqlx::Error>
where
    DB: Database,
{
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin_with(statement).await }).await.map_err(lost)?
}

/// Commits `tx` on its own task, so a cancelled caller never leaves the `COMMIT` half-done (the
/// transaction then either committed or rolled back, and the connection is clean either way).
pub async fn commit<DB>(tx: Transaction<'static, DB>) -> Result<(), sqlx::Error>
where
    DB: Database,
{
    tokio::spawn(tx.commit()).await.map_err(lost)?
}
