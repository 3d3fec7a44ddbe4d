//! Pushing notifications to subscribed clients: RFC 8030 requests signed with the server's
//! VAPID key (RFC 8292), the payload encrypted for the subscription (RFC 8291 `aes128gcm`, or
//! the legacy `aesgcm` Mastodon clients decrypt) by the `web-push` crate.
//!
//! A notification is pushed after it commits, off the event consumer's path: it goes on a
//! bounded queue (a full queue drops it, counted — the notification itself is stored, so the
//! client still sees it when it opens), and deliveries run on tasks bounded by a semaphore.
//! Before a push the store is asked for the notification as its recipient may see it (what was
//! not written, or is suppressed, is not pushed), the subscription's alerts and policy are
//! applied, and its token is checked: a revoked or expired session ends the subscription, as
//! does a key rotation. A 404 or 410 from the push service ends it too; 429, 5xx and network
//! errors are retried with backoff (honouring Retry-After), other refusals are given up.
//!
//! Every request goes only to public addresses: the HTTP client's resolver drops private,
//! loopback and link-local answers (so a host that later resolves inward is not followed), IP
//! literals are checked the same way, and redirects are not followed — unless private
//! endpoints are allowed by the operator (`AGORA_PUSH_ALLOW_PRIVATE_ENDPOINTS`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_kit::grpc::{Channel, request};
use agora_kit::jwt::{Verifier, VerifyError};
use agora_proto::graph::v1 as gpb;
use agora_proto::graph::v1::graph_service_client::GraphServiceClient;
use agora_proto::post::v1 as ppb;
use agora_proto::post::v1::post_service_client::PostServiceClient;
use agora_proto::user::v1 as upb;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument as _;
use web_push::{ContentEncoding, SubscriptionInfo, Urgency, VapidSignatureBuilder, WebPushMessageBuilder};

use super::{Policy, PushSubscription, VapidKey, is_public};
use crate::domain::Notification;
use crate::store::{NotificationStore, StoreError, StoreResult};

/// Notifications waiting to be pushed, at most.
const QUEUE: usize = 10_000;
/// Deliveries in flight at once.
const IN_FLIGHT: usize = 64;
/// Attempts per push: the first and the retries after 1, 5 and 25 s (or the Retry-After asked,
/// up to a minute).
const ATTEMPTS: u32 = 4;
/// How long a push service keeps an undelivered push (Mastodon's value: two days).
const TTL_SECONDS: u32 = 48 * 3600;
/// How long the VAPID key is used before it is read again (a rotation takes effect within it).
const KEY_REFRESH: Duration = Duration::from_secs(30);
/// Characters of a status's text in a push body.
const BODY_CHARS: usize = 140;

/// How the pusher is set up.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Admit http endpoints and private addresses (tests; a push service inside the network).
    pub allow_private: bool,
    /// The VAPID `sub` claim: how a push service reaches the operator (`mailto:` or https URL).
    pub contact: String,
    /// The public base URL, for the default avatar.
    pub public_url: String,
}

/// What became of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Sent,
    /// The push service says the subscription is gone (404, 410).
    Gone,
    /// Refused for good (another 4xx).
    Rejected,
    /// Still failing after every attempt.
    Failed,
}

pub struct Pusher {
    store: Arc<dyn NotificationStore>,
    verifier: Arc<Verifier>,
    user: UserServiceClient<Channel>,
    post: PostServiceClient<Channel>,
    graph: GraphServiceClient<Channel>,
    http: reqwest::Client,
    config: PushConfig,
    key: Mutex<Option<(VapidKey, Instant)>>,
    queue: mpsc::Sender<Notification>,
}

/// The resolver every push request uses: public answers only (unless allowed).
struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found.into_iter().filter(|a| allow_private || is_public(a.ip())).collect();
            if kept.is_empty() {
                return Err("the push endpoint resolves to no public address".into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

impl Pusher {
    /// The pusher with its queue and dispatcher running until `shutdown`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        store: Arc<dyn NotificationStore>,
        verifier: Arc<Verifier>,
        user: UserServiceClient<Channel>,
        post: PostServiceClient<Channel>,
        graph: GraphServiceClient<Channel>,
        config: PushConfig,
        shutdown: agora_kit::Shutdown,
    ) -> anyhow::Result<Arc<Self>> {
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(PublicOnly { allow_private: config.allow_private }))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("Agora/", env!("CARGO_PKG_VERSION"), " (web push)"))
            .build()?;
        let (tx, mut rx) = mpsc::channel::<Notification>(QUEUE);
        let pusher =
            Arc::new(Self { store, verifier, user, post, graph, http, config, key: Mutex::new(None), queue: tx });
        let weak = Arc::downgrade(&pusher);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(IN_FLIGHT));
            loop {
                let n = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = rx.recv() => match n { Some(n) => n, None => return },
                };
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
                let Some(pusher) = weak.upgrade() else { return };
                let stop = shutdown.clone();
                let span = tracing::info_span!("push", notification.id = n.id, recipient = n.recipient_id);
                tokio::spawn(
                    async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = pusher.push(n) => {}
                        }
                        drop(slot);
                    }
                    .instrument(span),
                );
            }
        });
        Ok(pusher)
    }

    pub fn allow_private(&self) -> bool {
        self.config.allow_private
    }

    /// Queues a committed notification for pushing; a full queue drops it (counted).
    pub fn enqueue(&self, n: Notification) {
        if self.queue.try_send(n).is_err() {
            metrics::counter!("agora_push_dropped_total").increment(1);
        }
    }

    /// The VAPID key in force: made (once, whoever is first) when there is none.
    pub async fn vapid_key(&self) -> StoreResult<VapidKey> {
        if let Some((key, at)) = self.key.lock().clone()
            && at.elapsed() < KEY_REFRESH
        {
            return Ok(key);
        }
        let key = match self.store.vapid_key().await? {
            Some(k) => k,
            None => {
                let made = VapidKey::generate(agora_kit::time::now_ms()).map_err(StoreError::Unavailable)?;
                self.store.put_vapid_key(&made, false).await?
            }
        };
        *self.key.lock() = Some((key.clone(), Instant::now()));
        Ok(key)
    }

    /// Pushes `n` to each of its recipient's subscriptions that wants it.
    async fn push(&self, n: Notification) {
        let started = Instant::now();
        let subs = match self.store.push_subscriptions(n.recipient_id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "could not read push subscriptions");
                return;
            }
        };
        if subs.is_empty() {
            return;
        }
        // Only what the store wrote, as the recipient may see it now.
        match self.store.get(n.recipient_id, n.id, agora_kit::time::now_ms()).await {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the notification to push");
                return;
            }
        }
        let key = match self.vapid_key().await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "no VAPID key: nothing pushed");
                return;
            }
        };
        for sub in subs {
            let result = self.push_to(&n, &sub, &key).await;
            metrics::counter!("agora_push_deliveries_total", "result" => result).increment(1);
        }
        metrics::histogram!("agora_push_seconds").record(started.elapsed().as_secs_f64());
    }

    /// One subscription's push; the metric label of what happened.
    async fn push_to(&self, n: &Notification, sub: &PushSubscription, key: &VapidKey) -> &'static str {
        if !sub.wants(n.kind.as_str()) {
            return "not_wanted";
        }
        if sub.server_key != key.public_key {
            // Made with a key that was rotated away: the push service would refuse it.
            self.forget(sub).await;
            return "stale_key";
        }
        match self.verifier.verify(&sub.access_token).await {
            Ok(_) => {}
            Err(VerifyError::Revoked | VerifyError::Expired) => {
                self.forget(sub).await;
                return "session_ended";
            }
            Err(_) => return "token_unverified",
        }
        if !self.policy_allows(n, sub).await {
            return "policy";
        }
        let payload = self.payload(n, sub).await;
        match self.send(sub, key, payload.as_bytes()).await {
            Outcome::Sent => "sent",
            Outcome::Gone => {
                self.forget(sub).await;
                "gone"
            }
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }

    async fn forget(&self, sub: &PushSubscription) {
        if let Err(e) = self.store.delete_push_subscription(sub.account_id, sub.session_id).await {
            tracing::warn!(error = %e, "could not delete an ended push subscription");
        }
    }

    async fn policy_allows(&self, n: &Notification, sub: &PushSubscription) -> bool {
        let want_following = match sub.policy {
            Policy::All => return true,
            Policy::None => return false,
            Policy::Followed => true,
            Policy::Follower => false,
        };
        let asked = self
            .graph
            .clone()
            .get_relationships(request(
                gpb::GetRelationshipsRequest { ids: vec![n.account_id] },
                Some(&sub.access_token),
            ))
            .await;
        match asked {
            Ok(r) => r
                .into_inner()
                .relationships
                .first()
                .is_some_and(|rel| if want_following { rel.following } else { rel.followed_by }),
            Err(e) => {
                tracing::debug!(error = %e, "relationship unknown: the policy is not met");
                false
            }
        }
    }

    /// Mastodon's push payload: the token, the notification, and a title and body to show.
    async fn payload(&self, n: &Notification, sub: &PushSubscription) -> String {
        let actor = self
            .user
            .clone()
            .batch_get_accounts(request(upb::BatchGetAccountsRequest { ids: vec![n.account_id] }, None))
            .await
            .ok()
            .and_then(|r| r.into_inner().accounts.into_iter().next());
        let name = actor
            .as_ref()
            .map(|a| if a.display_name.trim().is_empty() { a.username.clone() } else { a.display_name.clone() })
            .unwrap_or_else(|| "Someone".to_owned());
        let icon = actor
            .as_ref()
            .map(|a| a.avatar_url.clone())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("{}/avatars/original/missing.png", self.config.public_url));
        let body = if n.status_id == 0 {
            actor.as_ref().map(|a| format!("@{}", a.username)).unwrap_or_default()
        } else {
            let got = self
                .post
                .clone()
                .get_statuses(request(
                    ppb::GetStatusesRequest { ids: vec![n.status_id], with_author_stats: false },
                    Some(&sub.access_token),
                ))
                .await;
            got.ok()
                .and_then(|r| r.into_inner().statuses.into_iter().next())
                .map(|s| {
                    let s = match s {
                        ppb::Status { reblog: Some(original), .. } => *original,
                        s => s,
                    };
                    if s.spoiler_text.is_empty() { plain_text(&s.content, BODY_CHARS) } else { s.spoiler_text }
                })
                .unwrap_or_default()
        };
        serde_json::json!({
            "access_token": sub.access_token,
            "preferred_locale": "en",
            "notification_id": n.id.to_string(),
            "notification_type": n.kind.as_str(),
            "icon": icon,
            "title": title(n.kind.as_str(), &name),
            "body": body,
        })
        .to_string()
    }

    /// Encrypts and posts, retrying what may pass later.
    async fn send(&self, sub: &PushSubscription, key: &VapidKey, payload: &[u8]) -> Outcome {
        let url = match url::Url::parse(&sub.endpoint) {
            Ok(u) => u,
            Err(_) => return Outcome::Rejected,
        };
        if !self.config.allow_private
            && let Some(host) = url.host_str()
            && let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse()
            && !is_public(ip)
        {
            return Outcome::Rejected;
        }
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            let req = match self.request(sub, key, payload) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "could not build a push");
                    return Outcome::Rejected;
                }
            };
            let retry_after = match req.send().await {
                Ok(r) if r.status().is_success() => return Outcome::Sent,
                Ok(r) if matches!(r.status().as_u16(), 404 | 410) => return Outcome::Gone,
                Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s.min(60))),
                Ok(r) => {
                    tracing::info!(status = r.status().as_u16(), "the push service refused a push");
                    return Outcome::Rejected;
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "push request failed");
                    None
                }
            };
            if attempt == ATTEMPTS {
                break;
            }
            metrics::counter!("agora_push_retries_total").increment(1);
            tokio::time::sleep(retry_after.unwrap_or(delay)).await;
            delay *= 5;
        }
        Outcome::Failed
    }

    fn request(
        &self,
        sub: &PushSubscription,
        key: &VapidKey,
        payload: &[u8],
    ) -> Result<reqwest::RequestBuilder, String> {
        let info = SubscriptionInfo::new(sub.endpoint.as_str(), sub.p256dh.as_str(), sub.auth.as_str());
        let encoding = if sub.standard { ContentEncoding::Aes128Gcm } else { ContentEncoding::AesGcm };
        let mut message = WebPushMessageBuilder::new(&info);
        message.set_payload(encoding, payload);
        message.set_ttl(TTL_SECONDS);
        message.set_urgency(Urgency::Normal);
        let mut signature = VapidSignatureBuilder::from_base64(&key.private_key, &info).map_err(|e| e.to_string())?;
        signature.add_claim("sub", self.config.contact.as_str());
        message.set_vapid_signature(signature.build().map_err(|e| e.to_string())?);
        let built = message.build().map_err(|e| e.to_string())?;
        let body = built.payload.ok_or("no payload")?;
        let mut req = self
            .http
            .post(sub.endpoint.as_str())
            .header("TTL", TTL_SECONDS.to_string())
            .header("Urgency", "normal")
            .header(reqwest::header::CONTENT_ENCODING, encoding.to_str())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
        for (name, value) in body.crypto_headers {
            // The record size is the default (4096); Mastodon clients read the salt to the end
            // of the header, so it is left out.
            let value = if name == "Encryption" { value.trim_end_matches(";rs=4096").to_owned() } else { value };
            req = req.header(name, value);
        }
        Ok(req.body(body.content))
    }
}

/// What the push says happened, in the words Mastodon uses.
fn title(kind: &str, name: &str) -> String {
    match kind {
        "mention" => format!("{name} mentioned you"),
        "status" => format!("{name} just posted"),
        "reblog" => format!("{name} boosted your post"),
        "follow" => format!("{name} followed you"),
        "follow_request" => format!("{name} has requested to follow you"),
        "favourite" => format!("{name} favourited your post"),
        "update" => format!("{name} edited a post"),
        _ => format!("New notification from {name}"),
    }
}

/// A status's HTML as text: tags dropped, paragraphs and line breaks as spaces, the entities
/// our renderer writes decoded, cut to `max` characters.
pub fn plain_text(html: &str, max: usize) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for ch in html.replace("</p><p>", " ").replace("<br>", " ").replace("<br/>", " ").chars() {
        match ch {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let text = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&");
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_html_becomes_short_text() {
        assert_eq!(plain_text("<p>Hi &amp; <a href=\"x\">@bob</a></p><p>second&lt;3</p>", 140), "Hi & @bob second<3");
        let long = format!("<p>{}</p>", "a".repeat(200));
        let cut = plain_text(&long, 10);
        assert_eq!(cut.chars().count(), 10);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn titles_name_the_actor() {
        assert_eq!(title("mention", "Bob"), "Bob mentioned you");
        assert_eq!(title("agora.reaction", "Bob"), "New notification from Bob");
    }
}
