//! The PostgreSQL and SQLite user stores. Both speak the same SQL (numbered `$N` parameters work
//! on both engines), so one body is instantiated per engine by `sql_user_store!`; only
//! connection set-up, migrations and the outbox helpers differ.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{PgPool, SqlitePool};

use super::{
    AccountEvent, AuthCode, NewAccount, NewSession, Rotation, SessionEvent, StoreError, StoreResult, StoredKey,
    UserStore,
};
use crate::domain::{Account, Application, Field, ProfilePatch, Role, Session};
use agora_events::Envelope;
use agora_events::outbox::OutboxStore;
use agora_store::lite::SqliteReader;

use super::lite;

pub(super) const ACCOUNT_COLUMNS: &str = "id, username, email, display_name, note, avatar_url, header_url, locked, bot, \
     fields_json, role, privacy, sensitive, language, created_at_ms, updated_at_ms";

#[derive(sqlx::FromRow)]
pub(super) struct AccountRow {
    pub(super) id: i64,
    pub(super) username: String,
    pub(super) email: String,
    pub(super) display_name: String,
    pub(super) note: String,
    pub(super) avatar_url: String,
    pub(super) header_url: String,
    pub(super) locked: bool,
    pub(super) bot: bool,
    pub(super) fields_json: String,
    pub(super) role: String,
    pub(super) privacy: String,
    pub(super) sensitive: bool,
    pub(super) language: String,
    pub(super) created_at_ms: i64,
    pub(super) updated_at_ms: i64,
}

/// An account with its password hash, read in one query for a login.
#[derive(sqlx::FromRow)]
struct CredentialRow {
    #[sqlx(flatten)]
    account: AccountRow,
    password_hash: String,
}

impl From<AccountRow> for Account {
    fn from(r: AccountRow) -> Self {
        Account {
            id: r.id,
            username: r.username,
            email: r.email,
            display_name: r.display_name,
            note: r.note,
            avatar_url: r.avatar_url,
            header_url: r.header_url,
            locked: r.locked,
            bot: r.bot,
            fields: serde_json::from_str::<Vec<Field>>(&r.fields_json).unwrap_or_default(),
            role: Role::parse(&r.role),
            privacy: r.privacy,
            sensitive: r.sensitive,
            language: r.language,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
        }
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: i64,
    account_id: Option<i64>,
    client_id: String,
    scopes: String,
    created_at_ms: i64,
    expires_at_ms: i64,
    revoked_at_ms: Option<i64>,
}

impl From<SessionRow> for Session {
    fn from(r: SessionRow) -> Self {
        Session {
            id: r.id,
            account_id: r.account_id,
            client_id: r.client_id,
            scopes: split(&r.scopes),
            created_at_ms: r.created_at_ms,
            expires_at_ms: r.expires_at_ms,
            revoked_at_ms: r.revoked_at_ms,
        }
    }
}

#[derive(sqlx::FromRow)]
struct AppRow {
    id: i64,
    name: String,
    website: String,
    redirect_uris: String,
    scopes: String,
    client_id: String,
    client_secret_hash: String,
    created_at_ms: i64,
}

impl From<AppRow> for Application {
    fn from(r: AppRow) -> Self {
        Application {
            id: r.id,
            name: r.name,
            website: r.website,
            redirect_uris: r.redirect_uris.split('\n').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            scopes: split(&r.scopes),
            client_id: r.client_id,
            client_secret_hash: r.client_secret_hash,
            created_at_ms: r.created_at_ms,
        }
    }
}

fn split(s: &str) -> Vec<String> {
    s.split_ascii_whitespace().map(str::to_owned).collect()
}

const SESSION_COLUMNS: &str = "id, account_id, client_id, scopes, created_at_ms, expires_at_ms, revoked_at_ms";

macro_rules! sql_user_store {
    ($store:ident, $db:ty, $outbox:path, $begin:expr) => {
        impl $store {
            async fn write_tx(&self) -> Result<sqlx::Transaction<'static, $db>, sqlx::Error> {
                agora_store::begin(&self.pool, $begin).await
            }

            async fn revoke_in_tx(
                tx: &mut sqlx::Transaction<'static, $db>,
                id: i64,
                reason: &str,
                now: i64,
                event: &SessionEvent<'_>,
            ) -> StoreResult<Option<Session>> {
                let done = sqlx::query(
                    "UPDATE sessions SET revoked_at_ms = $1, revoke_reason = $2 WHERE id = $3 AND revoked_at_ms IS NULL",
                )
                .bind(now)
                .bind(reason)
                .bind(id)
                .execute(&mut **tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(None);
                }
                let row: SessionRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
                )))
                .bind(id)
                .fetch_one(&mut **tx)
                .await?;
                let session = Session::from(row);
                let env = event(&session);
                $outbox(&mut **tx, &agora_events::topic_for(&env.r#type), &env).await?;
                Ok(Some(session))
            }
        }

        #[async_trait]
        impl UserStore for $store {
            async fn migrate(&self) -> StoreResult<()> {
                self.migrator().run(&self.pool).await.map_err(|e| StoreError::Unavailable(e.to_string()))
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            fn outbox(&self) -> Arc<dyn OutboxStore> {
                Arc::clone(&self.outbox)
            }

            async fn create_application(&self, app: &Application) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO applications (id, name, website, redirect_uris, scopes, client_id, client_secret_hash, created_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(app.id)
                .bind(&app.name)
                .bind(&app.website)
                .bind(app.redirect_uris.join("\n"))
                .bind(app.scopes.join(" "))
                .bind(&app.client_id)
                .bind(&app.client_secret_hash)
                .bind(app.created_at_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn application_by_client_id(&self, client_id: &str) -> StoreResult<Option<Application>> {
                let row: Option<AppRow> = sqlx::query_as(
                    "SELECT id, name, website, redirect_uris, scopes, client_id, client_secret_hash, created_at_ms \
                     FROM applications WHERE client_id = $1",
                )
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Application::from))
            }

            async fn create_account(&self, a: &NewAccount, s: &NewSession, event: &Envelope) -> StoreResult<Account> {
                let mut tx = self.write_tx().await?;
                sqlx::query(
                    "INSERT INTO accounts (id, username, username_lower, email, email_lower, password_hash, created_at_ms, updated_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                )
                .bind(a.id)
                .bind(&a.username)
                .bind(a.username.to_lowercase())
                .bind(&a.email)
                .bind(a.email.to_lowercase())
                .bind(&a.password_hash)
                .bind(a.created_at_ms)
                .execute(&mut *tx)
                .await?;
                insert_session(&mut tx, s).await?;
                $outbox(&mut *tx, &agora_events::topic_for(&event.r#type), event).await?;
                let row: AccountRow =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1")))
                        .bind(a.id)
                        .fetch_one(&mut *tx)
                        .await?;
                agora_store::commit(tx).await?;
                Ok(row.into())
            }

            async fn account(&self, id: i64) -> StoreResult<Option<Account>> {
                if let Some(r) = self.reader() {
                    return Ok(r.read(|c| lite::by_id(c, id))?);
                }
                let row: Option<AccountRow> =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1")))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(Account::from))
            }

            async fn accounts(&self, ids: &[i64]) -> StoreResult<Vec<Account>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                if let Some(r) = self.reader() {
                    return Ok(r.read(|c| lite::accounts(c, ids))?);
                }
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id IN ("));
                let mut list = qb.separated(", ");
                for id in ids {
                    list.push_bind(*id);
                }
                qb.push(")");
                let rows: Vec<AccountRow> = qb.build_query_as().fetch_all(&self.pool).await?;
                let mut by_id: std::collections::HashMap<i64, Account> =
                    rows.into_iter().map(|r| (r.id, Account::from(r))).collect();
                Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
            }

            async fn account_by_username(&self, username: &str) -> StoreResult<Option<Account>> {
                if let Some(r) = self.reader() {
                    return Ok(r.read(|c| lite::by_username(c, &username.to_lowercase()))?);
                }
                let row: Option<AccountRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username_lower = $1"
                )))
                .bind(username.to_lowercase())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Account::from))
            }

            async fn credentials(&self, login: &str) -> StoreResult<Option<(Account, String)>> {
                let lower = login.trim().to_lowercase();
                let column = if lower.contains('@') { "email_lower" } else { "username_lower" };
                let row: Option<CredentialRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {ACCOUNT_COLUMNS}, password_hash FROM accounts WHERE {column} = $1"
                )))
                .bind(&lower)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|r| (r.account.into(), r.password_hash)))
            }

            async fn update_profile(
                &self,
                id: i64,
                p: &ProfilePatch,
                event: &AccountEvent<'_>,
            ) -> StoreResult<Account> {
                let mut tx = self.write_tx().await?;
                let fields_json = p.fields.as_ref().map(|f| serde_json::to_string(f).unwrap_or_else(|_| "[]".into()));
                let done = sqlx::query(
                    "UPDATE accounts SET \
                       display_name = COALESCE($1, display_name), note = COALESCE($2, note), \
                       avatar_url = COALESCE($3, avatar_url), header_url = COALESCE($4, header_url), \
                       locked = COALESCE($5, locked), bot = COALESCE($6, bot), \
                       fields_json = COALESCE($7, fields_json), privacy = COALESCE($8, privacy), \
                       sensitive = COALESCE($9, sensitive), language = COALESCE($10, language), \
                       updated_at_ms = $11 \
                     WHERE id = $12",
                )
                .bind(p.display_name.as_deref())
                .bind(p.note.as_deref())
                .bind(p.avatar_url.as_deref())
                .bind(p.header_url.as_deref())
                .bind(p.locked)
                .bind(p.bot)
                .bind(fields_json.as_deref())
                .bind(p.privacy.as_deref())
                .bind(p.sensitive)
                .bind(p.language.as_deref())
                .bind(agora_kit::time::now_ms())
                .bind(id)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                let row: AccountRow =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1")))
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?;
                let account = Account::from(row);
                let env = event(&account);
                $outbox(&mut *tx, &agora_events::topic_for(&env.r#type), &env).await?;
                agora_store::commit(tx).await?;
                Ok(account)
            }

            async fn change_password(
                &self,
                id: i64,
                hash: &str,
                keep: Option<i64>,
                event: &SessionEvent<'_>,
            ) -> StoreResult<Vec<i64>> {
                let now = agora_kit::time::now_ms();
                let mut tx = self.write_tx().await?;
                let done = sqlx::query("UPDATE accounts SET password_hash = $1, updated_at_ms = $2 WHERE id = $3")
                    .bind(hash)
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                let live: Vec<i64> = sqlx::query_scalar(
                    "SELECT id FROM sessions WHERE account_id = $1 AND revoked_at_ms IS NULL AND expires_at_ms > $2",
                )
                .bind(id)
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
                let mut revoked = Vec::new();
                for sid in live.into_iter().filter(|s| Some(*s) != keep) {
                    if Self::revoke_in_tx(&mut tx, sid, "password_changed", now, event).await?.is_some() {
                        revoked.push(sid);
                    }
                }
                agora_store::commit(tx).await?;
                Ok(revoked)
            }

            async fn create_session(&self, s: &NewSession) -> StoreResult<()> {
                let mut tx = self.write_tx().await?;
                insert_session(&mut tx, s).await?;
                agora_store::commit(tx).await?;
                Ok(())
            }

            async fn session(&self, id: i64) -> StoreResult<Option<Session>> {
                let row: Option<SessionRow> =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1")))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(Session::from))
            }

            async fn rotate_refresh(
                &self,
                old_hash: &str,
                new_hash: &str,
                now: i64,
                expires_at_ms: i64,
                revoked: &SessionEvent<'_>,
            ) -> StoreResult<Rotation> {
                let mut tx = self.write_tx().await?;
                let found: Option<(i64, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT session_id, expires_at_ms, used_at_ms FROM refresh_tokens WHERE token_hash = $1",
                )
                .bind(old_hash)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((sid, token_expires, used)) = found else {
                    return Ok(Rotation::Invalid);
                };
                let session: SessionRow =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1")))
                        .bind(sid)
                        .fetch_one(&mut *tx)
                        .await?;
                // Spend the token; losing a race to another rotation counts as reuse.
                let spent = if used.is_none() {
                    sqlx::query("UPDATE refresh_tokens SET used_at_ms = $1 WHERE token_hash = $2 AND used_at_ms IS NULL")
                        .bind(now)
                        .bind(old_hash)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        == 1
                } else {
                    false
                };
                if !spent {
                    let newly = Self::revoke_in_tx(&mut tx, sid, "refresh_token_reuse", now, revoked).await?.is_some();
                    agora_store::commit(tx).await?;
                    return Ok(Rotation::Reused { session_id: sid, account_id: session.account_id, newly_revoked: newly });
                }
                if session.revoked_at_ms.is_some() || token_expires <= now {
                    tx.rollback().await?;
                    return Ok(Rotation::Invalid);
                }
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, session_id, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4)",
                )
                .bind(new_hash)
                .bind(sid)
                .bind(now)
                .bind(expires_at_ms)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE sessions SET expires_at_ms = $1 WHERE id = $2 AND expires_at_ms < $1")
                    .bind(expires_at_ms)
                    .bind(sid)
                    .execute(&mut *tx)
                    .await?;
                let row: SessionRow =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1")))
                        .bind(sid)
                        .fetch_one(&mut *tx)
                        .await?;
                agora_store::commit(tx).await?;
                Ok(Rotation::Rotated(row.into()))
            }

            async fn session_by_refresh(&self, hash: &str) -> StoreResult<Option<Session>> {
                let row: Option<SessionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1)"
                )))
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Session::from))
            }

            async fn revoke_session(
                &self,
                id: i64,
                reason: &str,
                event: &SessionEvent<'_>,
            ) -> StoreResult<bool> {
                let mut tx = self.write_tx().await?;
                let revoked = Self::revoke_in_tx(&mut tx, id, reason, agora_kit::time::now_ms(), event).await?;
                agora_store::commit(tx).await?;
                Ok(revoked.is_some())
            }

            async fn revoked_since(&self, since_ms: i64, now_ms: i64) -> StoreResult<Vec<Session>> {
                let rows: Vec<SessionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE revoked_at_ms IS NOT NULL AND revoked_at_ms >= $1 AND expires_at_ms > $2"
                )))
                .bind(since_ms)
                .bind(now_ms)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Session::from).collect())
            }

            async fn create_auth_code(&self, c: &AuthCode) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO authorization_codes (code_hash, client_id, account_id, redirect_uri, scopes, code_challenge, expires_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&c.code_hash)
                .bind(&c.client_id)
                .bind(c.account_id)
                .bind(&c.redirect_uri)
                .bind(c.scopes.join(" "))
                .bind(&c.code_challenge)
                .bind(c.expires_at_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn take_auth_code(&self, code_hash: &str) -> StoreResult<Option<AuthCode>> {
                let mut tx = self.write_tx().await?;
                let row: Option<(String, i64, String, String, String, i64)> = sqlx::query_as(
                    "SELECT client_id, account_id, redirect_uri, scopes, code_challenge, expires_at_ms \
                     FROM authorization_codes WHERE code_hash = $1",
                )
                .bind(code_hash)
                .fetch_optional(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM authorization_codes WHERE code_hash = $1")
                    .bind(code_hash)
                    .execute(&mut *tx)
                    .await?;
                agora_store::commit(tx).await?;
                Ok(row.map(|(client_id, account_id, redirect_uri, scopes, code_challenge, expires_at_ms)| AuthCode {
                    code_hash: code_hash.to_owned(),
                    client_id,
                    account_id,
                    redirect_uri,
                    scopes: split(&scopes),
                    code_challenge,
                    expires_at_ms,
                }))
            }

            async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
                let rows: Vec<(String, Vec<u8>, i64)> = sqlx::query_as(
                    "SELECT kid, pkcs8, created_at_ms FROM signing_keys WHERE retired_at_ms IS NULL ORDER BY created_at_ms, kid",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(kid, pkcs8, created_at_ms)| StoredKey { kid, pkcs8, created_at_ms }).collect())
            }

            async fn login_failures(&self, key: &str) -> StoreResult<Option<(i64, i64)>> {
                Ok(sqlx::query_as("SELECT failures, last_failure_at_ms FROM login_failures WHERE throttle_key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn record_login_failure(&self, key: &str, now_ms: i64, forget_before_ms: i64) -> StoreResult<i64> {
                // One statement, so concurrent failures never lose a count.
                Ok(sqlx::query_scalar(
                    "INSERT INTO login_failures (throttle_key, failures, last_failure_at_ms) VALUES ($1, 1, $2) \
                     ON CONFLICT (throttle_key) DO UPDATE SET \
                     failures = CASE WHEN login_failures.last_failure_at_ms < $3 THEN 1 ELSE login_failures.failures + 1 END, \
                     last_failure_at_ms = $2 \
                     RETURNING failures",
                )
                .bind(key)
                .bind(now_ms)
                .bind(forget_before_ms)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn clear_login_failures(&self, keys: &[String]) -> StoreResult<()> {
                for key in keys {
                    sqlx::query("DELETE FROM login_failures WHERE throttle_key = $1").bind(key).execute(&self.pool).await?;
                }
                Ok(())
            }

            async fn known_address(&self, account_id: i64, address: &str, since_ms: i64) -> StoreResult<bool> {
                let found: Option<i64> = sqlx::query_scalar(
                    "SELECT last_success_at_ms FROM login_addresses WHERE account_id = $1 AND address = $2 AND last_success_at_ms >= $3",
                )
                .bind(account_id)
                .bind(address)
                .bind(since_ms)
                .fetch_optional(&self.pool)
                .await?;
                Ok(found.is_some())
            }

            async fn remember_address(&self, account_id: i64, address: &str, now_ms: i64) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO login_addresses (account_id, address, last_success_at_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (account_id, address) DO UPDATE SET last_success_at_ms = $3",
                )
                .bind(account_id)
                .bind(address)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn add_signing_key(&self, k: &StoredKey) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO signing_keys (kid, pkcs8, created_at_ms) VALUES ($1, $2, $3) ON CONFLICT (kid) DO NOTHING",
                )
                .bind(&k.kid)
                .bind(&k.pkcs8)
                .bind(k.created_at_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }
        }

        async fn insert_session(tx: &mut sqlx::Transaction<'static, $db>, s: &NewSession) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO sessions (id, account_id, client_id, scopes, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(s.id)
            .bind(s.account_id)
            .bind(&s.client_id)
            .bind(s.scopes.join(" "))
            .bind(s.created_at_ms)
            .bind(s.expires_at_ms.max(s.refresh_expires_at_ms))
            .execute(&mut **tx)
            .await?;
            if let Some(hash) = &s.refresh_hash {
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, session_id, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4)",
                )
                .bind(hash)
                .bind(s.id)
                .bind(s.created_at_ms)
                .bind(s.refresh_expires_at_ms)
                .execute(&mut **tx)
                .await?;
            }
            Ok(())
        }
    };
}

/// User store on PostgreSQL.
pub struct PgUserStore {
    pool: PgPool,
    outbox: Arc<dyn OutboxStore>,
}

impl PgUserStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = agora_store::postgres(url).await?;
        let outbox = Arc::new(agora_events::outbox::pg::PgOutbox::new(pool.clone(), url, "user"));
        Ok(Self { pool, outbox })
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        sqlx::migrate!("./migrations/postgres")
    }

    fn reader(&self) -> Option<&SqliteReader> {
        None
    }
}

mod pg_impl {
    use super::*;
    sql_user_store!(PgUserStore, sqlx::Postgres, agora_events::outbox::pg::insert, "BEGIN");
}

/// User store on SQLite (the embedded default). Writes go through the sqlx pool; account reads
/// run on the calling thread through [`SqliteReader`] (see `lite.rs`).
pub struct SqliteUserStore {
    pool: SqlitePool,
    reader: SqliteReader,
    outbox: Arc<dyn OutboxStore>,
}

impl SqliteUserStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = agora_store::sqlite(url).await?;
        let reader = SqliteReader::new(url, "user")?;
        let outbox = Arc::new(agora_events::outbox::sqlite::SqliteOutbox::new(pool.clone()));
        Ok(Self { pool, reader, outbox })
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        sqlx::migrate!("./migrations/sqlite")
    }

    fn reader(&self) -> Option<&SqliteReader> {
        Some(&self.reader)
    }
}

mod sqlite_impl {
    use super::*;
    // IMMEDIATE takes the write lock up front, so a read-then-write transaction never fails
    // with SQLITE_BUSY halfway through.
    sql_user_store!(SqliteUserStore, sqlx::Sqlite, agora_events::outbox::sqlite::insert, "BEGIN IMMEDIATE");
}
