//! The PostgreSQL and SQLite notification stores. Both speak the same SQL (numbered `$N`
//! parameters work on both engines), so one body is instantiated per engine by
//! `sql_notification_store!`; only connection set-up and migrations differ.

use agora_store::lite::{SqliteReader, SqliteWriter};
use async_trait::async_trait;
use sqlx::{PgPool, SqlitePool};

use super::lite;

use super::{NotificationStore, StoreResult};
use crate::domain::{Change, GROUP_SAMPLE, Group, GroupStats, Kind, Notification, Query};
use crate::push::{Policy, PushSubscription, VapidKey};

pub(super) const COLUMNS: &str = "id, recipient_id, kind, account_id, status_id, created_at_ms";
/// A notification is written only while the recipient hears from the actor.
pub(super) const ADD: &str = "INSERT INTO notifications (id, recipient_id, kind, account_id, status_id, created_at_ms) \
     SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM suppressions \
       WHERE recipient_id = $2 AND account_id = $4 AND (expires_at_ms = 0 OR expires_at_ms > $7)) \
     ON CONFLICT DO NOTHING";
/// `$4 = 0`: any recipient.
pub(super) const REMOVE: &str = "DELETE FROM notifications WHERE kind = $1 AND account_id = $2 AND status_id = $3 \
     AND ($4 = 0 OR recipient_id = $4)";
pub(super) const SUPPRESS: &str = "INSERT INTO suppressions (recipient_id, account_id, reason, expires_at_ms) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (recipient_id, account_id, reason) DO UPDATE SET expires_at_ms = excluded.expires_at_ms";
/// Appended to a `WHERE` on `notifications n`: the recipient still hears from the actor at `now`.
pub(super) const HEARD: &str = " AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.recipient_id = n.recipient_id \
     AND s.account_id = n.account_id AND (s.expires_at_ms = 0 OR s.expires_at_ms > ";

pub(super) const PROCESSED: &str =
    "INSERT INTO processed_events (event_id, processed_at_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING";
pub(super) const FOLLOW_REQUEST_GONE: &str =
    "DELETE FROM notifications WHERE recipient_id = $1 AND account_id = $2 AND kind = 'follow_request'";
pub(super) const ABOUT_STATUS_GONE: &str = "DELETE FROM notifications WHERE status_id = $1 AND status_id <> 0";
pub(super) const INTERACTIONS_GONE: &str = "DELETE FROM interactions WHERE status_id = $1";
pub(super) const BETWEEN_GONE: &str = "DELETE FROM notifications WHERE account_id = $1 AND recipient_id = $2";
pub(super) const UNSUPPRESS: &str =
    "DELETE FROM suppressions WHERE recipient_id = $1 AND account_id = $2 AND reason = $3";
pub(super) const SUBSCRIBE: &str =
    "INSERT INTO subscriptions (target_id, follower_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
pub(super) const UNSUBSCRIBE: &str = "DELETE FROM subscriptions WHERE target_id = $1 AND follower_id = $2";
pub(super) const INTERACTED: &str =
    "INSERT INTO interactions (status_id, account_id, kind) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
pub(super) const UNINTERACTED: &str = "DELETE FROM interactions WHERE status_id = $1 AND account_id = $2 AND kind = $3";
pub(super) const SUBSCRIBERS: &str = "SELECT follower_id FROM subscriptions WHERE target_id = $1 ORDER BY follower_id";

const PUSH_OF_SESSION: &str = "SELECT account_id, session_id, id, endpoint, p256dh, auth, standard, alerts, policy, \
     access_token, server_key, created_at_ms FROM push_subscriptions WHERE account_id = $1 AND session_id = $2";
const PUSH_OF_ACCOUNT: &str = "SELECT account_id, session_id, id, endpoint, p256dh, auth, standard, alerts, policy, \
     access_token, server_key, created_at_ms FROM push_subscriptions WHERE account_id = $1 ORDER BY session_id";
const PUT_PUSH: &str = "INSERT INTO push_subscriptions (account_id, session_id, id, endpoint, p256dh, auth, standard, \
     alerts, policy, access_token, server_key, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (account_id, session_id) DO UPDATE SET id = excluded.id, endpoint = excluded.endpoint, \
     p256dh = excluded.p256dh, auth = excluded.auth, standard = excluded.standard, alerts = excluded.alerts, \
     policy = excluded.policy, access_token = excluded.access_token, server_key = excluded.server_key, \
     created_at_ms = excluded.created_at_ms";
const PUT_VAPID: &str = "INSERT INTO vapid_keys (name, private_key, public_key, created_at_ms) VALUES ('current', $1, $2, $3) \
     ON CONFLICT (name) DO NOTHING";
const REPLACE_VAPID: &str = "INSERT INTO vapid_keys (name, private_key, public_key, created_at_ms) \
     VALUES ('current', $1, $2, $3) ON CONFLICT (name) DO UPDATE SET private_key = excluded.private_key, \
     public_key = excluded.public_key, created_at_ms = excluded.created_at_ms";
const GET_VAPID: &str = "SELECT private_key, public_key, created_at_ms FROM vapid_keys WHERE name = 'current'";

#[derive(sqlx::FromRow)]
struct PushRow {
    account_id: i64,
    session_id: i64,
    id: i64,
    endpoint: String,
    p256dh: String,
    auth: String,
    standard: bool,
    alerts: String,
    policy: String,
    access_token: String,
    server_key: String,
    created_at_ms: i64,
}

impl PushRow {
    fn subscription(self) -> PushSubscription {
        PushSubscription {
            id: self.id,
            account_id: self.account_id,
            session_id: self.session_id,
            endpoint: self.endpoint,
            p256dh: self.p256dh,
            auth: self.auth,
            standard: self.standard,
            alerts: PushSubscription::alerts_from_text(&self.alerts),
            policy: Policy::parse(&self.policy).unwrap_or(Policy::All),
            access_token: self.access_token,
            server_key: self.server_key,
            created_at_ms: self.created_at_ms,
        }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    recipient_id: i64,
    kind: String,
    account_id: i64,
    status_id: i64,
    created_at_ms: i64,
}

impl Row {
    /// A row of a type this build does not know (written by a newer one) is left out.
    fn notification(self) -> Option<Notification> {
        Some(Notification {
            id: self.id,
            recipient_id: self.recipient_id,
            kind: Kind::parse(&self.kind)?,
            account_id: self.account_id,
            status_id: self.status_id,
            created_at_ms: self.created_at_ms,
        })
    }
}

macro_rules! sql_notification_store {
    ($store:ty, $db:ty, $begin:expr) => {
        /// `WHERE` conditions of `query` on `notifications n` after the recipient's, or `None`
        /// when it admits no type at all.
        fn push_filters(qb: &mut sqlx::QueryBuilder<$db>, query: &Query, now_ms: i64) -> Option<()> {
            let kinds = query.kinds();
            if kinds.is_empty() {
                return None;
            }
            if kinds.len() < Kind::ALL.len() {
                qb.push(" AND n.kind IN (");
                let mut list = qb.separated(", ");
                for k in kinds {
                    list.push_bind(k.as_str());
                }
                qb.push(")");
            }
            if let Some(a) = query.account_id {
                qb.push(" AND n.account_id = ").push_bind(a);
            }
            qb.push(HEARD).push_bind(now_ms).push("))");
            Some(())
        }

        /// The recipient's notifications of `group` the recipient still hears, after `select`.
        fn group_query(select: &str, recipient_id: i64, group: Group, now_ms: i64) -> sqlx::QueryBuilder<$db> {
            let mut qb =
                sqlx::QueryBuilder::<$db>::new(format!("{select} FROM notifications n WHERE n.recipient_id = "));
            qb.push_bind(recipient_id);
            match group {
                Group::OfStatus { kind, status_id } => {
                    qb.push(" AND n.kind = ").push_bind(kind.as_str());
                    qb.push(" AND n.status_id = ").push_bind(status_id);
                }
                Group::OfDay { kind, day } => {
                    let (first, last) = Group::day_bounds(day);
                    qb.push(" AND n.kind = ").push_bind(kind.as_str());
                    qb.push(" AND n.created_at_ms >= ").push_bind(first);
                    qb.push(" AND n.created_at_ms <= ").push_bind(last);
                }
                Group::Single(id) => {
                    qb.push(" AND n.id = ").push_bind(id);
                }
            }
            qb.push(HEARD).push_bind(now_ms).push("))");
            qb
        }

        async fn add(
            tx: &mut sqlx::Transaction<'static, $db>,
            n: &Notification,
            now_ms: i64,
        ) -> Result<u64, sqlx::Error> {
            Ok(sqlx::query(ADD)
                .bind(n.id)
                .bind(n.recipient_id)
                .bind(n.kind.as_str())
                .bind(n.account_id)
                .bind(n.status_id)
                .bind(n.created_at_ms)
                .bind(now_ms)
                .execute(&mut **tx)
                .await?
                .rows_affected())
        }

        #[async_trait]
        impl NotificationStore for $store {
            async fn migrate(&self) -> StoreResult<()> {
                self.migrator().run(&self.pool).await?;
                Ok(())
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn apply(&self, event_id: i64, now_ms: i64, changes: &[Change]) -> StoreResult<bool> {
                if let Some(w) = self.writer() {
                    let changes = changes.to_vec();
                    return Ok(w.write(move |c| lite::apply(c, event_id, now_ms, &changes)).await?);
                }
                let mut tx = agora_store::begin(&self.pool, $begin).await?;
                let first =
                    sqlx::query(PROCESSED).bind(event_id).bind(now_ms).execute(&mut *tx).await?.rows_affected() == 1;
                if !first {
                    agora_store::commit(tx).await?;
                    return Ok(false);
                }
                for change in changes {
                    match change {
                        Change::Add(n) => {
                            add(&mut tx, n, now_ms).await?;
                        }
                        Change::Remove { recipient_id, kind, account_id, status_id } => {
                            sqlx::query(REMOVE)
                                .bind(kind.as_str())
                                .bind(*account_id)
                                .bind(*status_id)
                                .bind(recipient_id.unwrap_or(0))
                                .execute(&mut *tx)
                                .await?;
                        }
                        Change::Renew(n) => {
                            sqlx::query(REMOVE)
                                .bind(n.kind.as_str())
                                .bind(n.account_id)
                                .bind(n.status_id)
                                .bind(n.recipient_id)
                                .execute(&mut *tx)
                                .await?;
                            add(&mut tx, n, now_ms).await?;
                        }
                        Change::RemoveAboutStatus { status_id } => {
                            sqlx::query(ABOUT_STATUS_GONE).bind(*status_id).execute(&mut *tx).await?;
                            sqlx::query(INTERACTIONS_GONE).bind(*status_id).execute(&mut *tx).await?;
                        }
                        Change::Subscribe { target_id, follower_id } => {
                            sqlx::query(SUBSCRIBE).bind(*target_id).bind(*follower_id).execute(&mut *tx).await?;
                        }
                        Change::Unsubscribe { target_id, follower_id } => {
                            sqlx::query(UNSUBSCRIBE).bind(*target_id).bind(*follower_id).execute(&mut *tx).await?;
                        }
                        Change::Interacted { status_id, account_id, how } => {
                            sqlx::query(INTERACTED)
                                .bind(*status_id)
                                .bind(*account_id)
                                .bind(how.as_str())
                                .execute(&mut *tx)
                                .await?;
                        }
                        Change::Uninteracted { status_id, account_id, how } => {
                            sqlx::query(UNINTERACTED)
                                .bind(*status_id)
                                .bind(*account_id)
                                .bind(how.as_str())
                                .execute(&mut *tx)
                                .await?;
                        }
                        Change::Followed(n) => {
                            let requested = sqlx::query(FOLLOW_REQUEST_GONE)
                                .bind(n.recipient_id)
                                .bind(n.account_id)
                                .execute(&mut *tx)
                                .await?
                                .rows_affected();
                            if requested == 0 {
                                add(&mut tx, n, now_ms).await?;
                            }
                        }
                        Change::Suppress { recipient_id, account_id, reason, expires_at_ms } => {
                            sqlx::query(SUPPRESS)
                                .bind(*recipient_id)
                                .bind(*account_id)
                                .bind(reason.as_str())
                                .bind(*expires_at_ms)
                                .execute(&mut *tx)
                                .await?;
                            sqlx::query(BETWEEN_GONE).bind(*account_id).bind(*recipient_id).execute(&mut *tx).await?;
                        }
                        Change::Unsuppress { recipient_id, account_id, reason } => {
                            sqlx::query(UNSUPPRESS)
                                .bind(*recipient_id)
                                .bind(*account_id)
                                .bind(reason.as_str())
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                }
                agora_store::commit(tx).await?;
                Ok(true)
            }

            async fn subscribers(&self, target_id: i64) -> StoreResult<Vec<i64>> {
                if let Some(r) = self.reader() {
                    return Ok(r.read(|c| lite::ids(c, SUBSCRIBERS, target_id))?);
                }
                Ok(sqlx::query_scalar(SUBSCRIBERS).bind(target_id).fetch_all(&self.pool).await?)
            }

            async fn interested(&self, status_id: i64) -> StoreResult<Vec<i64>> {
                Ok(sqlx::query_scalar(
                    "SELECT DISTINCT account_id FROM interactions WHERE status_id = $1 ORDER BY account_id",
                )
                .bind(status_id)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn page(&self, recipient_id: i64, query: &Query, now_ms: i64) -> StoreResult<Vec<Notification>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {COLUMNS} FROM notifications n WHERE n.recipient_id = "
                ));
                qb.push_bind(recipient_id);
                if push_filters(&mut qb, query, now_ms).is_none() {
                    return Ok(Vec::new());
                }
                if let Some(max) = query.max_id {
                    qb.push(" AND n.id < ").push_bind(max);
                }
                // min_id pages walk up from it; since_id pages are the newest above it.
                let ascending = query.min_id.is_some();
                if let Some(lower) = query.min_id.or(query.since_id) {
                    qb.push(" AND n.id > ").push_bind(lower);
                }
                qb.push(if ascending { " ORDER BY n.id ASC LIMIT " } else { " ORDER BY n.id DESC LIMIT " });
                qb.push_bind(query.limit as i64);
                let rows: Vec<Row> = qb.build_query_as().fetch_all(&self.pool).await?;
                let mut out: Vec<Notification> = rows.into_iter().filter_map(Row::notification).collect();
                if ascending {
                    out.reverse();
                }
                Ok(out)
            }

            async fn group_stats(&self, recipient_id: i64, group: Group, now_ms: i64) -> StoreResult<GroupStats> {
                let (count,): (i64,) = group_query("SELECT COUNT(*)", recipient_id, group, now_ms)
                    .build_query_as()
                    .fetch_one(&self.pool)
                    .await?;
                let mut recent = group_query("SELECT n.id, n.account_id", recipient_id, group, now_ms);
                recent.push(" ORDER BY n.id DESC LIMIT ").push_bind(GROUP_SAMPLE as i64);
                let rows: Vec<(i64, i64)> = recent.build_query_as().fetch_all(&self.pool).await?;
                Ok(GroupStats {
                    count,
                    most_recent_id: rows.first().map_or(0, |r| r.0),
                    sample_account_ids: rows.into_iter().map(|r| r.1).collect(),
                })
            }

            async fn get(&self, recipient_id: i64, id: i64, now_ms: i64) -> StoreResult<Option<Notification>> {
                let mut qb =
                    sqlx::QueryBuilder::<$db>::new(format!("SELECT {COLUMNS} FROM notifications n WHERE n.id = "));
                qb.push_bind(id).push(" AND n.recipient_id = ").push_bind(recipient_id);
                qb.push(HEARD).push_bind(now_ms).push("))");
                let row: Option<Row> = qb.build_query_as().fetch_optional(&self.pool).await?;
                Ok(row.and_then(Row::notification))
            }

            async fn dismiss(&self, recipient_id: i64, id: i64) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM notifications WHERE id = $1 AND recipient_id = $2")
                    .bind(id)
                    .bind(recipient_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn clear(&self, recipient_id: i64) -> StoreResult<u64> {
                let done = sqlx::query("DELETE FROM notifications WHERE recipient_id = $1")
                    .bind(recipient_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn unread_count(
                &self,
                recipient_id: i64,
                after_id: i64,
                query: &Query,
                now_ms: i64,
            ) -> StoreResult<i64> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM notifications n WHERE n.recipient_id = ",
                );
                qb.push_bind(recipient_id).push(" AND n.id > ").push_bind(after_id);
                if push_filters(&mut qb, query, now_ms).is_none() {
                    return Ok(0);
                }
                qb.push(" LIMIT ").push_bind(query.limit as i64).push(") AS unread");
                let (count,): (i64,) = qb.build_query_as().fetch_one(&self.pool).await?;
                Ok(count)
            }

            async fn prune(&self, before_ms: i64) -> StoreResult<u64> {
                let events = sqlx::query("DELETE FROM processed_events WHERE processed_at_ms < $1")
                    .bind(before_ms)
                    .execute(&self.pool)
                    .await?;
                let mutes = sqlx::query("DELETE FROM suppressions WHERE expires_at_ms <> 0 AND expires_at_ms < $1")
                    .bind(before_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(events.rows_affected() + mutes.rows_affected())
            }

            async fn put_push_subscription(&self, s: &PushSubscription) -> StoreResult<()> {
                sqlx::query(PUT_PUSH)
                    .bind(s.account_id)
                    .bind(s.session_id)
                    .bind(s.id)
                    .bind(&s.endpoint)
                    .bind(&s.p256dh)
                    .bind(&s.auth)
                    .bind(s.standard)
                    .bind(s.alerts_text())
                    .bind(s.policy.as_str())
                    .bind(&s.access_token)
                    .bind(&s.server_key)
                    .bind(s.created_at_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn push_subscription(
                &self,
                account_id: i64,
                session_id: i64,
            ) -> StoreResult<Option<PushSubscription>> {
                let row: Option<PushRow> = sqlx::query_as(PUSH_OF_SESSION)
                    .bind(account_id)
                    .bind(session_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(PushRow::subscription))
            }

            async fn push_subscriptions(&self, account_id: i64) -> StoreResult<Vec<PushSubscription>> {
                let rows: Vec<PushRow> = sqlx::query_as(PUSH_OF_ACCOUNT).bind(account_id).fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(PushRow::subscription).collect())
            }

            async fn delete_push_subscription(&self, account_id: i64, session_id: i64) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM push_subscriptions WHERE account_id = $1 AND session_id = $2")
                    .bind(account_id)
                    .bind(session_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn vapid_key(&self) -> StoreResult<Option<VapidKey>> {
                let row: Option<(String, String, i64)> = sqlx::query_as(GET_VAPID).fetch_optional(&self.pool).await?;
                Ok(row.map(|(private_key, public_key, created_at_ms)| VapidKey {
                    private_key,
                    public_key,
                    created_at_ms,
                }))
            }

            async fn put_vapid_key(&self, key: &VapidKey, replace: bool) -> StoreResult<VapidKey> {
                sqlx::query(if replace { REPLACE_VAPID } else { PUT_VAPID })
                    .bind(&key.private_key)
                    .bind(&key.public_key)
                    .bind(key.created_at_ms)
                    .execute(&self.pool)
                    .await?;
                self.vapid_key()
                    .await?
                    .ok_or_else(|| crate::store::StoreError::Unavailable("the VAPID key was not kept".into()))
            }
        }
    };
}

/// Notification store on PostgreSQL.
pub struct PgNotificationStore {
    pool: PgPool,
}

impl PgNotificationStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Ok(Self { pool: agora_store::postgres(url).await? })
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        sqlx::migrate!("./migrations/postgres")
    }

    fn reader(&self) -> Option<&SqliteReader> {
        None
    }

    fn writer(&self) -> Option<&SqliteWriter> {
        None
    }
}

mod pg_impl {
    use super::*;
    // Every write of an event is keyed by its processed_events row, whose insert serializes two
    // deliveries of the same event; causes are unique, so concurrent events cannot duplicate.
    sql_notification_store!(PgNotificationStore, sqlx::Postgres, "BEGIN");
}

/// Notification store on SQLite (the embedded default). What composing a status costs it (an
/// event's changes, the subscribers read) runs as one unit on a [`SqliteWriter`] and on the
/// calling thread through a [`SqliteReader`], not one thread hop per statement; the rarer
/// statements stay on the sqlx pool.
pub struct SqliteNotificationStore {
    pool: SqlitePool,
    reader: SqliteReader,
    writer: SqliteWriter,
}

impl SqliteNotificationStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = agora_store::sqlite(url).await?;
        let reader = SqliteReader::new(url, "notification")?;
        let writer = SqliteWriter::new(url, "notification")?;
        Ok(Self { pool, reader, writer })
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        sqlx::migrate!("./migrations/sqlite")
    }

    fn reader(&self) -> Option<&SqliteReader> {
        Some(&self.reader)
    }

    fn writer(&self) -> Option<&SqliteWriter> {
        Some(&self.writer)
    }
}

mod sqlite_impl {
    use super::*;
    // IMMEDIATE takes the write lock up front, so the handled-event check and the writes it
    // guards are one atomic step.
    sql_notification_store!(SqliteNotificationStore, sqlx::Sqlite, "BEGIN IMMEDIATE");
}
