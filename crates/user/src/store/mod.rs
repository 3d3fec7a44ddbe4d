//! The user store port and the choice of backend by URL scheme (`postgres://`, `sqlite://`).
//! Every backend passes the conformance suite in `tests/it/store.rs`.

mod lite;
mod sql;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{Account, Application, ProfilePatch, Session};
use agora_events::Envelope;
use agora_events::outbox::OutboxStore;

pub use sql::{PgUserStore, SqliteUserStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken; names the field (`username`, `email`).
    #[error("{0} already taken")]
    Taken(&'static str),
    #[error("not found")]
    NotFound,
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let Some(db) = e.as_database_error()
            && db.is_unique_violation()
        {
            let what = format!("{} {}", db.constraint().unwrap_or(""), db.message());
            if what.contains("email") {
                return StoreError::Taken("email");
            }
            if what.contains("username") {
                return StoreError::Taken("username");
            }
            return StoreError::Taken("id");
        }
        if matches!(e, sqlx::Error::RowNotFound) {
            return StoreError::NotFound;
        }
        StoreError::Unavailable(e.to_string())
    }
}

impl From<StoreError> for agora_kit::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Taken(field) => agora_kit::Error::invalid(
                field,
                "ERR_TAKEN",
                format!("{} is already taken", if field == "email" { "Email" } else { "Username" }),
            ),
            StoreError::NotFound => agora_kit::Error::not_found("Record"),
            StoreError::Unavailable(detail) => agora_kit::Error::internal(detail),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Builds the event announcing a change to a session (written in the same transaction).
pub type SessionEvent<'a> = dyn for<'s> Fn(&'s Session) -> Envelope + Send + Sync + 'a;
/// Builds the event announcing a change to an account.
pub type AccountEvent<'a> = dyn for<'s> Fn(&'s Account) -> Envelope + Send + Sync + 'a;

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub password_hash: String,
    pub created_at_ms: i64,
}

/// A new session, optionally with its first refresh token (stored only as a hash).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: i64,
    pub account_id: Option<i64>,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub refresh_hash: Option<String>,
    pub refresh_expires_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct AuthCode {
    pub code_hash: String,
    pub client_id: String,
    pub account_id: i64,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub code_challenge: String,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub pkcs8: Vec<u8>,
    pub created_at_ms: i64,
}

/// What happened to a refresh token presented for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// Rotated: the old token is spent, the new one stored.
    Rotated(Session),
    /// The token was already spent: the session is now revoked (by this call or earlier).
    Reused { session_id: i64, account_id: Option<i64>, newly_revoked: bool },
    /// Unknown, expired, or its session was revoked.
    Invalid,
}

#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    async fn migrate(&self) -> StoreResult<()>;
    async fn ping(&self) -> StoreResult<()>;
    /// The outbox of this store's database, for the relay.
    fn outbox(&self) -> Arc<dyn OutboxStore>;

    async fn create_application(&self, app: &Application) -> StoreResult<()>;
    async fn application_by_client_id(&self, client_id: &str) -> StoreResult<Option<Application>>;

    /// Creates the account, its first session and the `user.created` event in one transaction.
    async fn create_account(
        &self,
        account: &NewAccount,
        session: &NewSession,
        event: &Envelope,
    ) -> StoreResult<Account>;
    async fn account(&self, id: i64) -> StoreResult<Option<Account>>;
    /// Accounts in the order of `ids`, skipping unknown ones.
    async fn accounts(&self, ids: &[i64]) -> StoreResult<Vec<Account>>;
    async fn account_by_username(&self, username: &str) -> StoreResult<Option<Account>>;
    /// Account and password hash by username or email (case-insensitive).
    async fn credentials(&self, login: &str) -> StoreResult<Option<(Account, String)>>;
    /// Applies a validated patch and writes `user.updated` (built by `event` from the result).
    async fn update_profile(&self, id: i64, patch: &ProfilePatch, event: &AccountEvent<'_>) -> StoreResult<Account>;
    /// Sets a new password hash and revokes every live session except `keep`, writing one
    /// `user.session_revoked` per session. Returns the revoked session ids.
    async fn change_password(
        &self,
        id: i64,
        hash: &str,
        keep: Option<i64>,
        event: &SessionEvent<'_>,
    ) -> StoreResult<Vec<i64>>;

    async fn create_session(&self, session: &NewSession) -> StoreResult<()>;
    async fn session(&self, id: i64) -> StoreResult<Option<Session>>;
    /// Spends refresh token `old_hash` and stores `new_hash` in its place, extending the
    /// session to `expires_at_ms`. Reuse of a spent token revokes the session and writes the
    /// event built by `revoked`.
    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        now_ms: i64,
        expires_at_ms: i64,
        revoked: &SessionEvent<'_>,
    ) -> StoreResult<Rotation>;
    /// The session a refresh token belongs to (spent or not).
    async fn session_by_refresh(&self, hash: &str) -> StoreResult<Option<Session>>;
    /// Revokes a session and writes its event; false if it was already revoked.
    async fn revoke_session(&self, id: i64, reason: &str, event: &SessionEvent<'_>) -> StoreResult<bool>;
    /// Sessions revoked at or after `since_ms` whose tokens have not all expired.
    async fn revoked_since(&self, since_ms: i64, now_ms: i64) -> StoreResult<Vec<Session>>;

    async fn create_auth_code(&self, code: &AuthCode) -> StoreResult<()>;
    /// Returns and deletes the code (single use).
    async fn take_auth_code(&self, code_hash: &str) -> StoreResult<Option<AuthCode>>;

    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>>;
    /// Failed sign-ins under a throttle key: (count, time of the last one).
    async fn login_failures(&self, key: &str) -> StoreResult<Option<(i64, i64)>>;
    /// Counts one more failure under `key`, starting over when the last one is older than
    /// `forget_before_ms`. Returns the new count.
    async fn record_login_failure(&self, key: &str, now_ms: i64, forget_before_ms: i64) -> StoreResult<i64>;
    async fn clear_login_failures(&self, keys: &[String]) -> StoreResult<()>;
    /// Whether `account_id` signed in successfully from `address` since `since_ms`.
    async fn known_address(&self, account_id: i64, address: &str, since_ms: i64) -> StoreResult<bool>;
    async fn remember_address(&self, account_id: i64, address: &str, now_ms: i64) -> StoreResult<()>;
    /// Inserts a key; an existing kid is left as it is.
    async fn add_signing_key(&self, key: &StoredKey) -> StoreResult<()>;
}

/// Opens the store named by `url`. SQLite files and their directory are created if missing.
pub async fn connect(url: &str) -> StoreResult<Arc<dyn UserStore>> {
    match url.split_once("://").map(|(s, _)| s) {
        Some("postgres") | Some("postgresql") => Ok(Arc::new(PgUserStore::connect(url).await?)),
        Some("sqlite") => Ok(Arc::new(SqliteUserStore::connect(url).await?)),
        _ => Err(StoreError::Unavailable(format!(
            "unsupported user store url scheme in {} (postgres://, sqlite://)",
            agora_kit::config::redact_url(url)
        ))),
    }
}
