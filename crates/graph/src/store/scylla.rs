//! The graph store on ScyllaDB (`scylla://…/keyspace`); the data model is in
//! `migrations/scylla/0001_init.cql` and ARCHITECTURE.md.
//!
//! A write reads the pair's partition (serially), plans the change in memory — the same rules as
//! the SQL store — and commits it with one lightweight-transaction batch on that partition,
//! conditional on the version it read; the batch also stores the change's work still to do (view
//! rows and outbox events) in the pair's `pending` column. That work is then done in one logged
//! batch and the column cleared. A writer that finds work pending on its pair does it first, and
//! a sweeper completes what a crash left behind, so views and events always catch up, in the
//! pair's commit order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use agora_events::Envelope;
use agora_events::outbox::OutboxStore;
use agora_kit::pagination::Page;
use agora_store::scylla::outbox::{self as cql_outbox, ScyllaOutbox};
use agora_store::scylla::{self as cql, Migration, Scylla, ScyllaError, Statements};
use async_trait::async_trait;
use futures::future::try_join_all;
use prost::Message as _;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::CqlValue;
use serde::{Deserialize, Serialize};

use super::{ChangeEvent, GraphStore, Refusal, StoreError, StoreResult};
use crate::domain::{
    ChangeKind, Counts, Entry, FamiliarFollowers, FilterSet, FollowerIds, GraphChange, NewFollow, NewMute,
    Relationship, Suggestion, mute_is_live,
};

pub const MIGRATIONS: &[Migration] =
    &[Migration { version: 1, name: "init", cql: include_str!("../../migrations/scylla/0001_init.cql") }];

/// How many times a write retries when another write of the same pair won the race.
const CAS_ATTEMPTS: usize = 64;

impl From<ScyllaError> for StoreError {
    fn from(e: ScyllaError) -> Self {
        match e {
            ScyllaError::NotReady(_) => StoreError::NotReady(e.to_string()),
            ScyllaError::Failed(_) => StoreError::Unavailable(e.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
enum Kind {
    Follow,
    Request,
    Block,
    Mute,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Follow => "follow",
            Kind::Request => "request",
            Kind::Block => "block",
            Kind::Mute => "mute",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "follow" => Kind::Follow,
            "request" => Kind::Request,
            "block" => Kind::Block,
            "mute" => Kind::Mute,
            _ => return None,
        })
    }
}

/// One directed relation inside a pair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Edge {
    id: i64,
    show_reblogs: bool,
    notify: bool,
    languages: String,
    notifications: bool,
    expires_at_ms: i64,
    created_at_ms: i64,
}

/// What a pair's partition holds.
#[derive(Debug, Default)]
struct PairState {
    version: Option<i64>,
    /// The timestamp of the last change's work.
    timestamp: i64,
    pending: Option<Vec<u8>>,
    edges: BTreeMap<(i64, Kind), Edge>,
}

impl PairState {
    fn edge(&self, from: i64, kind: Kind) -> Option<&Edge> {
        self.edges.get(&(from, kind))
    }
}

/// A view row to write or delete once the change committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum ViewOp {
    PutFollow { from: i64, to: i64, id: i64 },
    DelFollow { from: i64, to: i64, id: i64 },
    PutRequest { from: i64, to: i64, id: i64 },
    DelRequest { from: i64, to: i64, id: i64 },
    PutBlock { from: i64, to: i64, id: i64 },
    DelBlock { from: i64, to: i64, id: i64 },
    PutMute { from: i64, to: i64, id: i64, notifications: bool, expires_at_ms: i64 },
    DelMute { from: i64, id: i64 },
}

/// The work a committed change leaves: its views and its events.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Pending {
    version: i64,
    /// The write timestamp (µs) of every row this work writes: it grows with the pair's
    /// version, so replaying older work (a slow writer, the sweeper) never overwrites what a
    /// newer change of the pair wrote — each view row belongs to one pair.
    timestamp: i64,
    ops: Vec<ViewOp>,
    /// (topic, encoded envelope, event id).
    events: Vec<(String, Vec<u8>, i64)>,
}

/// A change planned against a pair's state.
#[derive(Default)]
struct Plan {
    put: Vec<(i64, Kind, Edge)>,
    delete: Vec<(i64, Kind)>,
    ops: Vec<ViewOp>,
    changes: Vec<GraphChange>,
}

impl Plan {
    /// Removes the `kind` edge from `from` to `to` if there is one, announcing it as
    /// `graph.unfollowed` (follows and requests).
    fn drop_follow_like(&mut self, state: &PairState, from: i64, to: i64, kind: Kind) {
        if let Some(e) = state.edge(from, kind) {
            self.delete.push((from, kind));
            self.ops.push(match kind {
                Kind::Follow => ViewOp::DelFollow { from, to, id: e.id },
                _ => ViewOp::DelRequest { from, to, id: e.id },
            });
            self.changes.push(GraphChange::new(ChangeKind::Unfollowed, from, to));
        }
    }
}

fn pair(a: i64, b: i64) -> (i64, i64) {
    if a <= b { (a, b) } else { (b, a) }
}

fn pair_shard(low: i64, high: i64) -> i32 {
    cql_outbox::shard(low.wrapping_mul(31).wrapping_add(high))
}

fn languages_list(text: &str) -> Vec<String> {
    text.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

fn big(v: i64) -> Option<CqlValue> {
    Some(CqlValue::BigInt(v))
}

type PairRow = (
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<bool>,
    Option<bool>,
    Option<String>,
    Option<bool>,
    Option<i64>,
    Option<i64>,
);

pub struct Prepared {
    pair_read: PreparedStatement,
    pair_read_fast: PreparedStatement,
    pair_cas: PreparedStatement,
    edge_put: PreparedStatement,
    edge_del: PreparedStatement,
    pending_clear: PreparedStatement,
    pending_pair_put: PreparedStatement,
    pending_pair_del: PreparedStatement,
    pending_pairs: PreparedStatement,
    following_put: PreparedStatement,
    following_del: PreparedStatement,
    followers_put: PreparedStatement,
    followers_del: PreparedStatement,
    index_put: PreparedStatement,
    index_del: PreparedStatement,
    requests_put: PreparedStatement,
    requests_del: PreparedStatement,
    requested_put: PreparedStatement,
    requested_del: PreparedStatement,
    blocks_put: PreparedStatement,
    blocks_del: PreparedStatement,
    blocked_by_put: PreparedStatement,
    blocked_by_del: PreparedStatement,
    mutes_put: PreparedStatement,
    mutes_del: PreparedStatement,
    outbox_put: PreparedStatement,
    dismiss: PreparedStatement,
    dismissed: PreparedStatement,
    following_page_desc: PreparedStatement,
    following_page_asc: PreparedStatement,
    followers_page_desc: PreparedStatement,
    followers_page_asc: PreparedStatement,
    requests_page_desc: PreparedStatement,
    requests_page_asc: PreparedStatement,
    blocks_page_desc: PreparedStatement,
    blocks_page_asc: PreparedStatement,
    mutes_all: PreparedStatement,
    followers_after: PreparedStatement,
    followers_count: PreparedStatement,
    following_count: PreparedStatement,
    following_all: PreparedStatement,
    requested_all: PreparedStatement,
    blocks_all: PreparedStatement,
    blocked_by_all: PreparedStatement,
    index_among: PreparedStatement,
}

impl Statements for Prepared {
    async fn prepare(s: &Session) -> Result<Self, ScyllaError> {
        let p = |cql: &'static str, idempotent: bool| async move { cql::prepare(s, cql, idempotent).await };
        let page = |table: &'static str, asc: bool| {
            let cql: &'static str = match (table, asc) {
                ("following", false) => {
                    "SELECT id, target_id FROM following WHERE account_id = ? AND id < ? AND id > ? ORDER BY id DESC LIMIT ?"
                }
                ("following", true) => {
                    "SELECT id, target_id FROM following WHERE account_id = ? AND id < ? AND id > ? ORDER BY id ASC LIMIT ?"
                }
                ("followers", false) => {
                    "SELECT id, follower_id FROM followers WHERE account_id = ? AND id < ? AND id > ? ORDER BY id DESC LIMIT ?"
                }
                ("followers", true) => {
                    "SELECT id, follower_id FROM followers WHERE account_id = ? AND id < ? AND id > ? ORDER BY id ASC LIMIT ?"
                }
                ("follow_requests", false) => {
                    "SELECT id, requester_id FROM follow_requests WHERE account_id = ? AND id < ? AND id > ? ORDER BY id DESC LIMIT ?"
                }
                ("follow_requests", true) => {
                    "SELECT id, requester_id FROM follow_requests WHERE account_id = ? AND id < ? AND id > ? ORDER BY id ASC LIMIT ?"
                }
                ("blocks", false) => {
                    "SELECT id, target_id FROM blocks WHERE account_id = ? AND id < ? AND id > ? ORDER BY id DESC LIMIT ?"
                }
                _ => {
                    "SELECT id, target_id FROM blocks WHERE account_id = ? AND id < ? AND id > ? ORDER BY id ASC LIMIT ?"
                }
            };
            p(cql, true)
        };
        const PAIR: &str = "SELECT version, view_ts, kind, from_id, pending, id, show_reblogs, notify, languages, \
             notifications, expires_at_ms, created_at_ms FROM pairs WHERE low = ? AND high = ?";
        let mut pair_read = cql::prepare(s, PAIR, true).await?;
        // A write plans against the state the transaction will check: read it linearizably.
        pair_read.set_consistency(Consistency::Serial);
        let mut pair_cas = cql::prepare(
            s,
            "UPDATE pairs SET version = ?, view_ts = ?, pending = ? WHERE low = ? AND high = ? IF version = ?",
            false,
        )
        .await?;
        pair_cas.set_serial_consistency(Some(SerialConsistency::Serial));
        let mut pending_clear =
            cql::prepare(s, "UPDATE pairs SET pending = null WHERE low = ? AND high = ? IF version = ?", false).await?;
        pending_clear.set_serial_consistency(Some(SerialConsistency::Serial));
        Ok(Self {
            pair_read,
            // Reads that only answer questions (relationships) need no Paxos round.
            pair_read_fast: cql::prepare(s, PAIR, true).await?,
            pair_cas,
            edge_put: p(
                "INSERT INTO pairs (low, high, from_id, kind, id, show_reblogs, notify, languages, notifications, \
                 expires_at_ms, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                false,
            )
            .await?,
            edge_del: p("DELETE FROM pairs WHERE low = ? AND high = ? AND from_id = ? AND kind = ?", false).await?,
            pending_clear,
            pending_pair_put: p("INSERT INTO pending_pairs (shard, low, high) VALUES (?, ?, ?)", true).await?,
            pending_pair_del: p("DELETE FROM pending_pairs WHERE shard = ? AND low = ? AND high = ?", true).await?,
            pending_pairs: p("SELECT low, high FROM pending_pairs WHERE shard = ?", true).await?,
            following_put: p("INSERT INTO following (account_id, id, target_id) VALUES (?, ?, ?)", true).await?,
            following_del: p("DELETE FROM following WHERE account_id = ? AND id = ?", true).await?,
            followers_put: p("INSERT INTO followers (account_id, id, follower_id) VALUES (?, ?, ?)", true).await?,
            followers_del: p("DELETE FROM followers WHERE account_id = ? AND id = ?", true).await?,
            index_put: p("INSERT INTO follower_index (account_id, follower_id, id) VALUES (?, ?, ?)", true).await?,
            index_del: p("DELETE FROM follower_index WHERE account_id = ? AND follower_id = ?", true).await?,
            requests_put: p("INSERT INTO follow_requests (account_id, id, requester_id) VALUES (?, ?, ?)", true)
                .await?,
            requests_del: p("DELETE FROM follow_requests WHERE account_id = ? AND id = ?", true).await?,
            requested_put: p("INSERT INTO requested (account_id, target_id) VALUES (?, ?)", true).await?,
            requested_del: p("DELETE FROM requested WHERE account_id = ? AND target_id = ?", true).await?,
            blocks_put: p("INSERT INTO blocks (account_id, id, target_id) VALUES (?, ?, ?)", true).await?,
            blocks_del: p("DELETE FROM blocks WHERE account_id = ? AND id = ?", true).await?,
            blocked_by_put: p("INSERT INTO blocked_by (account_id, blocker_id) VALUES (?, ?)", true).await?,
            blocked_by_del: p("DELETE FROM blocked_by WHERE account_id = ? AND blocker_id = ?", true).await?,
            mutes_put: p(
                "INSERT INTO mutes (account_id, id, target_id, notifications, expires_at_ms) VALUES (?, ?, ?, ?, ?)",
                true,
            )
            .await?,
            mutes_del: p("DELETE FROM mutes WHERE account_id = ? AND id = ?", true).await?,
            outbox_put: p(cql_outbox::INSERT, true).await?,
            dismiss: p("INSERT INTO dismissals (account_id, target_id, created_at_ms) VALUES (?, ?, ?)", true).await?,
            dismissed: p("SELECT target_id FROM dismissals WHERE account_id = ?", true).await?,
            following_page_desc: page("following", false).await?,
            following_page_asc: page("following", true).await?,
            followers_page_desc: page("followers", false).await?,
            followers_page_asc: page("followers", true).await?,
            requests_page_desc: page("follow_requests", false).await?,
            requests_page_asc: page("follow_requests", true).await?,
            blocks_page_desc: page("blocks", false).await?,
            blocks_page_asc: page("blocks", true).await?,
            mutes_all: p("SELECT id, target_id, notifications, expires_at_ms FROM mutes WHERE account_id = ?", true)
                .await?,
            followers_after: p(
                "SELECT id, follower_id FROM followers WHERE account_id = ? AND id > ? ORDER BY id ASC LIMIT ?",
                true,
            )
            .await?,
            followers_count: p("SELECT COUNT(*) FROM followers WHERE account_id = ?", true).await?,
            following_count: p("SELECT COUNT(*) FROM following WHERE account_id = ?", true).await?,
            following_all: p("SELECT id, target_id FROM following WHERE account_id = ?", true).await?,
            requested_all: p("SELECT target_id FROM requested WHERE account_id = ?", true).await?,
            blocks_all: p("SELECT id, target_id FROM blocks WHERE account_id = ?", true).await?,
            blocked_by_all: p("SELECT blocker_id FROM blocked_by WHERE account_id = ?", true).await?,
            index_among: p(
                "SELECT follower_id, id FROM follower_index WHERE account_id = ? AND follower_id IN ?",
                true,
            )
            .await?,
        })
    }
}

/// The graph store on ScyllaDB.
pub struct ScyllaGraphStore {
    db: Arc<Scylla<Prepared>>,
    outbox: Arc<ScyllaOutbox>,
    /// Tests stop a change after its commit, as a crash there would.
    #[cfg(test)]
    crash_after_commit: std::sync::atomic::AtomicBool,
}

impl ScyllaGraphStore {
    /// Opens the store; the session comes up in the background (see agora_store::scylla), and a
    /// sweeper completes changes a crash left half-applied, until the store is dropped.
    pub fn open(url: &str, migrate_on_start: bool) -> StoreResult<Arc<Self>> {
        let db = Scylla::open(url, MIGRATIONS, migrate_on_start).map_err(StoreError::Unavailable)?;
        let outbox = Arc::new(ScyllaOutbox::open(url, "graph").map_err(StoreError::Unavailable)?);
        let store = Arc::new(Self {
            db,
            outbox,
            #[cfg(test)]
            crash_after_commit: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(sweep(Arc::downgrade(&store)));
        Ok(store)
    }

    fn ready(&self) -> StoreResult<(&Session, &Prepared)> {
        Ok(self.db.ready()?)
    }

    /// The pair's state; `serial` for a write about to be conditional on it.
    async fn read_pair(&self, low: i64, high: i64, serial: bool) -> StoreResult<PairState> {
        let (s, q) = self.ready()?;
        let stmt = if serial { &q.pair_read } else { &q.pair_read_fast };
        let rows: Vec<PairRow> = cql::rows(s, stmt, (low, high)).await?;
        let mut state = PairState::default();
        for (version, ts, kind, from, pending, id, show_reblogs, notify, languages, notifications, expires, created) in
            rows
        {
            state.version = version;
            state.timestamp = ts.unwrap_or(0);
            state.pending = pending;
            let (Some(kind), Some(from)) = (kind.as_deref().and_then(Kind::parse), from) else { continue };
            state.edges.insert(
                (from, kind),
                Edge {
                    id: id.unwrap_or_default(),
                    show_reblogs: show_reblogs.unwrap_or_default(),
                    notify: notify.unwrap_or_default(),
                    languages: languages.unwrap_or_default(),
                    notifications: notifications.unwrap_or_default(),
                    expires_at_ms: expires.unwrap_or_default(),
                    created_at_ms: created.unwrap_or_default(),
                },
            );
        }
        Ok(state)
    }

    /// Writes the views and outbox rows of `pending` (idempotent: replaying it changes nothing
    /// but may publish its events again), then clears it from the pair if still current.
    async fn complete(&self, low: i64, high: i64, pending: &Pending) -> StoreResult<()> {
        let (s, q) = self.ready()?;
        let mut statements: Vec<&PreparedStatement> = Vec::new();
        let mut values: Vec<Vec<Option<CqlValue>>> = Vec::new();
        let mut push = |st: &'static str, stmt, row: Vec<Option<CqlValue>>| {
            let _ = st;
            statements.push(stmt);
            values.push(row);
        };
        for op in &pending.ops {
            match *op {
                ViewOp::PutFollow { from, to, id } => {
                    push("following", &q.following_put, vec![big(from), big(id), big(to)]);
                    push("followers", &q.followers_put, vec![big(to), big(id), big(from)]);
                    push("index", &q.index_put, vec![big(to), big(from), big(id)]);
                }
                ViewOp::DelFollow { from, to, id } => {
                    push("following", &q.following_del, vec![big(from), big(id)]);
                    push("followers", &q.followers_del, vec![big(to), big(id)]);
                    push("index", &q.index_del, vec![big(to), big(from)]);
                }
                ViewOp::PutRequest { from, to, id } => {
                    push("requests", &q.requests_put, vec![big(to), big(id), big(from)]);
                    push("requested", &q.requested_put, vec![big(from), big(to)]);
                }
                ViewOp::DelRequest { from, to, id } => {
                    push("requests", &q.requests_del, vec![big(to), big(id)]);
                    push("requested", &q.requested_del, vec![big(from), big(to)]);
                }
                ViewOp::PutBlock { from, to, id } => {
                    push("blocks", &q.blocks_put, vec![big(from), big(id), big(to)]);
                    push("blocked_by", &q.blocked_by_put, vec![big(to), big(from)]);
                }
                ViewOp::DelBlock { from, to, id } => {
                    push("blocks", &q.blocks_del, vec![big(from), big(id)]);
                    push("blocked_by", &q.blocked_by_del, vec![big(to), big(from)]);
                }
                ViewOp::PutMute { from, to, id, notifications, expires_at_ms } => push(
                    "mutes",
                    &q.mutes_put,
                    vec![big(from), big(id), big(to), Some(CqlValue::Boolean(notifications)), big(expires_at_ms)],
                ),
                ViewOp::DelMute { from, id } => push("mutes", &q.mutes_del, vec![big(from), big(id)]),
            }
        }
        let shard = pair_shard(low, high);
        for (topic, envelope, id) in &pending.events {
            push(
                "outbox",
                &q.outbox_put,
                vec![
                    Some(CqlValue::Int(shard)),
                    big(*id),
                    Some(CqlValue::Text(topic.clone())),
                    Some(CqlValue::Blob(envelope.clone())),
                ],
            );
        }
        if !statements.is_empty() {
            let mut b = scylla::statement::batch::Batch::new(scylla::statement::batch::BatchType::Logged);
            for st in &statements {
                b.append_statement((*st).clone());
            }
            b.set_is_idempotent(true);
            b.set_timestamp(Some(pending.timestamp));
            s.batch(&b, values).await.map_err(cql::failed)?;
        }
        cql::applied(s, &q.pending_clear, (low, high, pending.version)).await?;
        // At the work's own timestamp: a newer change's note for the pair outlives this delete.
        let mut done = q.pending_pair_del.clone().bind(&(shard, low, high)).map_err(cql::failed)?;
        done.set_timestamp(Some(pending.timestamp));
        s.execute_bound_unpaged(&done).await.map_err(cql::failed)?;
        Ok(())
    }

    /// Completes whatever a pair has pending (a crashed or concurrent writer's work).
    async fn settle(&self, low: i64, high: i64, state: &PairState) -> StoreResult<bool> {
        let Some(bytes) = &state.pending else { return Ok(false) };
        let pending: Pending = serde_json::from_slice(bytes).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        self.complete(low, high, &pending).await?;
        Ok(true)
    }

    /// Applies `plan` (made from the pair's current state) as one conditional change of the pair,
    /// retrying from a fresh read when another write of the pair got there first.
    async fn change<F>(&self, a: i64, b: i64, event: &ChangeEvent<'_>, plan: F) -> StoreResult<Vec<GraphChange>>
    where
        F: Fn(&PairState) -> StoreResult<Plan>,
    {
        let (low, high) = pair(a, b);
        let shard = pair_shard(low, high);
        for _ in 0..CAS_ATTEMPTS {
            let state = self.read_pair(low, high, true).await?;
            if self.settle(low, high, &state).await? {
                continue; // views first, in commit order; then look again
            }
            let plan = plan(&state)?;
            if plan.put.is_empty() && plan.delete.is_empty() && plan.ops.is_empty() {
                return Ok(plan.changes);
            }
            let envelopes: Vec<Envelope> = plan.changes.iter().map(event).collect();
            let mut ids = HashSet::new();
            if !envelopes.iter().all(|e| ids.insert(e.id)) {
                // The SQL stores refuse the second outbox row of one id; refuse the whole change alike.
                return Err(StoreError::Unavailable("two events of one change share an id".into()));
            }
            let version = state.version.unwrap_or(0) + 1;
            let now_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0);
            let timestamp = now_us.max(state.timestamp + 1);
            let pending = Pending {
                version,
                timestamp,
                ops: plan.ops,
                events: envelopes
                    .iter()
                    .map(|e| (agora_events::topic_for(&e.r#type), e.encode_to_vec(), e.id))
                    .collect(),
            };
            let pending_bytes = serde_json::to_vec(&pending).map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let (s, q) = self.ready()?;
            // The sweeper's note comes first: if this process dies after the change commits, the
            // pair is found and its pending work completed.
            let mut note = q.pending_pair_put.clone().bind(&(shard, low, high)).map_err(cql::failed)?;
            note.set_timestamp(Some(timestamp));
            s.execute_bound_unpaged(&note).await.map_err(cql::failed)?;
            let mut statements: Vec<&PreparedStatement> = vec![&q.pair_cas];
            let mut values: Vec<Vec<Option<CqlValue>>> = vec![vec![
                big(version),
                big(timestamp),
                Some(CqlValue::Blob(pending_bytes)),
                big(low),
                big(high),
                state.version.map(CqlValue::BigInt),
            ]];
            for (from, kind) in &plan.delete {
                statements.push(&q.edge_del);
                values.push(vec![big(low), big(high), big(*from), Some(CqlValue::Text(kind.as_str().into()))]);
            }
            for (from, kind, e) in &plan.put {
                statements.push(&q.edge_put);
                values.push(vec![
                    big(low),
                    big(high),
                    big(*from),
                    Some(CqlValue::Text(kind.as_str().into())),
                    big(e.id),
                    Some(CqlValue::Boolean(e.show_reblogs)),
                    Some(CqlValue::Boolean(e.notify)),
                    Some(CqlValue::Text(e.languages.clone())),
                    Some(CqlValue::Boolean(e.notifications)),
                    big(e.expires_at_ms),
                    big(e.created_at_ms),
                ]);
            }
            let mut batch = scylla::statement::batch::Batch::new(scylla::statement::batch::BatchType::Logged);
            for st in &statements {
                batch.append_statement((*st).clone());
            }
            batch.set_serial_consistency(Some(SerialConsistency::Serial));
            let result = s.batch(&batch, values).await.map_err(cql::failed)?;
            let applied = result
                .into_rows_result()
                .ok()
                .and_then(|r| {
                    r.rows::<scylla::value::Row>()
                        .ok()
                        .and_then(|mut it| it.next())
                        .and_then(Result::ok)
                        .map(|row| matches!(row.columns.first(), Some(Some(CqlValue::Boolean(true)))))
                })
                .unwrap_or(false);
            if !applied {
                continue;
            }
            #[cfg(test)]
            if self.crash_after_commit.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(plan.changes);
            }
            self.complete(low, high, &pending).await?;
            return Ok(plan.changes);
        }
        Err(StoreError::Unavailable("too much contention on one pair of accounts".into()))
    }

    /// One Mastodon page of a view (`cursor_id`, other account).
    async fn list(
        &self,
        desc: &PreparedStatement,
        asc: &PreparedStatement,
        account_id: i64,
        page: &Page,
    ) -> StoreResult<Vec<Entry>> {
        let (s, _) = self.ready()?;
        let upper = page.max_id.unwrap_or(i64::MAX);
        let lower = page.since_id.into_iter().chain(page.min_id).max().unwrap_or(i64::MIN);
        let ascending = page.min_id.is_some();
        let stmt = if ascending { asc } else { desc };
        let mut rows: Vec<(i64, i64)> = cql::rows(s, stmt, (account_id, upper, lower, page.limit as i32)).await?;
        if ascending {
            rows.reverse();
        }
        Ok(rows.into_iter().map(|(cursor_id, account_id)| Entry { cursor_id, account_id }).collect())
    }

    /// Which of `candidates` follow `account_id`, with the follow ids.
    async fn followers_among(&self, account_id: i64, candidates: &[i64]) -> StoreResult<HashMap<i64, i64>> {
        let (s, q) = self.ready()?;
        let mut out = HashMap::new();
        for chunk in candidates.chunks(100) {
            let rows: Vec<(i64, i64)> = cql::rows(s, &q.index_among, (account_id, chunk.to_vec())).await?;
            out.extend(rows);
        }
        Ok(out)
    }

    async fn live_mutes(&self, account_id: i64, now_ms: i64) -> StoreResult<Vec<(i64, i64, bool)>> {
        let (s, q) = self.ready()?;
        let rows: Vec<(i64, i64, Option<bool>, Option<i64>)> = cql::rows(s, &q.mutes_all, (account_id,)).await?;
        Ok(rows
            .into_iter()
            .filter(|(_, _, _, expires)| mute_is_live(expires.unwrap_or(0), now_ms))
            .map(|(id, target, notifications, _)| (id, target, notifications.unwrap_or(false)))
            .collect())
    }
}

/// Every 5 s, completes the pending work of pairs a crashed writer left, until the store goes.
async fn sweep(store: Weak<ScyllaGraphStore>) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let Some(store) = store.upgrade() else { return };
        if let Err(e) = store.sweep_once().await {
            tracing::warn!(error = %e, "graph sweeper could not read pending pairs");
        }
    }
}

impl ScyllaGraphStore {
    /// One pass of the sweeper; returns how many pairs it settled.
    async fn sweep_once(&self) -> StoreResult<usize> {
        let (s, q) = self.ready()?;
        let mut settled = 0;
        for shard in 0..cql_outbox::OUTBOX_SHARDS {
            let pairs: Vec<(i64, i64)> = cql::rows(s, &q.pending_pairs, (shard,)).await?;
            for (low, high) in pairs {
                let done = async {
                    let state = self.read_pair(low, high, true).await?;
                    if self.settle(low, high, &state).await? {
                        return Ok::<_, StoreError>(true);
                    }
                    cql::exec(s, &q.pending_pair_del, (shard, low, high)).await?;
                    Ok(false)
                };
                match done.await {
                    Ok(true) => {
                        settled += 1;
                        metrics::counter!("agora_graph_pairs_settled_total").increment(1);
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, low, high, "graph sweeper could not settle a pair"),
                }
            }
        }
        Ok(settled)
    }
}

fn follow_edge(f: &NewFollow) -> Edge {
    Edge {
        id: f.id,
        show_reblogs: f.show_reblogs,
        notify: f.notify,
        languages: f.languages.join(","),
        created_at_ms: f.created_at_ms,
        ..Edge::default()
    }
}

#[async_trait]
impl GraphStore for ScyllaGraphStore {
    async fn migrate(&self) -> StoreResult<()> {
        Ok(self.db.migrate(MIGRATIONS).await?)
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(self.db.ping().await?)
    }

    fn outbox(&self) -> Arc<dyn OutboxStore> {
        Arc::clone(&self.outbox) as Arc<dyn OutboxStore>
    }

    async fn follow(&self, f: &NewFollow, locked: bool, event: &ChangeEvent<'_>) -> StoreResult<Vec<GraphChange>> {
        let (me, them) = (f.account_id, f.target_id);
        self.change(me, them, event, |state| {
            if state.edge(them, Kind::Block).is_some() {
                return Err(StoreError::Refused(Refusal::BlockedBy));
            }
            if state.edge(me, Kind::Block).is_some() {
                return Err(StoreError::Refused(Refusal::Blocking));
            }
            let mut plan = Plan::default();
            let options = |old: &Edge| Edge {
                show_reblogs: f.show_reblogs,
                notify: f.notify,
                languages: f.languages.join(","),
                ..old.clone()
            };
            if let Some(old) = state.edge(me, Kind::Follow) {
                let new = options(old);
                if new != *old {
                    plan.put.push((me, Kind::Follow, new));
                    // Keeps the write conditional even without a view change.
                }
                // Home timelines depend on show_reblogs and notifications on notify, so a
                // change of either is news.
                if (old.show_reblogs, old.notify) != (f.show_reblogs, f.notify) {
                    plan.changes.push(GraphChange {
                        show_reblogs: f.show_reblogs,
                        notify: f.notify,
                        ..GraphChange::new(ChangeKind::Followed, me, them)
                    });
                }
                return Ok(plan);
            }
            if let Some(old) = state.edge(me, Kind::Request) {
                let new = options(old);
                if new != *old {
                    plan.put.push((me, Kind::Request, new));
                }
                return Ok(plan);
            }
            let (kind, change) = if locked {
                (Kind::Request, ChangeKind::FollowRequested)
            } else {
                (Kind::Follow, ChangeKind::Followed)
            };
            plan.put.push((me, kind, follow_edge(f)));
            plan.ops.push(match kind {
                Kind::Follow => ViewOp::PutFollow { from: me, to: them, id: f.id },
                _ => ViewOp::PutRequest { from: me, to: them, id: f.id },
            });
            plan.changes.push(GraphChange {
                show_reblogs: f.show_reblogs,
                notify: f.notify,
                ..GraphChange::new(change, me, them)
            });
            Ok(plan)
        })
        .await
    }

    async fn unfollow(
        &self,
        account_id: i64,
        target_id: i64,
        event: &ChangeEvent<'_>,
    ) -> StoreResult<Vec<GraphChange>> {
        self.change(account_id, target_id, event, |state| {
            let mut plan = Plan::default();
            plan.drop_follow_like(state, account_id, target_id, Kind::Follow);
            plan.drop_follow_like(state, account_id, target_id, Kind::Request);
            Ok(plan)
        })
        .await
    }

    async fn remove_follower(
        &self,
        account_id: i64,
        follower_id: i64,
        event: &ChangeEvent<'_>,
    ) -> StoreResult<Vec<GraphChange>> {
        self.change(account_id, follower_id, event, |state| {
            let mut plan = Plan::default();
            plan.drop_follow_like(state, follower_id, account_id, Kind::Follow);
            Ok(plan)
        })
        .await
    }

    async fn authorize_request(
        &self,
        account_id: i64,
        requester_id: i64,
        follow_id: i64,
        now_ms: i64,
        event: &ChangeEvent<'_>,
    ) -> StoreResult<Vec<GraphChange>> {
        self.change(account_id, requester_id, event, |state| {
            let Some(request) = state.edge(requester_id, Kind::Request) else {
                return Err(StoreError::NotFound);
            };
            let mut plan = Plan::default();
            plan.delete.push((requester_id, Kind::Request));
            plan.ops.push(ViewOp::DelRequest { from: requester_id, to: account_id, id: request.id });
            if state.edge(requester_id, Kind::Follow).is_none() {
                let follow = Edge { id: follow_id, created_at_ms: now_ms, ..request.clone() };
                plan.put.push((requester_id, Kind::Follow, follow));
                plan.ops.push(ViewOp::PutFollow { from: requester_id, to: account_id, id: follow_id });
                plan.changes.push(GraphChange {
                    show_reblogs: request.show_reblogs,
                    notify: request.notify,
                    ..GraphChange::new(ChangeKind::Followed, requester_id, account_id)
                });
            }
            Ok(plan)
        })
        .await
    }

    async fn reject_request(
        &self,
        account_id: i64,
        requester_id: i64,
        event: &ChangeEvent<'_>,
    ) -> StoreResult<Vec<GraphChange>> {
        self.change(account_id, requester_id, event, |state| {
            if state.edge(requester_id, Kind::Request).is_none() {
                return Err(StoreError::NotFound);
            }
            let mut plan = Plan::default();
            plan.drop_follow_like(state, requester_id, account_id, Kind::Request);
            Ok(plan)
        })
        .await
    }

    async fn block(
        &self,
        id: i64,
        account_id: i64,
        target_id: i64,
        now_ms: i64,
        event: &ChangeEvent<'_>,
    ) -> StoreResult<Vec<GraphChange>> {
        self.change(account_id, target_id, event, |state| {
            let mut plan = Plan::default();
            plan.drop_follow_like(state, account_id, target_id, Kind::Follow);
            plan.drop_follow_like(state, target_id, account_id, Kind::Follow);
            plan.drop_follow_like(state, account_id, target_id, Kind::Request);
            plan.drop_follow_like(state, target_id, account_id, Kind::Request);
            if state.edge(account_id, Kind::Block).is_none() {
                plan.put.push((account_id, Kind::Block, Edge { id, created_at_ms: now_ms, ..Edge::default() }));
                plan.ops.push(ViewOp::PutBlock { from: account_id, to: target_id, id });
                plan.changes.push(GraphChange::new(ChangeKind::Blocked, account_id, target_id));
            }
            Ok(plan)
        })
        .await
    }

    async fn unblock(&self, account_id: i64, target_id: i64, event: &ChangeEvent<'_>) -> StoreResult<Vec<GraphChange>> {
        self.change(account_id, target_id, event, |state| {
            let mut plan = Plan::default();
            if let Some(b) = state.edge(account_id, Kind::Block) {
                plan.delete.push((account_id, Kind::Block));
                plan.ops.push(ViewOp::DelBlock { from: account_id, to: target_id, id: b.id });
                plan.changes.push(GraphChange::new(ChangeKind::Unblocked, account_id, target_id));
            }
            Ok(plan)
        })
        .await
    }

    async fn mute(&self, m: &NewMute, event: &ChangeEvent<'_>) -> StoreResult<Vec<GraphChange>> {
        self.change(m.account_id, m.target_id, event, |state| {
            let mut plan = Plan::default();
            let announce = GraphChange {
                mute_notifications: m.notifications,
                mute_expires_at_ms: m.expires_at_ms,
                ..GraphChange::new(ChangeKind::Muted, m.account_id, m.target_id)
            };
            match state.edge(m.account_id, Kind::Mute) {
                Some(old) if mute_is_live(old.expires_at_ms, m.created_at_ms) => {
                    if (old.notifications, old.expires_at_ms) != (m.notifications, m.expires_at_ms) {
                        let new =
                            Edge { notifications: m.notifications, expires_at_ms: m.expires_at_ms, ..old.clone() };
                        plan.put.push((m.account_id, Kind::Mute, new));
                        plan.ops.push(ViewOp::PutMute {
                            from: m.account_id,
                            to: m.target_id,
                            id: old.id,
                            notifications: m.notifications,
                            expires_at_ms: m.expires_at_ms,
                        });
                        plan.changes.push(announce);
                    }
                }
                old => {
                    // An expired mute is as good as none: replace it, with a fresh cursor.
                    if let Some(old) = old {
                        plan.ops.push(ViewOp::DelMute { from: m.account_id, id: old.id });
                    }
                    let new = Edge {
                        id: m.id,
                        notifications: m.notifications,
                        expires_at_ms: m.expires_at_ms,
                        created_at_ms: m.created_at_ms,
                        ..Edge::default()
                    };
                    plan.put.push((m.account_id, Kind::Mute, new));
                    plan.ops.push(ViewOp::PutMute {
                        from: m.account_id,
                        to: m.target_id,
                        id: m.id,
                        notifications: m.notifications,
                        expires_at_ms: m.expires_at_ms,
                    });
                    plan.changes.push(announce);
                }
            }
            Ok(plan)
        })
        .await
    }

    async fn unmute(
        &self,
        account_id: i64,
        target_id: i64,
        now_ms: i64,
        event: &ChangeEvent<'_>,
    ) -> StoreResult<Vec<GraphChange>> {
        self.change(account_id, target_id, event, |state| {
            let mut plan = Plan::default();
            if let Some(old) = state.edge(account_id, Kind::Mute) {
                plan.delete.push((account_id, Kind::Mute));
                plan.ops.push(ViewOp::DelMute { from: account_id, id: old.id });
                // An expired mute already ended; removing its row is housekeeping, not news.
                if mute_is_live(old.expires_at_ms, now_ms) {
                    plan.changes.push(GraphChange::new(ChangeKind::Unmuted, account_id, target_id));
                }
            }
            Ok(plan)
        })
        .await
    }

    async fn dismiss_suggestion(&self, account_id: i64, target_id: i64, now_ms: i64) -> StoreResult<()> {
        let (s, q) = self.ready()?;
        cql::exec(s, &q.dismiss, (account_id, target_id, now_ms)).await?;
        Ok(())
    }

    async fn relationships(&self, me: i64, ids: &[i64], now_ms: i64) -> StoreResult<Vec<Relationship>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(64) {
            let states = try_join_all(chunk.iter().map(|&id| async move {
                let (low, high) = pair(me, id);
                self.read_pair(low, high, false).await
            }))
            .await?;
            for (&id, state) in chunk.iter().zip(states) {
                let follow = state.edge(me, Kind::Follow);
                let request = state.edge(me, Kind::Request);
                let options = follow.or(request);
                let mute = state.edge(me, Kind::Mute).filter(|m| mute_is_live(m.expires_at_ms, now_ms));
                out.push(Relationship {
                    id,
                    following: follow.is_some(),
                    showing_reblogs: options.is_some_and(|o| o.show_reblogs),
                    notifying: options.is_some_and(|o| o.notify),
                    languages: options.map(|o| languages_list(&o.languages)).unwrap_or_default(),
                    followed_by: id != me && state.edge(id, Kind::Follow).is_some(),
                    blocking: state.edge(me, Kind::Block).is_some(),
                    blocked_by: id != me && state.edge(id, Kind::Block).is_some(),
                    muting: mute.is_some(),
                    muting_notifications: mute.is_some_and(|m| m.notifications),
                    requested: request.is_some(),
                    requested_by: id != me && state.edge(id, Kind::Request).is_some(),
                });
            }
        }
        Ok(out)
    }

    async fn followers(&self, account_id: i64, page: &Page) -> StoreResult<Vec<Entry>> {
        let (_, q) = self.ready()?;
        self.list(&q.followers_page_desc, &q.followers_page_asc, account_id, page).await
    }

    async fn following(&self, account_id: i64, page: &Page) -> StoreResult<Vec<Entry>> {
        let (_, q) = self.ready()?;
        self.list(&q.following_page_desc, &q.following_page_asc, account_id, page).await
    }

    async fn follow_requests(&self, account_id: i64, page: &Page) -> StoreResult<Vec<Entry>> {
        let (_, q) = self.ready()?;
        self.list(&q.requests_page_desc, &q.requests_page_asc, account_id, page).await
    }

    async fn blocks(&self, account_id: i64, page: &Page) -> StoreResult<Vec<Entry>> {
        let (_, q) = self.ready()?;
        self.list(&q.blocks_page_desc, &q.blocks_page_asc, account_id, page).await
    }

    async fn mutes(&self, account_id: i64, page: &Page, now_ms: i64) -> StoreResult<Vec<Entry>> {
        // Live mutes only; the partition is one account's mutes, so the page is cut here.
        let upper = page.max_id.unwrap_or(i64::MAX);
        let lower = page.since_id.into_iter().chain(page.min_id).max().unwrap_or(i64::MIN);
        let mut rows: Vec<Entry> = self
            .live_mutes(account_id, now_ms)
            .await?
            .into_iter()
            .filter(|(id, _, _)| *id < upper && *id > lower)
            .map(|(cursor_id, account_id, _)| Entry { cursor_id, account_id })
            .collect();
        rows.sort_by_key(|e| std::cmp::Reverse(e.cursor_id));
        if page.min_id.is_some() {
            let skip = rows.len().saturating_sub(page.limit);
            rows.drain(..skip);
        } else {
            rows.truncate(page.limit);
        }
        Ok(rows)
    }

    async fn follower_ids(&self, account_id: i64, after_id: i64, limit: i64) -> StoreResult<FollowerIds> {
        let (s, q) = self.ready()?;
        // One row more than asked tells whether another page follows.
        let mut rows: Vec<(i64, i64)> =
            cql::rows(s, &q.followers_after, (account_id, after_id, (limit + 1).clamp(1, i64::from(i32::MAX)) as i32))
                .await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit.max(0) as usize);
        let total = cql::row::<(i64,)>(s, &q.followers_count, (account_id,)).await?.map(|(n,)| n).unwrap_or(0);
        let next_after_id = if more { rows.last().map(|r| r.0).unwrap_or(0) } else { 0 };
        Ok(FollowerIds { follower_ids: rows.into_iter().map(|r| r.1).collect(), next_after_id, total })
    }

    async fn filter_followers(&self, account_id: i64, candidates: &[i64]) -> StoreResult<Vec<i64>> {
        let found = self.followers_among(account_id, candidates).await?;
        let mut seen = HashSet::new();
        Ok(candidates.iter().copied().filter(|c| found.contains_key(c) && seen.insert(*c)).collect())
    }

    async fn familiar_followers(&self, me: i64, ids: &[i64]) -> StoreResult<Vec<FamiliarFollowers>> {
        let (s, q) = self.ready()?;
        let mine: Vec<i64> =
            cql::rows::<(i64, i64)>(s, &q.following_all, (me,)).await?.into_iter().map(|(_, t)| t).collect();
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let mut found: Vec<(i64, i64)> =
                self.followers_among(id, &mine).await?.into_iter().map(|(f, follow_id)| (follow_id, f)).collect();
            found.sort_by_key(|(follow_id, _)| std::cmp::Reverse(*follow_id));
            out.push(FamiliarFollowers { id, account_ids: found.into_iter().map(|(_, f)| f).collect() });
        }
        Ok(out)
    }

    async fn suggestions(&self, me: i64, limit: i64, now_ms: i64) -> StoreResult<Vec<Suggestion>> {
        let (s, q) = self.ready()?;
        let mine: Vec<i64> =
            cql::rows::<(i64, i64)>(s, &q.following_all, (me,)).await?.into_iter().map(|(_, t)| t).collect();
        let mut excluded: HashSet<i64> = mine.iter().copied().collect();
        excluded.insert(me);
        excluded.extend(cql::rows::<(i64,)>(s, &q.requested_all, (me,)).await?.into_iter().map(|(t,)| t));
        excluded.extend(cql::rows::<(i64, i64)>(s, &q.blocks_all, (me,)).await?.into_iter().map(|(_, t)| t));
        excluded.extend(cql::rows::<(i64,)>(s, &q.blocked_by_all, (me,)).await?.into_iter().map(|(t,)| t));
        excluded.extend(self.live_mutes(me, now_ms).await?.into_iter().map(|(_, t, _)| t));
        excluded.extend(cql::rows::<(i64,)>(s, &q.dismissed, (me,)).await?.into_iter().map(|(t,)| t));
        let mut mutuals: HashMap<i64, i64> = HashMap::new();
        for chunk in mine.chunks(32) {
            let lists = try_join_all(chunk.iter().map(|f| async move {
                let (s, q) = self.ready()?;
                Ok::<_, StoreError>(cql::rows::<(i64, i64)>(s, &q.following_all, (*f,)).await?)
            }))
            .await?;
            for (_, target) in lists.into_iter().flatten() {
                if !excluded.contains(&target) {
                    *mutuals.entry(target).or_default() += 1;
                }
            }
        }
        let mut ranked: Vec<Suggestion> =
            mutuals.into_iter().map(|(account_id, mutuals)| Suggestion { account_id, mutuals }).collect();
        ranked.sort_by(|a, b| b.mutuals.cmp(&a.mutuals).then(a.account_id.cmp(&b.account_id)));
        ranked.truncate(limit.max(0) as usize);
        Ok(ranked)
    }

    async fn filter_set(&self, me: i64, now_ms: i64) -> StoreResult<FilterSet> {
        let (s, q) = self.ready()?;
        let (blocking, blocked_by) = futures::try_join!(
            cql::rows::<(i64, i64)>(s, &q.blocks_all, (me,)),
            cql::rows::<(i64,)>(s, &q.blocked_by_all, (me,)),
        )?;
        let muting = self.live_mutes(me, now_ms).await?;
        let mut set = FilterSet {
            blocking: blocking.into_iter().map(|(_, t)| t).collect(),
            blocked_by: blocked_by.into_iter().map(|(t,)| t).collect(),
            muting: muting.into_iter().map(|(_, t, _)| t).collect(),
        };
        set.blocking.sort_unstable();
        set.blocked_by.sort_unstable();
        set.muting.sort_unstable();
        Ok(set)
    }

    async fn counts(&self, ids: &[i64]) -> StoreResult<Vec<Counts>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(32) {
            let counted = try_join_all(chunk.iter().map(|&id| async move {
                let (s, q) = self.ready()?;
                let (followers, following) = futures::try_join!(
                    cql::row::<(i64,)>(s, &q.followers_count, (id,)),
                    cql::row::<(i64,)>(s, &q.following_count, (id,)),
                )?;
                Ok::<_, StoreError>(Counts {
                    id,
                    followers_count: followers.map(|(n,)| n).unwrap_or(0),
                    following_count: following.map(|(n,)| n).unwrap_or(0),
                })
            }))
            .await?;
            out.extend(counted);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use agora_proto::events::v1::GraphChanged;

    static IDS: std::sync::LazyLock<agora_kit::IdGenerator> =
        std::sync::LazyLock::new(agora_kit::IdGenerator::random_worker);

    fn ev(c: &GraphChange) -> Envelope {
        let payload = GraphChanged { account_id: c.account_id, target_id: c.target_id, ..Default::default() };
        Envelope {
            id: IDS.next_id(),
            r#type: c.kind.event_type().into(),
            aggregate_id: c.account_id.to_string(),
            payload: payload.encode_to_vec(),
            ..Default::default()
        }
    }

    fn follow_of(a: i64, b: i64) -> NewFollow {
        NewFollow {
            id: IDS.next_id(),
            account_id: a,
            target_id: b,
            show_reblogs: true,
            notify: false,
            languages: vec![],
            created_at_ms: 1,
        }
    }

    /// A cluster not reached yet answers 503 (retried by clients and load balancers), not 500.
    #[tokio::test]
    async fn a_cluster_not_reached_yet_answers_unavailable() {
        let s = ScyllaGraphStore::open("scylla://127.0.0.1:1/agora_never_reached", false).unwrap();
        let e = agora_kit::Error::from(s.ping().await.unwrap_err());
        assert_eq!(e.kind, agora_kit::ErrorKind::Unavailable);
        assert_eq!(e.kind.http_status().as_u16(), 503);
    }

    async fn store() -> Option<Arc<ScyllaGraphStore>> {
        let base = agora_testkit::test_server("AGORA_TEST_SCYLLA_URL")?;
        let s = ScyllaGraphStore::open(&agora_testkit::fresh_scylla_keyspace(&base), true).unwrap();
        agora_testkit::wait_until_ready(|| s.ping()).await.unwrap();
        agora_testkit::wait_until_ready(|| async { s.outbox.backlog().await.map(|_| ()) }).await.unwrap();
        Some(s)
    }

    async fn events(s: &ScyllaGraphStore) -> Vec<(i64, String, i64, i64)> {
        s.outbox
            .pending(10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|p| {
                let g = GraphChanged::decode(p.envelope.payload.as_slice()).unwrap();
                (p.id, p.envelope.r#type, g.account_id, g.target_id)
            })
            .collect()
    }

    /// A writer that dies between the commit of a change and its views leaves the change
    /// pending; the next writer of the pair, or the sweeper, completes it — views and event —
    /// before anything else happens to the pair.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_a_crash_left_pending_is_completed() {
        let Some(s) = store().await else { return };
        let (a, b, c, d) = (IDS.next_id(), IDS.next_id(), IDS.next_id(), IDS.next_id());
        s.crash_after_commit.store(true, std::sync::atomic::Ordering::SeqCst);
        s.follow(&follow_of(a, b), false, &ev).await.unwrap();
        s.follow(&follow_of(c, d), false, &ev).await.unwrap();
        s.crash_after_commit.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(s.relationships(a, &[b], 0).await.unwrap()[0].following, "the pair itself holds the follow");
        assert!(
            s.followers(b, &Page { max_id: None, since_id: None, min_id: None, limit: 40 }).await.unwrap().is_empty()
        );
        assert!(events(&s).await.is_empty(), "nor has the event been written yet");

        // The next writer of (a, b) completes the pending follow first, then unfollows.
        let gone = s.unfollow(a, b, &ev).await.unwrap();
        assert_eq!(gone.len(), 1);
        let evs = events(&s).await;
        let kinds: Vec<&str> = evs.iter().map(|e| e.1.as_str()).collect();
        assert_eq!(kinds, vec!["graph.followed", "graph.unfollowed"], "in the pair's commit order");
        assert_eq!(s.counts(&[b]).await.unwrap()[0].followers_count, 0);

        // Nobody writes (c, d) again: the sweeper completes it.
        assert_eq!(s.sweep_once().await.unwrap(), 1);
        assert_eq!(s.counts(&[d]).await.unwrap()[0].followers_count, 1);
        assert_eq!(events(&s).await.iter().filter(|e| e.2 == c).count(), 1);
        assert_eq!(s.sweep_once().await.unwrap(), 0, "nothing left to do");
    }

    /// The relay's guarantees: every event of one pair in commit order; completing the same work
    /// twice (a writer and the sweeper racing) writes the same event id again — a duplicate a
    /// consumer drops by id — and never a second, different event.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_keep_pair_order_and_duplicates_share_an_id() {
        let Some(s) = store().await else { return };
        let (a, b) = (IDS.next_id(), IDS.next_id());
        for _ in 0..5 {
            s.follow(&follow_of(a, b), false, &ev).await.unwrap();
            s.block(IDS.next_id(), a, b, 1, &ev).await.unwrap();
            s.unblock(a, b, &ev).await.unwrap();
        }
        let evs = events(&s).await;
        let kinds: Vec<&str> = evs.iter().map(|e| e.1.as_str()).collect();
        let round = ["graph.followed", "graph.unfollowed", "graph.blocked", "graph.unblocked"];
        assert_eq!(kinds, round.iter().cycle().take(20).copied().collect::<Vec<_>>());
        // Replay the last change's work by hand, as a racing sweeper would.
        let (low, high) = pair(a, b);
        s.crash_after_commit.store(true, std::sync::atomic::Ordering::SeqCst);
        s.follow(&follow_of(a, b), false, &ev).await.unwrap();
        s.crash_after_commit.store(false, std::sync::atomic::Ordering::SeqCst);
        let state = s.read_pair(low, high, true).await.unwrap();
        let pending: Pending = serde_json::from_slice(state.pending.as_ref().unwrap()).unwrap();
        s.complete(low, high, &pending).await.unwrap();
        s.complete(low, high, &pending).await.unwrap();
        let after = events(&s).await;
        assert_eq!(after.len(), 21, "the replayed work wrote its one event, once per id");
        assert_eq!(after.last().unwrap().1, "graph.followed");
    }
}
