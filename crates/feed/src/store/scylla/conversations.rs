//! Conversations on ScyllaDB (`migrations/scylla/0002_conversations.cql`). A conversation's row,
//! its place in the account's order by last status and the status rows that make it up change
//! together in one logged batch, so a change interrupted half-way is either applied in full or
//! not at all, and a redelivered event finds things as one of the two.

use agora_store::scylla::{self as cql, ScyllaError};
use async_trait::async_trait;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::super::sql::join_ids;
use super::super::{ConversationChange, ConversationStore, StoreError, StoreResult};
use super::ScyllaTimelineStore;
use crate::domain::{Conversation, Window};

pub struct Statements {
    get: PreparedStatement,
    put: PreparedStatement,
    del: PreparedStatement,
    mark_read: PreparedStatement,
    key_get: PreparedStatement,
    key_claim: PreparedStatement,
    key_del: PreparedStatement,
    order_put: PreparedStatement,
    order_del: PreparedStatement,
    order_desc: PreparedStatement,
    order_asc: PreparedStatement,
    status_get: PreparedStatement,
    status_put: PreparedStatement,
    status_del: PreparedStatement,
    statuses_of: PreparedStatement,
    statuses_del: PreparedStatement,
    holder_put: PreparedStatement,
    holder_del: PreparedStatement,
    holders_of: PreparedStatement,
}

const COLUMNS: &str = "account_id, id, thread_id, participants, last_status_id, last_author_id, unread";
type Row = (i64, i64, Option<i64>, Option<String>, Option<i64>, Option<i64>, Option<bool>);

/// A conversation's row with what finds it again (its thread and participants key).
struct Held {
    thread_id: i64,
    key: String,
    c: Conversation,
}

fn held(r: Row) -> Held {
    let key = r.3.unwrap_or_default();
    Held {
        thread_id: r.2.unwrap_or_default(),
        c: Conversation {
            account_id: r.0,
            id: r.1,
            participant_ids: key.split_whitespace().filter_map(|p| p.parse().ok()).collect(),
            last_status_id: r.4.unwrap_or_default(),
            last_author_id: r.5.unwrap_or_default(),
            unread: r.6.unwrap_or_default(),
        },
        key,
    }
}

impl Statements {
    pub async fn prepare(s: &Session) -> Result<Self, ScyllaError> {
        let p = |cql: String, idempotent: bool| async move { cql::prepare(s, &cql, idempotent).await };
        Ok(Self {
            get: p(format!("SELECT {COLUMNS} FROM conversations WHERE account_id = ? AND id = ?"), true).await?,
            put: p(format!("INSERT INTO conversations ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"), true).await?,
            del: p("DELETE FROM conversations WHERE account_id = ? AND id = ?".into(), true).await?,
            mark_read: p("UPDATE conversations SET unread = false WHERE account_id = ? AND id = ? IF EXISTS".into(), false)
                .await?,
            key_get: p(
                "SELECT id FROM conversation_keys WHERE account_id = ? AND thread_id = ? AND participants = ?".into(),
                true,
            )
            .await?,
            key_claim: p(
                "INSERT INTO conversation_keys (account_id, thread_id, participants, id) VALUES (?, ?, ?, ?) \
                 IF NOT EXISTS"
                    .into(),
                false,
            )
            .await?,
            key_del: p(
                "DELETE FROM conversation_keys WHERE account_id = ? AND thread_id = ? AND participants = ?".into(),
                true,
            )
            .await?,
            order_put: p(
                "INSERT INTO conversations_by_last (account_id, last_status_id, id) VALUES (?, ?, ?)".into(),
                true,
            )
            .await?,
            order_del: p(
                "DELETE FROM conversations_by_last WHERE account_id = ? AND last_status_id = ? AND id = ?".into(),
                true,
            )
            .await?,
            order_desc: p(
                "SELECT last_status_id, id FROM conversations_by_last WHERE account_id = ? AND last_status_id < ? \
                 AND last_status_id > ? ORDER BY last_status_id DESC"
                    .into(),
                true,
            )
            .await?,
            order_asc: p(
                "SELECT last_status_id, id FROM conversations_by_last WHERE account_id = ? AND last_status_id < ? \
                 AND last_status_id > ? ORDER BY last_status_id ASC"
                    .into(),
                true,
            )
            .await?,
            status_get: p(
                "SELECT author_id FROM conversation_statuses WHERE account_id = ? AND conversation_id = ? \
                 AND status_id = ?"
                    .into(),
                true,
            )
            .await?,
            status_put: p(
                "INSERT INTO conversation_statuses (account_id, conversation_id, status_id, author_id) \
                 VALUES (?, ?, ?, ?)"
                    .into(),
                true,
            )
            .await?,
            status_del: p(
                "DELETE FROM conversation_statuses WHERE account_id = ? AND conversation_id = ? AND status_id = ?"
                    .into(),
                true,
            )
            .await?,
            statuses_of: p(
                "SELECT status_id, author_id FROM conversation_statuses WHERE account_id = ? AND conversation_id = ?"
                    .into(),
                true,
            )
            .await?,
            statuses_del: p(
                "DELETE FROM conversation_statuses WHERE account_id = ? AND conversation_id = ?".into(),
                true,
            )
            .await?,
            holder_put: p(
                "INSERT INTO conversation_statuses_by_status (status_id, account_id, conversation_id, thread_id) \
                 VALUES (?, ?, ?, ?)"
                    .into(),
                true,
            )
            .await?,
            holder_del: p(
                "DELETE FROM conversation_statuses_by_status WHERE status_id = ? AND account_id = ? \
                 AND conversation_id = ?"
                    .into(),
                true,
            )
            .await?,
            holders_of: p(
                "SELECT account_id, conversation_id, thread_id FROM conversation_statuses_by_status WHERE status_id = ?"
                    .into(),
                true,
            )
            .await?,
        })
    }
}

impl ScyllaTimelineStore {
    fn conv(&self) -> StoreResult<(&Session, &Statements)> {
        let (s, q) = self.ready()?;
        Ok((s, &q.conv))
    }

    async fn held(&self, account_id: i64, id: i64) -> StoreResult<Option<Held>> {
        let (s, q) = self.conv()?;
        let row: Option<Row> = cql::row(s, &q.get, (account_id, id)).await?;
        Ok(row.map(held))
    }

    /// The id of the account's conversation for `thread_id` and `key`, claiming `candidate` for it
    /// when there is none (two claims at once agree on one).
    async fn conversation_id(&self, account_id: i64, thread_id: i64, key: &str, candidate: i64) -> StoreResult<i64> {
        let (s, q) = self.conv()?;
        for _ in 0..4 {
            if let Some((id,)) = cql::row::<(i64,)>(s, &q.key_get, (account_id, thread_id, key)).await? {
                return Ok(id);
            }
            if cql::applied(s, &q.key_claim, (account_id, thread_id, key, candidate)).await? {
                return Ok(candidate);
            }
        }
        Err(StoreError::Unavailable("conversation key kept changing".into()))
    }
}

#[async_trait]
impl ConversationStore for ScyllaTimelineStore {
    async fn add_to_conversation(
        &self,
        account_id: i64,
        thread_id: i64,
        participants: &[i64],
        status_id: i64,
        author_id: i64,
        unread: bool,
    ) -> StoreResult<Option<Conversation>> {
        let key = join_ids(participants);
        let id = self.conversation_id(account_id, thread_id, &key, status_id).await?;
        let (s, q) = self.conv()?;
        if cql::row::<(Option<i64>,)>(s, &q.status_get, (account_id, id, status_id)).await?.is_some() {
            return Ok(None);
        }
        let before = self.held(account_id, id).await?.map(|h| h.c);
        let mut now = before.clone().unwrap_or(Conversation {
            id,
            account_id,
            participant_ids: participants.to_vec(),
            last_status_id: status_id,
            last_author_id: author_id,
            unread,
        });
        if status_id >= now.last_status_id {
            now.last_status_id = status_id;
            now.last_author_id = author_id;
        }
        now.unread = unread;
        let row = (account_id, id, thread_id, key.as_str(), now.last_status_id, now.last_author_id, now.unread);
        let status = (account_id, id, status_id, author_id);
        let holder = (status_id, account_id, id, thread_id);
        let order = (account_id, now.last_status_id, id);
        match before.map(|b| b.last_status_id).filter(|last| *last != now.last_status_id) {
            Some(old) => {
                cql::batch(
                    s,
                    &[&q.put, &q.order_del, &q.order_put, &q.status_put, &q.holder_put],
                    (row, (account_id, old, id), order, status, holder),
                    true,
                )
                .await?
            }
            None => {
                cql::batch(s, &[&q.put, &q.order_put, &q.status_put, &q.holder_put], (row, order, status, holder), true)
                    .await?
            }
        }
        Ok(Some(now))
    }

    async fn thread_of(&self, status_id: i64) -> StoreResult<Option<i64>> {
        let (s, q) = self.conv()?;
        let rows: Vec<(i64, i64, Option<i64>)> = cql::first_rows(s, &q.holders_of, (status_id,), 1).await?;
        Ok(rows.into_iter().next().and_then(|r| r.2))
    }

    async fn remove_from_conversations(&self, status_id: i64) -> StoreResult<Vec<ConversationChange>> {
        let (s, q) = self.conv()?;
        let holders: Vec<(i64, i64, Option<i64>)> = cql::rows(s, &q.holders_of, (status_id,)).await?;
        let mut changes = Vec::with_capacity(holders.len());
        for (account_id, conversation_id, _) in holders {
            let holder = (status_id, account_id, conversation_id);
            let Some(h) = self.held(account_id, conversation_id).await? else {
                cql::batch(
                    s,
                    &[&q.status_del, &q.holder_del],
                    ((account_id, conversation_id, status_id), holder),
                    true,
                )
                .await?;
                continue;
            };
            let rest: Vec<(i64, Option<i64>)> = cql::rows(s, &q.statuses_of, (account_id, conversation_id)).await?;
            let newest = rest.into_iter().filter(|(id, _)| *id != status_id).max_by_key(|(id, _)| *id);
            let old_order = (account_id, h.c.last_status_id, conversation_id);
            let now = match newest {
                None => {
                    cql::batch(
                        s,
                        &[&q.del, &q.order_del, &q.key_del, &q.statuses_del, &q.holder_del],
                        (
                            (account_id, conversation_id),
                            old_order,
                            (account_id, h.thread_id, h.key.as_str()),
                            (account_id, conversation_id),
                            holder,
                        ),
                        true,
                    )
                    .await?;
                    None
                }
                Some((last, author)) => {
                    let mut c = h.c.clone();
                    c.last_status_id = last;
                    c.last_author_id = author.unwrap_or_default();
                    let row =
                        (account_id, conversation_id, h.thread_id, h.key.as_str(), last, c.last_author_id, c.unread);
                    cql::batch(
                        s,
                        &[&q.put, &q.order_del, &q.order_put, &q.status_del, &q.holder_del],
                        (
                            row,
                            old_order,
                            (account_id, last, conversation_id),
                            (account_id, conversation_id, status_id),
                            holder,
                        ),
                        true,
                    )
                    .await?;
                    Some(c)
                }
            };
            changes.push(ConversationChange { account_id, conversation_id, now });
        }
        changes.sort_by_key(|c| c.account_id);
        Ok(changes)
    }

    async fn conversations(&self, account_id: i64, w: &Window) -> StoreResult<Vec<Conversation>> {
        let (s, q) = self.conv()?;
        let stmt = if w.ascending { &q.order_asc } else { &q.order_desc };
        let bounds = (account_id, w.upper.unwrap_or(i64::MAX), w.lower.unwrap_or(0));
        // A few more than asked, in case an order row outlived its conversation.
        let order: Vec<(i64, i64)> = cql::first_rows(s, stmt, bounds, w.limit + 8).await?;
        let found = futures::future::try_join_all(order.iter().map(|(_, id)| self.held(account_id, *id))).await?;
        Ok(order
            .iter()
            .zip(found)
            .filter_map(|((last, _), h)| h.map(|h| h.c).filter(|c| c.last_status_id == *last))
            .take(w.limit)
            .collect())
    }

    async fn conversation(&self, account_id: i64, id: i64) -> StoreResult<Option<Conversation>> {
        Ok(self.held(account_id, id).await?.map(|h| h.c))
    }

    async fn read_conversation(&self, account_id: i64, id: i64) -> StoreResult<Option<Conversation>> {
        let (s, q) = self.conv()?;
        if !cql::applied(s, &q.mark_read, (account_id, id)).await? {
            return Ok(None);
        }
        self.conversation(account_id, id).await
    }

    async fn delete_conversation(&self, account_id: i64, id: i64) -> StoreResult<bool> {
        let Some(h) = self.held(account_id, id).await? else { return Ok(false) };
        let (s, q) = self.conv()?;
        let statuses: Vec<(i64, Option<i64>)> = cql::rows(s, &q.statuses_of, (account_id, id)).await?;
        for (status_id, _) in &statuses {
            cql::exec(s, &q.holder_del, (*status_id, account_id, id)).await?;
        }
        cql::batch(
            s,
            &[&q.del, &q.order_del, &q.key_del, &q.statuses_del],
            (
                (account_id, id),
                (account_id, h.c.last_status_id, id),
                (account_id, h.thread_id, h.key.as_str()),
                (account_id, id),
            ),
            true,
        )
        .await?;
        Ok(true)
    }
}
