//! The user-store conformance suite. Every case runs on SQLite and on PostgreSQL
//! (`AGORA_TEST_POSTGRES_URL`); a new backend adds one line to `backends!`.

use std::sync::Arc;

use agora_events::Envelope;
use agora_user::domain::{Application, Field, ProfilePatch, Session};
use agora_user::store::{self, AuthCode, NewAccount, NewSession, Rotation, StoreError, StoredKey, UserStore};

fn ev(id: i64, kind: &str) -> Envelope {
    Envelope { id, r#type: kind.into(), aggregate_id: id.to_string(), occurred_at_ms: 1, ..Default::default() }
}

fn session_event(s: &Session) -> Envelope {
    ev(s.id + 1_000_000, "user.session_revoked")
}

static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);

fn id() -> i64 {
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + (rand::random::<u32>() as i64) * 1000
}

fn account(name: &str) -> NewAccount {
    NewAccount {
        id: id(),
        username: name.into(),
        email: format!("{name}@example.com"),
        password_hash: "$argon2id$fake".into(),
        created_at_ms: agora_kit::time::now_ms(),
    }
}

fn session(account_id: Option<i64>, refresh: Option<&str>) -> NewSession {
    let now = agora_kit::time::now_ms();
    NewSession {
        id: id(),
        account_id,
        client_id: "client".into(),
        scopes: vec!["read".into(), "write".into()],
        created_at_ms: now,
        expires_at_ms: now + 60_000,
        refresh_hash: refresh.map(str::to_owned),
        refresh_expires_at_ms: now + 120_000,
    }
}

fn uniq(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}

async fn accounts_are_unique_case_insensitively(s: Arc<dyn UserStore>) {
    let name = uniq("Alice");
    let a = account(&name);
    let created = s.create_account(&a, &session(Some(a.id), None), &ev(a.id, "user.created")).await.unwrap();
    assert_eq!(created.username, name);
    let mut dup = account(&name.to_lowercase());
    dup.email = format!("other-{}", dup.email);
    let err = s.create_account(&dup, &session(Some(dup.id), None), &ev(dup.id, "user.created")).await.unwrap_err();
    assert!(matches!(err, StoreError::Taken("username")), "{err:?}");
    let mut dup_mail = account(&uniq("bob"));
    dup_mail.email = a.email.to_uppercase();
    let err = s
        .create_account(&dup_mail, &session(Some(dup_mail.id), None), &ev(dup_mail.id, "user.created"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Taken("email")), "{err:?}");
    // Nothing of the refused registrations was written: no account, no session.
    assert!(s.account(dup.id).await.unwrap().is_none());
    assert!(s.account(dup_mail.id).await.unwrap().is_none());
    assert_eq!(s.account_by_username(&name.to_uppercase()).await.unwrap().unwrap().id, a.id);
}

async fn creating_an_account_writes_its_event(s: Arc<dyn UserStore>) {
    let before = s.outbox().backlog().await.unwrap();
    let a = account(&uniq("carol"));
    s.create_account(&a, &session(Some(a.id), None), &ev(a.id, "user.created")).await.unwrap();
    let pending = s.outbox().pending(10_000).await.unwrap();
    assert!(pending.iter().any(|p| p.envelope.id == a.id && p.topic == "agora.user.v1"));
    assert_eq!(s.outbox().backlog().await.unwrap(), before + 1);
    s.outbox().remove(&[a.id]).await.unwrap();
    assert_eq!(s.outbox().backlog().await.unwrap(), before);
}

async fn credentials_by_username_or_email(s: Arc<dyn UserStore>) {
    let a = account(&uniq("dave"));
    s.create_account(&a, &session(Some(a.id), None), &ev(a.id, "user.created")).await.unwrap();
    let (by_name, hash) = s.credentials(&a.username.to_uppercase()).await.unwrap().unwrap();
    assert_eq!(by_name.id, a.id);
    assert_eq!(hash, a.password_hash);
    assert_eq!(s.credentials(&a.email.to_uppercase()).await.unwrap().unwrap().0.id, a.id);
    assert!(s.credentials("nobody-here").await.unwrap().is_none());
    assert!(s.credentials("' OR 1=1 --").await.unwrap().is_none());
}

async fn batch_reads_keep_request_order(s: Arc<dyn UserStore>) {
    let mut ids = Vec::new();
    for _ in 0..3 {
        let a = account(&uniq("erin"));
        s.create_account(&a, &session(Some(a.id), None), &ev(a.id, "user.created")).await.unwrap();
        ids.push(a.id);
    }
    let wanted = vec![ids[2], 999, ids[0], ids[1]];
    let got: Vec<i64> = s.accounts(&wanted).await.unwrap().iter().map(|a| a.id).collect();
    assert_eq!(got, vec![ids[2], ids[0], ids[1]]);
    assert!(s.accounts(&[]).await.unwrap().is_empty());
}

async fn profile_updates_apply_and_announce(s: Arc<dyn UserStore>) {
    let a = account(&uniq("frank"));
    s.create_account(&a, &session(Some(a.id), None), &ev(a.id, "user.created")).await.unwrap();
    let patch = ProfilePatch {
        display_name: Some("Frank ✨".into()),
        note: Some("hello\nworld".into()),
        locked: Some(true),
        fields: Some(vec![Field { name: "site".into(), value: "https://frank.example".into() }]),
        ..Default::default()
    };
    let event_id = id();
    let updated = s.update_profile(a.id, &patch, &|_| ev(event_id, "user.updated")).await.unwrap();
    assert_eq!(updated.display_name, "Frank ✨");
    assert!(updated.locked);
    assert_eq!(updated.fields.len(), 1);
    // A partial patch leaves the rest alone.
    let again = s
        .update_profile(a.id, &ProfilePatch { note: Some("bye".into()), ..Default::default() }, &|_| {
            ev(id(), "user.updated")
        })
        .await
        .unwrap();
    assert_eq!(again.display_name, "Frank ✨");
    assert_eq!(again.note, "bye");
    assert!(s.outbox().pending(10_000).await.unwrap().iter().any(|p| p.envelope.id == event_id));
    let missing = s.update_profile(-5, &patch, &|_| ev(id(), "user.updated")).await.unwrap_err();
    assert!(matches!(missing, StoreError::NotFound));
}

async fn refresh_rotation_and_reuse(s: Arc<dyn UserStore>) {
    let a = account(&uniq("gina"));
    let first = uniq("refresh-hash-");
    let sess = session(Some(a.id), Some(&first));
    s.create_account(&a, &sess, &ev(a.id, "user.created")).await.unwrap();
    let now = agora_kit::time::now_ms();
    let second = uniq("refresh-hash-");
    match s.rotate_refresh(&first, &second, now, now + 500_000, &session_event).await.unwrap() {
        Rotation::Rotated(session) => {
            assert_eq!(session.id, sess.id);
            assert!(session.expires_at_ms >= now + 500_000);
        }
        other => panic!("expected rotation, got {other:?}"),
    }
    // Presenting the spent token again revokes the whole session and announces it.
    let third = uniq("refresh-hash-");
    match s.rotate_refresh(&first, &third, now, now + 500_000, &session_event).await.unwrap() {
        Rotation::Reused { session_id, newly_revoked, .. } => {
            assert_eq!(session_id, sess.id);
            assert!(newly_revoked);
        }
        other => panic!("expected reuse, got {other:?}"),
    }
    assert!(s.session(sess.id).await.unwrap().unwrap().revoked_at_ms.is_some());
    // The current token of the revoked session is dead too.
    assert_eq!(s.rotate_refresh(&second, &third, now, now + 1, &session_event).await.unwrap(), Rotation::Invalid);
    assert_eq!(s.rotate_refresh("unknown", &third, now, now + 1, &session_event).await.unwrap(), Rotation::Invalid);
    let revoked = s.revoked_since(now - 1_000, now).await.unwrap();
    assert!(revoked.iter().any(|r| r.id == sess.id));
    assert!(s.outbox().pending(10_000).await.unwrap().iter().any(|p| p.envelope.id == sess.id + 1_000_000));
}

async fn password_change_revokes_other_sessions(s: Arc<dyn UserStore>) {
    let a = account(&uniq("hank"));
    let keep = session(Some(a.id), None);
    s.create_account(&a, &keep, &ev(a.id, "user.created")).await.unwrap();
    let other = session(Some(a.id), None);
    s.create_session(&other).await.unwrap();
    let revoked = s.change_password(a.id, "$argon2id$new", Some(keep.id), &session_event).await.unwrap();
    assert_eq!(revoked, vec![other.id]);
    assert!(s.session(keep.id).await.unwrap().unwrap().revoked_at_ms.is_none());
    assert!(s.session(other.id).await.unwrap().unwrap().revoked_at_ms.is_some());
    assert_eq!(s.credentials(&a.username).await.unwrap().unwrap().1, "$argon2id$new");
    // Revoking twice reports nothing new.
    assert!(!s.revoke_session(other.id, "logout", &session_event).await.unwrap());
    assert!(s.revoke_session(keep.id, "logout", &session_event).await.unwrap());
}

async fn applications_and_codes(s: Arc<dyn UserStore>) {
    let app = Application {
        id: id(),
        name: "App".into(),
        website: String::new(),
        redirect_uris: vec!["urn:ietf:wg:oauth:2.0:oob".into(), "https://app.example/cb".into()],
        scopes: vec!["read".into(), "write".into()],
        client_id: uniq("cid-"),
        client_secret_hash: "h".into(),
        created_at_ms: 1,
    };
    s.create_application(&app).await.unwrap();
    assert_eq!(s.application_by_client_id(&app.client_id).await.unwrap().unwrap(), app);
    assert!(s.application_by_client_id("nope").await.unwrap().is_none());

    let a = account(&uniq("ivy"));
    s.create_account(&a, &session(Some(a.id), None), &ev(a.id, "user.created")).await.unwrap();
    let code = AuthCode {
        code_hash: uniq("code-"),
        client_id: app.client_id.clone(),
        account_id: a.id,
        redirect_uri: "https://app.example/cb".into(),
        scopes: vec!["read".into()],
        code_challenge: String::new(),
        expires_at_ms: agora_kit::time::now_ms() + 60_000,
    };
    s.create_auth_code(&code).await.unwrap();
    let taken = s.take_auth_code(&code.code_hash).await.unwrap().unwrap();
    assert_eq!(taken.account_id, a.id);
    assert!(s.take_auth_code(&code.code_hash).await.unwrap().is_none(), "codes are single-use");
}

async fn signing_keys_are_kept(s: Arc<dyn UserStore>) {
    let k = StoredKey { kid: uniq("kid-"), pkcs8: vec![1, 2, 3], created_at_ms: agora_kit::time::now_ms() };
    s.add_signing_key(&k).await.unwrap();
    s.add_signing_key(&StoredKey { pkcs8: vec![9], ..k.clone() }).await.unwrap();
    let keys = s.signing_keys().await.unwrap();
    assert_eq!(
        keys.iter().filter(|x| x.kid == k.kid).collect::<Vec<_>>(),
        vec![&k],
        "an existing kid is never overwritten"
    );
}

async fn racing_duplicate_registrations_admit_one(s: Arc<dyn UserStore>) {
    let name = uniq("race");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = Arc::clone(&s);
        let mut a = account(&name);
        a.email = format!("{i}-{}", a.email);
        tasks.push(tokio::spawn(async move {
            s.create_account(&a, &session(Some(a.id), None), &ev(a.id, "user.created")).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Taken("username")) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(ok, 1);
}

/// Sign-in failures count up per key (also when they race), start over after the forget
/// horizon, and clear; known addresses are remembered with their last success.
async fn login_failures_and_known_addresses(s: Arc<dyn UserStore>) {
    let key = format!("acct:{}", rand::random::<u32>());
    assert_eq!(s.login_failures(&key).await.unwrap(), None);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (s, key) = (Arc::clone(&s), key.clone());
        tasks.push(tokio::spawn(async move { s.record_login_failure(&key, 1_000, 0).await.unwrap() }));
    }
    let mut counts: Vec<i64> = Vec::new();
    for t in tasks {
        counts.push(t.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=10).collect::<Vec<_>>(), "concurrent failures are each counted once");
    assert_eq!(s.login_failures(&key).await.unwrap(), Some((10, 1_000)));
    assert_eq!(s.record_login_failure(&key, 90_000, 50_000).await.unwrap(), 1, "an old streak is forgotten");
    s.clear_login_failures(std::slice::from_ref(&key)).await.unwrap();
    assert_eq!(s.login_failures(&key).await.unwrap(), None);

    assert!(!s.known_address(7, "198.51.100.7", 0).await.unwrap());
    s.remember_address(7, "198.51.100.7", 5_000).await.unwrap();
    s.remember_address(7, "198.51.100.7", 9_000).await.unwrap();
    assert!(s.known_address(7, "198.51.100.7", 8_000).await.unwrap(), "the latest success counts");
    assert!(!s.known_address(7, "198.51.100.7", 9_001).await.unwrap(), "too long ago");
    assert!(!s.known_address(8, "198.51.100.7", 0).await.unwrap(), "per account");
}

async fn sqlite() -> Option<Arc<dyn UserStore>> {
    let dir = agora_testkit::scratch_dir().unwrap();
    let url = format!("sqlite://{}/user.db", dir.display());
    let s = store::connect(&url).await.unwrap();
    s.migrate().await.unwrap();
    Some(s)
}

async fn postgres() -> Option<Arc<dyn UserStore>> {
    let admin = agora_testkit::test_server("AGORA_TEST_POSTGRES_URL")?;
    let url = agora_testkit::fresh_postgres_database(&admin).await.unwrap();
    let s = store::connect(&url).await.unwrap();
    s.migrate().await.unwrap();
    s.migrate().await.unwrap(); // migrations are idempotent
    Some(s)
}

agora_testkit::conformance!(
    backends: [sqlite, postgres],
    cases: [
        accounts_are_unique_case_insensitively,
        creating_an_account_writes_its_event,
        credentials_by_username_or_email,
        batch_reads_keep_request_order,
        profile_updates_apply_and_announce,
        refresh_rotation_and_reuse,
        password_change_revokes_other_sessions,
        applications_and_codes,
        signing_keys_are_kept,
        racing_duplicate_registrations_admit_one,
        login_failures_and_known_addresses,
    ]
);
