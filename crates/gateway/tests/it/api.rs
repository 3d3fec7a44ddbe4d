//! The public API over HTTP: Mastodon shapes, bad input, limits. On embedded stores, and the
//! main flow once more on PostgreSQL + Redis + Kafka.

pub use agora_testkit::api::{Api, uniq};
use agora_testkit::{Backend, Platform, PlatformBuilder};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn platform() -> Platform {
    PlatformBuilder::embedded()
        .setting("AGORA_GATEWAY_RATE_LIMIT_REGISTRATION", "off")
        .setting("AGORA_GATEWAY_MAX_BODY_BYTES", "65536")
        .start()
        .await
        .unwrap()
}

async fn error_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!(body["error"].is_string(), "{status}: every error has Mastodon's shape, got {body}");
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_read_back_in_mastodon_shapes() {
    let p = platform().await;
    let api = Api::new(&p).await;
    let (name, token, _) = api.user().await;
    let me: Value = api.me(&token).await.json().await.unwrap();
    assert_eq!(me["username"], name.as_str());
    assert_eq!(me["acct"], name.as_str());
    assert!(me["id"].is_string(), "ids are strings");
    assert_eq!(me["source"]["privacy"], "public");
    let id = me["id"].as_str().unwrap();
    let public: Value =
        api.http.get(format!("{}/api/v1/accounts/{id}", api.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(public["username"], name.as_str());
    assert!(public.get("source").is_none(), "private fields stay private");
    let listed: Value = api
        .http
        .get(format!("{}/api/v1/accounts?id[]={id}&id[]=12345", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_4xx_never_500() {
    let p = platform().await;
    let api = Api::new(&p).await;
    let url = format!("{}/api/v1/accounts", api.base);
    let post = |body: reqwest::Body, ct: &'static str| {
        api.http.post(&url).bearer_auth(&api.app_token).header("content-type", ct).body(body).send()
    };
    let (s, _) = error_of(post("{\"username\": ".into(), "application/json").await.unwrap()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = error_of(post("[1,2]".into(), "application/json").await.unwrap()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = error_of(post(vec![b'a'; 200_000].into(), "application/x-www-form-urlencoded").await.unwrap()).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, _) = error_of(post("x".into(), "application/xml").await.unwrap()).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Missing fields, unknown extra fields, and hostile values.
    let (s, body) = error_of(post("{}".into(), "application/json").await.unwrap()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["details"]["username"].is_array(), "{body}");
    for bad in ["bad name!", "al\u{202e}ice", "аlice", "a\u{200b}b", "x'; DROP TABLE accounts; --", &"z".repeat(31), ""]
    {
        let body = json!({"username": bad, "email": "ok@example.com", "password": "long enough pw", "agreement": true, "extra": {"nested": [1]}});
        let (s, body) = error_of(post(body.to_string().into(), "application/json").await.unwrap()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
        assert!(body["details"]["username"][0]["error"].is_string(), "{body}");
    }
    let (s, _) = error_of(
        post(
            "username=a%00b&email=x%40example.com&password=long+enough+pw&agreement=1".into(),
            "application/x-www-form-urlencoded",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // Non-numeric and unknown ids are 404, not 500.
    for path in ["/api/v1/accounts/abc", "/api/v1/accounts/99999999999", "/api/v1/accounts/-1", "/api/v1/nothing-here"]
    {
        let (s, _) = error_of(api.http.get(format!("{}{path}", api.base)).send().await.unwrap()).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
    let (s, _) = error_of(api.http.delete(format!("{}/api/v1/instance", api.base)).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    // Addresses nobody receives mail at.
    for bad in ["<script>@x.com", "\"a b\"@example.com", "a@[127.0.0.1]", "a\u{FFFE}@example.com", "Al <a@example.com>"]
    {
        let body = json!({"username": uniq("e"), "email": bad, "password": "long enough pw", "agreement": true});
        let (s, body) = error_of(post(body.to_string().into(), "application/json").await.unwrap()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
        assert!(body["details"]["email"].is_array(), "{bad:?}: {body}");
    }
    // JSON of the wrong type is refused, not turned into text.
    let (_, token, _) = api.user().await;
    for body in [json!({"status": false}), json!({"status": 12}), json!({"status": "ok", "spoiler_text": true})] {
        let r = api
            .http
            .post(format!("{}/api/v1/statuses", api.base))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (s, err) = error_of(r).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
    }
    let body = json!({"username": false, "email": "ok@example.com", "password": "long enough pw", "agreement": true});
    let (s, _) = error_of(post(body.to_string().into(), "application/json").await.unwrap()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_duplicate_registrations_admit_exactly_one() {
    let p = platform().await;
    let api = std::sync::Arc::new(Api::new(&p).await);
    let name = uniq("dup");
    let mut tasks = Vec::new();
    for i in 0..6 {
        let api = std::sync::Arc::clone(&api);
        let n = if i % 2 == 0 { name.clone() } else { name.to_uppercase() };
        tasks.push(tokio::spawn(async move { api.register_raw(&n).await.status() }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == StatusCode::OK).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == StatusCode::OK || *c == StatusCode::UNPROCESSABLE_ENTITY), "{codes:?}");
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_from_one_address_are_rate_limited() {
    let p = PlatformBuilder::embedded().start().await.unwrap();
    let api = Api::new(&p).await;
    let mut ok = 0;
    let mut limited = None;
    for _ in 0..20 {
        let r = api.register_raw(&uniq("rl")).await;
        match r.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited = Some(r);
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 5, "Mastodon's default: 5 sign-ups per 30 minutes per address");
    let r = limited.expect("the sixth sign-up is refused");
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 1800);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert!(chrono::DateTime::parse_from_rfc3339(r.headers()["x-ratelimit-reset"].to_str().unwrap()).is_ok());
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_updates_escape_markup() {
    let p = platform().await;
    let api = Api::new(&p).await;
    let (_, token, _) = api.user().await;
    let r = api
        .http
        .patch(format!("{}/api/v1/accounts/update_credentials", api.base))
        .bearer_auth(&token)
        .form(&[
            ("display_name", "Zoë"),
            ("note", "<script>alert(1)</script>\nline two"),
            ("fields_attributes[0][name]", "<b>site</b>"),
            ("fields_attributes[0][value]", "https://zoe.example"),
            ("locked", "1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["note"], "<p>&lt;script&gt;alert(1)&lt;/script&gt;<br />line two</p>");
    assert_eq!(v["source"]["note"], "<script>alert(1)</script>\nline two");
    assert_eq!(v["fields"][0]["name"], "&lt;b&gt;site&lt;/b&gt;");
    assert_eq!(v["locked"], true);
    let (s, _) = error_of(
        api.http
            .patch(format!("{}/api/v1/accounts/update_credentials", api.base))
            .bearer_auth(&token)
            .form(&[("display_name", "x".repeat(31))])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // An application token cannot act as a user.
    let (s, _) = error_of(
        api.http
            .patch(format!("{}/api/v1/accounts/update_credentials", api.base))
            .bearer_auth(&api.app_token)
            .form(&[("display_name", "hijack")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(s.is_client_error());
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_flow_works_on_postgres_redis_and_kafka() {
    let Some(backend) = Backend::real_from_env() else {
        let _ = agora_testkit::test_server("AGORA_TEST_POSTGRES_URL");
        return;
    };
    let p =
        PlatformBuilder::new(backend).setting("AGORA_GATEWAY_RATE_LIMIT_REGISTRATION", "off").start().await.unwrap();
    let api = Api::new(&p).await;
    let (name, token, _) = api.user().await;
    let me: Value = api.me(&token).await.json().await.unwrap();
    assert_eq!(me["username"], name.as_str());
    let r = api.revoke(&token).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(api.me(&token).await.status(), StatusCode::UNAUTHORIZED);
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_data_and_tokens_survive_a_restart() {
    let dir = agora_testkit::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first = PlatformBuilder::embedded().data_dir(&dir.0).gateway_listener(listener).start().await.unwrap();
    let api = Api::new(&first).await;
    let (name, token, _) = api.user().await;
    first.stop().await.unwrap();

    // Same data directory, same public address: as `agora dev` after Ctrl-C and a new start.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let second = PlatformBuilder::embedded().data_dir(&dir.0).gateway_listener(listener).start().await.unwrap();
    let me = api.me(&token).await;
    assert_eq!(me.status(), StatusCode::OK, "tokens signed before the restart still verify");
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["username"], name.as_str());
    second.stop().await.unwrap();
}
