//! Tokens at the edge: what gets a 401, scope enforcement, and revocation reaching every
//! gateway instance within seconds.

use std::time::{Duration, Instant};

use agora_kit::jwt::{Claims, SigningKey};
use agora_testkit::PlatformBuilder;
use reqwest::StatusCode;

use crate::api::Api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_401() {
    let p = PlatformBuilder::embedded().setting("AGORA_GATEWAY_RATE_LIMIT_REGISTRATION", "off").start().await.unwrap();
    let api = Api::new(&p).await;
    let (_, token, _) = api.user().await;
    let claims = p.accounts.verifier.verify(&token).await.unwrap();

    let stranger = SigningKey::generate().unwrap();
    let now = agora_kit::time::now_ms() / 1000;
    let forged = |f: &dyn Fn(&mut Claims)| {
        let mut c = claims.clone();
        f(&mut c);
        c
    };
    let expired = p.accounts.keyring.sign(&forged(&|c| c.exp = now - 600)).unwrap();
    let other_audience = p.accounts.keyring.sign(&forged(&|c| c.aud = "somewhere-else".into())).unwrap();
    let unknown_kid = stranger.sign(&claims).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!("{}.{}x.{}", parts[0], parts[1], parts[2]);
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
    for (what, t) in [
        ("expired", expired.as_str()),
        ("other audience", other_audience.as_str()),
        ("unknown kid", unknown_kid.as_str()),
        ("tampered", tampered.as_str()),
        ("alg none", alg_none.as_str()),
        ("garbage", "abc"),
    ] {
        let r = api.me(t).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error"].is_string());
    }
    let r = api.http.get(format!("{}/api/v1/accounts/verify_credentials", api.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.me(&token).await.status(), StatusCode::OK);

    // A token without the needed scope is refused with 403.
    let read_only = p.accounts.keyring.sign(&forged(&|c| c.scope = "write:statuses".into())).unwrap();
    assert_eq!(api.me(&read_only).await.status(), StatusCode::FORBIDDEN);
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_stops_working_on_every_gateway_within_seconds() {
    let p = PlatformBuilder::embedded().setting("AGORA_GATEWAY_RATE_LIMIT_REGISTRATION", "off").start().await.unwrap();
    let api = Api::new(&p).await;
    let (_, token, _) = api.user().await;

    // A second gateway instance in front of the same user service.
    let env = agora_kit::config::MapEnv::new()
        .with("AGORA_GATEWAY_USER_URL", p.user_url.clone())
        .with("AGORA_PUBLIC_URL", p.public_url.clone());
    let config = agora_gateway::Config::from_env(&env).unwrap();
    let second = agora_gateway::Gateway::build(config, p.shutdown.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(second.serve(listener, p.shutdown.clone()));
    let me_on = |base: String, t: String| {
        let http = api.http.clone();
        async move {
            http.get(format!("{base}/api/v1/accounts/verify_credentials")).bearer_auth(t).send().await.unwrap().status()
        }
    };
    assert_eq!(me_on(second_url.clone(), token.clone()).await, StatusCode::OK);

    let r = api.revoke(&token).await;
    assert_eq!(r.status(), StatusCode::OK);
    let started = Instant::now();
    loop {
        let a = me_on(api.base.clone(), token.clone()).await;
        let b = me_on(second_url.clone(), token.clone()).await;
        if a == StatusCode::UNAUTHORIZED && b == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still accepted after 5 s: {a} {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_follow_signing_key_rotation() {
    let p = PlatformBuilder::embedded().setting("AGORA_GATEWAY_RATE_LIMIT_REGISTRATION", "off").start().await.unwrap();
    let api = Api::new(&p).await;
    let (_, old_token, _) = api.user().await;
    let kid = p.accounts.keyring.rotate(p.accounts.store.as_ref()).await.unwrap();
    let (_, new_token, _) = api.user().await;
    let header = jsonwebtoken::decode_header(&new_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(kid.as_str()), "new tokens are signed with the new key");
    // The gateway has never seen this kid; it fetches the key set (at most every 2 s).
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(api.me(&new_token).await.status(), StatusCode::OK);
    assert_eq!(api.me(&old_token).await.status(), StatusCode::OK, "older keys keep verifying");
    p.stop().await.unwrap();
}

/// Keys can live outside the database (a mounted Secret): the first key signs, tokens signed
/// before the switch by the store's key keep working, and nothing is written to the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_from_a_secret_take_over_from_the_store() {
    let dir = agora_testkit::tempdir().unwrap();
    let start = |pem: Option<String>| {
        let mut b = PlatformBuilder::embedded()
            .data_dir(&dir.0)
            .public_url("https://agora.test")
            .setting("AGORA_GATEWAY_RATE_LIMIT_REGISTRATION", "off");
        if let Some(pem) = pem {
            b = b.setting("AGORA_USER_SIGNING_KEY", &pem);
        }
        b.start()
    };
    let p = start(None).await.unwrap();
    let api = Api::new(&p).await;
    let (_, old_token, _) = api.user().await;
    let stored_kid = jsonwebtoken::decode_header(&old_token).unwrap().kid.unwrap();
    p.stop().await.unwrap();

    let (signer, retired) = (SigningKey::generate().unwrap(), SigningKey::generate().unwrap());
    let pem = format!("{}{}", signer.to_pem(), retired.to_pem());
    let kids: Vec<String> = SigningKey::from_pem(&pem).unwrap().into_iter().map(|k| k.kid).collect();
    let p = start(Some(pem)).await.unwrap();
    let api = Api::new(&p).await;
    let (_, new_token, _) = api.user().await;
    let kid = jsonwebtoken::decode_header(&new_token).unwrap().kid.unwrap();
    assert_eq!(kid, kids[0], "the first key of the secret signs");
    assert_ne!(kid, stored_kid);
    assert_eq!(api.me(&new_token).await.status(), StatusCode::OK);
    let old = api.me(&old_token).await;
    assert_eq!(old.status(), StatusCode::OK, "tokens from the stored key still verify: {}", old.text().await.unwrap());
    let stored = p.accounts.store.signing_keys().await.unwrap();
    assert_eq!(stored.len(), 1, "no key is written to the store when keys come from outside it");
    p.stop().await.unwrap();
}
