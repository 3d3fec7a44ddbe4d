//! The Mastodon streaming API over Server-Sent Events: `/api/v1/streaming/user` carries the
//! caller's new notifications (`notification`), the statuses entering their home timeline
//! (`update`) and those deleted from it (`delete`, the payload the bare id);
//! `/api/v1/streaming/user/notification` only the notifications. Payloads are JSON strings of the
//! entities, as Mastodon sends them. `/api/v1/streaming/health` answers `OK`.
//!
//! The live backplane ([`agora_client::live`]) names a new notification or a status; the stream
//! fetches it with its own token (from the notification service, or from the post service,
//! which applies visibility and blocks) and renders it as the REST API does; a status whose
//! author (or reblogged author) the viewer blocks, is blocked by or mutes is left out, as the
//! home timeline leaves it out when read. An open stream checks its token every few seconds and ends once the session is
//! revoked; it ends on shutdown too (EventSource clients reconnect on their own). A stream that
//! falls behind loses its oldest events (counted), never grows memory; a client catches up with
//! `GET /api/v1/notifications?since_id=`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use agora_client::live::{LiveEvent, Subscription};
use agora_kit::grpc::request;
use agora_proto::notification::v1 as npb;
use agora_proto::post::v1 as ppb;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use parking_lot::Mutex;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::state::AppState;

/// A comment line this often keeps proxies from closing a quiet stream.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How often an open stream checks its token: a revoked session's streams end within this plus
/// the verifier's revocation refresh (1 s).
const RECHECK: Duration = Duration::from_secs(3);

/// Open streams per account, bounded.
pub struct Streams {
    limit: usize,
    open: Mutex<HashMap<i64, usize>>,
}

/// One open stream's place; freed when the stream ends.
pub struct Slot {
    streams: Arc<Streams>,
    account_id: i64,
}

impl Streams {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit, open: Mutex::new(HashMap::new()) })
    }

    fn acquire(self: &Arc<Self>, account_id: i64) -> Option<Slot> {
        let mut open = self.open.lock();
        let n = open.entry(account_id).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        metrics::gauge!("agora_gateway_streams_open").increment(1.0);
        Some(Slot { streams: Arc::clone(self), account_id })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock();
        if let Some(n) = open.get_mut(&self.account_id) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.account_id);
            }
        }
        metrics::gauge!("agora_gateway_streams_open").decrement(1.0);
    }
}

/// `GET /api/v1/streaming/health`.
pub async fn health() -> &'static str {
    "OK"
}

/// `GET /api/v1/streaming/user`: the caller's notifications and home timeline.
pub async fn user(State(st): State<AppState>, headers: HeaderMap, p: Params) -> ApiResult<Response> {
    let caller = caller(&st, &headers, &p).await?;
    if !caller.claims.allows("read:statuses") && !caller.claims.allows("read:notifications") {
        return Err(ApiError::forbidden_scope());
    }
    open(st, caller, "user").await
}

/// What a stream carries besides notifications.
fn carries_home(stream: &str) -> bool {
    stream == "user"
}

/// `GET /api/v1/streaming/user/notification`.
pub async fn user_notification(State(st): State<AppState>, headers: HeaderMap, p: Params) -> ApiResult<Response> {
    let caller = caller(&st, &headers, &p).await?;
    caller.require("read:notifications")?;
    open(st, caller, "user:notification").await
}

/// The token from `Authorization: Bearer`, else `access_token` in the query (what browsers'
/// EventSource can send); 401 without a valid one.
async fn caller(st: &AppState, headers: &HeaderMap, p: &Params) -> ApiResult<Caller> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(agora_kit::jwt::bearer)
        .map(str::to_owned)
        .or_else(|| p.str("access_token").map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned))
        .ok_or_else(ApiError::unauthorized)?;
    let claims = st.verifier.verify(&token).await.map_err(|e| ApiError::from(agora_kit::Error::from(e)))?;
    Ok(Caller { claims, token })
}

struct Open {
    st: AppState,
    caller: Caller,
    subscription: Subscription,
    recheck: tokio::time::Interval,
    _slot: Slot,
    stream: &'static str,
    /// The statuses last sent as `update`: a home delivery the feed replays (a redelivered
    /// event announces the homes that hold the status again) is not sent twice.
    recent_updates: std::collections::VecDeque<i64>,
}

/// How many `update` ids a stream remembers.
const RECENT_UPDATES: usize = 128;

async fn open(st: AppState, caller: Caller, stream: &'static str) -> ApiResult<Response> {
    let account_id = caller.account_id()?;
    let Some(live) = st.live.clone() else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Streaming is not available"));
    };
    let Some(slot) = st.streams.acquire(account_id) else {
        metrics::counter!("agora_gateway_streams_refused_total", "reason" => "limit").increment(1);
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "Too many open streams for this account"));
    };
    let subscription = live.subscribe(account_id).await.map_err(|e| {
        tracing::warn!(error = %e, "live backplane unavailable");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Streaming is not available")
    })?;
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    recheck.reset();
    let state = Open { st, caller, subscription, recheck, _slot: slot, stream, recent_updates: Default::default() };
    tracing::debug!(account_id, stream, "stream opened");
    let events = futures::stream::unfold(state, next_event);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("thump")).into_response())
}

/// The stream's next event, or its end (shutdown, a revoked token, the backplane gone).
async fn next_event(mut s: Open) -> Option<(Result<Event, Infallible>, Open)> {
    loop {
        tokio::select! {
            _ = s.st.shutdown.cancelled() => return None,
            _ = s.recheck.tick() => {
                if s.st.verifier.verify(&s.caller.token).await.is_err() {
                    metrics::counter!("agora_gateway_streams_closed_total", "reason" => "token").increment(1);
                    return None;
                }
            }
            e = s.subscription.next() => {
                let (notifications, statuses) =
                    (s.caller.claims.allows("read:notifications"), s.caller.claims.allows("read:statuses"));
                let rendered = match e? {
                    LiveEvent::Notification(_) if !notifications => continue,
                    LiveEvent::Update(_) | LiveEvent::Delete(_) if !statuses => continue,
                    LiveEvent::Notification(id) => notification(&s.st, &s.caller, id).await.map(|n| n.map(|json| ("notification", json))),
                    LiveEvent::Update(id) if s.recent_updates.contains(&id) => continue,
                    LiveEvent::Update(id) if carries_home(s.stream) => {
                        let found = home_status(&s.st, &s.caller, id).await;
                        if matches!(found, Ok(Some(_))) {
                            if s.recent_updates.len() == RECENT_UPDATES {
                                s.recent_updates.pop_front();
                            }
                            s.recent_updates.push_back(id);
                        }
                        found.map(|n| n.map(|json| ("update", json)))
                    }
                    // Mastodon's `delete` payload is the bare id. Nothing is revealed: the
                    // stream's owner had the status in their home.
                    LiveEvent::Delete(id) if carries_home(s.stream) => Ok(Some(("delete", id.to_string()))),
                    LiveEvent::Update(_) | LiveEvent::Delete(_) => continue,
                };
                match rendered {
                    Ok(Some((event, json))) => {

                        metrics::counter!("agora_gateway_stream_events_total", "stream" => s.stream, "result" => "sent").increment(1);
                        return Some((Ok(Event::default().event(event).data(json)), s));
                    }
                    Ok(None) => {
                        metrics::counter!("agora_gateway_stream_events_total", "stream" => s.stream, "result" => "hidden").increment(1);
                    }
                    Err(e) => {
                        metrics::counter!("agora_gateway_stream_events_total", "stream" => s.stream, "result" => "error").increment(1);
                        tracing::warn!(error = ?e, "could not render a streamed event");
                    }
                }
            }
        }
    }
}

/// The Status entity `id` as it would show in the caller's home, as a JSON string; None when
/// the post service hides it from them or they block, are blocked by or mute its author (or the
/// reblogged author).
async fn home_status(st: &AppState, c: &Caller, id: i64) -> ApiResult<Option<String>> {
    let viewer = c.account_id()?;
    let page = st
        .post
        .clone()
        .get_statuses(request(ppb::GetStatusesRequest { ids: vec![id], with_author_stats: true }, Some(&c.token)))
        .await?
        .into_inner();
    let Some(s) = page.statuses.first() else { return Ok(None) };
    let filter = st.facts.filter_set(viewer, &c.token).await?;
    let hidden = |a: i64| {
        a != viewer && (filter.blocking.contains(&a) || filter.blocked_by.contains(&a) || filter.muting.contains(&a))
    };
    if hidden(s.account_id) || s.reblog.as_ref().is_some_and(|r| hidden(r.account_id)) {
        return Ok(None);
    }
    let stats = page.author_stats.into_iter().map(|a| (a.id, a)).collect();
    let Some(entity) = crate::render::render_statuses(st, &page.statuses, Some(stats)).await?.pop() else {
        return Ok(None);
    };
    Ok(Some(
        serde_json::to_string(&entity).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?,
    ))
}

/// The Notification entity `id` as the caller may see it, as a JSON string; None when the
/// caller may not (someone else's, suppressed, or about a status hidden from them).
async fn notification(st: &AppState, c: &Caller, id: i64) -> ApiResult<Option<String>> {
    let got =
        st.notification.clone().get_notification(request(npb::NotificationIdRequest { id }, Some(&c.token))).await;
    let n = match got {
        Ok(n) => n.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
        Err(s) => return Err(s.into()),
    };
    let Some(entity) = super::notifications::hydrate(st, c, vec![n]).await?.pop() else { return Ok(None) };
    Ok(Some(
        serde_json::to_string(&entity).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?,
    ))
}
