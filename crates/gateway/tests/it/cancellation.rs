//! Cancellation safety: clients that hang up at random points in the middle of writes (the
//! gateway's handler, its gRPC call and the service's handler are all abandoned) leave neither
//! half a unit of work nor a pooled database connection still inside a transaction.

use std::time::Duration;

use agora_testkit::{Backend, Platform, PlatformBuilder};
use rand::Rng as _;
use serde_json::Value;

use crate::api::Api;

fn builder(backend: Backend) -> PlatformBuilder {
    PlatformBuilder::new(backend)
        .setting("AGORA_GATEWAY_RATE_LIMIT_REGISTRATION", "off")
        .setting("AGORA_GATEWAY_RATE_LIMIT_IP", "off")
        .setting("AGORA_GATEWAY_RATE_LIMIT_ACCOUNT", "off")
}

/// One write, by `token` on `status`: favourite, reblog, bookmark, a reply, or an undo.
async fn write(http: &reqwest::Client, base: &str, token: &str, status: &str, op: u32, timeout: Duration) {
    let url = match op % 7 {
        0 => format!("{base}/api/v1/statuses/{status}/favourite"),
        1 => format!("{base}/api/v1/statuses/{status}/unfavourite"),
        2 => format!("{base}/api/v1/statuses/{status}/reblog"),
        3 => format!("{base}/api/v1/statuses/{status}/unreblog"),
        4 => format!("{base}/api/v1/statuses/{status}/bookmark"),
        5 => format!("{base}/api/v1/statuses/{status}/unbookmark"),
        _ => format!("{base}/api/v1/statuses"),
    };
    let _ = http
        .post(url)
        .bearer_auth(token)
        .form(&[("status", "a reply"), ("in_reply_to_id", status)])
        .timeout(timeout)
        .send()
        .await;
}

async fn count(api: &Api, token: &str, path: &str) -> usize {
    let r = api.http.get(format!("{}{path}?limit=80", api.base)).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json::<Vec<Value>>().await.unwrap().len()
}

async fn hang_ups_mid_write_leave_nothing_half_done(p: Platform) {
    let api = Api::new(&p).await;
    let (_, author, _) = api.user().await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        statuses.push(api.post(&author, &format!("target {i}")).await);
    }
    let mut users = Vec::new();
    for _ in 0..6 {
        users.push(api.user().await.1);
    }
    // Every client gives up after a random 1–25 ms: some before the write starts, some in the
    // middle of its transaction, some after it committed.
    let mut tasks = Vec::new();
    for n in 0..240u32 {
        let (http, base) = (api.http.clone(), api.base.clone());
        let token = users[n as usize % users.len()].clone();
        let status = statuses[(n as usize / users.len()) % statuses.len()].clone();
        let timeout = Duration::from_millis(rand::rng().random_range(1..25));
        tasks.push(tokio::spawn(async move { write(&http, &base, &token, &status, n, timeout).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Let work the clients abandoned finish (or not) on the server.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The pools' connections are all usable: every one of these writes succeeds.
    for (n, token) in users.iter().enumerate() {
        for status in &statuses {
            let r = api
                .http
                .post(format!("{}/api/v1/statuses/{status}/bookmark", api.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "user {n}: {}", r.text().await.unwrap_or_default());
        }
    }
    // No session of this platform's databases sits inside a transaction.
    if let Backend::Real { postgres_url, .. } = &p.backend {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(postgres_url).await.unwrap();
        let names: Vec<String> =
            p.databases.values().map(|u| u.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned()).collect();
        let stuck: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = ANY($1) AND state LIKE 'idle in transaction%'",
        )
        .bind(&names)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(stuck, 0, "pooled connections left inside a transaction");
    }
    // Counters agree with the rows they count: nothing half-written.
    for status in &statuses {
        let s: Value = api
            .http
            .get(format!("{}/api/v1/statuses/{status}", api.base))
            .bearer_auth(&author)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let favs = count(&api, &author, &format!("/api/v1/statuses/{status}/favourited_by")).await;
        let boosts = count(&api, &author, &format!("/api/v1/statuses/{status}/reblogged_by")).await;
        assert_eq!(s["favourites_count"].as_u64().unwrap() as usize, favs, "favourites of {status}");
        assert_eq!(s["reblogs_count"].as_u64().unwrap() as usize, boosts, "reblogs of {status}");
    }
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_ups_mid_write_leave_nothing_half_done_embedded() {
    hang_ups_mid_write_leave_nothing_half_done(builder(Backend::Embedded).start().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_ups_mid_write_leave_nothing_half_done_on_postgres() {
    let Some(backend) = Backend::real_from_env() else {
        let _ = agora_testkit::test_server("AGORA_TEST_POSTGRES_URL");
        return;
    };
    hang_ups_mid_write_leave_nothing_half_done(builder(backend).start().await.unwrap()).await;
}
