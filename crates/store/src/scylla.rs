//! ScyllaDB sessions for the high-volume stores (Apache Cassandra speaks the same CQL protocol
//! and runs the same code), chosen by `scylla://host:port[,host:port]/keyspace[?options]`.
//!
//! A store gets a [`Scylla`] handle at once, whether or not a node answers: the session is
//! opened in the background and retried until it works, so a cluster that is down at start-up
//! makes the service not ready instead of stopping it, and it becomes ready when the cluster
//! comes back. Once connected, the keyspace is created if missing, the store's migrations are
//! applied (when the process migrates on start) and its statements are prepared; only then do
//! requests run. Statements are prepared with token-aware routing (the driver's default load
//! balancing) and marked idempotent only when replaying them cannot change the outcome, so the
//! driver's retry policy retries a write timeout only for those.

use std::sync::Arc;
use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use tokio::sync::OnceCell;

/// What a `scylla://` URL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaSettings {
    pub nodes: Vec<String>,
    pub keyspace: String,
    /// For `CREATE KEYSPACE IF NOT EXISTS` (`?replication_factor=N`, default 3; a keyspace that
    /// exists is left as it is). `?datacenter=NAME` uses NetworkTopologyStrategy in that DC.
    pub replication_factor: u32,
    pub datacenter: Option<String>,
    /// `?consistency=local_quorum|quorum|one|local_one|all` (default local_quorum).
    pub consistency: Consistency,
}

impl ScyllaSettings {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("scylla://").ok_or("not a scylla:// url")?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, keyspace) = rest.split_once('/').ok_or("a scylla:// url needs /keyspace after the hosts")?;
        let nodes: Vec<String> = hosts.split(',').filter(|h| !h.is_empty()).map(str::to_owned).collect();
        if nodes.is_empty() {
            return Err("a scylla:// url needs at least one host:port".into());
        }
        for n in &nodes {
            let (host, port) = n.rsplit_once(':').ok_or_else(|| format!("{n:?} has no :port"))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("{n:?} is not host:port"));
            }
        }
        let keyspace = keyspace.trim_end_matches('/');
        if keyspace.is_empty()
            || keyspace.len() > 48
            || !keyspace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || keyspace.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!("{keyspace:?} is not a keyspace name (letters, digits, _; at most 48)"));
        }
        let mut s = ScyllaSettings {
            nodes,
            keyspace: keyspace.to_ascii_lowercase(),
            replication_factor: 3,
            datacenter: None,
            consistency: Consistency::LocalQuorum,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "replication_factor" => {
                    s.replication_factor =
                        v.parse().ok().filter(|n| *n > 0).ok_or("replication_factor must be a positive number")?
                }
                "datacenter" if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)) => {
                    s.datacenter = Some(v.to_owned())
                }
                "consistency" => {
                    s.consistency = match v {
                        "local_quorum" => Consistency::LocalQuorum,
                        "quorum" => Consistency::Quorum,
                        "one" => Consistency::One,
                        "local_one" => Consistency::LocalOne,
                        "all" => Consistency::All,
                        _ => return Err(format!("unknown consistency {v:?}")),
                    }
                }
                _ => return Err(format!("unknown scylla url option {k:?}")),
            }
        }
        Ok(s)
    }

    fn create_keyspace(&self) -> String {
        let replication = match &self.datacenter {
            Some(dc) => format!("{{'class': 'NetworkTopologyStrategy', '{dc}': {}}}", self.replication_factor),
            None => format!("{{'class': 'SimpleStrategy', 'replication_factor': {}}}", self.replication_factor),
        };
        format!("CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {replication}", self.keyspace)
    }
}

/// One versioned schema change: CQL statements separated by `;`, each idempotent (`IF NOT
/// EXISTS`), so replicas migrating at once, or a migration interrupted half-way, are harmless.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub cql: &'static str,
}

/// Why a call could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScyllaError {
    #[error("scylla not connected yet: {0}")]
    NotReady(String),
    #[error("scylla: {0}")]
    Failed(String),
}

pub fn failed(e: impl std::fmt::Display) -> ScyllaError {
    ScyllaError::Failed(e.to_string())
}

/// A store's prepared statements, made once the schema exists.
pub trait Statements: Sized + Send + Sync + 'static {
    fn prepare(session: &Session) -> impl std::future::Future<Output = Result<Self, ScyllaError>> + Send;
}

/// A session with a store's statements, opened in the background.
pub struct Scylla<S: Statements> {
    pub settings: ScyllaSettings,
    ready: OnceCell<(Session, S)>,
    last_error: parking_lot::Mutex<String>,
}

impl<S: Statements> Scylla<S> {
    /// Starts connecting (and, with `migrate_on_start`, migrating) in the background; returns at
    /// once. `url` errors are returned here, so a bad setting stops start-up.
    pub fn open(url: &str, migrations: &'static [Migration], migrate_on_start: bool) -> Result<Arc<Self>, String> {
        let settings = ScyllaSettings::parse(url)?;
        let this = Arc::new(Self {
            settings,
            ready: OnceCell::new(),
            last_error: parking_lot::Mutex::new("connecting".into()),
        });
        let weak = Arc::downgrade(&this);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let Some(this) = weak.upgrade() else { return };
                match this.connect(migrations, migrate_on_start).await {
                    Ok(ready) => {
                        let _ = this.ready.set(ready);
                        tracing::info!(keyspace = %this.settings.keyspace, "scylla session ready");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "scylla not reachable yet");
                        *this.last_error.lock() = e.to_string();
                    }
                }
                drop(this);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        Ok(this)
    }

    async fn session(settings: &ScyllaSettings) -> Result<Session, ScyllaError> {
        let profile = ExecutionProfile::builder()
            .consistency(settings.consistency)
            .request_timeout(Some(Duration::from_secs(10)))
            .build();
        SessionBuilder::new()
            .known_nodes(&settings.nodes)
            .connection_timeout(Duration::from_secs(3))
            .default_execution_profile_handle(profile.into_handle())
            .build()
            .await
            .map_err(failed)
    }

    async fn connect(
        &self,
        migrations: &'static [Migration],
        migrate_on_start: bool,
    ) -> Result<(Session, S), ScyllaError> {
        let session = Self::session(&self.settings).await?;
        session.query_unpaged(self.settings.create_keyspace(), ()).await.map_err(failed)?;
        session.use_keyspace(&self.settings.keyspace, false).await.map_err(failed)?;
        if migrate_on_start {
            apply(&session, migrations).await?;
        }
        let statements = S::prepare(&session).await?;
        Ok((session, statements))
    }

    /// The session and statements, or [`ScyllaError::NotReady`] while the cluster cannot be
    /// reached (the caller answers "unavailable" rather than waiting).
    pub fn ready(&self) -> Result<(&Session, &S), ScyllaError> {
        self.ready.get().map(|(s, st)| (s, st)).ok_or_else(|| ScyllaError::NotReady(self.last_error.lock().clone()))
    }

    /// Applies `migrations` now, on a session of its own (`agora migrate`, or a store opened
    /// with migrations on start disabled that is asked to migrate).
    pub async fn migrate(&self, migrations: &'static [Migration]) -> Result<(), ScyllaError> {
        let session = Self::session(&self.settings).await?;
        session.query_unpaged(self.settings.create_keyspace(), ()).await.map_err(failed)?;
        session.use_keyspace(&self.settings.keyspace, false).await.map_err(failed)?;
        apply(&session, migrations).await
    }

    /// Readiness: connected, and a node answers.
    pub async fn ping(&self) -> Result<(), ScyllaError> {
        let (session, _) = self.ready()?;
        session.query_unpaged("SELECT release_version FROM system.local", ()).await.map_err(failed)?;
        Ok(())
    }
}

/// Applies the migrations not recorded in `schema_migrations`, in version order.
async fn apply(session: &Session, migrations: &'static [Migration]) -> Result<(), ScyllaError> {
    session
        .query_unpaged(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint PRIMARY KEY, name text, applied_at_ms bigint)",
            (),
        )
        .await
        .map_err(failed)?;
    let rows = session.query_unpaged("SELECT version FROM schema_migrations", ()).await.map_err(failed)?;
    let applied: Vec<i64> = rows
        .into_rows_result()
        .map_err(failed)?
        .rows::<(i64,)>()
        .map_err(failed)?
        .filter_map(Result::ok)
        .map(|(v,)| v)
        .collect();
    let mut pending: Vec<&Migration> = migrations.iter().filter(|m| !applied.contains(&m.version)).collect();
    pending.sort_by_key(|m| m.version);
    for m in pending {
        // Comments go first (they may hold a `;`), then the statements are split.
        let code: String = m.cql.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
        for stmt in code.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            session
                .query_unpaged(stmt.to_owned(), ())
                .await
                .map_err(|e| failed(format!("{} {}: {e}", m.version, m.name)))?;
        }
        session
            .query_unpaged(
                "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?, ?, ?)",
                (m.version, m.name, now_ms()),
            )
            .await
            .map_err(failed)?;
        tracing::info!(version = m.version, name = m.name, "scylla migration applied");
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Every row `stmt` returns, fetched page by page with the driver's paging state (never one
/// unbounded response).
pub async fn rows<R>(
    session: &Session,
    stmt: &PreparedStatement,
    values: impl scylla::serialize::row::SerializeRow,
) -> Result<Vec<R>, ScyllaError>
where
    R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm> + Send + 'static,
{
    use futures::TryStreamExt as _;
    let pager = session.execute_iter(stmt.clone(), values).await.map_err(failed)?;
    pager.rows_stream::<R>().map_err(failed)?.try_collect().await.map_err(failed)
}

/// At most `limit` rows of `stmt` (one page of that size).
pub async fn first_rows<R>(
    session: &Session,
    stmt: &PreparedStatement,
    values: impl scylla::serialize::row::SerializeRow,
    limit: usize,
) -> Result<Vec<R>, ScyllaError>
where
    R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm> + Send + 'static,
{
    use futures::{StreamExt as _, TryStreamExt as _};
    let pager = session.execute_iter(stmt.clone(), values).await.map_err(failed)?;
    pager.rows_stream::<R>().map_err(failed)?.take(limit).try_collect().await.map_err(failed)
}

/// The one row of `stmt`, if any.
pub async fn row<R>(
    session: &Session,
    stmt: &PreparedStatement,
    values: impl scylla::serialize::row::SerializeRow,
) -> Result<Option<R>, ScyllaError>
where
    R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    let result = session.execute_unpaged(stmt, values).await.map_err(failed)?;
    let rows = result.into_rows_result().map_err(failed)?;
    rows.maybe_first_row::<R>().map_err(failed)
}

/// Runs `stmt` for its effect.
pub async fn exec(
    session: &Session,
    stmt: &PreparedStatement,
    values: impl scylla::serialize::row::SerializeRow,
) -> Result<(), ScyllaError> {
    session.execute_unpaged(stmt, values).await.map_err(failed)?;
    Ok(())
}

/// Runs a lightweight transaction; true when it applied. (Its answer row starts with
/// `[applied]`; the current values that follow when it did not apply are not needed here.)
pub async fn applied(
    session: &Session,
    stmt: &PreparedStatement,
    values: impl scylla::serialize::row::SerializeRow,
) -> Result<bool, ScyllaError> {
    let result = session.execute_unpaged(stmt, values).await.map_err(failed)?;
    let rows = result.into_rows_result().map_err(failed)?;
    let mut it = rows.rows::<scylla::value::Row>().map_err(failed)?;
    match it.next() {
        Some(Ok(row)) => Ok(matches!(row.columns.first(), Some(Some(scylla::value::CqlValue::Boolean(true))))),
        Some(Err(e)) => Err(failed(e)),
        None => Err(failed("a lightweight transaction returned no row")),
    }
}

/// Runs a batch of prepared statements (logged: all of them eventually apply, or none).
pub async fn batch(
    session: &Session,
    statements: &[&PreparedStatement],
    values: impl scylla::serialize::batch::BatchValues,
    idempotent: bool,
) -> Result<(), ScyllaError> {
    let mut b = scylla::statement::batch::Batch::new(scylla::statement::batch::BatchType::Logged);
    for s in statements {
        b.append_statement((*s).clone());
    }
    b.set_is_idempotent(idempotent);
    session.batch(&b, values).await.map_err(failed)?;
    Ok(())
}

/// Prepares `cql`, marking it idempotent or not (see the module docs).
pub async fn prepare(session: &Session, cql: &str, idempotent: bool) -> Result<PreparedStatement, ScyllaError> {
    let mut p = session.prepare(cql.to_owned()).await.map_err(|e| failed(format!("preparing {cql:?}: {e}")))?;
    p.set_is_idempotent(idempotent);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let s = ScyllaSettings::parse("scylla://a:9042,b:9043/agora_graph?replication_factor=1").unwrap();
        assert_eq!(s.nodes, vec!["a:9042", "b:9043"]);
        assert_eq!(s.keyspace, "agora_graph");
        assert_eq!(s.replication_factor, 1);
        assert!(s.create_keyspace().contains("SimpleStrategy"));
        let dc = ScyllaSettings::parse("scylla://a:9042/ks?datacenter=dc1&consistency=quorum").unwrap();
        assert!(dc.create_keyspace().contains("'dc1': 3"));
        for bad in [
            "scylla://a:9042",
            "scylla:///ks",
            "scylla://a/ks",
            "scylla://a:x/ks",
            "scylla://a:9042/bad-name",
            "scylla://a:9042/ks?replication_factor=0",
            "scylla://a:9042/ks?nope=1",
            "scylla://a:9042/ks?consistency=some",
        ] {
            assert!(ScyllaSettings::parse(bad).is_err(), "{bad}");
        }
    }
}

/// The transactional outbox on ScyllaDB. A store writes its event rows with [`outbox_insert`]
/// in the same logged batch as the change they announce; the relay reads them here.
///
/// Rows live in [`OUTBOX_SHARDS`] partitions, clustered by event id: a store puts all events of
/// one aggregate (a pair of accounts, say) in one shard, so the relay, which merges the shards by
/// id, publishes them in id order. One replica relays at a time: it holds a lease row, taken and
/// renewed with lightweight transactions and expiring by TTL if the holder dies.
pub mod outbox {
    use super::*;
    use agora_events::Envelope;
    use agora_events::outbox::{OutboxError, OutboxStore, PendingEvent};
    use prost::Message as _;
    use std::collections::HashMap;

    pub const OUTBOX_SHARDS: i32 = 16;

    // A store's migrations create the tables:
    //   outbox (shard int, id bigint, topic text, envelope blob, PRIMARY KEY (shard, id))
    //       WITH CLUSTERING ORDER BY (id ASC)
    //   outbox_leader (name text PRIMARY KEY, holder text)

    /// The statement a store adds to its logged batch: values `(shard, id, topic, envelope)`.
    pub const INSERT: &str = "INSERT INTO outbox (shard, id, topic, envelope) VALUES (?, ?, ?, ?)";

    /// The shard of an aggregate.
    pub fn shard(aggregate: i64) -> i32 {
        aggregate.rem_euclid(i64::from(OUTBOX_SHARDS)) as i32
    }

    /// The values of [`INSERT`] for one event.
    pub fn insert_values(shard: i32, topic: &str, envelope: &Envelope) -> (i32, i64, String, Vec<u8>) {
        (shard, envelope.id, topic.to_owned(), envelope.encode_to_vec())
    }

    pub struct Relayed {
        pending: PreparedStatement,
        remove: PreparedStatement,
        take: PreparedStatement,
        renew: PreparedStatement,
    }

    impl Statements for Relayed {
        async fn prepare(s: &Session) -> Result<Self, ScyllaError> {
            Ok(Self {
                pending: prepare(s, "SELECT id, topic, envelope FROM outbox WHERE shard = ? LIMIT ?", true).await?,
                remove: prepare(s, "DELETE FROM outbox WHERE shard = ? AND id = ?", true).await?,
                take: prepare(
                    s,
                    "INSERT INTO outbox_leader (name, holder) VALUES (?, ?) IF NOT EXISTS USING TTL 10",
                    false,
                )
                .await?,
                renew: prepare(
                    s,
                    "UPDATE outbox_leader USING TTL 10 SET holder = ? WHERE name = ? IF holder = ?",
                    false,
                )
                .await?,
            })
        }
    }

    /// The relay's side of a Scylla store's outbox.
    pub struct ScyllaOutbox {
        db: Arc<Scylla<Relayed>>,
        name: String,
        me: String,
        /// Where the ids handed out by `pending` live, for `remove`.
        shards: parking_lot::Mutex<HashMap<i64, i32>>,
    }

    impl ScyllaOutbox {
        /// A session of its own on the store's keyspace (`url`); `service` names the lease.
        pub fn open(url: &str, service: &str) -> Result<Self, String> {
            Ok(Self {
                db: Scylla::open(url, &[], false)?,
                name: format!("{service}-relay"),
                me: format!("{:016x}", rand::random::<u64>()),
                shards: parking_lot::Mutex::new(HashMap::new()),
            })
        }
    }

    fn oe(e: impl std::fmt::Display) -> OutboxError {
        OutboxError(e.to_string())
    }

    #[async_trait::async_trait]
    impl OutboxStore for ScyllaOutbox {
        async fn pending(&self, limit: usize) -> Result<Vec<PendingEvent>, OutboxError> {
            let (s, q) = self.db.ready().map_err(oe)?;
            let mut all: Vec<(i32, i64, String, Vec<u8>)> = Vec::new();
            for shard in 0..OUTBOX_SHARDS {
                let rows: Vec<(i64, String, Vec<u8>)> =
                    first_rows(s, &q.pending, (shard, limit as i32), limit).await.map_err(oe)?;
                all.extend(rows.into_iter().map(|(id, t, e)| (shard, id, t, e)));
            }
            all.sort_by_key(|r| r.1);
            all.truncate(limit);
            let mut shards = self.shards.lock();
            Ok(all
                .into_iter()
                .filter_map(|(shard, id, topic, bytes)| match Envelope::decode(bytes.as_slice()) {
                    Ok(envelope) => {
                        shards.insert(id, shard);
                        Some(PendingEvent { id, topic, envelope })
                    }
                    Err(e) => {
                        tracing::error!(id, error = %e, "undecodable outbox row left in place");
                        None
                    }
                })
                .collect())
        }

        async fn remove(&self, ids: &[i64]) -> Result<(), OutboxError> {
            let (s, q) = self.db.ready().map_err(oe)?;
            for id in ids {
                let shard = self.shards.lock().remove(id);
                if let Some(shard) = shard {
                    exec(s, &q.remove, (shard, *id)).await.map_err(oe)?;
                }
            }
            Ok(())
        }

        async fn backlog(&self) -> Result<i64, OutboxError> {
            let (s, q) = self.db.ready().map_err(oe)?;
            let mut n = 0;
            for shard in 0..OUTBOX_SHARDS {
                let rows: Vec<(i64, String, Vec<u8>)> =
                    first_rows(s, &q.pending, (shard, 10_000i32), 10_000).await.map_err(oe)?;
                n += rows.len() as i64;
            }
            Ok(n)
        }

        async fn lead(&self) -> Result<bool, OutboxError> {
            let (s, q) = self.db.ready().map_err(oe)?;
            if applied(s, &q.renew, (&self.me, &self.name, &self.me)).await.map_err(oe)? {
                return Ok(true);
            }
            applied(s, &q.take, (&self.name, &self.me)).await.map_err(oe)
        }
    }
}
