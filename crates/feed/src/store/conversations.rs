//! Conversations on PostgreSQL and SQLite: one row per account and conversation (unique by
//! thread and participants, found by last status for paging) and one per status it holds
//! (found by status for deletes). Each change is one transaction. Conversations are rare next
//! to timeline entries, so they take the sqlx pool on both engines.

use async_trait::async_trait;

use super::sql::{PgTimelineStore, SqliteTimelineStore, join_ids};
use super::{ConversationChange, ConversationStore, StoreResult};
use crate::domain::{Conversation, Window};

/// The columns a conversation is read with, as a literal (sqlx takes only static SQL).
macro_rules! columns {
    () => {
        "account_id, id, participants, last_status_id, last_author_id, unread"
    };
}
type Row = (i64, i64, String, i64, i64, bool);

fn conversation(r: Row) -> Conversation {
    Conversation {
        account_id: r.0,
        id: r.1,
        participant_ids: r.2.split_whitespace().filter_map(|p| p.parse().ok()).collect(),
        last_status_id: r.3,
        last_author_id: r.4,
        unread: r.5,
    }
}

macro_rules! sql_conversation_store {
    ($store:ident, $begin:expr) => {
        #[async_trait]
        impl ConversationStore for $store {
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
                let mut tx = agora_store::begin(&self.pool, $begin).await?;
                sqlx::query(
                    "INSERT INTO conversations (account_id, id, thread_id, participants, last_status_id, \
                     last_author_id, unread) VALUES ($1, $2, $3, $4, $2, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(account_id)
                .bind(status_id)
                .bind(thread_id)
                .bind(&key)
                .bind(author_id)
                .bind(unread)
                .execute(&mut *tx)
                .await?;
                let (id,): (i64,) = sqlx::query_as(
                    "SELECT id FROM conversations WHERE account_id = $1 AND thread_id = $2 AND participants = $3",
                )
                .bind(account_id)
                .bind(thread_id)
                .bind(&key)
                .fetch_one(&mut *tx)
                .await?;
                let added = sqlx::query(
                    "INSERT INTO conversation_statuses (account_id, conversation_id, status_id, author_id, thread_id) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(account_id)
                .bind(id)
                .bind(status_id)
                .bind(author_id)
                .bind(thread_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !added {
                    return Ok(None);
                }
                // SET reads the row as it was before the update, on both engines.
                let row: Row = sqlx::query_as(concat!(
                    "UPDATE conversations SET unread = $3, \
                     last_author_id = CASE WHEN $4 >= last_status_id THEN $5 ELSE last_author_id END, \
                     last_status_id = CASE WHEN $4 > last_status_id THEN $4 ELSE last_status_id END \
                     WHERE account_id = $1 AND id = $2 RETURNING ",
                    columns!()
                ))
                .bind(account_id)
                .bind(id)
                .bind(unread)
                .bind(status_id)
                .bind(author_id)
                .fetch_one(&mut *tx)
                .await?;
                agora_store::commit(tx).await?;
                Ok(Some(conversation(row)))
            }

            async fn thread_of(&self, status_id: i64) -> StoreResult<Option<i64>> {
                let row: Option<(i64,)> =
                    sqlx::query_as("SELECT thread_id FROM conversation_statuses WHERE status_id = $1 LIMIT 1")
                        .bind(status_id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|r| r.0))
            }

            async fn remove_from_conversations(&self, status_id: i64) -> StoreResult<Vec<ConversationChange>> {
                let mut tx = agora_store::begin(&self.pool, $begin).await?;
                let holders: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT account_id, conversation_id FROM conversation_statuses WHERE status_id = $1 \
                     ORDER BY account_id",
                )
                .bind(status_id)
                .fetch_all(&mut *tx)
                .await?;
                if holders.is_empty() {
                    return Ok(Vec::new());
                }
                sqlx::query("DELETE FROM conversation_statuses WHERE status_id = $1")
                    .bind(status_id)
                    .execute(&mut *tx)
                    .await?;
                let mut changes = Vec::with_capacity(holders.len());
                for (account_id, conversation_id) in holders {
                    let newest: Option<(i64, i64)> = sqlx::query_as(
                        "SELECT status_id, author_id FROM conversation_statuses \
                         WHERE account_id = $1 AND conversation_id = $2 ORDER BY status_id DESC LIMIT 1",
                    )
                    .bind(account_id)
                    .bind(conversation_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let now = match newest {
                        None => {
                            sqlx::query("DELETE FROM conversations WHERE account_id = $1 AND id = $2")
                                .bind(account_id)
                                .bind(conversation_id)
                                .execute(&mut *tx)
                                .await?;
                            None
                        }
                        Some((last, author)) => {
                            let row: Option<Row> = sqlx::query_as(concat!(
                                "UPDATE conversations SET last_status_id = $3, last_author_id = $4 \
                                 WHERE account_id = $1 AND id = $2 RETURNING ",
                                columns!()
                            ))
                            .bind(account_id)
                            .bind(conversation_id)
                            .bind(last)
                            .bind(author)
                            .fetch_optional(&mut *tx)
                            .await?;
                            row.map(conversation)
                        }
                    };
                    changes.push(ConversationChange { account_id, conversation_id, now });
                }
                agora_store::commit(tx).await?;
                Ok(changes)
            }

            async fn conversations(&self, account_id: i64, w: &Window) -> StoreResult<Vec<Conversation>> {
                let sql = if w.ascending {
                    concat!(
                        "SELECT ",
                        columns!(),
                        " FROM conversations WHERE account_id = $1 AND last_status_id < $2 \
                         AND last_status_id > $3 ORDER BY last_status_id ASC LIMIT $4"
                    )
                } else {
                    concat!(
                        "SELECT ",
                        columns!(),
                        " FROM conversations WHERE account_id = $1 AND last_status_id < $2 \
                         AND last_status_id > $3 ORDER BY last_status_id DESC LIMIT $4"
                    )
                };
                let rows: Vec<Row> = sqlx::query_as(sql)
                    .bind(account_id)
                    .bind(w.upper.unwrap_or(i64::MAX))
                    .bind(w.lower.unwrap_or(0))
                    .bind(w.limit as i64)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(conversation).collect())
            }

            async fn conversation(&self, account_id: i64, id: i64) -> StoreResult<Option<Conversation>> {
                let row: Option<Row> = sqlx::query_as(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM conversations WHERE account_id = $1 AND id = $2"
                ))
                .bind(account_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(conversation))
            }

            async fn read_conversation(&self, account_id: i64, id: i64) -> StoreResult<Option<Conversation>> {
                let row: Option<Row> = sqlx::query_as(concat!(
                    "UPDATE conversations SET unread = FALSE WHERE account_id = $1 AND id = $2 RETURNING ",
                    columns!()
                ))
                .bind(account_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(conversation))
            }

            async fn delete_conversation(&self, account_id: i64, id: i64) -> StoreResult<bool> {
                let mut tx = agora_store::begin(&self.pool, $begin).await?;
                sqlx::query("DELETE FROM conversation_statuses WHERE account_id = $1 AND conversation_id = $2")
                    .bind(account_id)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let gone = sqlx::query("DELETE FROM conversations WHERE account_id = $1 AND id = $2")
                    .bind(account_id)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                agora_store::commit(tx).await?;
                Ok(gone)
            }
        }
    };
}

sql_conversation_store!(PgTimelineStore, "BEGIN");
// IMMEDIATE: the read-then-write transactions never fail with SQLITE_BUSY half-way.
sql_conversation_store!(SqliteTimelineStore, "BEGIN IMMEDIATE");
