//! The caches on the read path (the viewer's filter set and relationships in the feed and post
//! services, account entities in the gateway) never make a change show late: the read right after
//! a block, a mute, an unfollow, a deletion or a profile change already reflects it, with no
//! wait. On embedded stores (in-process epochs) and on PostgreSQL + Redis + Kafka (epochs in
//! Redis).

use std::time::Duration;

use agora_testkit::{Backend, Platform, PlatformBuilder};
use reqwest::StatusCode;
use serde_json::Value;

use crate::api::Api;

fn builder(backend: Backend) -> PlatformBuilder {
    PlatformBuilder::new(backend)
        .setting("AGORA_GATEWAY_RATE_LIMIT_REGISTRATION", "off")
        .setting("AGORA_GATEWAY_RATE_LIMIT_IP", "off")
        .setting("AGORA_GATEWAY_RATE_LIMIT_ACCOUNT", "off")
}

async fn call(api: &Api, token: &str, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Value {
    let r = api.http.request(method, format!("{}{path}", api.base)).bearer_auth(token).form(form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}: {}", r.text().await.unwrap_or_default());
    r.json().await.unwrap()
}

async fn status_code(api: &Api, token: &str, id: &str) -> StatusCode {
    api.http.get(format!("{}/api/v1/statuses/{id}", api.base)).bearer_auth(token).send().await.unwrap().status()
}

fn ids(page: &[Value]) -> Vec<String> {
    page.iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
}

/// An author the viewer follows, with one public and one followers-only status that the viewer's
/// home already shows.
struct Author {
    token: String,
    id: String,
    public: String,
    private: String,
}

async fn followed_author(api: &Api, viewer: &str, name: &str) -> Author {
    let (_, token, _) = api.user().await;
    let id = api.account_id(&token).await;
    api.follow(viewer, &id).await;
    let public = api.post(&token, &format!("{name} says hello")).await;
    let private = call(
        api,
        &token,
        reqwest::Method::POST,
        "/api/v1/statuses",
        &[("status", &format!("{name} to followers")), ("visibility", "private")],
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    Author { token, id, public, private }
}

async fn next_reads_see_every_change(p: Platform) {
    let api = Api::new(&p).await;
    let (_, viewer, _) = api.user().await;
    let blocker = followed_author(&api, &viewer, "blocker").await;
    let muted = followed_author(&api, &viewer, "muted").await;
    let unfollowed = followed_author(&api, &viewer, "unfollowed").await;
    let deleter = followed_author(&api, &viewer, "deleter").await;
    let renamed = followed_author(&api, &viewer, "renamed").await;
    let everyone = [&blocker, &muted, &unfollowed, &deleter, &renamed];
    // Fan-out is asynchronous: wait until the home holds all ten statuses.
    let mut home = Vec::new();
    for _ in 0..300 {
        home = ids(&api.home_page(&viewer, "limit=40").await);
        if home.len() == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(home.len(), 10, "the viewer's home before any change: {home:?}");
    // Warm every cache on the way: the home twice, each status and each author once.
    for _ in 0..2 {
        api.home_page(&viewer, "limit=40").await;
    }
    for a in everyone {
        assert_eq!(status_code(&api, &viewer, &a.private).await, StatusCode::OK);
    }

    // A block by the author hides their statuses from the viewer's next read.
    let viewer_id = api.account_id(&viewer).await;
    call(&api, &blocker.token, reqwest::Method::POST, &format!("/api/v1/accounts/{viewer_id}/block"), &[]).await;
    let home = ids(&api.home_page(&viewer, "limit=40").await);
    assert!(!home.contains(&blocker.public) && !home.contains(&blocker.private), "blocked author still shown");
    assert_eq!(status_code(&api, &viewer, &blocker.public).await, StatusCode::NOT_FOUND);

    // The viewer's mute hides the author from the next read.
    call(&api, &viewer, reqwest::Method::POST, &format!("/api/v1/accounts/{}/mute", muted.id), &[]).await;
    let home = ids(&api.home_page(&viewer, "limit=40").await);
    assert!(!home.contains(&muted.public) && !home.contains(&muted.private), "muted author still shown");

    // After an unfollow, a followers-only status is no longer the viewer's to read.
    call(&api, &viewer, reqwest::Method::POST, &format!("/api/v1/accounts/{}/unfollow", unfollowed.id), &[]).await;
    assert_eq!(status_code(&api, &viewer, &unfollowed.private).await, StatusCode::NOT_FOUND);
    let home = ids(&api.home_page(&viewer, "limit=40").await);
    assert!(!home.contains(&unfollowed.private), "a followers-only status shown to a former follower");

    // A deleted status is gone from the next read.
    call(&api, &deleter.token, reqwest::Method::DELETE, &format!("/api/v1/statuses/{}", deleter.public), &[]).await;
    let home = ids(&api.home_page(&viewer, "limit=40").await);
    assert!(!home.contains(&deleter.public), "deleted status still shown");
    assert!(home.contains(&deleter.private), "the author's other status stays");

    // A new display name and a new follower count show on the next read.
    call(
        &api,
        &renamed.token,
        reqwest::Method::PATCH,
        "/api/v1/accounts/update_credentials",
        &[("display_name", "Renamed Person")],
    )
    .await;
    let (_, fan, _) = api.user().await;
    api.follow(&fan, &renamed.id).await;
    let page = api.home_page(&viewer, "limit=40").await;
    let shown = page.iter().find(|s| s["id"] == renamed.public.as_str()).expect("the renamed author's status");
    assert_eq!(shown["account"]["display_name"], "Renamed Person");
    assert_eq!(shown["account"]["followers_count"], 2, "the viewer and the new fan");
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_after_a_change_sees_it_embedded() {
    next_reads_see_every_change(builder(Backend::Embedded).start().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_after_a_change_sees_it_on_redis_epochs() {
    let Some(backend) = Backend::real_from_env() else {
        let _ = agora_testkit::test_server("AGORA_TEST_REDIS_URL");
        return;
    };
    next_reads_see_every_change(builder(backend).start().await.unwrap()).await;
}
