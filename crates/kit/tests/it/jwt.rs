use std::sync::Arc;

use agora_kit::jwt::{Claims, PublicKey, Revocation, SigningKey, StaticKeys, Verifier, VerifyError};
use base64::Engine as _;

const ISS: &str = "https://social.example";
const AUD: &str = "agora";

fn claims(exp_in: i64) -> Claims {
    let now = agora_kit::time::now_ms() / 1000;
    Claims {
        iss: ISS.into(),
        aud: AUD.into(),
        sub: Some("42".into()),
        exp: now + exp_in,
        iat: now,
        jti: "1".into(),
        sid: "7".into(),
        cid: "client".into(),
        scope: "read write".into(),
        role: Some("user".into()),
    }
}

async fn setup() -> (SigningKey, Arc<StaticKeys>, Arc<Verifier>) {
    let key = SigningKey::generate().unwrap();
    let source = StaticKeys::new(vec![key.public_key()]);
    let verifier = Verifier::new(ISS, AUD, source.clone());
    verifier.prime().await.unwrap();
    (key, source, verifier)
}

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn a_valid_token_verifies() {
    let (key, _, v) = setup().await;
    let token = key.sign(&claims(60)).unwrap();
    let c = v.verify(&token).await.unwrap();
    assert_eq!(c.account_id(), Some(42));
    assert!(c.allows("read:accounts"));
}

#[tokio::test]
async fn expired_tampered_and_foreign_tokens_are_refused() {
    let (key, _, v) = setup().await;
    assert_eq!(v.verify(&key.sign(&claims(-120)).unwrap()).await, Err(VerifyError::Expired));

    let token = key.sign(&claims(60)).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut evil = claims(60);
    evil.sub = Some("1".into());
    let tampered = format!("{}.{}.{}", parts[0], b64(&serde_json::to_value(&evil).unwrap()), parts[2]);
    assert_eq!(v.verify(&tampered).await, Err(VerifyError::Invalid));

    let mut other_aud = claims(60);
    other_aud.aud = "another-service".into();
    assert_eq!(v.verify(&key.sign(&other_aud).unwrap()).await, Err(VerifyError::Invalid));

    let mut other_iss = claims(60);
    other_iss.iss = "https://evil.example".into();
    assert_eq!(v.verify(&key.sign(&other_iss).unwrap()).await, Err(VerifyError::Invalid));

    assert!(v.verify("not-a-token").await.is_err());
}

#[tokio::test]
async fn alg_none_and_hmac_confusion_are_refused() {
    let (key, _, v) = setup().await;
    let payload = b64(&serde_json::to_value(claims(60)).unwrap());
    let none = format!("{}.{}.", b64(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": key.kid})), payload);
    assert!(v.verify(&none).await.is_err());

    // HS256 "signed" with the public key as the secret: the classic algorithm-confusion attack.
    let header = jsonwebtoken::Header {
        kid: Some(key.kid.clone()),
        ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
    };
    let forged =
        jsonwebtoken::encode(&header, &claims(60), &jsonwebtoken::EncodingKey::from_secret(&key.public_key().key))
            .unwrap();
    assert_eq!(v.verify(&forged).await, Err(VerifyError::Invalid));
}

#[tokio::test]
async fn unknown_kid_is_refused_until_the_issuer_publishes_it() {
    let (_, source, v) = setup().await;
    let rotated = SigningKey::generate().unwrap();
    let token = rotated.sign(&claims(60)).unwrap();
    assert_eq!(v.verify(&token).await, Err(VerifyError::UnknownKey));
    // The issuer rotates: the new key is published and the verifier follows without a restart.
    source.keys.write().push(rotated.public_key());
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await; // past the refetch throttle
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn revoked_sessions_stop_verifying_after_a_poll() {
    let (key, source, v) = setup().await;
    let token = key.sign(&claims(60)).unwrap();
    assert!(v.verify(&token).await.is_ok());
    source.revoked.write().push(Revocation { session_id: 7, expires_at_ms: agora_kit::time::now_ms() + 60_000 });
    v.refresh_revocations().await.unwrap();
    assert_eq!(v.verify(&token).await, Err(VerifyError::Revoked));
    // Another session of the same account is unaffected.
    let mut other = claims(60);
    other.sid = "8".into();
    assert!(v.verify(&key.sign(&other).unwrap()).await.is_ok());
}

#[tokio::test]
async fn public_keys_render_as_jwk() {
    let key = SigningKey::generate().unwrap();
    let jwk = key.public_key().to_jwk();
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["kid"], key.kid.as_str());
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    assert_eq!(PublicKey { kid: key.kid.clone(), key: x }, key.public_key());
}
