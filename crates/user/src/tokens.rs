//! Secrets the user service hands out: access tokens (JWTs signed with the newest key), opaque
//! refresh tokens, client ids/secrets and authorization codes. Opaque secrets are stored only
//! as SHA-256 hashes; they are 256-bit random, so a fast hash is enough.

use std::sync::Arc;

use agora_kit::Error;
use agora_kit::jwt::{Claims, KeySource, PublicKey, Revocation, SigningKey};
use base64::Engine as _;
use futures::future::BoxFuture;
use parking_lot::RwLock;
use sha2::{Digest, Sha256};

use crate::store::{StoredKey, UserStore};

pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two hashes without an early exit.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// PKCE S256: base64url(sha256(verifier)) == challenge.
pub fn pkce_matches(challenge: &str, verifier: &str) -> bool {
    let digest = Sha256::digest(verifier.as_bytes());
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    same_hash(&computed, challenge)
}

/// The signing keys, the one that signs last. Loaded from the store (a first start generates
/// one there), or given from outside the database (a mounted Secret): then the first external
/// key signs, and the other external keys and every key in the store only verify, so tokens
/// issued before the switch stay valid until they expire.
pub struct Keyring {
    keys: RwLock<Vec<SigningKey>>,
}

impl Keyring {
    pub async fn load(store: &dyn UserStore, external: Option<&[SigningKey]>) -> Result<Arc<Self>, Error> {
        let mut stored = store.signing_keys().await?;
        if let Some(external) = external.filter(|k| !k.is_empty()) {
            let mut keys =
                stored.iter().map(|k| SigningKey::from_pkcs8(&k.kid, &k.pkcs8)).collect::<Result<Vec<_>, _>>()?;
            keys.retain(|k| !external.iter().any(|e| e.kid == k.kid));
            keys.extend(external.iter().rev().cloned());
            return Ok(Arc::new(Self { keys: RwLock::new(keys) }));
        }
        if stored.is_empty() {
            let key = SigningKey::generate()?;
            store
                .add_signing_key(&StoredKey {
                    kid: key.kid.clone(),
                    pkcs8: key.pkcs8().to_vec(),
                    created_at_ms: agora_kit::time::now_ms(),
                })
                .await?;
            // Another replica may have raced us: whatever the store holds now is the truth.
            stored = store.signing_keys().await?;
        }
        let keys = stored.iter().map(|k| SigningKey::from_pkcs8(&k.kid, &k.pkcs8)).collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self { keys: RwLock::new(keys) }))
    }

    /// Adds a new key and signs with it from now on; older keys still verify.
    pub async fn rotate(&self, store: &dyn UserStore) -> Result<String, Error> {
        let key = SigningKey::generate()?;
        store
            .add_signing_key(&StoredKey {
                kid: key.kid.clone(),
                pkcs8: key.pkcs8().to_vec(),
                created_at_ms: agora_kit::time::now_ms(),
            })
            .await?;
        let kid = key.kid.clone();
        self.keys.write().push(key);
        Ok(kid)
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, Error> {
        let keys = self.keys.read();
        let key = keys.last().ok_or_else(|| Error::internal("no signing key loaded"))?;
        key.sign(claims)
    }

    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys.read().iter().map(SigningKey::public_key).collect()
    }
}

/// Lets the user service verify its own tokens from its own store (no network hop).
pub struct StoreKeys {
    pub store: Arc<dyn UserStore>,
    pub keyring: Arc<Keyring>,
}

impl KeySource for StoreKeys {
    fn signing_keys(&self) -> BoxFuture<'_, Result<Vec<PublicKey>, Error>> {
        Box::pin(async move {
            // Pick up keys another replica added.
            let stored = self.store.signing_keys().await?;
            let mut keys = self.keyring.public_keys();
            for k in stored {
                if !keys.iter().any(|p| p.kid == k.kid) {
                    keys.push(SigningKey::from_pkcs8(&k.kid, &k.pkcs8)?.public_key());
                }
            }
            Ok(keys)
        })
    }

    fn revoked_since(&self, since_ms: i64) -> BoxFuture<'_, Result<(Vec<Revocation>, i64), Error>> {
        Box::pin(async move {
            let now = agora_kit::time::now_ms();
            let sessions = self.store.revoked_since(since_ms, now).await?;
            Ok((
                sessions.iter().map(|s| Revocation { session_id: s.id, expires_at_ms: s.expires_at_ms }).collect(),
                now,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hash_and_compare() {
        let s = random_secret();
        assert_eq!(s.len(), 43);
        assert!(same_hash(&hash_secret(&s), &hash_secret(&s)));
        assert!(!same_hash(&hash_secret(&s), &hash_secret("other")));
    }

    #[test]
    fn pkce_s256() {
        // RFC 7636 appendix B.
        assert!(pkce_matches(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        ));
        assert!(!pkce_matches("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "wrong"));
    }
}
