//! The user service's behaviour, independent of gRPC: registration, the OAuth grants, session
//! revocation, profiles. gRPC (`grpc.rs`) only translates wire types to these calls.

use std::sync::Arc;
use std::time::Duration;

use agora_events::Envelope;
use agora_kit::jwt::{Claims, Revocation, Verifier};
use agora_kit::{Error, ErrorKind, IdGenerator};
use agora_proto::events::v1 as ev;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use tokio::sync::Notify;

use crate::domain::{self, Account, Application, ProfilePatch, Session};
use crate::store::{AuthCode, NewAccount, NewSession, Rotation, UserStore};
use crate::tokens::{self, Keyring};

pub const AUDIENCE: &str = "agora";
pub const OOB_REDIRECT: &str = "urn:ietf:wg:oauth:2.0:oob";

#[derive(Debug, Clone)]
pub struct TokenPolicy {
    pub issuer: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Keys from outside the store (see `Config::signing_keys`); the first signs.
    pub external_keys: Option<Vec<agora_kit::jwt::SigningKey>>,
}

/// A token pair as issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub scopes: Vec<String>,
    pub created_at_ms: i64,
    pub expires_in: i64,
}

pub struct Accounts {
    pub store: Arc<dyn UserStore>,
    pub keyring: Arc<Keyring>,
    pub verifier: Arc<Verifier>,
    ids: Arc<IdGenerator>,
    policy: TokenPolicy,
    outbox_wake: Arc<Notify>,
    /// A real hash to verify against when a login names no account, so that response time
    /// does not reveal which usernames exist.
    dummy_hash: String,
    /// The backoff on failed sign-ins.
    pub throttle: domain::LoginThrottle,
    /// A changed profile's account gets a new epoch before the change is answered.
    epochs: Option<Arc<dyn agora_client::epoch::Epochs>>,
}

fn invalid_grant(msg: &str) -> Error {
    Error::coded(ErrorKind::Unauthenticated, "invalid_grant", msg)
}

fn invalid_client() -> Error {
    Error::coded(
        ErrorKind::Unauthenticated,
        "invalid_client",
        "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.",
    )
}

/// Argon2id costs ~19 MiB and tens of milliseconds per hash. Hashing runs on a fixed set of
/// threads, one per core: a burst of logins queues instead of taking every core, and memory
/// stays bounded (the allocator keeps a freed 19 MiB block per thread that hashed, so running
/// on the ever-changing blocking pool left hundreds of MiB resident after a few sign-ups).
struct HashingPool {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

static HASHING: std::sync::LazyLock<HashingPool> = std::sync::LazyLock::new(|| {
    let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    for i in 0..n {
        let rx = std::sync::Arc::clone(&rx);
        let spawned = std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
            loop {
                let job = match rx.lock() {
                    Ok(guard) => guard.recv(),
                    Err(_) => return,
                };
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a password hashing thread");
        }
    }
    HashingPool { jobs: std::sync::Mutex::new(tx) }
});

/// Runs `f` on the hashing threads.
async fn on_hashing_pool<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Box<dyn FnOnce() + Send> = Box::new(move || {
        let _ = tx.send(f());
    });
    HASHING
        .jobs
        .lock()
        .map_err(|_| Error::internal("hashing pool poisoned"))?
        .send(job)
        .map_err(|_| Error::internal("hashing pool stopped"))?;
    rx.await.map_err(|_| Error::internal("hashing job dropped"))
}

async fn hash_password(password: String) -> Result<String, Error> {
    on_hashing_pool(move || {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(Error::internal)?;
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(Error::internal)
    })
    .await?
}

async fn verify_password(password: String, hash: String) -> bool {
    on_hashing_pool(move || {
        PasswordHash::new(&hash)
            .map(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

impl Accounts {
    pub async fn new(
        store: Arc<dyn UserStore>,
        policy: TokenPolicy,
        ids: Arc<IdGenerator>,
        outbox_wake: Arc<Notify>,
    ) -> Result<Self, Error> {
        let keyring = Keyring::load(store.as_ref(), policy.external_keys.as_deref()).await?;
        let source = Arc::new(tokens::StoreKeys { store: Arc::clone(&store), keyring: Arc::clone(&keyring) });
        let verifier = Verifier::new(&policy.issuer, AUDIENCE, source);
        verifier.prime().await?;
        let dummy_hash = hash_password(tokens::random_secret()).await?;
        Ok(Self {
            store,
            keyring,
            verifier,
            ids,
            policy,
            outbox_wake,
            dummy_hash,
            throttle: Default::default(),
            epochs: None,
        })
    }

    /// Gives changed accounts new epochs in `epochs` (none: no cache relies on them).
    pub fn with_epochs(mut self, epochs: Option<Arc<dyn agora_client::epoch::Epochs>>) -> Self {
        self.epochs = epochs;
        self
    }

    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    fn wake_outbox(&self) {
        self.outbox_wake.notify_one();
    }

    fn revoked_event(&self, reason: &'static str) -> impl Fn(&Session) -> Envelope + Send + Sync + '_ {
        move |s: &Session| {
            let payload = ev::SessionRevoked {
                account_id: s.account_id.unwrap_or_default(),
                session_id: s.id,
                revoked_at_ms: s.revoked_at_ms.unwrap_or_else(agora_kit::time::now_ms),
                reason: reason.to_owned(),
                expires_at_ms: s.expires_at_ms,
            };
            agora_events::envelope(&self.ids, "user", "user.session_revoked", s.account_id.unwrap_or(s.id), &payload)
        }
    }

    /// Verifies a bearer token presented to this service.
    pub async fn authenticate_token(&self, token: Option<&str>) -> Result<Claims, Error> {
        let token = token.ok_or_else(|| Error::unauthenticated("The access token is invalid"))?;
        Ok(self.verifier.verify(token).await?)
    }

    /// Verifies a user token (not an application token) carrying `scope`.
    pub async fn authenticate_user(&self, token: Option<&str>, scope: &str) -> Result<(Claims, i64), Error> {
        let claims = self.authenticate_token(token).await?;
        let id =
            claims.account_id().ok_or_else(|| Error::unauthenticated("This method requires an authenticated user"))?;
        if !claims.allows(scope) {
            return Err(Error::forbidden("This action is outside the authorized scopes"));
        }
        Ok((claims, id))
    }

    fn issue(
        &self,
        session: &NewSession,
        account: Option<&Account>,
        refresh: Option<String>,
    ) -> Result<IssuedToken, Error> {
        let now = agora_kit::time::now_ms();
        let exp = now / 1000 + self.policy.access_ttl.as_secs() as i64;
        let claims = Claims {
            iss: self.policy.issuer.clone(),
            aud: AUDIENCE.to_owned(),
            sub: session.account_id.map(|id| id.to_string()),
            exp,
            iat: now / 1000,
            jti: self.ids.next_id().to_string(),
            sid: session.id.to_string(),
            cid: session.client_id.clone(),
            scope: session.scopes.join(" "),
            role: account.map(|a| a.role.as_str().to_owned()),
        };
        Ok(IssuedToken {
            access_token: self.keyring.sign(&claims)?,
            refresh_token: refresh,
            scopes: session.scopes.clone(),
            created_at_ms: now,
            expires_in: self.policy.access_ttl.as_secs() as i64,
        })
    }

    fn new_session(
        &self,
        account_id: Option<i64>,
        client_id: &str,
        scopes: Vec<String>,
        with_refresh: bool,
    ) -> (NewSession, Option<String>) {
        let now = agora_kit::time::now_ms();
        let refresh = with_refresh.then(tokens::random_secret);
        let session = NewSession {
            id: self.ids.next_id(),
            account_id,
            client_id: client_id.to_owned(),
            scopes,
            created_at_ms: now,
            expires_at_ms: now + self.policy.access_ttl.as_millis() as i64,
            refresh_hash: refresh.as_deref().map(tokens::hash_secret),
            refresh_expires_at_ms: if with_refresh { now + self.policy.refresh_ttl.as_millis() as i64 } else { 0 },
        };
        (session, refresh)
    }

    async fn client(&self, client_id: &str, secret: Option<&str>) -> Result<Application, Error> {
        let app = self.store.application_by_client_id(client_id).await?.ok_or_else(invalid_client)?;
        if let Some(secret) = secret
            && !tokens::same_hash(&tokens::hash_secret(secret), &app.client_secret_hash)
        {
            return Err(invalid_client());
        }
        Ok(app)
    }

    fn requested_scopes(&self, raw: &[String], app: &Application) -> Result<Vec<String>, Error> {
        let scopes = domain::parse_scopes(raw)?;
        if !domain::scopes_within(&scopes, &app.scopes) {
            return Err(Error::coded(
                ErrorKind::InvalidArgument,
                "invalid_scope",
                "The requested scope is invalid, unknown, or malformed.",
            ));
        }
        Ok(scopes)
    }

    pub async fn create_application(
        &self,
        name: &str,
        website: &str,
        redirect_uris: &[String],
        scopes: &[String],
    ) -> Result<(Application, String), Error> {
        let name = domain::clean_text("client_name", name.trim(), 255, false)?;
        if name.is_empty() {
            return Err(Error::invalid("client_name", "ERR_BLANK", "client_name can't be blank"));
        }
        let website = domain::validate_url("website", website)?;
        let mut uris = Vec::new();
        for u in redirect_uris.iter().flat_map(|u| u.split(['\n', ' '])).map(str::trim).filter(|u| !u.is_empty()) {
            let ok = u == OOB_REDIRECT
                || (u.contains("://") && !u.chars().any(|c| c.is_whitespace() || c.is_control()) && u.len() <= 2048);
            if !ok {
                return Err(Error::invalid("redirect_uris", "ERR_INVALID", "redirect_uris must be absolute URIs"));
            }
            uris.push(u.to_owned());
        }
        if uris.is_empty() {
            uris.push(OOB_REDIRECT.to_owned());
        }
        let secret = tokens::random_secret();
        let app = Application {
            id: self.ids.next_id(),
            name,
            website,
            redirect_uris: uris,
            scopes: domain::parse_scopes(scopes)?,
            client_id: tokens::random_secret(),
            client_secret_hash: tokens::hash_secret(&secret),
            created_at_ms: agora_kit::time::now_ms(),
        };
        self.store.create_application(&app).await?;
        Ok((app, secret))
    }

    pub async fn application_of(&self, token: Option<&str>) -> Result<Application, Error> {
        let claims = self.authenticate_token(token).await?;
        self.client(&claims.cid, None).await
    }

    /// Registers an account. The caller presents an application token with `write:accounts`.
    pub async fn register(
        &self,
        app_token: Option<&str>,
        username: &str,
        email: &str,
        password: &str,
        agreement: bool,
        scopes: &[String],
    ) -> Result<(IssuedToken, Account), Error> {
        let claims = self.authenticate_token(app_token).await?;
        if !claims.allows("write:accounts") {
            return Err(Error::forbidden("This action is outside the authorized scopes"));
        }
        let username = domain::validate_username(username)?;
        let email = domain::validate_email(email)?;
        domain::validate_password(password)?;
        if !agreement {
            return Err(Error::invalid("agreement", "ERR_ACCEPTED", "Agreement must be accepted"));
        }
        let app = self.client(&claims.cid, None).await?;
        let scopes = if scopes.iter().all(|s| s.trim().is_empty()) {
            app.scopes.clone()
        } else {
            self.requested_scopes(scopes, &app)?
        };
        // Cheap pre-check so a taken name does not cost an argon2 hash; the unique index decides.
        if self.store.account_by_username(&username).await?.is_some() {
            return Err(Error::invalid("username", "ERR_TAKEN", "Username is already taken"));
        }
        let password_hash = hash_password(password.to_owned()).await?;
        let id = self.ids.next_id();
        let now = agora_kit::time::now_ms();
        let (session, refresh) = self.new_session(Some(id), &app.client_id, scopes, true);
        let event = agora_events::envelope(
            &self.ids,
            "user",
            "user.created",
            id,
            &ev::UserCreated {
                account_id: id,
                username: username.clone(),
                display_name: String::new(),
                locked: false,
                bot: false,
                created_at_ms: now,
            },
        );
        let account = self
            .store
            .create_account(&NewAccount { id, username, email, password_hash, created_at_ms: now }, &session, &event)
            .await?;
        self.wake_outbox();
        metrics::counter!("agora_user_registrations_total").increment(1);
        let token = self.issue(&session, Some(&account), refresh)?;
        Ok((token, account))
    }

    /// Password grant. `address` is the client's address as the gateway saw it (empty if
    /// unknown); it only picks the sign-in throttle key.
    pub async fn password_grant(
        &self,
        client_id: &str,
        client_secret: &str,
        login: &str,
        password: &str,
        scopes: &[String],
        address: &str,
    ) -> Result<IssuedToken, Error> {
        let app = self.client(client_id, Some(client_secret)).await?;
        let scopes = self.requested_scopes(scopes, &app)?;
        let account = self.check_password(login, password, address).await?;
        let (session, refresh) = self.new_session(Some(account.id), &app.client_id, scopes, true);
        self.store.create_session(&session).await?;
        metrics::counter!("agora_user_logins_total").increment(1);
        self.issue(&session, Some(&account), refresh)
    }

    /// Checks a login and password under the sign-in backoff. While a throttle key must wait,
    /// the password is not even checked, so waiting is the only way forward for a guesser; an
    /// unknown login is throttled exactly like a known one, so the answer says nothing about
    /// which accounts exist.
    async fn check_password(&self, login: &str, password: &str, address: &str) -> Result<Account, Error> {
        let found =
            if login.trim().is_empty() || login.len() > 320 { None } else { self.store.credentials(login).await? };
        let now = agora_kit::time::now_ms();
        let throttle = self.throttle;
        // The key failures count under, and the keys a success clears.
        let (key, clears) = match &found {
            Some((account, _)) => {
                let shared = format!("acct:{}", account.id);
                let since = now - throttle.known_address_for.as_millis() as i64;
                if !address.is_empty() && self.store.known_address(account.id, address, since).await? {
                    let own = format!("acct:{}:addr:{address}", account.id);
                    (own.clone(), vec![own, shared])
                } else {
                    (shared.clone(), vec![shared])
                }
            }
            None => {
                let key = format!("login:{}", login.trim().to_lowercase());
                (key.clone(), vec![key])
            }
        };
        if let Some((failures, last)) = self.store.login_failures(&key).await?
            && let Some(wait_ms) = throttle.wait_ms(failures, last, now)
        {
            metrics::counter!("agora_user_logins_throttled_total").increment(1);
            let secs = (wait_ms as u64).div_ceil(1000).max(1);
            return Err(Error::rate_limited(
                "login_throttled",
                format!("Too many failed sign-in attempts. Try again in {secs} seconds."),
                secs,
            ));
        }
        let (account, ok) = match found {
            Some((account, hash)) => {
                let ok = verify_password(password.to_owned(), hash).await;
                (Some(account), ok)
            }
            None => {
                let _ = verify_password(password.to_owned(), self.dummy_hash.clone()).await;
                (None, false)
            }
        };
        match (account, ok) {
            (Some(a), true) => {
                self.store.clear_login_failures(&clears).await?;
                if !address.is_empty() {
                    self.store.remember_address(a.id, address, now).await?;
                }
                Ok(a)
            }
            _ => {
                metrics::counter!("agora_user_login_failures_total").increment(1);
                let forget_before = now - throttle.forget_after.as_millis() as i64;
                self.store.record_login_failure(&key, now, forget_before).await?;
                Err(invalid_grant(
                    "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.",
                ))
            }
        }
    }

    /// Client-credentials grant: an application token.
    pub async fn client_grant(
        &self,
        client_id: &str,
        client_secret: &str,
        scopes: &[String],
    ) -> Result<IssuedToken, Error> {
        let app = self.client(client_id, Some(client_secret)).await?;
        let scopes = self.requested_scopes(scopes, &app)?;
        let (session, _) = self.new_session(None, &app.client_id, scopes, false);
        self.store.create_session(&session).await?;
        self.issue(&session, None, None)
    }

    // Mirrors the OAuth authorize request field for field; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_authorization_code(
        &self,
        client_id: &str,
        redirect_uri: &str,
        scopes: &[String],
        login: &str,
        password: &str,
        code_challenge: &str,
        code_challenge_method: &str,
        address: &str,
    ) -> Result<String, Error> {
        let app = self.client(client_id, None).await?;
        if !app.redirect_uris.iter().any(|u| u == redirect_uri) {
            return Err(Error::invalid(
                "redirect_uri",
                "ERR_INVALID",
                "redirect_uri is not registered for this application",
            ));
        }
        if !code_challenge.is_empty() && code_challenge_method != "S256" {
            return Err(Error::invalid("code_challenge_method", "ERR_INVALID", "only S256 is supported"));
        }
        let scopes = self.requested_scopes(scopes, &app)?;
        let account = self.check_password(login, password, address).await?;
        let code = tokens::random_secret();
        self.store
            .create_auth_code(&AuthCode {
                code_hash: tokens::hash_secret(&code),
                client_id: app.client_id,
                account_id: account.id,
                redirect_uri: redirect_uri.to_owned(),
                scopes,
                code_challenge: code_challenge.to_owned(),
                expires_at_ms: agora_kit::time::now_ms() + 10 * 60 * 1000,
            })
            .await?;
        Ok(code)
    }

    pub async fn exchange_code(
        &self,
        client_id: &str,
        client_secret: &str,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<IssuedToken, Error> {
        let app = self.client(client_id, Some(client_secret)).await?;
        let grant = self.store.take_auth_code(&tokens::hash_secret(code)).await?;
        let bad = || {
            invalid_grant(
                "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.",
            )
        };
        let grant = grant.ok_or_else(bad)?;
        if grant.client_id != app.client_id
            || grant.redirect_uri != redirect_uri
            || grant.expires_at_ms < agora_kit::time::now_ms()
            || (!grant.code_challenge.is_empty() && !tokens::pkce_matches(&grant.code_challenge, code_verifier))
        {
            return Err(bad());
        }
        let account = self.store.account(grant.account_id).await?.ok_or_else(bad)?;
        let (session, refresh) = self.new_session(Some(account.id), &app.client_id, grant.scopes, true);
        self.store.create_session(&session).await?;
        self.issue(&session, Some(&account), refresh)
    }

    /// Rotates a refresh token. Presenting an already-spent token revokes the whole session.
    pub async fn refresh(
        &self,
        client_id: &str,
        client_secret: &str,
        refresh_token: &str,
    ) -> Result<IssuedToken, Error> {
        let app = self.client(client_id, Some(client_secret)).await?;
        let old_hash = tokens::hash_secret(refresh_token);
        let bad = || {
            invalid_grant(
                "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.",
            )
        };
        let owner = self.store.session_by_refresh(&old_hash).await?.ok_or_else(bad)?;
        if owner.client_id != app.client_id {
            return Err(bad());
        }
        let new_refresh = tokens::random_secret();
        let now = agora_kit::time::now_ms();
        let expires = now + self.policy.refresh_ttl.as_millis() as i64;
        let event = self.revoked_event("refresh_token_reuse");
        match self.store.rotate_refresh(&old_hash, &tokens::hash_secret(&new_refresh), now, expires, &event).await? {
            Rotation::Rotated(session) => {
                let account = match session.account_id {
                    Some(id) => self.store.account(id).await?,
                    None => None,
                };
                let ns = NewSession {
                    id: session.id,
                    account_id: session.account_id,
                    client_id: session.client_id,
                    scopes: session.scopes,
                    created_at_ms: session.created_at_ms,
                    expires_at_ms: session.expires_at_ms,
                    refresh_hash: None,
                    refresh_expires_at_ms: expires,
                };
                self.issue(&ns, account.as_ref(), Some(new_refresh))
            }
            Rotation::Reused { session_id, newly_revoked, .. } => {
                if newly_revoked {
                    tracing::warn!(session_id, "refresh token reused: session revoked");
                    metrics::counter!("agora_user_refresh_reuse_total").increment(1);
                    self.verifier.note_revoked(Revocation { session_id, expires_at_ms: i64::MAX });
                    self.wake_outbox();
                }
                Err(bad())
            }
            Rotation::Invalid => Err(bad()),
        }
    }

    /// Revokes the session behind an access or refresh token of this client. Unknown tokens
    /// succeed silently (RFC 7009).
    pub async fn revoke(&self, client_id: &str, client_secret: &str, token: &str) -> Result<(), Error> {
        let app = self.client(client_id, Some(client_secret)).await?;
        let session_id = match self.verifier.verify(token).await {
            Ok(c) if c.cid == app.client_id => c.session_id(),
            Ok(_) => return Err(Error::forbidden("You are not authorized to revoke this token")),
            Err(_) => match self.store.session_by_refresh(&tokens::hash_secret(token)).await? {
                Some(s) if s.client_id == app.client_id => Some(s.id),
                Some(_) => return Err(Error::forbidden("You are not authorized to revoke this token")),
                None => None,
            },
        };
        if let Some(sid) = session_id {
            self.revoke_session(sid, "logout").await?;
        }
        Ok(())
    }

    pub async fn revoke_session(&self, session_id: i64, reason: &'static str) -> Result<bool, Error> {
        let event = self.revoked_event(reason);
        let revoked = self.store.revoke_session(session_id, reason, &event).await?;
        if revoked {
            self.verifier.note_revoked(Revocation { session_id, expires_at_ms: i64::MAX });
            self.wake_outbox();
            metrics::counter!("agora_user_sessions_revoked_total", "reason" => reason).increment(1);
        }
        Ok(revoked)
    }

    pub async fn change_password(&self, token: Option<&str>, current: &str, new: &str) -> Result<usize, Error> {
        let (claims, id) = self.authenticate_user(token, "write:accounts").await?;
        domain::validate_password(new)?;
        let account = self.store.account(id).await?.ok_or_else(|| Error::not_found("Account"))?;
        // Guessing the current password with a stolen session is throttled like a sign-in.
        self.check_password(&account.username, current, "").await.map_err(|e| match e.kind {
            ErrorKind::Unauthenticated => {
                Error::invalid("current_password", "ERR_INVALID", "Current password is invalid")
            }
            _ => e,
        })?;
        let hash = hash_password(new.to_owned()).await?;
        let event = self.revoked_event("password_changed");
        let revoked = self.store.change_password(id, &hash, claims.session_id(), &event).await?;
        for sid in &revoked {
            self.verifier.note_revoked(Revocation { session_id: *sid, expires_at_ms: i64::MAX });
        }
        self.wake_outbox();
        Ok(revoked.len())
    }

    pub async fn account(&self, id: i64) -> Result<Account, Error> {
        self.store.account(id).await?.ok_or_else(|| Error::not_found("Record"))
    }

    pub async fn accounts(&self, ids: &[i64]) -> Result<Vec<Account>, Error> {
        if ids.len() > 200 {
            return Err(Error::invalid("ids", "ERR_TOO_LONG", "at most 200 ids per call"));
        }
        Ok(self.store.accounts(ids).await?)
    }

    pub async fn lookup(&self, username: &str) -> Result<Account, Error> {
        let name = username.trim().trim_start_matches('@');
        // A local acct may carry our own domain; anything else is not ours.
        let name = name.split_once('@').map(|(u, _)| u).unwrap_or(name);
        if name.is_empty() || name.len() > domain::USERNAME_MAX {
            return Err(Error::not_found("Record"));
        }
        self.store.account_by_username(name).await?.ok_or_else(|| Error::not_found("Record"))
    }

    pub async fn credential_account(&self, token: Option<&str>) -> Result<Account, Error> {
        let claims = self.authenticate_token(token).await?;
        let id =
            claims.account_id().ok_or_else(|| Error::unauthenticated("This method requires an authenticated user"))?;
        if !(claims.allows("read:accounts") || claims.allows("profile")) {
            return Err(Error::forbidden("This action is outside the authorized scopes"));
        }
        self.account(id).await
    }

    pub async fn update_profile(&self, token: Option<&str>, patch: ProfilePatch) -> Result<Account, Error> {
        let (_, id) = self.authenticate_user(token, "write:accounts").await?;
        let patch = domain::validate_patch(patch)?;
        let ids = Arc::clone(&self.ids);
        let event = move |a: &Account| {
            agora_events::envelope(
                &ids,
                "user",
                "user.updated",
                a.id,
                &ev::UserUpdated {
                    account_id: a.id,
                    username: a.username.clone(),
                    display_name: a.display_name.clone(),
                    note: a.note.clone(),
                    avatar_url: a.avatar_url.clone(),
                    header_url: a.header_url.clone(),
                    locked: a.locked,
                    bot: a.bot,
                    updated_at_ms: a.updated_at_ms,
                },
            )
        };
        let account = self.store.update_profile(id, &patch, &event).await?;
        agora_client::epoch::bump_after_commit(self.epochs.as_ref(), &[id]).await;
        self.wake_outbox();
        Ok(account)
    }

    pub async fn revoked_since(&self, since_ms: i64) -> Result<(Vec<Session>, i64), Error> {
        let now = agora_kit::time::now_ms();
        Ok((self.store.revoked_since(since_ms, now).await?, now))
    }
}
