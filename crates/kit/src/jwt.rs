//! Access-token verification. Tokens are EdDSA JWTs signed by the user service, carrying
//! iss/aud/exp/iat/jti, the session id (`sid`), the OAuth client (`cid`) and scopes.
//!
//! A [`Verifier`] holds the public keys by `kid` (refetched when an unknown `kid` shows up, so key
//! rotation needs no restart) and the set of revoked sessions (polled every second), so a check
//! costs no network call and a revoked session stops working everywhere within seconds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::{Error, Shutdown};

pub const ALGORITHM: &str = "EdDSA";

/// The OAuth scopes Agora knows, as in Mastodon.
pub const KNOWN_SCOPES: &[&str] = &[
    "read",
    "write",
    "follow",
    "push",
    "profile",
    "admin:read",
    "admin:write",
    "read:accounts",
    "read:blocks",
    "read:bookmarks",
    "read:favourites",
    "read:filters",
    "read:follows",
    "read:lists",
    "read:mutes",
    "read:notifications",
    "read:search",
    "read:statuses",
    "write:accounts",
    "write:blocks",
    "write:bookmarks",
    "write:conversations",
    "write:favourites",
    "write:filters",
    "write:follows",
    "write:lists",
    "write:media",
    "write:mutes",
    "write:notifications",
    "write:reports",
    "write:statuses",
];

/// The claims of an Agora access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// Account id; absent on application (client-credentials) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// Session id: revoking it kills every token of the session.
    pub sid: String,
    /// OAuth client id.
    pub cid: String,
    /// Space-separated scopes.
    pub scope: String,
    /// The account's role (`user`, `moderator`, `admin`); absent on application tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Claims {
    pub fn account_id(&self) -> Option<i64> {
        self.sub.as_deref().and_then(|s| s.parse().ok())
    }

    pub fn session_id(&self) -> Option<i64> {
        self.sid.parse().ok()
    }

    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split_ascii_whitespace()
    }

    /// Whether the token grants `needed` (e.g. `read:accounts`): the exact scope or its parent
    /// (`read`). `follow` implies read:follows/write:follows/blocks/mutes as in Mastodon.
    pub fn allows(&self, needed: &str) -> bool {
        let parent = needed.split(':').next().unwrap_or(needed);
        self.scopes().any(|s| {
            s == needed
                || s == parent
                || (s == "follow"
                    && matches!(
                        needed,
                        "read:follows"
                            | "write:follows"
                            | "read:blocks"
                            | "write:blocks"
                            | "read:mutes"
                            | "write:mutes"
                    ))
        })
    }
}

/// A public verification key as published by the issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    /// Raw 32-byte Ed25519 key.
    pub key: Vec<u8>,
}

impl PublicKey {
    /// The key as a JWK (`{"kty":"OKP","crv":"Ed25519",...}`).
    pub fn to_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": ALGORITHM,
            "use": "sig",
            "kid": self.kid,
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.key),
        })
    }
}

/// A session the issuer has revoked, remembered until its tokens would have expired anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub session_id: i64,
    pub expires_at_ms: i64,
}

/// Where a verifier learns keys and revocations: the user service over gRPC, or its own store.
pub trait KeySource: Send + Sync + 'static {
    fn signing_keys(&self) -> BoxFuture<'_, Result<Vec<PublicKey>, Error>>;
    /// Revocations recorded since `since_ms`, plus the issuer's clock to use as the next `since_ms`.
    fn revoked_since(&self, since_ms: i64) -> BoxFuture<'_, Result<(Vec<Revocation>, i64), Error>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token")]
    Malformed,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("invalid signature or claims")]
    Invalid,
    #[error("token expired")]
    Expired,
    #[error("session revoked")]
    Revoked,
}

impl From<VerifyError> for Error {
    fn from(e: VerifyError) -> Self {
        Error::unauthenticated(match e {
            VerifyError::Expired => "The access token expired",
            VerifyError::Revoked => "The access token was revoked",
            _ => "The access token is invalid",
        })
    }
}

/// Verifies access tokens against cached keys and revocations.
pub struct Verifier {
    issuer: String,
    audience: String,
    keys: RwLock<HashMap<String, DecodingKey>>,
    revoked: RwLock<HashMap<i64, i64>>,
    source: Arc<dyn KeySource>,
    last_key_fetch: Mutex<Option<Instant>>,
    key_refetch: tokio::sync::Mutex<()>,
    revoked_cursor: Mutex<i64>,
    /// Tokens whose signature and claims already checked out, by SHA-256 of the token, so a
    /// client's next request skips the EdDSA verification (~65 µs). Expiry and revocation are
    /// still checked on every hit.
    verified: RwLock<HashMap<[u8; 32], Claims>>,
}

/// At most this many verified tokens are remembered; past it the cache starts over.
const VERIFIED_CACHE_MAX: usize = 100_000;

/// Unknown `kid`s trigger at most one key refetch per this interval, so garbage tokens cannot
/// turn into a flood of calls to the issuer.
const MIN_REFETCH: Duration = Duration::from_secs(2);

impl Verifier {
    pub fn new(issuer: &str, audience: &str, source: Arc<dyn KeySource>) -> Arc<Self> {
        Arc::new(Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            keys: RwLock::new(HashMap::new()),
            revoked: RwLock::new(HashMap::new()),
            source,
            last_key_fetch: Mutex::new(None),
            key_refetch: tokio::sync::Mutex::new(()),
            revoked_cursor: Mutex::new(0),
            verified: RwLock::new(HashMap::new()),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn set_keys(&self, keys: &[PublicKey]) {
        let map = keys.iter().map(|k| (k.kid.clone(), DecodingKey::from_ed_der(&k.key))).collect();
        *self.keys.write() = map;
    }

    /// Verifies against what is cached, with no I/O. `UnknownKey` means: refetch keys and retry.
    pub fn verify_cached(&self, token: &str) -> Result<Claims, VerifyError> {
        let digest = token_digest(token);
        let hit = self.verified.read().get(&digest).cloned();
        let claims = match hit {
            Some(c) => {
                if c.exp + 5 < crate::time::now_ms() / 1000 {
                    return Err(VerifyError::Expired);
                }
                c
            }
            None => {
                let c = self.verify_signature(token)?;
                let mut cache = self.verified.write();
                if cache.len() >= VERIFIED_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(digest, c.clone());
                c
            }
        };
        let sid = claims.session_id().ok_or(VerifyError::Invalid)?;
        if self.revoked.read().contains_key(&sid) {
            return Err(VerifyError::Revoked);
        }
        Ok(claims)
    }

    /// The full check: header, EdDSA signature with the key named by `kid`, and claims.
    fn verify_signature(&self, token: &str) -> Result<Claims, VerifyError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(VerifyError::Invalid);
        }
        let kid = header.kid.ok_or(VerifyError::Invalid)?;
        let claims = {
            let keys = self.keys.read();
            let key = keys.get(&kid).ok_or(VerifyError::UnknownKey)?;
            let mut validation = Validation::new(Algorithm::EdDSA);
            validation.set_issuer(&[&self.issuer]);
            validation.set_audience(&[&self.audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "iat"]);
            validation.leeway = 5;
            jsonwebtoken::decode::<Claims>(token, key, &validation)
                .map_err(|e| match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => VerifyError::Expired,
                    _ => VerifyError::Invalid,
                })?
                .claims
        };
        Ok(claims)
    }

    /// Verifies, refetching keys once if the token names a `kid` not seen yet.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        match self.verify_cached(token) {
            Err(VerifyError::UnknownKey) => {
                self.refetch_keys_throttled().await;
                self.verify_cached(token)
            }
            other => other,
        }
    }

    async fn refetch_keys_throttled(&self) {
        let _single_flight = self.key_refetch.lock().await;
        let due = self.last_key_fetch.lock().is_none_or(|t| t.elapsed() >= MIN_REFETCH);
        if due && let Err(e) = self.refresh_keys().await {
            tracing::warn!(error = %e, "signing key refetch failed");
        }
    }

    pub async fn refresh_keys(&self) -> Result<(), Error> {
        *self.last_key_fetch.lock() = Some(Instant::now());
        let keys = self.source.signing_keys().await?;
        self.set_keys(&keys);
        Ok(())
    }

    /// Pulls revocations recorded since the last poll and forgets expired ones.
    pub async fn refresh_revocations(&self) -> Result<(), Error> {
        let since = *self.revoked_cursor.lock();
        // Overlap by a few seconds: the issuer's commit order and clock are not ours.
        let (list, now) = self.source.revoked_since(since.saturating_sub(5_000)).await?;
        let now_local = crate::time::now_ms();
        {
            let mut revoked = self.revoked.write();
            for r in list {
                revoked.insert(r.session_id, r.expires_at_ms);
            }
            revoked.retain(|_, exp| *exp + 60_000 > now_local);
        }
        *self.revoked_cursor.lock() = now;
        Ok(())
    }

    /// Marks a session revoked locally at once (the process that revoked it need not wait).
    pub fn note_revoked(&self, r: Revocation) {
        self.revoked.write().insert(r.session_id, r.expires_at_ms);
    }

    /// Loads keys and every live revocation; call before serving.
    pub async fn prime(&self) -> Result<(), Error> {
        self.refresh_keys().await?;
        self.refresh_revocations().await
    }

    /// Keeps keys and revocations fresh until shutdown: revocations every `every`, keys every 5 min.
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_keys = Instant::now();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Err(e) = this.refresh_revocations().await {
                    metrics::counter!("agora_token_revocation_poll_errors_total").increment(1);
                    tracing::warn!(error = %e, "revocation poll failed");
                }
                if last_keys.elapsed() > Duration::from_secs(300) {
                    last_keys = Instant::now();
                    if let Err(e) = this.refresh_keys().await {
                        tracing::warn!(error = %e, "signing key refresh failed");
                    }
                }
            }
        })
    }
}

fn token_digest(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Extracts the token from an `Authorization: Bearer …` value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_hierarchy() {
        let c = Claims {
            iss: "i".into(),
            aud: "a".into(),
            sub: Some("1".into()),
            exp: 0,
            iat: 0,
            jti: "j".into(),
            sid: "1".into(),
            cid: "c".into(),
            scope: "read write:accounts follow".into(),
            role: None,
        };
        assert!(c.allows("read:accounts"));
        assert!(c.allows("write:accounts"));
        assert!(!c.allows("write:statuses"));
        assert!(c.allows("write:follows"));
        assert!(!c.allows("push"));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn pem_keys_round_trip_with_stable_kids() {
        let (a, b) = (SigningKey::generate().unwrap(), SigningKey::generate().unwrap());
        let text = format!("# signs\n{}\n# still verifies\n{}", a.to_pem(), b.to_pem());
        let keys = SigningKey::from_pem(&text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].public, a.public);
        assert_eq!(keys[1].public, b.public);
        assert_eq!(keys[0].kid, SigningKey::from_pem(&a.to_pem()).unwrap()[0].kid, "the kid depends on the key alone");
        assert_ne!(keys[0].kid, keys[1].kid);
        assert!(SigningKey::from_pem("nothing here").is_err());
        let broken = a.to_pem().replace('A', "*");
        let e = SigningKey::from_pem(&broken).unwrap_err();
        assert!(!e.contains(&a.to_pem()[40..60]), "errors carry no key material");
    }
}

/// An Ed25519 signing key with its `kid`. Only the issuer holds these.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
    encoding: jsonwebtoken::EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key with a random `kid`.
    pub fn generate() -> Result<Self, Error> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(Error::internal)?;
        let kid = hex_kid();
        Self::from_pkcs8(&kid, doc.as_ref())
    }

    pub fn from_pkcs8(kid: &str, pkcs8: &[u8]) -> Result<Self, Error> {
        use aws_lc_rs::signature::KeyPair as _;
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(pkcs8)
            .or_else(|_| aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8))
            .map_err(Error::internal)?;
        Ok(Self {
            kid: kid.to_owned(),
            pkcs8: pkcs8.to_vec(),
            public: pair.public_key().as_ref().to_vec(),
            encoding: jsonwebtoken::EncodingKey::from_ed_der(pkcs8),
        })
    }

    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// Keys from PEM text: `PRIVATE KEY` blocks (PKCS#8 Ed25519, as `openssl genpkey -algorithm
    /// ed25519` or `agora generate-signing-key` write them), in order. Each key's `kid` is derived
    /// from its public key, so every replica reading the same file names its keys alike. The
    /// error never contains key material.
    pub fn from_pem(text: &str) -> Result<Vec<SigningKey>, String> {
        use base64::Engine as _;
        const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
        const END: &str = "-----END PRIVATE KEY-----";
        let mut keys = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find(BEGIN) {
            let after = &rest[start + BEGIN.len()..];
            let end = after.find(END).ok_or("a PRIVATE KEY block is not closed")?;
            let b64: String = after[..end].chars().filter(|c| !c.is_whitespace()).collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| format!("private key {} is not valid base64", keys.len() + 1))?;
            let provisional = SigningKey::from_pkcs8("", &der)
                .map_err(|_| format!("private key {} is not a PKCS#8 Ed25519 key", keys.len() + 1))?;
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &provisional.public);
            let kid: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
            keys.push(SigningKey { kid, ..provisional });
            rest = &after[end + END.len()..];
        }
        if keys.is_empty() {
            return Err("no -----BEGIN PRIVATE KEY----- block found".into());
        }
        Ok(keys)
    }

    /// This key as a PEM `PRIVATE KEY` block.
    pub fn to_pem(&self) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.pkcs8);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
        format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey { kid: self.kid.clone(), key: self.public.clone() }
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, Error> {
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(Error::internal)
    }
}

fn hex_kid() -> String {
    let bytes: [u8; 8] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fixed key set, for tests and for the issuer verifying its own tokens in-process.
pub struct StaticKeys {
    pub keys: RwLock<Vec<PublicKey>>,
    pub revoked: RwLock<Vec<Revocation>>,
}

impl StaticKeys {
    pub fn new(keys: Vec<PublicKey>) -> Arc<Self> {
        Arc::new(Self { keys: RwLock::new(keys), revoked: RwLock::new(Vec::new()) })
    }
}

impl KeySource for StaticKeys {
    fn signing_keys(&self) -> BoxFuture<'_, Result<Vec<PublicKey>, Error>> {
        let keys = self.keys.read().clone();
        Box::pin(async move { Ok(keys) })
    }

    fn revoked_since(&self, _since_ms: i64) -> BoxFuture<'_, Result<(Vec<Revocation>, i64), Error>> {
        let list = self.revoked.read().clone();
        Box::pin(async move { Ok((list, crate::time::now_ms())) })
    }
}
