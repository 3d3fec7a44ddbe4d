//! The notification store on ScyllaDB (`scylla://…/keyspace`), one of the high-volume stores.
//! The data model is in `migrations/scylla/0001_init.cql`: a partition per recipient clustered by
//! id descending, and index tables that find a notification again from what undoes it. There are
//! no multi-partition transactions, so an event is applied as idempotent steps and recorded as
//! handled last: a crash part-way replays the event, and every step gives the same result again.
//! A cause is claimed with a lightweight transaction, so two deliveries racing cannot notify
//! twice. Unread counts are exact: they count the recipient's partition above the read marker.

use std::collections::HashSet;
use std::sync::Arc;

use agora_store::scylla::{self as cql, Migration, Scylla, ScyllaError, Statements};
use async_trait::async_trait;
use futures::{StreamExt as _, TryStreamExt as _};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::{NotificationStore, StoreError, StoreResult};
use crate::domain::{Change, GROUP_SAMPLE, Group, GroupStats, Kind, Notification, Query};
use crate::push::{Policy, PushSubscription, VapidKey};

const PUSH_COLUMNS: &str = "account_id, session_id, id, endpoint, p256dh, auth, standard, alerts, policy, \
     access_token, server_key, created_at_ms";
type PushRow = (i64, i64, i64, String, String, String, bool, String, String, String, String, i64);

fn subscription(
    (
        account_id,
        session_id,
        id,
        endpoint,
        p256dh,
        auth,
        standard,
        alerts,
        policy,
        access_token,
        server_key,
        created_at_ms,
    ): PushRow,
) -> PushSubscription {
    PushSubscription {
        id,
        account_id,
        session_id,
        endpoint,
        p256dh,
        auth,
        standard,
        alerts: PushSubscription::alerts_from_text(&alerts),
        policy: Policy::parse(&policy).unwrap_or(Policy::All),
        access_token,
        server_key,
        created_at_ms,
    }
}

pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "init", cql: include_str!("../../migrations/scylla/0001_init.cql") },
    Migration { version: 2, name: "push", cql: include_str!("../../migrations/scylla/0002_push.cql") },
];

/// Bookkeeping rows (handled events, timed mutes) are spread over this many partitions.
const SHARDS: i32 = 16;
/// Rows fetched per round trip when a page is filtered here (types, actor, suppressions).
const SCAN_PAGE: i32 = 100;

fn shard_of(id: i64) -> i32 {
    id.rem_euclid(i64::from(SHARDS)) as i32
}

impl From<ScyllaError> for StoreError {
    fn from(e: ScyllaError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

const COLUMNS: &str = "id, kind, account_id, status_id, created_at_ms";
type Row = (i64, String, i64, i64, i64);

fn notification(recipient_id: i64, (id, kind, account_id, status_id, created_at_ms): Row) -> Option<Notification> {
    Some(Notification { id, recipient_id, kind: Kind::parse(&kind)?, account_id, status_id, created_at_ms })
}

/// Every statement the store runs, prepared once the schema exists.
pub struct Prepared {
    put: PreparedStatement,
    del: PreparedStatement,
    get: PreparedStatement,
    newest: PreparedStatement,
    oldest: PreparedStatement,
    all_of: PreparedStatement,
    cause_claim: PreparedStatement,
    cause_get: PreparedStatement,
    cause_del: PreparedStatement,
    by_status_put: PreparedStatement,
    by_status_del: PreparedStatement,
    by_status: PreparedStatement,
    by_status_for: PreparedStatement,
    by_actor_put: PreparedStatement,
    by_actor_del: PreparedStatement,
    by_actor: PreparedStatement,
    sup_put: PreparedStatement,
    sup_del: PreparedStatement,
    sup_of: PreparedStatement,
    sup_between: PreparedStatement,
    expiry_put: PreparedStatement,
    expiry_before: PreparedStatement,
    expiry_prune: PreparedStatement,
    processed_get: PreparedStatement,
    processed_claim: PreparedStatement,
    processed_del: PreparedStatement,
    processed_time_put: PreparedStatement,
    processed_time_before: PreparedStatement,
    processed_time_prune: PreparedStatement,
    sub_put: PreparedStatement,
    sub_del: PreparedStatement,
    subs_of: PreparedStatement,
    inter_put: PreparedStatement,
    inter_del: PreparedStatement,
    inter_of: PreparedStatement,
    inter_gone: PreparedStatement,
    push_put: PreparedStatement,
    push_get: PreparedStatement,
    push_of: PreparedStatement,
    push_del: PreparedStatement,
    vapid_claim: PreparedStatement,
    vapid_replace: PreparedStatement,
    vapid_get: PreparedStatement,
}

impl Statements for Prepared {
    async fn prepare(session: &Session) -> Result<Self, ScyllaError> {
        let p = |cql: String, idempotent: bool| async move { cql::prepare(session, &cql, idempotent).await };
        let scan = |cql: String| async move {
            let mut s = cql::prepare(session, &cql, true).await?;
            s.set_page_size(SCAN_PAGE);
            Ok::<_, ScyllaError>(s)
        };
        Ok(Self {
            put: p(
                "INSERT INTO notifications (recipient_id, id, kind, account_id, status_id, created_at_ms) \
                 VALUES (?, ?, ?, ?, ?, ?)"
                    .into(),
                true,
            )
            .await?,
            del: p("DELETE FROM notifications WHERE recipient_id = ? AND id = ?".into(), true).await?,
            get: p(format!("SELECT {COLUMNS} FROM notifications WHERE recipient_id = ? AND id = ?"), true).await?,
            newest: scan(format!(
                "SELECT {COLUMNS} FROM notifications WHERE recipient_id = ? AND id > ? AND id < ? ORDER BY id DESC"
            ))
            .await?,
            oldest: scan(format!(
                "SELECT {COLUMNS} FROM notifications WHERE recipient_id = ? AND id > ? AND id < ? ORDER BY id ASC"
            ))
            .await?,
            all_of: scan(format!("SELECT {COLUMNS} FROM notifications WHERE recipient_id = ?")).await?,
            cause_claim: p(
                "INSERT INTO notification_causes (recipient_id, kind, account_id, status_id, id, created_at_ms) \
                 VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS"
                    .into(),
                false,
            )
            .await?,
            cause_get: p(
                "SELECT id, created_at_ms FROM notification_causes \
                 WHERE recipient_id = ? AND kind = ? AND account_id = ? AND status_id = ?"
                    .into(),
                true,
            )
            .await?,
            cause_del: p(
                "DELETE FROM notification_causes WHERE recipient_id = ? AND kind = ? AND account_id = ? AND status_id = ?"
                    .into(),
                true,
            )
            .await?,
            by_status_put: p(
                "INSERT INTO notifications_by_status (status_id, recipient_id, id, kind, account_id) VALUES (?, ?, ?, ?, ?)"
                    .into(),
                true,
            )
            .await?,
            by_status_del: p(
                "DELETE FROM notifications_by_status WHERE status_id = ? AND recipient_id = ? AND id = ?".into(),
                true,
            )
            .await?,
            by_status: scan(
                "SELECT recipient_id, id, kind, account_id FROM notifications_by_status WHERE status_id = ?".into(),
            )
            .await?,
            by_status_for: scan(
                "SELECT recipient_id, id, kind, account_id FROM notifications_by_status \
                 WHERE status_id = ? AND recipient_id = ?"
                    .into(),
            )
            .await?,
            by_actor_put: p(
                "INSERT INTO notifications_by_actor (account_id, recipient_id, id, kind, status_id) VALUES (?, ?, ?, ?, ?)"
                    .into(),
                true,
            )
            .await?,
            by_actor_del: p(
                "DELETE FROM notifications_by_actor WHERE account_id = ? AND recipient_id = ? AND id = ?".into(),
                true,
            )
            .await?,
            by_actor: scan(
                "SELECT id, kind, status_id FROM notifications_by_actor WHERE account_id = ? AND recipient_id = ?"
                    .into(),
            )
            .await?,
            sup_put: p(
                "INSERT INTO suppressions (recipient_id, account_id, reason, expires_at_ms) VALUES (?, ?, ?, ?)".into(),
                true,
            )
            .await?,
            sup_del: p(
                "DELETE FROM suppressions WHERE recipient_id = ? AND account_id = ? AND reason = ?".into(),
                true,
            )
            .await?,
            sup_of: scan("SELECT account_id, expires_at_ms FROM suppressions WHERE recipient_id = ?".into()).await?,
            sup_between: scan(
                "SELECT reason, expires_at_ms FROM suppressions WHERE recipient_id = ? AND account_id = ?".into(),
            )
            .await?,
            expiry_put: p(
                "INSERT INTO suppressions_by_expiry (shard, expires_at_ms, recipient_id, account_id, reason) \
                 VALUES (?, ?, ?, ?, ?)"
                    .into(),
                true,
            )
            .await?,
            expiry_before: scan(
                "SELECT expires_at_ms, recipient_id, account_id, reason FROM suppressions_by_expiry \
                 WHERE shard = ? AND expires_at_ms < ?"
                    .into(),
            )
            .await?,
            expiry_prune: p("DELETE FROM suppressions_by_expiry WHERE shard = ? AND expires_at_ms < ?".into(), true)
                .await?,
            processed_get: p("SELECT processed_at_ms FROM processed_events WHERE event_id = ?".into(), true).await?,
            processed_claim: p(
                "INSERT INTO processed_events (event_id, processed_at_ms) VALUES (?, ?) IF NOT EXISTS".into(),
                false,
            )
            .await?,
            processed_del: p("DELETE FROM processed_events WHERE event_id = ?".into(), true).await?,
            processed_time_put: p(
                "INSERT INTO processed_by_time (shard, processed_at_ms, event_id) VALUES (?, ?, ?)".into(),
                true,
            )
            .await?,
            processed_time_before: scan(
                "SELECT event_id FROM processed_by_time WHERE shard = ? AND processed_at_ms < ?".into(),
            )
            .await?,
            processed_time_prune: p(
                "DELETE FROM processed_by_time WHERE shard = ? AND processed_at_ms < ?".into(),
                true,
            )
            .await?,
            sub_put: p("INSERT INTO subscriptions (target_id, follower_id) VALUES (?, ?)".into(), true).await?,
            sub_del: p("DELETE FROM subscriptions WHERE target_id = ? AND follower_id = ?".into(), true).await?,
            subs_of: scan("SELECT follower_id FROM subscriptions WHERE target_id = ?".into()).await?,
            inter_put: p("INSERT INTO interactions (status_id, account_id, kind) VALUES (?, ?, ?)".into(), true)
                .await?,
            inter_del: p(
                "DELETE FROM interactions WHERE status_id = ? AND account_id = ? AND kind = ?".into(),
                true,
            )
            .await?,
            inter_of: scan("SELECT account_id FROM interactions WHERE status_id = ?".into()).await?,
            inter_gone: p("DELETE FROM interactions WHERE status_id = ?".into(), true).await?,
            push_put: p(
                format!("INSERT INTO push_subscriptions ({PUSH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                true,
            )
            .await?,
            push_get: p(
                format!("SELECT {PUSH_COLUMNS} FROM push_subscriptions WHERE account_id = ? AND session_id = ?"),
                true,
            )
            .await?,
            push_of: scan(format!("SELECT {PUSH_COLUMNS} FROM push_subscriptions WHERE account_id = ?")).await?,
            push_del: p("DELETE FROM push_subscriptions WHERE account_id = ? AND session_id = ?".into(), true).await?,
            vapid_claim: p(
                "INSERT INTO vapid_keys (name, private_key, public_key, created_at_ms) VALUES ('current', ?, ?, ?) \
                 IF NOT EXISTS"
                    .into(),
                false,
            )
            .await?,
            vapid_replace: p(
                "INSERT INTO vapid_keys (name, private_key, public_key, created_at_ms) VALUES ('current', ?, ?, ?)"
                    .into(),
                true,
            )
            .await?,
            vapid_get: p(
                "SELECT private_key, public_key, created_at_ms FROM vapid_keys WHERE name = 'current'".into(),
                true,
            )
            .await?,
        })
    }
}

/// Notification store on ScyllaDB.
pub struct ScyllaNotificationStore {
    db: Arc<Scylla<Prepared>>,
}

impl ScyllaNotificationStore {
    /// Opens the store; the session comes up in the background (see agora_store::scylla).
    pub fn open(url: &str, migrate_on_start: bool) -> StoreResult<Self> {
        let db = Scylla::open(url, MIGRATIONS, migrate_on_start).map_err(StoreError::Unavailable)?;
        Ok(Self { db })
    }

    fn ready(&self) -> StoreResult<(&Session, &Prepared)> {
        Ok(self.db.ready()?)
    }

    /// The accounts the recipient does not hear from at `now_ms`.
    async fn unheard(&self, recipient_id: i64, now_ms: i64) -> StoreResult<HashSet<i64>> {
        let (s, q) = self.ready()?;
        let rows: Vec<(i64, i64)> = cql::rows(s, &q.sup_of, (recipient_id,)).await?;
        Ok(rows.into_iter().filter(|(_, until)| *until == 0 || *until > now_ms).map(|(a, _)| a).collect())
    }

    async fn hears(&self, recipient_id: i64, account_id: i64, now_ms: i64) -> StoreResult<bool> {
        let (s, q) = self.ready()?;
        let rows: Vec<(String, i64)> = cql::rows(s, &q.sup_between, (recipient_id, account_id)).await?;
        Ok(!rows.iter().any(|(_, until)| *until == 0 || *until > now_ms))
    }

    /// Writes `n` with its index rows, in one logged batch.
    async fn put(&self, n: &Notification) -> StoreResult<()> {
        let (s, q) = self.ready()?;
        let row = (n.recipient_id, n.id, n.kind.as_str(), n.account_id, n.status_id, n.created_at_ms);
        let actor = (n.account_id, n.recipient_id, n.id, n.kind.as_str(), n.status_id);
        if n.status_id == 0 {
            cql::batch(s, &[&q.put, &q.by_actor_put], (row, actor), true).await?;
        } else {
            let about = (n.status_id, n.recipient_id, n.id, n.kind.as_str(), n.account_id);
            cql::batch(s, &[&q.put, &q.by_actor_put, &q.by_status_put], (row, actor, about), true).await?;
        }
        Ok(())
    }

    /// Deletes a notification, its cause and its index rows, in one logged batch.
    async fn delete(&self, recipient_id: i64, id: i64, kind: &str, account_id: i64, status_id: i64) -> StoreResult<()> {
        let (s, q) = self.ready()?;
        let row = (recipient_id, id);
        let cause = (recipient_id, kind, account_id, status_id);
        let actor = (account_id, recipient_id, id);
        if status_id == 0 {
            cql::batch(s, &[&q.del, &q.cause_del, &q.by_actor_del], (row, cause, actor), true).await?;
        } else {
            let about = (status_id, recipient_id, id);
            cql::batch(s, &[&q.del, &q.cause_del, &q.by_actor_del, &q.by_status_del], (row, cause, actor, about), true)
                .await?;
        }
        Ok(())
    }

    /// Notifies `n` unless the recipient does not hear from its actor, or its cause already
    /// notified (then that notification is written again, which repairs a crash between the
    /// claim and the write).
    async fn add(&self, n: &Notification, now_ms: i64) -> StoreResult<()> {
        if !self.hears(n.recipient_id, n.account_id, now_ms).await? {
            return Ok(());
        }
        let (s, q) = self.ready()?;
        let claim = (n.recipient_id, n.kind.as_str(), n.account_id, n.status_id, n.id, n.created_at_ms);
        if cql::applied(s, &q.cause_claim, claim).await? {
            return self.put(n).await;
        }
        let cause = (n.recipient_id, n.kind.as_str(), n.account_id, n.status_id);
        if let Some((id, created_at_ms)) = cql::row::<(i64, i64)>(s, &q.cause_get, cause).await? {
            self.put(&Notification { id, created_at_ms, ..n.clone() }).await?;
        }
        Ok(())
    }

    /// Removes the recipient's notification of one cause; false when there was none.
    async fn remove_cause(&self, recipient_id: i64, kind: Kind, account_id: i64, status_id: i64) -> StoreResult<bool> {
        let (s, q) = self.ready()?;
        let cause = (recipient_id, kind.as_str(), account_id, status_id);
        match cql::row::<(i64, i64)>(s, &q.cause_get, cause).await? {
            Some((id, _)) => {
                self.delete(recipient_id, id, kind.as_str(), account_id, status_id).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn apply_one(&self, change: &Change, now_ms: i64) -> StoreResult<()> {
        let (s, q) = self.ready()?;
        match change {
            Change::Add(n) => self.add(n, now_ms).await?,
            Change::Remove { recipient_id: Some(r), kind, account_id, status_id } => {
                self.remove_cause(*r, *kind, *account_id, *status_id).await?;
            }
            Change::Remove { recipient_id: None, kind, account_id, status_id } => {
                let rows: Vec<(i64, i64, String, i64)> = cql::rows(s, &q.by_status, (*status_id,)).await?;
                for (recipient, id, k, actor) in rows {
                    if k == kind.as_str() && actor == *account_id {
                        self.delete(recipient, id, &k, actor, *status_id).await?;
                    }
                }
            }
            Change::Renew(n) => {
                self.remove_cause(n.recipient_id, n.kind, n.account_id, n.status_id).await?;
                self.add(n, now_ms).await?;
            }
            Change::RemoveAboutStatus { status_id } => {
                if *status_id != 0 {
                    let rows: Vec<(i64, i64, String, i64)> = cql::rows(s, &q.by_status, (*status_id,)).await?;
                    for (recipient, id, k, actor) in rows {
                        self.delete(recipient, id, &k, actor, *status_id).await?;
                    }
                }
                cql::exec(s, &q.inter_gone, (*status_id,)).await?;
            }
            Change::Followed(n) => {
                if !self.remove_cause(n.recipient_id, Kind::FollowRequest, n.account_id, 0).await? {
                    self.add(n, now_ms).await?;
                }
            }
            Change::Suppress { recipient_id, account_id, reason, expires_at_ms } => {
                let row = (*recipient_id, *account_id, reason.as_str(), *expires_at_ms);
                if *expires_at_ms == 0 {
                    cql::exec(s, &q.sup_put, row).await?;
                } else {
                    let expiry = (shard_of(*recipient_id), *expires_at_ms, *recipient_id, *account_id, reason.as_str());
                    cql::batch(s, &[&q.sup_put, &q.expiry_put], (row, expiry), true).await?;
                }
                let rows: Vec<(i64, String, i64)> = cql::rows(s, &q.by_actor, (*account_id, *recipient_id)).await?;
                for (id, k, status_id) in rows {
                    self.delete(*recipient_id, id, &k, *account_id, status_id).await?;
                }
            }
            Change::Unsuppress { recipient_id, account_id, reason } => {
                cql::exec(s, &q.sup_del, (*recipient_id, *account_id, reason.as_str())).await?;
            }
            Change::Subscribe { target_id, follower_id } => {
                cql::exec(s, &q.sub_put, (*target_id, *follower_id)).await?;
            }
            Change::Unsubscribe { target_id, follower_id } => {
                cql::exec(s, &q.sub_del, (*target_id, *follower_id)).await?;
            }
            Change::Interacted { status_id, account_id, how } => {
                cql::exec(s, &q.inter_put, (*status_id, *account_id, how.as_str())).await?;
            }
            Change::Uninteracted { status_id, account_id, how } => {
                cql::exec(s, &q.inter_del, (*status_id, *account_id, how.as_str())).await?;
            }
        }
        Ok(())
    }

    /// Up to `limit` of the recipient's notifications with ids in (`above`, `below`) that `keep`
    /// admits, walking the partition in one direction page by page.
    async fn scan(
        &self,
        recipient_id: i64,
        (above, below): (i64, i64),
        ascending: bool,
        limit: usize,
        keep: impl Fn(&Notification) -> bool,
    ) -> StoreResult<Vec<Notification>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (s, q) = self.ready()?;
        let stmt = if ascending { &q.oldest } else { &q.newest };
        let pager = s.execute_iter(stmt.clone(), (recipient_id, above, below)).await.map_err(cql::failed)?;
        let rows = pager.rows_stream::<Row>().map_err(cql::failed)?;
        let kept = rows
            .map_err(cql::failed)
            .try_filter_map(|row| {
                let n = notification(recipient_id, row).filter(|n| keep(n));
                async move { Ok(n) }
            })
            .take(limit)
            .try_collect()
            .await?;
        Ok(kept)
    }
}

/// `query`'s filters on a recipient's notifications, with the accounts they do not hear from.
fn admits<'a>(query: &'a Query, kinds: &'a [Kind], unheard: &'a HashSet<i64>) -> impl Fn(&Notification) -> bool + 'a {
    move |n| {
        kinds.contains(&n.kind)
            && query.account_id.is_none_or(|a| n.account_id == a)
            && !unheard.contains(&n.account_id)
    }
}

#[async_trait]
impl NotificationStore for ScyllaNotificationStore {
    async fn migrate(&self) -> StoreResult<()> {
        Ok(self.db.migrate(MIGRATIONS).await?)
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(self.db.ping().await?)
    }

    async fn apply(&self, event_id: i64, now_ms: i64, changes: &[Change]) -> StoreResult<bool> {
        let (s, q) = self.ready()?;
        if cql::row::<(Option<i64>,)>(s, &q.processed_get, (event_id,)).await?.is_some() {
            return Ok(false);
        }
        for change in changes {
            self.apply_one(change, now_ms).await?;
        }
        // Recorded last: a crash before this line replays the event, whose steps are idempotent.
        // Of two deliveries racing, one wins the claim; the other's steps changed nothing new.
        if !cql::applied(s, &q.processed_claim, (event_id, now_ms)).await? {
            return Ok(false);
        }
        cql::exec(s, &q.processed_time_put, (shard_of(event_id), now_ms, event_id)).await?;
        Ok(true)
    }

    async fn subscribers(&self, target_id: i64) -> StoreResult<Vec<i64>> {
        let (s, q) = self.ready()?;
        let rows: Vec<(i64,)> = cql::rows(s, &q.subs_of, (target_id,)).await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn interested(&self, status_id: i64) -> StoreResult<Vec<i64>> {
        let (s, q) = self.ready()?;
        let rows: Vec<(i64,)> = cql::rows(s, &q.inter_of, (status_id,)).await?;
        let mut ids: Vec<i64> = rows.into_iter().map(|(id,)| id).collect();
        ids.dedup();
        Ok(ids)
    }

    async fn page(&self, recipient_id: i64, query: &Query, now_ms: i64) -> StoreResult<Vec<Notification>> {
        let kinds = query.kinds();
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let unheard = self.unheard(recipient_id, now_ms).await?;
        // min_id pages walk up from it; since_id pages are the newest above it.
        let ascending = query.min_id.is_some();
        let bounds = (query.min_id.or(query.since_id).unwrap_or(i64::MIN), query.max_id.unwrap_or(i64::MAX));
        let mut out = self.scan(recipient_id, bounds, ascending, query.limit, admits(query, &kinds, &unheard)).await?;
        if ascending {
            out.reverse();
        }
        Ok(out)
    }

    async fn group_stats(&self, recipient_id: i64, group: Group, now_ms: i64) -> StoreResult<GroupStats> {
        let unheard = self.unheard(recipient_id, now_ms).await?;
        // (id, actor) of the group's notifications the recipient still hears, newest first.
        let mut members: Vec<(i64, i64)> = match group {
            Group::OfStatus { kind, status_id } => {
                let (s, q) = self.ready()?;
                let rows: Vec<(i64, i64, String, i64)> =
                    cql::rows(s, &q.by_status_for, (status_id, recipient_id)).await?;
                rows.into_iter()
                    .filter(|(_, _, k, actor)| k == kind.as_str() && !unheard.contains(actor))
                    .map(|(_, id, _, actor)| (id, actor))
                    .collect()
            }
            Group::OfDay { kind, day } => {
                let (first, last) = Group::day_bounds(day);
                // An id is made when the notification is written, never before what it tells of.
                let above = agora_kit::id::min_id_at(first) - 1;
                let keep = |n: &Notification| {
                    n.kind == kind && (first..=last).contains(&n.created_at_ms) && !unheard.contains(&n.account_id)
                };
                self.scan(recipient_id, (above, i64::MAX), false, usize::MAX, keep)
                    .await?
                    .into_iter()
                    .map(|n| (n.id, n.account_id))
                    .collect()
            }
            Group::Single(id) => {
                self.get(recipient_id, id, now_ms).await?.map(|n| (n.id, n.account_id)).into_iter().collect()
            }
        };
        members.sort_unstable_by_key(|m| std::cmp::Reverse(m.0));
        Ok(GroupStats {
            count: members.len() as i64,
            most_recent_id: members.first().map_or(0, |m| m.0),
            sample_account_ids: members.iter().take(GROUP_SAMPLE).map(|m| m.1).collect(),
        })
    }

    async fn get(&self, recipient_id: i64, id: i64, now_ms: i64) -> StoreResult<Option<Notification>> {
        let (s, q) = self.ready()?;
        let Some(n) = cql::row::<Row>(s, &q.get, (recipient_id, id)).await?.and_then(|r| notification(recipient_id, r))
        else {
            return Ok(None);
        };
        Ok(self.hears(recipient_id, n.account_id, now_ms).await?.then_some(n))
    }

    async fn dismiss(&self, recipient_id: i64, id: i64) -> StoreResult<bool> {
        let (s, q) = self.ready()?;
        match cql::row::<Row>(s, &q.get, (recipient_id, id)).await? {
            Some((id, kind, account_id, status_id, _)) => {
                self.delete(recipient_id, id, &kind, account_id, status_id).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn clear(&self, recipient_id: i64) -> StoreResult<u64> {
        let (s, q) = self.ready()?;
        let rows: Vec<Row> = cql::rows(s, &q.all_of, (recipient_id,)).await?;
        for (id, kind, account_id, status_id, _) in &rows {
            self.delete(recipient_id, *id, kind, *account_id, *status_id).await?;
        }
        Ok(rows.len() as u64)
    }

    async fn unread_count(&self, recipient_id: i64, after_id: i64, query: &Query, now_ms: i64) -> StoreResult<i64> {
        let kinds = query.kinds();
        if kinds.is_empty() {
            return Ok(0);
        }
        let unheard = self.unheard(recipient_id, now_ms).await?;
        let keep = admits(query, &kinds, &unheard);
        Ok(self.scan(recipient_id, (after_id, i64::MAX), false, query.limit, keep).await?.len() as i64)
    }

    async fn prune(&self, before_ms: i64) -> StoreResult<u64> {
        let (s, q) = self.ready()?;
        let mut removed = 0u64;
        for shard in 0..SHARDS {
            let events: Vec<(i64,)> = cql::rows(s, &q.processed_time_before, (shard, before_ms)).await?;
            for (event_id,) in &events {
                cql::exec(s, &q.processed_del, (*event_id,)).await?;
            }
            removed += events.len() as u64;
            cql::exec(s, &q.processed_time_prune, (shard, before_ms)).await?;
            let expired: Vec<(i64, i64, i64, String)> = cql::rows(s, &q.expiry_before, (shard, before_ms)).await?;
            for (expires_at_ms, recipient_id, account_id, reason) in &expired {
                // A mute renewed since keeps its row: only the expiry it was written with goes.
                let current: Vec<(String, i64)> = cql::rows(s, &q.sup_between, (*recipient_id, *account_id)).await?;
                if current.iter().any(|(r, until)| r == reason && until == expires_at_ms) {
                    cql::exec(s, &q.sup_del, (*recipient_id, *account_id, reason.as_str())).await?;
                    removed += 1;
                }
            }
            cql::exec(s, &q.expiry_prune, (shard, before_ms)).await?;
        }
        Ok(removed)
    }

    async fn put_push_subscription(&self, sub: &PushSubscription) -> StoreResult<()> {
        let (s, q) = self.ready()?;
        let values = (
            sub.account_id,
            sub.session_id,
            sub.id,
            sub.endpoint.as_str(),
            sub.p256dh.as_str(),
            sub.auth.as_str(),
            sub.standard,
            sub.alerts_text(),
            sub.policy.as_str(),
            sub.access_token.as_str(),
            sub.server_key.as_str(),
            sub.created_at_ms,
        );
        cql::exec(s, &q.push_put, values).await?;
        Ok(())
    }

    async fn push_subscription(&self, account_id: i64, session_id: i64) -> StoreResult<Option<PushSubscription>> {
        let (s, q) = self.ready()?;
        Ok(cql::row::<PushRow>(s, &q.push_get, (account_id, session_id)).await?.map(subscription))
    }

    async fn push_subscriptions(&self, account_id: i64) -> StoreResult<Vec<PushSubscription>> {
        let (s, q) = self.ready()?;
        let rows: Vec<PushRow> = cql::rows(s, &q.push_of, (account_id,)).await?;
        Ok(rows.into_iter().map(subscription).collect())
    }

    async fn delete_push_subscription(&self, account_id: i64, session_id: i64) -> StoreResult<bool> {
        let (s, q) = self.ready()?;
        let there = cql::row::<PushRow>(s, &q.push_get, (account_id, session_id)).await?.is_some();
        cql::exec(s, &q.push_del, (account_id, session_id)).await?;
        Ok(there)
    }

    async fn vapid_key(&self) -> StoreResult<Option<VapidKey>> {
        let (s, q) = self.ready()?;
        let row = cql::row::<(String, String, i64)>(s, &q.vapid_get, ()).await?;
        Ok(row.map(|(private_key, public_key, created_at_ms)| VapidKey { private_key, public_key, created_at_ms }))
    }

    async fn put_vapid_key(&self, key: &VapidKey, replace: bool) -> StoreResult<VapidKey> {
        let (s, q) = self.ready()?;
        let values = (key.private_key.as_str(), key.public_key.as_str(), key.created_at_ms);
        if replace {
            cql::exec(s, &q.vapid_replace, values).await?;
        } else {
            cql::applied(s, &q.vapid_claim, values).await?;
        }
        self.vapid_key().await?.ok_or_else(|| StoreError::Unavailable("the VAPID key was not kept".into()))
    }
}
