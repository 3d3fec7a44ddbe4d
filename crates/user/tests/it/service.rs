//! The user service's rules end to end through its domain API, on the embedded store.

use agora_kit::ErrorKind;
use agora_testkit::PlatformBuilder;
use agora_user::Accounts;

async fn client(a: &Accounts) -> (String, String) {
    let (app, secret) = a
        .create_application(
            "Test app",
            "",
            &["urn:ietf:wg:oauth:2.0:oob".into(), "https://app.example/cb".into()],
            &["read write follow push".into()],
        )
        .await
        .unwrap();
    (app.client_id, secret)
}

fn uniq(p: &str) -> String {
    format!("{p}{:06x}", rand::random::<u32>() & 0xff_ffff)
}

async fn registered(a: &Accounts, cid: &str, secret: &str) -> (String, String, String) {
    let app_token = a.client_grant(cid, secret, &["read write".into()]).await.unwrap().access_token;
    let name = uniq("user");
    let (t, _) = a
        .register(Some(&app_token), &name, &format!("{name}@example.com"), "correct horse battery", true, &[])
        .await
        .unwrap();
    (name, t.access_token, t.refresh_token.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_a_spent_refresh_token_revokes_the_session() {
    let p = PlatformBuilder::embedded().without_gateway().start().await.unwrap();
    let a = &p.accounts;
    let (cid, secret) = client(a).await;
    let (_, access, refresh) = registered(a, &cid, &secret).await;
    let rotated = a.refresh(&cid, &secret, &refresh).await.unwrap();
    assert_ne!(rotated.refresh_token.as_deref(), Some(refresh.as_str()));
    assert!(a.verifier.verify(&rotated.access_token).await.is_ok());
    let reuse = a.refresh(&cid, &secret, &refresh).await.unwrap_err();
    assert_eq!(reuse.code.as_deref(), Some("invalid_grant"));
    for token in [&access, &rotated.access_token] {
        assert!(a.verifier.verify(token).await.is_err(), "every token of the session is dead");
    }
    assert!(a.refresh(&cid, &secret, rotated.refresh_token.as_deref().unwrap()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_signs_out_every_other_session() {
    let p = PlatformBuilder::embedded().without_gateway().start().await.unwrap();
    let a = &p.accounts;
    let (cid, secret) = client(a).await;
    let (name, first, _) = registered(a, &cid, &secret).await;
    let second = a.password_grant(&cid, &secret, &name, "correct horse battery", &["read".into()], "").await.unwrap();
    let n = a.change_password(Some(&first), "correct horse battery", "a much better one").await.unwrap();
    assert_eq!(n, 1);
    assert!(a.verifier.verify(&first).await.is_ok(), "the session that changed the password stays");
    assert!(a.verifier.verify(&second.access_token).await.is_err());
    assert!(a.password_grant(&cid, &secret, &name, "correct horse battery", &[], "").await.is_err());
    assert!(a.password_grant(&cid, &secret, &name, "a much better one", &[], "").await.is_ok());
    let wrong = a.change_password(Some(&first), "not it", "another password").await.unwrap_err();
    assert_eq!(wrong.field.as_deref(), Some("current_password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registrations_are_refused_and_write_nothing() {
    let p = PlatformBuilder::embedded().without_gateway().start().await.unwrap();
    let a = &p.accounts;
    let (cid, secret) = client(a).await;
    let app = a.client_grant(&cid, &secret, &["write".into()]).await.unwrap().access_token;
    let backlog = a.store.outbox().backlog().await.unwrap();
    let cases: &[(&str, &str, &str, bool, &str)] = &[
        ("bad name!", "x@example.com", "long enough pw", true, "username"),
        ("al\u{202e}ice", "x@example.com", "long enough pw", true, "username"),
        ("аlice", "x@example.com", "long enough pw", true, "username"), // Cyrillic a
        ("nul\0l", "x@example.com", "long enough pw", true, "username"),
        ("robert'); DROP TABLE accounts;--", "x@example.com", "long enough pw", true, "username"),
        ("okname", "not-an-email", "long enough pw", true, "email"),
        ("okname", "x@example.com", "short", true, "password"),
        ("okname", "x@example.com", "long enough pw", false, "agreement"),
    ];
    for (u, e, pw, agree, field) in cases {
        let err = a.register(Some(&app), u, e, pw, *agree, &[]).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{u:?}");
        assert_eq!(err.field.as_deref(), Some(*field), "{u:?}");
    }
    assert_eq!(a.store.outbox().backlog().await.unwrap(), backlog, "refused registrations leave no event");
    assert!(a.register(None, "okname", "x@example.com", "long enough pw", true, &[]).await.is_err());
    // A user token cannot register accounts; only application tokens can.
    let (_, user_token, _) = registered(a, &cid, &secret).await;
    let _ = user_token;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_with_pkce() {
    let p = PlatformBuilder::embedded().without_gateway().start().await.unwrap();
    let a = &p.accounts;
    let (cid, secret) = client(a).await;
    let (name, _, _) = registered(a, &cid, &secret).await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let unregistered = a
        .create_authorization_code(
            &cid,
            "https://evil.example/cb",
            &[],
            &name,
            "correct horse battery",
            challenge,
            "S256",
            "",
        )
        .await
        .unwrap_err();
    assert_eq!(unregistered.field.as_deref(), Some("redirect_uri"));
    let code = a
        .create_authorization_code(
            &cid,
            "https://app.example/cb",
            &["read".into()],
            &name,
            "correct horse battery",
            challenge,
            "S256",
            "",
        )
        .await
        .unwrap();
    assert!(a.exchange_code(&cid, &secret, &code, "https://app.example/cb", "wrong-verifier").await.is_err());
    // A failed exchange spends the code: it cannot be retried.
    assert!(a.exchange_code(&cid, &secret, &code, "https://app.example/cb", verifier).await.is_err());
    let code = a
        .create_authorization_code(
            &cid,
            "https://app.example/cb",
            &["read".into()],
            &name,
            "correct horse battery",
            challenge,
            "S256",
            "",
        )
        .await
        .unwrap();
    let t = a.exchange_code(&cid, &secret, &code, "https://app.example/cb", verifier).await.unwrap();
    let claims = a.verifier.verify(&t.access_token).await.unwrap();
    assert_eq!(claims.scope, "read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_client_secret_and_unknown_users_are_refused_alike() {
    let p = PlatformBuilder::embedded().without_gateway().start().await.unwrap();
    let a = &p.accounts;
    let (cid, secret) = client(a).await;
    let (name, _, _) = registered(a, &cid, &secret).await;
    let e = a.password_grant(&cid, "wrong", &name, "correct horse battery", &[], "").await.unwrap_err();
    assert_eq!(e.code.as_deref(), Some("invalid_client"));
    let unknown = a.password_grant(&cid, &secret, "nobody", "whatever pw", &[], "").await.unwrap_err();
    let wrong_pw = a.password_grant(&cid, &secret, &name, "whatever pw", &[], "").await.unwrap_err();
    assert_eq!(unknown, wrong_pw, "no hint whether the account exists");
    let e =
        a.password_grant(&cid, &secret, &name, "correct horse battery", &["admin:write".into()], "").await.unwrap_err();
    assert_eq!(e.code.as_deref(), Some("invalid_scope"));
}
