//! Middleware at the edge: client address (behind trusted proxies), rate limits with Mastodon's
//! headers, request metrics and spans, request ids.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method};
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::auth::{Caller, MaybeCaller};
use crate::error::ApiError;
use crate::ratelimit::{Decision, Limit};
use crate::state::AppState;

/// The client's address: the peer, or — when the peer is a trusted proxy — the right-most
/// address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    while let Some(ip) = chain.pop() {
        if !is_trusted(&ip) {
            return ip;
        }
    }
    peer
}

fn peer_of(req: &Request) -> IpAddr {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

fn rate_headers(headers: &mut HeaderMap, d: &Decision) {
    let reset = agora_kit::time::rfc3339_ms(d.reset_at_ms);
    for (k, v) in [
        ("x-ratelimit-limit", d.limit.to_string()),
        ("x-ratelimit-remaining", d.remaining.to_string()),
        ("x-ratelimit-reset", reset),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    }
}

/// Counts the request against the caller's limits and answers 429 when one is spent.
/// Verifies the bearer token once and leaves the result for the handlers.
pub async fn rate_limit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let ip = client_ip(peer_of(&req), req.headers(), &state.config.trusted_proxies);
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(agora_kit::jwt::bearer)
        .map(str::to_owned);
    let caller = match token {
        Some(t) => state.verifier.verify(&t).await.ok().map(|claims| Caller { claims, token: t }),
        None => None,
    };
    let path = req.uri().path().trim_end_matches('/');
    let post = req.method() == Method::POST;
    let sign_in = post && matches!(path, "/oauth/token" | "/oauth/authorize");
    let sign_up = post && path == "/api/v1/accounts";
    let mut checks: Vec<(String, Limit)> = Vec::with_capacity(3);
    let account = caller.as_ref().and_then(|c| c.claims.account_id());
    if let (Some(id), Some(l)) = (account, state.config.limit_account) {
        checks.push((format!("acct:{id}"), l));
    }
    // Sign-in and sign-up always count against the client's address, whatever token the
    // request carries: a bearer header must not buy a way around the per-address budget.
    if (account.is_none() || sign_in || sign_up || path == "/oauth/revoke")
        && let Some(l) = state.config.limit_ip
    {
        checks.push((format!("ip:{ip}"), l));
    }
    if sign_in && let Some(l) = state.config.limit_sign_in {
        checks.push((format!("signin:{ip}"), l));
    }
    if sign_up && let Some(l) = state.config.limit_registration {
        checks.push((format!("signup:{ip}"), l));
    }
    let mut shown: Option<Decision> = None;
    for (key, limit) in &checks {
        match state.limiter.hit(key, *limit).await {
            Ok(d) => {
                if !d.allowed {
                    metrics::counter!("agora_gateway_rate_limited_total", "kind" => key.split(':').next().unwrap_or("").to_owned())
                        .increment(1);
                    let retry = (d.retry_after_ms.max(0) as u64).div_ceil(1000).max(1);
                    let mut resp = ApiError::rate_limited(retry).into_response();
                    rate_headers(resp.headers_mut(), &d);
                    return resp;
                }
                if shown.is_none_or(|s| d.remaining < s.remaining) {
                    shown = Some(d);
                }
            }
            Err(e) => {
                // Fail open: a limiter outage must not take the API down with it.
                metrics::counter!("agora_gateway_rate_limiter_errors_total").increment(1);
                tracing::warn!(error = %e, "rate limiter unavailable; request allowed");
            }
        }
    }
    req.extensions_mut().insert(MaybeCaller(caller));
    req.extensions_mut().insert(ClientIp(ip));
    let mut resp = next.run(req).await;
    if let Some(d) = shown {
        rate_headers(resp.headers_mut(), &d);
    }
    resp
}

/// The client address as the rate limiter saw it.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// RED metrics and a span per request, joined to the caller's trace when it sent one.
pub async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let span = tracing::info_span!("http", http.method = %method, http.route = %route, request_id = %request_id, http.status = tracing::field::Empty, otel.kind = "server");
    agora_kit::telemetry::set_parent_from_headers(&span, req.headers());
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let status = resp.status().as_u16();
    span.record("http.status", status);
    if status >= 500 {
        tracing::warn!(parent: &span, status, "request failed");
    }
    agora_kit::metrics::record_http(&route, &method, status, started);
    resp
}

/// Request ids: random 16-hex-digit values unless the client sent one.
#[derive(Clone, Copy, Default)]
pub struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<RequestId> {
        let v: u64 = rand::random();
        HeaderValue::from_str(&format!("{v:016x}")).ok().map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["127.0.0.1/32".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.1.2.3"));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(client_ip(local, &h, &trusted), "198.51.100.7".parse::<IpAddr>().unwrap());
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(stranger, &h, &trusted), stranger, "untrusted peers cannot spoof");
        assert_eq!(client_ip(local, &HeaderMap::new(), &trusted), local);
    }
}
