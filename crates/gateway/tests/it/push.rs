//! Web Push end to end: a subscription made through `/api/v1/push/subscription` gets each new
//! notification it asks for as an encrypted push to its endpoint (a receiver on loopback here,
//! with private endpoints allowed), decrypted with the subscription's own keys — legacy aesgcm
//! with Mastodon's header layout, or aes128gcm for `standard` — carrying Mastodon's payload.
//! Alerts and policy choose what is pushed; a push service answering 410 ends the subscription;
//! a revoked session's subscription is gone; subscriptions are per session and private to it;
//! endpoints on private addresses and malformed keys are refused unless allowed.

use std::sync::Arc;
use std::time::Duration;

use agora_testkit::{Backend, Platform, PlatformBuilder};
use axum::body::Bytes;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::api::Api;

/// One request the receiver got.
#[derive(Debug)]
struct Pushed {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A push service on loopback: records every request; `/gone…` paths answer 410, the others 201.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Pushed>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let tx = Arc::new(tx);
    let app = axum::Router::new().fallback(move |uri: http::Uri, headers: HeaderMap, body: Bytes| {
        let tx = Arc::clone(&tx);
        async move {
            let path = uri.path().to_owned();
            let status = if path.starts_with("/gone") { StatusCode::GONE } else { StatusCode::CREATED };
            let _ = tx.send(Pushed { path, headers, body });
            status
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

async fn next_push(rx: &mut mpsc::UnboundedReceiver<Pushed>) -> Pushed {
    tokio::time::timeout(Duration::from_secs(15), rx.recv()).await.expect("a push within 15 s").unwrap()
}

/// A client's key pair and auth secret, as a browser makes them.
struct ClientKeys {
    components: ece::crypto::EcKeyComponents,
    auth: [u8; 16],
}

impl ClientKeys {
    fn new() -> Self {
        let (pair, auth) = ece::generate_keypair_and_auth_secret().unwrap();
        Self { components: pair.raw_components().unwrap(), auth }
    }

    /// Padded standard base64, as Mastodon.py sends them.
    fn p256dh(&self) -> String {
        STANDARD.encode(self.components.public_key())
    }

    fn auth(&self) -> String {
        STANDARD.encode(self.auth)
    }

    /// The push's payload as JSON, decrypted as its Content-Encoding says.
    fn open(&self, p: &Pushed) -> Value {
        let header = |name: &str| p.headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let plain = match header("content-encoding").as_str() {
            "aes128gcm" => ece::decrypt(&self.components, &self.auth, &p.body).unwrap(),
            "aesgcm" => {
                // Mastodon.py reads the salt to the end of Encryption and wants dh first in
                // Crypto-Key and p256ecdsa last.
                let encryption = header("encryption");
                let salt = encryption.strip_prefix("salt=").expect("Encryption: salt=…");
                assert!(!salt.contains(';'), "nothing after the salt: {encryption}");
                let crypto_key = header("crypto-key");
                let dh = crypto_key.strip_prefix("dh=").expect("dh= first").split(';').next().unwrap();
                assert!(crypto_key.rsplit(';').next().unwrap().trim().starts_with("p256ecdsa="), "{crypto_key}");
                let block = ece::legacy::AesGcmEncryptedBlock::new(
                    &URL_SAFE_NO_PAD.decode(dh).unwrap(),
                    &URL_SAFE_NO_PAD.decode(salt).unwrap(),
                    4096,
                    p.body.to_vec(),
                )
                .unwrap();
                ece::legacy::decrypt_aesgcm(&self.components, &self.auth, &block).unwrap()
            }
            other => panic!("unknown content encoding {other:?}"),
        };
        serde_json::from_slice(&plain).unwrap()
    }
}

async fn subscribe(
    api: &Api,
    token: &str,
    endpoint: &str,
    keys: &ClientKeys,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = vec![
        ("subscription[endpoint]".to_owned(), endpoint.to_owned()),
        ("subscription[keys][p256dh]".to_owned(), keys.p256dh()),
        ("subscription[keys][auth]".to_owned(), keys.auth()),
    ];
    form.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    api.http.post(format!("{}/api/v1/push/subscription", api.base)).bearer_auth(token).form(&form).send().await.unwrap()
}

async fn post_as(api: &Api, token: &str, text: &str) -> String {
    api.post(token, text).await
}

fn builder(allow_private: bool) -> PlatformBuilder {
    PlatformBuilder::new(Backend::Embedded)
        .setting("AGORA_GATEWAY_RATE_LIMIT_REGISTRATION", "off")
        .setting("AGORA_GATEWAY_RATE_LIMIT_IP", "off")
        .setting("AGORA_GATEWAY_RATE_LIMIT_ACCOUNT", "off")
        .setting("AGORA_PUSH_ALLOW_PRIVATE_ENDPOINTS", if allow_private { "true" } else { "false" })
}

async fn pushes_reach_subscribed_clients(p: Platform) {
    let api = Api::new(&p).await;
    let (url, mut pushes) = receiver().await;
    let (alice_name, alice, _) = api.user().await;
    let (bob_name, bob, _) = api.user().await;
    let (_, carol, _) = api.user().await;
    let alice_id = api.account_id(&alice).await;
    let keys = ClientKeys::new();

    let r = subscribe(
        &api,
        &alice,
        &format!("{url}/alice"),
        &keys,
        &[("data[alerts][mention]", "true"), ("data[alerts][follow]", "false"), ("policy", "all")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let sub: Value = r.json().await.unwrap();
    assert_eq!((sub["alerts"]["mention"].as_bool(), sub["alerts"]["follow"].as_bool()), (Some(true), Some(false)));
    assert_eq!((sub["policy"].as_str(), sub["standard"].as_bool()), (Some("all"), Some(false)));
    let server_key = sub["server_key"].as_str().unwrap().to_owned();
    assert_eq!(URL_SAFE_NO_PAD.decode(&server_key).unwrap().len(), 65, "an uncompressed P-256 point");
    let instance: Value =
        api.http.get(format!("{}/api/v2/instance", api.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(instance["configuration"]["vapid"]["public_key"].as_str(), Some(server_key.as_str()));
    let app: Value = api
        .http
        .get(format!("{}/api/v1/apps/verify_credentials", api.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(app["vapid_key"].as_str(), Some(server_key.as_str()));

    // Bob's follow is not among the alerts; his mention is, and is the first push.
    api.follow(&bob, &alice_id).await;
    let mention = post_as(&api, &bob, &format!("@{alice_name} are you <there> & awake?")).await;
    let push = next_push(&mut pushes).await;
    assert_eq!(push.path, "/alice");
    for (h, want) in [("ttl", "172800"), ("urgency", "normal"), ("content-encoding", "aesgcm")] {
        assert_eq!(push.headers.get(h).map(|v| v.to_str().unwrap()), Some(want), "{h}");
    }
    let vapid = push.headers.get("authorization").unwrap().to_str().unwrap();
    assert!(vapid.starts_with("vapid t=") && vapid.ends_with(&format!("k={server_key}")), "{vapid}");
    let crypto_key = push.headers.get("crypto-key").unwrap().to_str().unwrap();
    assert!(crypto_key.ends_with(&format!("p256ecdsa={server_key}")), "{crypto_key}");
    let payload = keys.open(&push);
    let listed: Vec<Value> = api
        .http
        .get(format!("{}/api/v1/notifications?types[]=mention", api.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(payload["notification_id"].as_str(), listed[0]["id"].as_str());
    assert_eq!(listed[0]["status"]["id"].as_str(), Some(mention.as_str()));
    assert_eq!(payload["notification_type"], "mention");
    assert_eq!(payload["access_token"].as_str(), Some(alice.as_str()));
    assert_eq!(payload["title"].as_str(), Some(format!("{bob_name} mentioned you").as_str()));
    assert!(payload["body"].as_str().unwrap().contains("are you <there> & awake?"), "{payload}");
    assert!(payload["icon"].as_str().unwrap().starts_with("http"), "{payload}");

    // Follows on, but only from accounts Alice follows: Carol's follow is not pushed, and once
    // Alice follows Bob, his mention is.
    let r = api
        .http
        .put(format!("{}/api/v1/push/subscription", api.base))
        .bearer_auth(&alice)
        .form(&[("data[alerts][follow]", "true"), ("data[alerts][mention]", "true"), ("data[policy]", "followed")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let updated: Value = r.json().await.unwrap();
    assert_eq!((updated["policy"].as_str(), updated["alerts"]["follow"].as_bool()), (Some("followed"), Some(true)));
    api.follow(&carol, &alice_id).await;
    api.follow(&alice, &api.account_id(&bob).await).await;
    post_as(&api, &bob, &format!("@{alice_name} now you follow me")).await;
    let push = next_push(&mut pushes).await;
    let payload = keys.open(&push);
    assert_eq!(payload["notification_type"], "mention", "not Carol's follow: {payload}");
    assert!(payload["body"].as_str().unwrap().contains("now you follow me"));

    // A second session of Alice's, subscribed with the standard encoding: each session has
    // its own subscription, and both hear the next mention.
    let second = api
        .sign_in(&alice_name, "long enough password", "read write follow push")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let standard_keys = ClientKeys::new();
    let r = subscribe(
        &api,
        &second,
        &format!("{url}/alice-standard"),
        &standard_keys,
        &[("subscription[standard]", "true"), ("data[alerts][mention]", "true")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    post_as(&api, &bob, &format!("@{alice_name} both of you")).await;
    let (one, two) = (next_push(&mut pushes).await, next_push(&mut pushes).await);
    let (legacy, standard) = if one.path == "/alice" { (one, two) } else { (two, one) };
    assert_eq!(standard.path, "/alice-standard");
    assert_eq!(standard.headers.get("content-encoding").unwrap(), "aes128gcm");
    assert!(standard.headers.get("encryption").is_none() && standard.headers.get("crypto-key").is_none());
    assert_eq!(standard_keys.open(&standard)["access_token"].as_str(), Some(second.as_str()));
    assert_eq!(keys.open(&legacy)["access_token"].as_str(), Some(alice.as_str()));

    // Revoking the second session ends its subscription: the next mention reaches only the first.
    assert_eq!(api.revoke(&second).await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await; // the revocation reaches the verifiers
    post_as(&api, &bob, &format!("@{alice_name} only the first")).await;
    let push = next_push(&mut pushes).await;
    assert_eq!(push.path, "/alice");
    assert!(keys.open(&push)["body"].as_str().unwrap().contains("only the first"));

    // A push service answering 410 ends Bob's subscription.
    let bob_keys = ClientKeys::new();
    let r = subscribe(&api, &bob, &format!("{url}/gone-bob"), &bob_keys, &[("data[alerts][mention]", "true")]).await;
    assert_eq!(r.status(), StatusCode::OK);
    post_as(&api, &alice, &format!("@{bob_name} hello")).await;
    assert_eq!(next_push(&mut pushes).await.path, "/gone-bob");
    let mut gone = false;
    for _ in 0..50 {
        let r = api.http.get(format!("{}/api/v1/push/subscription", api.base)).bearer_auth(&bob).send().await.unwrap();
        if r.status() == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "a 410 deletes the subscription");

    // The subscription is the session's: another account sees none, delete answers {}.
    let r = api.http.get(format!("{}/api/v1/push/subscription", api.base)).bearer_auth(&carol).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = api.http.delete(format!("{}/api/v1/push/subscription", api.base)).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), serde_json::json!({}));
    let r = api.http.get(format!("{}/api/v1/push/subscription", api.base)).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_reach_subscribed_clients_embedded() {
    pushes_reach_subscribed_clients(builder(true).start().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_are_refused() {
    let p = builder(false).start().await.unwrap();
    let api = Api::new(&p).await;
    let (name, alice, _) = api.user().await;
    let keys = ClientKeys::new();
    for endpoint in
        ["http://push.example.com/x", "https://127.0.0.1/x", "https://10.0.0.1/x", "https://[::1]/x", "nope"]
    {
        let r = subscribe(&api, &alice, endpoint, &keys, &[]).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{endpoint}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("endpoint"), "{body}");
    }
    let bad_keys = [("subscription[keys][p256dh]", "AAAA"), ("subscription[keys][auth]", "@@@")];
    for (k, v) in bad_keys {
        let mut form = vec![
            ("subscription[endpoint]", "https://1.1.1.1/push"),
            ("subscription[keys][p256dh]", &keys.p256dh()),
            ("subscription[keys][auth]", &keys.auth()),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect::<Vec<_>>();
        form.retain(|(a, _)| a != k);
        form.push((k.to_owned(), v.to_owned()));
        let r = api
            .http
            .post(format!("{}/api/v1/push/subscription", api.base))
            .bearer_auth(&alice)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{k}={v}");
    }
    let r = subscribe(&api, &alice, "https://1.1.1.1/push", &keys, &[("policy", "friends")]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "an unknown policy");
    let r = api.http.post(format!("{}/api/v1/push/subscription", api.base)).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "nothing sent");
    // A token without the push scope, and no token.
    let read_only = api
        .sign_in(&name, "long enough password", "read")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = subscribe(&api, &read_only, "https://1.1.1.1/push", &keys, &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = api.http.get(format!("{}/api/v1/push/subscription", api.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A public endpoint is accepted (nothing is sent until a notification).
    let r = subscribe(&api, &alice, "https://1.1.1.1/push", &keys, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
}
