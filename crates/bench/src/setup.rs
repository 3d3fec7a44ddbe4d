//! Setup through the public API, never measured: an OAuth application, an app token, and
//! throw-away accounts with their bearer tokens.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use rand::Rng;
use rand::SeedableRng;
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::SmallRng;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::run::{Target, classify};
use crate::workload::Workload;

const SCOPES: &str = "read write follow push";
const OOB: &str = "urn:ietf:wg:oauth:2.0:oob";
/// Registrations in flight at once; each costs the server an argon2 hash.
const REGISTRATION_CONCURRENCY: usize = 4;

pub const RATE_LIMIT_HINT: &str = "the server is rate-limiting the benchmark (HTTP 429). Restart it with \
     AGORA_GATEWAY_RATE_LIMIT_IP=off AGORA_GATEWAY_RATE_LIMIT_ACCOUNT=off AGORA_GATEWAY_RATE_LIMIT_REGISTRATION=off \
     (or, for sign-ups only, AGORA_GATEWAY_TRUSTED_PROXIES=127.0.0.1/32 and --spoof-forwarded-for)";

/// A registered account and its bearer token.
#[derive(Debug, Clone)]
pub struct User {
    pub username: String,
    pub token: Arc<str>,
}

pub struct Setup {
    target: Target,
    users: u32,
    spoof_forwarded_for: bool,
}

impl Setup {
    pub fn new(target: Target, users: u32, spoof_forwarded_for: bool) -> Self {
        Self { target, users, spoof_forwarded_for }
    }

    /// Registers `--users` accounts and returns their tokens.
    pub async fn register_users(&self) -> anyhow::Result<Vec<User>> {
        let started = Instant::now();
        let app_token = self.app_token().await?;
        eprintln!("setup: registering {} account(s)...", self.users);

        // Usernames come from the OS-seeded generator even under --seed: reruns against the
        // same data directory must not collide with earlier accounts.
        let mut rng = SmallRng::from_os_rng();
        let xff_base: u32 = rng.random_range(0..(1 << 17));
        let mut pending: Vec<(u32, String, String)> = (0..self.users)
            .map(|i| {
                let suffix = Alphanumeric.sample_string(&mut rng, 12).to_ascii_lowercase();
                let password = Alphanumeric.sample_string(&mut rng, 20);
                (i, format!("bench_{suffix}"), password)
            })
            .collect();
        pending.reverse();

        let mut tasks: JoinSet<anyhow::Result<(u32, User)>> = JoinSet::new();
        let mut users: Vec<Option<User>> = vec![None; self.users as usize];
        loop {
            while tasks.len() < REGISTRATION_CONCURRENCY {
                let Some((i, username, password)) = pending.pop() else { break };
                // 198.18.0.0/15 is reserved for benchmarking (RFC 2544): distinct and never routed.
                let xff = self
                    .spoof_forwarded_for
                    .then(|| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + ((xff_base + i) % (1 << 17))));
                let target = self.target.clone();
                let app_token = app_token.clone();
                tasks.spawn(async move {
                    let user = register(&target, &app_token, username, &password, xff).await?;
                    Ok((i, user))
                });
            }
            let Some(joined) = tasks.join_next().await else { break };
            let (i, user) = joined.context("registration task failed")??;
            if let Some(slot) = users.get_mut(i as usize) {
                *slot = Some(user);
            }
        }
        let users: Vec<User> = users.into_iter().flatten().collect();
        if users.len() != self.users as usize || users.is_empty() {
            bail!("registered {} of {} accounts", users.len(), self.users);
        }
        eprintln!(
            "setup: {} account(s) ready in {:.1}s (e.g. @{})",
            users.len(),
            started.elapsed().as_secs_f64(),
            users[0].username
        );
        Ok(users)
    }

    /// `POST /api/v1/apps`, then a client-credentials token for it.
    async fn app_token(&self) -> anyhow::Result<String> {
        let t = &self.target;
        let app = expect_json(
            t.client
                .post(t.url("/api/v1/apps"))
                .form(&[("client_name", "agora-bench"), ("scopes", SCOPES), ("redirect_uris", OOB)])
                .send()
                .await,
            "POST /api/v1/apps",
        )
        .await?;
        let client_id = string_field(&app, "client_id", "POST /api/v1/apps")?;
        let client_secret = string_field(&app, "client_secret", "POST /api/v1/apps")?;
        let token = expect_json(
            t.client
                .post(t.url("/oauth/token"))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.as_str()),
                    ("scope", SCOPES),
                ])
                .send()
                .await,
            "POST /oauth/token",
        )
        .await?;
        string_field(&token, "access_token", "POST /oauth/token")
    }

    /// Sends one operation before measuring, so a misconfigured server fails loudly here
    /// instead of producing a report made of errors.
    pub async fn smoke_test(&self, workload: &dyn Workload) -> anyhow::Result<()> {
        let mut rng = SmallRng::from_os_rng();
        let op = workload.request(&mut rng);
        let what = format!("{} {}", op.method, op.path);
        let resp = self.target.build(op).send().await.map_err(|e| anyhow!("{what}: {} ({e})", classify(&e)))?;
        let status = resp.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            bail!("{what}: {RATE_LIMIT_HINT}");
        }
        if !workload.is_success(status) {
            let body = resp.text().await.unwrap_or_default();
            bail!("{what}: smoke test got HTTP {status}: {}", truncate(&body));
        }
        Ok(())
    }
}

async fn register(
    target: &Target,
    app_token: &str,
    username: String,
    password: &str,
    xff: Option<Ipv4Addr>,
) -> anyhow::Result<User> {
    let email = format!("{username}@bench.example.com");
    let mut req = target.client.post(target.url("/api/v1/accounts")).bearer_auth(app_token).form(&[
        ("username", username.as_str()),
        ("email", email.as_str()),
        ("password", password),
        ("agreement", "1"),
    ]);
    if let Some(ip) = xff {
        req = req.header("x-forwarded-for", ip.to_string());
    }
    let token = expect_json(req.send().await, "POST /api/v1/accounts").await?;
    let access = string_field(&token, "access_token", "POST /api/v1/accounts")?;
    Ok(User { username, token: Arc::from(access.as_str()) })
}

async fn expect_json(sent: reqwest::Result<reqwest::Response>, what: &str) -> anyhow::Result<Value> {
    let resp = sent.map_err(|e| anyhow!("{what}: {} ({e})", classify(&e)))?;
    let status = resp.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let retry = retry.map(|r| format!(" (Retry-After: {r}s)")).unwrap_or_default();
        bail!("{what}: {RATE_LIMIT_HINT}{retry}");
    }
    let body = resp.text().await.map_err(|e| anyhow!("{what}: reading the body: {e}"))?;
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {}", truncate(&body));
    }
    serde_json::from_str(&body).with_context(|| format!("{what}: response is not JSON: {}", truncate(&body)))
}

fn string_field(v: &Value, key: &str, what: &str) -> anyhow::Result<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{what}: response has no {key:?}"))
}

fn truncate(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}
