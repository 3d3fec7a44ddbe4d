//! Web Push subscriptions, as Mastodon serves them: `POST|GET|PUT|DELETE
//! /api/v1/push/subscription` with the `push` scope, one subscription per access token's session
//! (posting again replaces it). The notification service checks the endpoint (https, public
//! addresses only) and the keys, keeps the subscription and delivers the pushes; the gateway
//! reads Mastodon's parameters (`subscription[endpoint]`, `subscription[keys][p256dh|auth]`,
//! `subscription[standard]`, `data[alerts][TYPE]`, `data[policy]` or a top-level `policy`) and
//! renders the WebPushSubscription entity. The server's VAPID public key is also the
//! Application entity's `vapid_key` and the v2 instance's `configuration.vapid.public_key`.

use std::time::{Duration, Instant};

use agora_client::PUSH_ALERTS;
use agora_kit::grpc::request;
use agora_proto::notification::v1 as npb;
use axum::Json;
use axum::extract::State;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::auth::{Authenticated, Caller};
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::state::AppState;

/// How long the gateway reuses the VAPID public key it read (a rotation shows within it).
const VAPID_TTL: Duration = Duration::from_secs(60);

/// The VAPID public key, read from the notification service and kept a minute.
#[derive(Default)]
pub struct VapidCache {
    key: Mutex<Option<(String, Instant)>>,
}

/// The server's VAPID public key; empty when the notification service cannot say (Mastodon
/// answers an empty `vapid_key` when Web Push is not set up).
pub async fn vapid_key(st: &AppState) -> String {
    if let Some((key, at)) = st.vapid.key.lock().clone()
        && at.elapsed() < VAPID_TTL
    {
        return key;
    }
    match st.notification.clone().get_vapid_key(request(npb::GetVapidKeyRequest {}, None)).await {
        Ok(r) => {
            let key = r.into_inner().public_key;
            *st.vapid.key.lock() = Some((key.clone(), Instant::now()));
            key
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the VAPID key");
            String::new()
        }
    }
}

fn entity(s: &npb::PushSubscription) -> Value {
    let alerts: serde_json::Map<String, Value> =
        PUSH_ALERTS.iter().map(|a| ((*a).to_owned(), Value::Bool(s.alerts.iter().any(|x| x == a)))).collect();
    json!({
        "id": s.id.to_string(),
        "endpoint": s.endpoint,
        "standard": s.standard,
        "alerts": alerts,
        "policy": s.policy,
        "server_key": s.server_key,
    })
}

/// The alerts turned on in `data[alerts][…]`.
fn alerts(p: &Params) -> ApiResult<Vec<String>> {
    let mut on = Vec::new();
    for a in PUSH_ALERTS {
        if p.bool(&format!("data[alerts][{a}]"))?.unwrap_or(false) {
            on.push((*a).to_owned());
        }
    }
    Ok(on)
}

/// `data[policy]`, or the top-level `policy` Mastodon.py sends; empty means all.
fn policy(p: &Params) -> ApiResult<String> {
    let raw = match p.text("data[policy]")? {
        Some(v) => v,
        None => p.text("policy")?.unwrap_or(""),
    };
    match raw.trim() {
        "" | "all" | "followed" | "follower" | "none" => Ok(raw.trim().to_owned()),
        _ => Err(ApiError::unprocessable("Validation failed: policy must be all, followed, follower or none")),
    }
}

fn required(p: &Params, key: &str) -> ApiResult<String> {
    match p.text(key)?.map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => Err(ApiError::unprocessable(&format!("Validation failed: {key} can't be blank"))),
    }
}

fn caller(c: &Caller) -> ApiResult<()> {
    c.require_user("push")
}

/// `POST /api/v1/push/subscription`.
pub async fn create(State(st): State<AppState>, Authenticated(c): Authenticated, p: Params) -> ApiResult<Json<Value>> {
    caller(&c)?;
    let req = npb::PutPushSubscriptionRequest {
        endpoint: required(&p, "subscription[endpoint]")?,
        p256dh: required(&p, "subscription[keys][p256dh]")?,
        auth: required(&p, "subscription[keys][auth]")?,
        standard: p.bool("subscription[standard]")?.unwrap_or(false),
        alerts: alerts(&p)?,
        policy: policy(&p)?,
    };
    let s = st.notification.clone().put_push_subscription(request(req, Some(&c.token))).await?.into_inner();
    Ok(Json(entity(&s)))
}

/// `GET /api/v1/push/subscription`.
pub async fn get(State(st): State<AppState>, Authenticated(c): Authenticated) -> ApiResult<Json<Value>> {
    caller(&c)?;
    let s = st
        .notification
        .clone()
        .get_push_subscription(request(npb::GetPushSubscriptionRequest {}, Some(&c.token)))
        .await?
        .into_inner();
    Ok(Json(entity(&s)))
}

/// `PUT /api/v1/push/subscription`: replaces the alerts and the policy.
pub async fn update(State(st): State<AppState>, Authenticated(c): Authenticated, p: Params) -> ApiResult<Json<Value>> {
    caller(&c)?;
    let req = npb::UpdatePushSubscriptionRequest { alerts: alerts(&p)?, policy: policy(&p)? };
    let s = st.notification.clone().update_push_subscription(request(req, Some(&c.token))).await?.into_inner();
    Ok(Json(entity(&s)))
}

/// `DELETE /api/v1/push/subscription`: `{}`, whether or not there was one.
pub async fn delete(State(st): State<AppState>, Authenticated(c): Authenticated) -> ApiResult<Json<Value>> {
    caller(&c)?;
    st.notification
        .clone()
        .delete_push_subscription(request(npb::DeletePushSubscriptionRequest {}, Some(&c.token)))
        .await?;
    Ok(Json(json!({})))
}
