//! The Mastodon streaming API. Server-Sent Events, one stream per request:
//! `/api/v1/streaming/user` (the caller's notifications, the statuses entering their home —
//! `update` — edited in it — `status.update` — and deleted from it — `delete`, the payload the
//! bare id), `/user/notification` (only the notifications), `/public`, `/public/local` and
//! `/public/media` (public statuses as they are posted; `?only_media=true` too), `/hashtag` and
//! `/hashtag/local` (`?tag=`: public statuses with that hashtag), `/direct` (the caller's
//! conversations as they change: `conversation`, which `/user` carries too). And the multiplexed WebSocket
//! at `/api/v1/streaming`: `?stream=` opens one stream at once, `{"type":"subscribe",
//! "stream":…, "tag":…}` and `unsubscribe` messages add and remove streams, and each event is a
//! frame `{"stream":[name(, tag)],"event":…,"payload":"<JSON string>"}`. `/api/v1/streaming/health`
//! answers `OK`. Agora does not federate, so the `:local` streams carry what the others carry.
//!
//! The live backplane ([`agora_client::live`]) names a new notification or status; the stream
//! fetches it with its own token (from the notification service, or from the post service,
//! which applies visibility and blocks) and renders it as the REST API does — one render per
//! account and event shared by that account's streams on this gateway, and one, without a
//! viewer (as Mastodon does), for every public and hashtag stream; a status whose
//! author (or reblogged author) the viewer blocks, is blocked by or mutes is left out, and the
//! public and hashtag streams send only public statuses, whatever was published.
//!
//! The public and hashtag streams are open to anonymous callers, as the public timelines are.
//! The token comes from `Authorization: Bearer`, `?access_token=` or (WebSocket from a browser)
//! `Sec-WebSocket-Protocol`. An open connection checks its token every few seconds and ends
//! once the session is revoked; it ends on shutdown too (a WebSocket with close code 1001, so
//! clients reconnect). Connections per account (or, anonymous, per address) are bounded. A
//! client that falls behind by more than the backplane's buffer, or does not take a frame for
//! [`SEND_TIMEOUT`], is disconnected: memory never grows for it, and it catches up through the
//! REST API (`/api/v1/notifications?since_id=`, the timelines).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_client::live::{LiveEvent, Subscription, Topic};
use agora_kit::grpc::request;
use agora_proto::feed::v1 as fpb;
use agora_proto::notification::v1 as npb;
use agora_proto::post::v1 as ppb;
use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code, rejection::WebSocketUpgradeRejection,
};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use tokio_stream::StreamMap;

use crate::auth::Caller;
use crate::edge::ClientIp;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::state::AppState;

mod batch;

/// A comment line (SSE) or a ping (WebSocket) this often keeps proxies from closing a quiet
/// connection.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How often an open connection checks its token: a revoked session's connections end within
/// this plus the verifier's revocation refresh (1 s).
const RECHECK: Duration = Duration::from_secs(3);
/// How many `update` ids a stream remembers, so a status is sent once.
const RECENT_UPDATES: usize = 128;
/// Streams one WebSocket connection may carry at once.
pub const SUBSCRIPTIONS_PER_SOCKET: usize = 32;
/// Messages a WebSocket client may send in a burst, and then per second.
const SOCKET_BURST: f64 = 20.0;
const SOCKET_PER_SECOND: f64 = 5.0;
/// Messages that are not understood before a socket is closed.
const SOCKET_BAD_MESSAGES: u32 = 10;
/// The largest message a WebSocket client may send.
const SOCKET_MAX_MESSAGE: usize = 4096;
/// How long a frame may wait for the client to take it before the client counts as gone.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Who holds connections: an account, or an anonymous caller's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Owner {
    Account(i64),
    Anonymous(IpAddr),
}

/// Open streaming connections per owner, bounded, and the renders they share.
pub struct Streams {
    limit: usize,
    open: Mutex<HashMap<Owner, usize>>,
    renders: Renders,
    homes: batch::HomeBatches,
}

/// One open connection's place; freed when it ends.
pub struct Slot {
    streams: Arc<Streams>,
    owner: Owner,
}

impl Streams {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            open: Mutex::new(HashMap::new()),
            renders: Renders::default(),
            homes: batch::HomeBatches::default(),
        })
    }

    fn acquire(self: &Arc<Self>, owner: Owner) -> Option<Slot> {
        let mut open = self.open.lock();
        let n = open.entry(owner).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        metrics::gauge!("agora_gateway_streams_open").increment(1.0);
        Some(Slot { streams: Arc::clone(self), owner })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock();
        if let Some(n) = open.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.owner);
            }
        }
        metrics::gauge!("agora_gateway_streams_open").decrement(1.0);
    }
}

/// How long a render stays shareable: the streams that hear one event hear it together (one
/// broadcast), so this only has to outlast their reading it.
const RENDER_KEEP: Duration = Duration::from_secs(2);

/// An event rendered once for every stream that may share it: its JSON, and the authors (the
/// status's, a reblogged status's) each viewer's blocks and mutes are checked against.
#[derive(Clone)]
struct Rendered {
    json: Arc<str>,
    authors: Vec<i64>,
}

type Render = Result<Option<Rendered>, ApiError>;

/// What is rendered, and for whom: `viewer` None for a public stream's status, which is the
/// same for everyone (Mastodon renders it without a viewer too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RenderKey {
    viewer: Option<i64>,
    /// The event's name: an edit's render never joins one that began before the edit.
    event: &'static str,
    id: i64,
}

struct Held {
    cell: Arc<tokio::sync::OnceCell<Render>>,
    born: Instant,
}

/// Renders shared between the streams of one gateway. Ten streams of one account (a phone and
/// a laptop, each with `user` and `user:notification`) hearing one event make one call to the
/// owning service, not ten, and a public status is rendered once for every public and hashtag
/// stream; each stream still checks its own viewer's filter and scopes.
#[derive(Default)]
struct Renders {
    held: Mutex<(HashMap<RenderKey, Held>, Option<Instant>)>,
}

impl Renders {
    /// The render of `key`: one in flight is joined; a finished one is reused only with `reuse`
    /// (an edit must not be answered with the render of the edit before it).
    async fn get<F: Future<Output = Render>>(&self, key: RenderKey, reuse: bool, make: F) -> Render {
        let cell = {
            let mut guard = self.held.lock();
            let (held, swept) = &mut *guard;
            if swept.is_none_or(|t| t.elapsed() >= RENDER_KEEP) {
                held.retain(|_, h| h.born.elapsed() < RENDER_KEEP);
                *swept = Some(Instant::now());
            }
            match held.get(&key) {
                Some(h) if h.born.elapsed() < RENDER_KEEP && (reuse || !h.cell.initialized()) => {
                    metrics::counter!("agora_gateway_stream_renders_total", "result" => "shared").increment(1);
                    Arc::clone(&h.cell)
                }
                _ => {
                    metrics::counter!("agora_gateway_stream_renders_total", "result" => "rendered").increment(1);
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    held.insert(key, Held { cell: Arc::clone(&cell), born: Instant::now() });
                    cell
                }
            }
        };
        cell.get_or_init(|| make).await.clone()
    }
}

/// One Mastodon stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Kind {
    User,
    UserNotification,
    Direct,
    Public { local: bool, media: bool },
    Hashtag { tag: String, local: bool },
}

impl Kind {
    /// The stream named as the WebSocket API names it (`user`, `public:local:media`,
    /// `hashtag` with its tag…); 400 for a name Mastodon does not have or one Agora does not
    /// serve.
    pub fn parse(name: &str, tag: Option<&str>) -> ApiResult<Kind> {
        let public = |local, media| Ok(Kind::Public { local, media });
        match name {
            "user" => Ok(Kind::User),
            "user:notification" => Ok(Kind::UserNotification),
            "direct" => Ok(Kind::Direct),
            "public" => public(false, false),
            "public:media" => public(false, true),
            "public:local" => public(true, false),
            "public:local:media" => public(true, true),
            "hashtag" | "hashtag:local" => Ok(Kind::Hashtag { tag: parse_tag(tag)?, local: name == "hashtag:local" }),
            _ => Err(ApiError::new(StatusCode::BAD_REQUEST, "Unknown stream type")),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::UserNotification => "user:notification",
            Kind::Direct => "direct",
            Kind::Public { local: false, media: false } => "public",
            Kind::Public { local: false, media: true } => "public:media",
            Kind::Public { local: true, media: false } => "public:local",
            Kind::Public { local: true, media: true } => "public:local:media",
            Kind::Hashtag { local: false, .. } => "hashtag",
            Kind::Hashtag { local: true, .. } => "hashtag:local",
        }
    }

    /// The `stream` of a WebSocket frame: the name, and the tag for a hashtag stream.
    fn frame_stream(&self) -> Vec<String> {
        match self {
            Kind::Hashtag { tag, .. } => vec![self.name().to_owned(), tag.clone()],
            _ => vec![self.name().to_owned()],
        }
    }

    /// The caller's own streams, which need an account.
    fn personal(&self) -> bool {
        matches!(self, Kind::User | Kind::UserNotification | Kind::Direct)
    }

    fn topic(&self, account_id: Option<i64>) -> ApiResult<Topic> {
        Ok(match self {
            Kind::User | Kind::UserNotification | Kind::Direct => {
                Topic::Account(account_id.ok_or_else(ApiError::unauthorized)?)
            }
            Kind::Public { media: false, .. } => Topic::Public,
            Kind::Public { media: true, .. } => Topic::PublicMedia,
            Kind::Hashtag { tag, .. } => Topic::Tag(tag.clone()),
        })
    }

    /// Whether `caller` may open this stream: the personal ones need a user token with a read
    /// scope for what they carry; the public ones are open, and `read:statuses` if a token
    /// came.
    fn authorize(&self, caller: Option<&Caller>) -> ApiResult<()> {
        match (self, caller) {
            (Kind::User | Kind::UserNotification | Kind::Direct, None) => Err(ApiError::unauthorized()),
            (Kind::Direct, Some(c)) => c.require_user("read:statuses"),
            (Kind::User, Some(c)) => {
                c.account_id()?;
                if c.claims.allows("read:statuses") || c.claims.allows("read:notifications") {
                    Ok(())
                } else {
                    Err(ApiError::forbidden_scope())
                }
            }
            (Kind::UserNotification, Some(c)) => c.require_user("read:notifications"),
            (_, Some(c)) => c.require("read:statuses"),
            (_, None) => Ok(()),
        }
    }
}

/// A hashtag as the hashtag timeline takes it, lower-cased (as the feed announces it).
fn parse_tag(tag: Option<&str>) -> ApiResult<String> {
    let name = tag.map(|t| t.trim().trim_start_matches('#')).unwrap_or("");
    if name.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "Missing tag name parameter"));
    }
    if name.chars().count() > 100 || !name.chars().all(|ch| ch.is_alphanumeric() || ch == '_') {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "Invalid tag name"));
    }
    Ok(name.to_lowercase())
}

/// `GET /api/v1/streaming/health`.
pub async fn health() -> &'static str {
    "OK"
}

/// `GET /api/v1/streaming/user`: the caller's notifications and home timeline.
pub async fn user(
    st: State<AppState>,
    ip: Option<Extension<ClientIp>>,
    h: HeaderMap,
    p: Params,
) -> ApiResult<Response> {
    sse(st, ip, h, p, Kind::User).await
}

/// `GET /api/v1/streaming/user/notification`.
pub async fn user_notification(
    st: State<AppState>,
    ip: Option<Extension<ClientIp>>,
    h: HeaderMap,
    p: Params,
) -> ApiResult<Response> {
    sse(st, ip, h, p, Kind::UserNotification).await
}

/// `GET /api/v1/streaming/direct`: the caller's conversations.
pub async fn direct(
    st: State<AppState>,
    ip: Option<Extension<ClientIp>>,
    h: HeaderMap,
    p: Params,
) -> ApiResult<Response> {
    sse(st, ip, h, p, Kind::Direct).await
}

/// `GET /api/v1/streaming/public` (`?only_media=true`: `public:media`).
pub async fn public(
    st: State<AppState>,
    ip: Option<Extension<ClientIp>>,
    h: HeaderMap,
    p: Params,
) -> ApiResult<Response> {
    let media = p.bool("only_media")?.unwrap_or(false);
    sse(st, ip, h, p, Kind::Public { local: false, media }).await
}

/// `GET /api/v1/streaming/public/local` (`?only_media=true`: `public:local:media`).
pub async fn public_local(
    st: State<AppState>,
    ip: Option<Extension<ClientIp>>,
    h: HeaderMap,
    p: Params,
) -> ApiResult<Response> {
    let media = p.bool("only_media")?.unwrap_or(false);
    sse(st, ip, h, p, Kind::Public { local: true, media }).await
}

/// `GET /api/v1/streaming/public/media`.
pub async fn public_media(
    st: State<AppState>,
    ip: Option<Extension<ClientIp>>,
    h: HeaderMap,
    p: Params,
) -> ApiResult<Response> {
    sse(st, ip, h, p, Kind::Public { local: false, media: true }).await
}

/// `GET /api/v1/streaming/hashtag?tag=`.
pub async fn hashtag(
    st: State<AppState>,
    ip: Option<Extension<ClientIp>>,
    h: HeaderMap,
    p: Params,
) -> ApiResult<Response> {
    let kind = Kind::Hashtag { tag: parse_tag(p.str("tag"))?, local: false };
    sse(st, ip, h, p, kind).await
}

/// `GET /api/v1/streaming/hashtag/local?tag=`.
pub async fn hashtag_local(
    st: State<AppState>,
    ip: Option<Extension<ClientIp>>,
    h: HeaderMap,
    p: Params,
) -> ApiResult<Response> {
    let kind = Kind::Hashtag { tag: parse_tag(p.str("tag"))?, local: true };
    sse(st, ip, h, p, kind).await
}

/// The token the request carries, from `Authorization: Bearer`, else `access_token` in the
/// query (what browsers' EventSource can send), else (`websocket`) `Sec-WebSocket-Protocol`.
fn token(headers: &HeaderMap, access_token: Option<&str>, websocket: bool) -> Option<String> {
    let header = |name: http::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    header(http::header::AUTHORIZATION)
        .and_then(agora_kit::jwt::bearer)
        .or(access_token)
        .or_else(|| if websocket { header(http::header::SEC_WEBSOCKET_PROTOCOL) } else { None })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// The caller, None without a token; 401 for a token that does not verify.
async fn caller(st: &AppState, token: Option<String>) -> ApiResult<Option<Caller>> {
    let Some(token) = token else { return Ok(None) };
    let claims = st.verifier.verify(&token).await.map_err(|e| ApiError::from(agora_kit::Error::from(e)))?;
    Ok(Some(Caller { claims, token }))
}

/// What every streaming connection holds: its caller and its place.
struct Conn {
    st: AppState,
    caller: Option<Caller>,
    recheck: tokio::time::Interval,
    _slot: Slot,
}

impl Conn {
    fn open(st: AppState, caller: Option<Caller>, ip: Option<Extension<ClientIp>>) -> ApiResult<Conn> {
        if st.live.is_none() {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Streaming is not available"));
        }
        let owner = match caller.as_ref().and_then(|c| c.claims.account_id()) {
            Some(id) => Owner::Account(id),
            None => Owner::Anonymous(ip.map(|Extension(ClientIp(ip))| ip).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
        };
        let Some(slot) = st.streams.acquire(owner) else {
            metrics::counter!("agora_gateway_streams_refused_total", "reason" => "limit").increment(1);
            return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "Too many open streams for this account"));
        };
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        recheck.reset();
        Ok(Conn { st, caller, recheck, _slot: slot })
    }

    async fn subscribe(&self, kind: &Kind) -> ApiResult<Subscription> {
        kind.authorize(self.caller.as_ref())?;
        let topic = kind.topic(self.caller.as_ref().and_then(|c| c.claims.account_id()))?;
        let live = self
            .st
            .live
            .as_ref()
            .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Streaming is not available"))?;
        live.subscribe(&topic).await.map_err(|e| {
            tracing::warn!(error = %e, "live backplane unavailable");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Streaming is not available")
        })
    }

    /// False once the connection's token no longer verifies (revoked, expired).
    async fn still_valid(&self) -> bool {
        let Some(c) = &self.caller else { return true };
        let ok = self.st.verifier.verify(&c.token).await.is_ok();
        if !ok {
            metrics::counter!("agora_gateway_streams_closed_total", "reason" => "token").increment(1);
        }
        ok
    }

    /// The event as `(event name, payload)` for `kind`'s stream, or None when this stream does
    /// not carry it or its viewer may not see it.
    async fn render(&self, kind: &Kind, recent: &mut VecDeque<i64>, e: LiveEvent) -> Option<(&'static str, Arc<str>)> {
        let caller = self.caller.as_ref();
        let statuses = caller.is_none_or(|c| c.claims.allows("read:statuses"));
        let notifications = caller.is_some_and(|c| c.claims.allows("read:notifications"));
        let public_only = !kind.personal();
        let rendered = match e {
            LiveEvent::Notification(id) if kind.personal() && notifications => {
                self.notification(id).await.map(|n| n.map(|json| ("notification", json)))
            }
            LiveEvent::Notification(_) => return None,
            LiveEvent::Conversation(id) if statuses && matches!(kind, Kind::User | Kind::Direct) => {
                self.conversation(id).await.map(|n| n.map(|json| ("conversation", json)))
            }
            LiveEvent::Conversation(_) => return None,
            _ if !statuses || matches!(kind, Kind::UserNotification | Kind::Direct) => return None,
            LiveEvent::Update(id) if recent.contains(&id) => return None,
            LiveEvent::Update(id) => {
                let found = self.status("update", id, public_only).await;
                if matches!(found, Ok(Some(_))) {
                    if recent.len() == RECENT_UPDATES {
                        recent.pop_front();
                    }
                    recent.push_back(id);
                }
                found.map(|n| n.map(|json| ("update", json)))
            }
            LiveEvent::StatusUpdate(id) => {
                self.status("status.update", id, public_only).await.map(|n| n.map(|json| ("status.update", json)))
            }
            // Mastodon's `delete` payload is the bare id. Nothing is revealed: the id was in
            // the viewer's home, or public.
            LiveEvent::Delete(id) => Ok(Some(("delete", Arc::from(id.to_string())))),
        };
        let stream = kind.name();
        match rendered {
            Ok(Some(out)) => {
                metrics::counter!("agora_gateway_stream_events_total", "stream" => stream, "result" => "sent")
                    .increment(1);
                Some(out)
            }
            Ok(None) => {
                metrics::counter!("agora_gateway_stream_events_total", "stream" => stream, "result" => "hidden")
                    .increment(1);
                None
            }
            Err(e) => {
                metrics::counter!("agora_gateway_stream_events_total", "stream" => stream, "result" => "error")
                    .increment(1);
                tracing::warn!(error = ?e, "could not render a streamed event");
                None
            }
        }
    }

    /// Status `id` for this stream's viewer (`public_only`: as a public stream shows it), as a
    /// JSON string; None when they may not see it.
    async fn status(&self, event: &'static str, id: i64, public_only: bool) -> ApiResult<Option<Arc<str>>> {
        // A finished render of an edit is not reused: the next edit's must be fetched again.
        let reuse = event == "update";
        let st = &self.st;
        let caller = self.caller.as_ref();
        let viewer = caller.and_then(|c| c.claims.account_id());
        let render = match (public_only, caller, viewer) {
            // A public stream's status is the same for all (fetched without a token); each
            // viewer's filter is applied after.
            (true, _, _) => {
                let key = RenderKey { viewer: None, event, id };
                let r = st.streams.renders.get(key, reuse, fetch_status(st, None, id, true)).await;
                match (r?, caller, viewer) {
                    (Some(r), Some(c), Some(v)) if hidden_from(st, c, v, &r.authors).await? => None,
                    (r, _, _) => r,
                }
            }
            // A home's is fetched as its viewer (with the other accounts that want it at the
            // same moment: see `batch`), so the post service decides what they may see, and
            // filtered for them once for all their streams here.
            (false, Some(c), Some(v)) => {
                let key = RenderKey { viewer: Some(v), event, id };
                let make = async move {
                    match st.streams.homes.render(st, event, id, c).await? {
                        Some(r) if hidden_from(st, c, v, &r.authors).await? => Ok(None),
                        r => Ok(r),
                    }
                };
                st.streams.renders.get(key, reuse, make).await?
            }
            (false, _, _) => fetch_status(st, caller, id, false).await?,
        };
        Ok(render.map(|r| r.json))
    }

    /// The viewer's conversation `id` as it is now, as a JSON string. Never reused once rendered:
    /// the next change's must be fetched again.
    async fn conversation(&self, id: i64) -> ApiResult<Option<Arc<str>>> {
        let Some(c) = &self.caller else { return Ok(None) };
        let Some(viewer) = c.claims.account_id() else { return Ok(None) };
        let key = RenderKey { viewer: Some(viewer), event: "conversation", id };
        let render = self.st.streams.renders.get(key, false, fetch_conversation(&self.st, c, id)).await;
        Ok(render?.map(|r| r.json))
    }

    /// Notification `id` as this stream's viewer may see it, as a JSON string.
    async fn notification(&self, id: i64) -> ApiResult<Option<Arc<str>>> {
        let Some(c) = &self.caller else { return Ok(None) };
        let Some(viewer) = c.claims.account_id() else { return Ok(None) };
        let key = RenderKey { viewer: Some(viewer), event: "notification", id };
        let render = self.st.streams.renders.get(key, true, fetch_notification(&self.st, c, id)).await;
        Ok(render?.map(|r| r.json))
    }
}

// ---- Server-Sent Events ------------------------------------------------------------------

struct SseStream {
    conn: Conn,
    kind: Kind,
    subscription: Subscription,
    recent: VecDeque<i64>,
}

#[tracing::instrument(skip_all, fields(stream = kind.name()))]
async fn sse(
    State(st): State<AppState>,
    ip: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    p: Params,
    kind: Kind,
) -> ApiResult<Response> {
    let caller = caller(&st, token(&headers, p.str("access_token"), false)).await?;
    kind.authorize(caller.as_ref())?;
    let conn = Conn::open(st, caller, ip)?;
    let subscription = conn.subscribe(&kind).await?;
    tracing::debug!(stream = kind.name(), "stream opened");
    let state = SseStream { conn, kind, subscription, recent: VecDeque::new() };
    let events = futures::stream::unfold(state, next_sse);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("thump")).into_response())
}

/// The stream's next event, or its end (shutdown, a revoked token, a client too slow, the
/// backplane gone).
async fn next_sse(mut s: SseStream) -> Option<(Result<Event, Infallible>, SseStream)> {
    loop {
        tokio::select! {
            _ = s.conn.st.shutdown.cancelled() => {
                metrics::counter!("agora_gateway_streams_closed_total", "reason" => "shutdown").increment(1);
                return None;
            }
            _ = s.conn.recheck.tick() => {
                if !Box::pin(s.conn.still_valid()).await {
                    return None;
                }
            }
            e = s.subscription.next() => {
                let e = e?;
                if s.subscription.lost() > 0 {
                    // It did not read for a whole buffer: disconnect rather than send a gap.
                    metrics::counter!("agora_gateway_streams_closed_total", "reason" => "slow").increment(1);
                    return None;
                }
                // Boxed: the render's future is large, and kept inline it would be allocated for
                // every open stream while it waits, not only while it renders.
                if let Some((event, json)) = Box::pin(s.conn.render(&s.kind, &mut s.recent, e)).await {
                    return Some((Ok(Event::default().event(event).data(json)), s));
                }
            }
        }
    }
}

// ---- WebSocket ---------------------------------------------------------------------------

/// A subscription as a stream of `(event, lost so far)`.
type Events = Pin<Box<dyn Stream<Item = (LiveEvent, u64)> + Send>>;

fn events(subscription: Subscription) -> Events {
    Box::pin(futures::stream::unfold(subscription, |mut s| async move {
        let e = s.next().await?;
        let lost = s.lost();
        Some(((e, lost), s))
    }))
}

/// A client's message on the socket.
#[derive(serde::Deserialize)]
struct ClientMessage {
    #[serde(rename = "type")]
    kind: String,
    stream: String,
    #[serde(default)]
    tag: Option<String>,
}

/// `GET /api/v1/streaming` (WebSocket).
#[tracing::instrument(skip_all)]
pub async fn websocket(
    State(st): State<AppState>,
    ip: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let upgrade = upgrade.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, &e.body_text()))?;
    let token = token(&headers, query.get("access_token").map(String::as_str), true);
    let caller = caller(&st, token.clone()).await?;
    let first = match query.get("stream") {
        Some(name) => {
            let kind = Kind::parse(name, query.get("tag").map(String::as_str))?;
            kind.authorize(caller.as_ref())?;
            Some(kind)
        }
        None => None,
    };
    let conn = Conn::open(st, caller, ip)?;
    let mut upgrade = upgrade.max_message_size(SOCKET_MAX_MESSAGE).max_frame_size(SOCKET_MAX_MESSAGE);
    // A browser sends the token as the subprotocol and wants it echoed.
    let by_protocol = headers.get(http::header::SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok());
    if let (Some(token), Some(offered)) = (token, by_protocol)
        && offered.trim() == token
    {
        upgrade = upgrade.protocols([token]);
    }
    Ok(upgrade
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| Socket::new(conn, socket).run(first)))
}

struct Socket {
    conn: Conn,
    socket: WebSocket,
    streams: StreamMap<Kind, Events>,
    recent: HashMap<Kind, VecDeque<i64>>,
    allowance: f64,
    refilled: Instant,
    bad: u32,
}

/// Why a socket ends.
enum End {
    Client,
    Close(u16, &'static str, &'static str),
}

impl Socket {
    fn new(conn: Conn, socket: WebSocket) -> Self {
        Socket {
            conn,
            socket,
            streams: StreamMap::new(),
            recent: HashMap::new(),
            allowance: SOCKET_BURST,
            refilled: Instant::now(),
            bad: 0,
        }
    }

    async fn run(mut self, first: Option<Kind>) {
        if let Some(kind) = first
            && let Err(end) = self.subscribe(kind).await
        {
            return self.end(end).await;
        }
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.reset();
        let end = loop {
            tokio::select! {
                _ = self.conn.st.shutdown.cancelled() => {
                    break End::Close(close_code::AWAY, "shutdown", "The server is shutting down; reconnect");
                }
                _ = self.conn.recheck.tick() => {
                    if !Box::pin(self.conn.still_valid()).await {
                        break End::Close(close_code::POLICY, "", "The access token is no longer valid");
                    }
                }
                _ = heartbeat.tick() => {
                    if let Err(end) = self.send(Message::Ping(Default::default())).await {
                        break end;
                    }
                }
                m = self.socket.recv() => {
                    let text = match m {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break End::Client,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Binary(_))) => {
                            if let Err(end) = self.refuse(StatusCode::BAD_REQUEST, "Binary messages are not understood").await {
                                break end;
                            }
                            continue;
                        }
                    };
                    if let Err(end) = self.on_message(text.as_str()).await {
                        break end;
                    }
                }
                Some((kind, (e, lost))) = self.streams.next(), if !self.streams.is_empty() => {
                    if lost > 0 {
                        break End::Close(close_code::POLICY, "slow", "The client fell too far behind");
                    }
                    let mut recent = self.recent.remove(&kind).unwrap_or_default();
                    let rendered = Box::pin(self.conn.render(&kind, &mut recent, e)).await; // boxed: see next_sse
                    self.recent.insert(kind.clone(), recent);
                    if let Some((event, payload)) = rendered {
                        let frame = serde_json::json!({ "stream": kind.frame_stream(), "event": event, "payload": &*payload });
                        if let Err(end) = self.send(Message::Text(frame.to_string().into())).await {
                            break end;
                        }
                    }
                }
            }
        };
        self.end(end).await;
    }

    async fn end(mut self, end: End) {
        let reason = match end {
            End::Client => "client",
            End::Close(code, reason, text) => {
                let frame = CloseFrame { code, reason: text.into() };
                let _ = tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Close(Some(frame)))).await;
                if reason.is_empty() { "token" } else { reason }
            }
        };
        // A revoked token was counted when it was found.
        if reason != "token" {
            metrics::counter!("agora_gateway_streams_closed_total", "reason" => reason).increment(1);
        }
    }

    async fn send(&mut self, m: Message) -> Result<(), End> {
        match tokio::time::timeout(SEND_TIMEOUT, self.socket.send(m)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Client),
            Err(_) => Err(End::Close(close_code::POLICY, "slow", "The client does not read")),
        }
    }

    /// Tells the client what was wrong with its message; too many such messages end the socket.
    async fn refuse(&mut self, status: StatusCode, error: &str) -> Result<(), End> {
        self.bad += 1;
        if self.bad > SOCKET_BAD_MESSAGES {
            return Err(End::Close(close_code::POLICY, "garbage", "Too many messages that were not understood"));
        }
        let frame = serde_json::json!({ "error": error, "status": status.as_u16() });
        self.send(Message::Text(frame.to_string().into())).await
    }

    async fn on_message(&mut self, text: &str) -> Result<(), End> {
        let now = Instant::now();
        self.allowance =
            (self.allowance + now.duration_since(self.refilled).as_secs_f64() * SOCKET_PER_SECOND).min(SOCKET_BURST);
        self.refilled = now;
        if self.allowance < 1.0 {
            return Err(End::Close(close_code::POLICY, "flood", "Too many messages"));
        }
        self.allowance -= 1.0;
        let Ok(m) = serde_json::from_str::<ClientMessage>(text) else {
            return self.refuse(StatusCode::BAD_REQUEST, "Expected a JSON message with a type and a stream").await;
        };
        let kind = match Kind::parse(&m.stream, m.tag.as_deref()) {
            Ok(kind) => kind,
            Err(e) => return self.refuse(e.status, &error_text(&e)).await,
        };
        match m.kind.as_str() {
            "subscribe" => self.subscribe(kind).await,
            "unsubscribe" => {
                self.streams.remove(&kind);
                self.recent.remove(&kind);
                Ok(())
            }
            _ => self.refuse(StatusCode::BAD_REQUEST, "The type must be subscribe or unsubscribe").await,
        }
    }

    /// Adds `kind` to the socket (nothing when it is there already); an error frame when the
    /// caller may not have it.
    async fn subscribe(&mut self, kind: Kind) -> Result<(), End> {
        if self.streams.contains_key(&kind) {
            return Ok(());
        }
        if self.streams.len() >= SUBSCRIPTIONS_PER_SOCKET {
            return self.refuse(StatusCode::TOO_MANY_REQUESTS, "Too many streams on this connection").await;
        }
        match self.conn.subscribe(&kind).await {
            Ok(subscription) => {
                self.streams.insert(kind, events(subscription));
                Ok(())
            }
            Err(e) => {
                let frame = serde_json::json!({ "error": error_text(&e), "status": e.status.as_u16(), "stream": kind.frame_stream() });
                self.send(Message::Text(frame.to_string().into())).await
            }
        }
    }
}

/// The `error` text of an API error, as an error frame carries it.
fn error_text(e: &ApiError) -> String {
    e.body.get("error").and_then(|v| v.as_str()).unwrap_or("Error").to_owned()
}

// ---- entities ----------------------------------------------------------------------------

/// Whether `viewer` blocks, is blocked by or mutes one of `authors` (never themselves).
async fn hidden_from(st: &AppState, c: &Caller, viewer: i64, authors: &[i64]) -> ApiResult<bool> {
    let filter = st.facts.filter_set(viewer, &c.token).await?;
    Ok(authors.iter().any(|&a| filter.hides(viewer, a)))
}

/// The Status entity `id` as `c` would see it in their home (`public_only`: on a public
/// timeline, where only public originals go), with its authors; None when the post service
/// hides it from them or it is not public where only public ones go.
async fn fetch_status(st: &AppState, c: Option<&Caller>, id: i64, public_only: bool) -> Render {
    let page = st
        .post
        .clone()
        .get_statuses(request(
            ppb::GetStatusesRequest { ids: vec![id], with_author_stats: true },
            c.map(|c| c.token.as_str()),
        ))
        .await?
        .into_inner();
    let Some(s) = page.statuses.first() else { return Ok(None) };
    if public_only && (crate::render::visibility_name(s.visibility) != "public" || s.reblog.is_some()) {
        return Ok(None);
    }
    let authors = authors_of(s);
    let stats = page.author_stats.into_iter().map(|a| (a.id, a)).collect();
    let Some(entity) = crate::render::render_statuses(st, &page.statuses, Some(stats)).await?.pop() else {
        return Ok(None);
    };
    Ok(Some(Rendered { json: to_json(&entity)?, authors }))
}

/// The authors a viewer's filter is checked against: the status's, and a reblogged status's.
fn authors_of(s: &ppb::Status) -> Vec<i64> {
    std::iter::once(s.account_id).chain(s.reblog.as_ref().map(|r| r.account_id)).collect()
}

/// The Notification entity `id` as the caller may see it, as a JSON string; None when the
/// caller may not (someone else's, suppressed, or about a status hidden from them).
async fn fetch_notification(st: &AppState, c: &Caller, id: i64) -> Render {
    let got =
        st.notification.clone().get_notification(request(npb::NotificationIdRequest { id }, Some(&c.token))).await;
    let n = match got {
        Ok(n) => n.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
        Err(s) => return Err(s.into()),
    };
    let Some(entity) = super::notifications::hydrate(st, c, vec![n]).await?.pop() else { return Ok(None) };
    Ok(Some(Rendered { json: to_json(&entity)?, authors: Vec::new() }))
}

async fn fetch_conversation(st: &AppState, c: &Caller, id: i64) -> Render {
    let got = st.feed.clone().get_conversation(request(fpb::ConversationRequest { id }, Some(&c.token))).await;
    let found = match got {
        Ok(found) => found.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
        Err(s) => return Err(s.into()),
    };
    let Some(entity) = super::conversations::one(st, c, found).await? else { return Ok(None) };
    Ok(Some(Rendered { json: to_json(&entity)?, authors: Vec::new() }))
}

fn to_json(entity: &impl serde::Serialize) -> ApiResult<Arc<str>> {
    let json =
        serde_json::to_string(entity).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
    Ok(json.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_round_trip_and_unknown_ones_are_refused() {
        for name in
            ["user", "user:notification", "direct", "public", "public:media", "public:local", "public:local:media"]
        {
            assert_eq!(Kind::parse(name, None).unwrap().name(), name);
        }
        let tag = Kind::parse("hashtag:local", Some("#Rust")).unwrap();
        assert_eq!(tag, Kind::Hashtag { tag: "rust".into(), local: true });
        assert_eq!(tag.frame_stream(), ["hashtag:local", "rust"]);
        for (name, tag) in [("list", None), ("direct:x", None), ("hashtag", None), ("hashtag", Some("a b")), ("", None)]
        {
            assert_eq!(Kind::parse(name, tag).unwrap_err().status, StatusCode::BAD_REQUEST, "{name} {tag:?}");
        }
    }
}
