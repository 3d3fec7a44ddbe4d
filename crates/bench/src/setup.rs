//! Setup through the public API, never measured: an OAuth application, an app token, throw-away
//! accounts with their bearer tokens and ids, then (for the socialNetwork workloads) a follow
//! graph and a few statuses per account so timelines are not empty.

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use rand::Rng;
use rand::SeedableRng;
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::SmallRng;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::progress::SetupBar;
use crate::run::{Target, classify};
use crate::social::FollowGraph;
use crate::workload::Workload;

const SCOPES: &str = "read write follow push";
const OOB: &str = "urn:ietf:wg:oauth:2.0:oob";
/// Registrations in flight at once; each costs the server an argon2 hash.
const REGISTRATION_CONCURRENCY: usize = 4;
/// Follows and seed posts may fail this often (a flaky request among 100k) before setup gives up.
const TOLERATED_FAILURES: f64 = 0.01;

pub const RATE_LIMIT_HINT: &str = "the server is rate-limiting the benchmark (HTTP 429). Restart it with \
     AGORA_GATEWAY_RATE_LIMIT_IP=100000000/1 AGORA_GATEWAY_RATE_LIMIT_ACCOUNT=100000000/1 \
     AGORA_GATEWAY_RATE_LIMIT_REGISTRATION=100000000/1 AGORA_GATEWAY_RATE_LIMIT_SIGN_IN=100000000/1 (or =off) \
     (or, for sign-ups only, AGORA_GATEWAY_TRUSTED_PROXIES=127.0.0.1/32 and --spoof-forwarded-for)";

/// A registered account, its id and its bearer token.
#[derive(Debug, Clone)]
pub struct User {
    pub username: String,
    pub id: String,
    pub token: Arc<str>,
}

pub struct Setup {
    target: Target,
    users: u32,
    spoof_forwarded_for: bool,
    /// Requests in flight at once for follows and seed posts.
    pub concurrency: usize,
    pub progress: bool,
}

impl Setup {
    pub fn new(target: Target, users: u32, spoof_forwarded_for: bool) -> Self {
        Self { target, users, spoof_forwarded_for, concurrency: 32, progress: true }
    }

    /// Registers `--users` accounts and returns their tokens and ids.
    pub async fn register_users(&self) -> anyhow::Result<Vec<User>> {
        let app_token = self.app_token().await?;

        // Usernames come from the OS-seeded generator even under --seed: reruns against the
        // same data directory must not collide with earlier accounts.
        let mut rng = SmallRng::from_os_rng();
        let xff_base: u32 = rng.random_range(0..(1 << 17));
        let pending: Vec<(u32, String, String)> = (0..self.users)
            .map(|i| {
                let suffix = Alphanumeric.sample_string(&mut rng, 12).to_ascii_lowercase();
                let password = Alphanumeric.sample_string(&mut rng, 20);
                (i, format!("bench_{suffix}"), password)
            })
            .collect();
        let (target, spoof) = (self.target.clone(), self.spoof_forwarded_for);
        let users = self
            .run_all("setup: accounts", pending, REGISTRATION_CONCURRENCY, 0.0, move |(i, username, password)| {
                // 198.18.0.0/15 is reserved for benchmarking (RFC 2544): distinct and never routed.
                let xff = spoof
                    .then(|| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + ((xff_base + i) % (1 << 17))));
                let (target, app_token) = (target.clone(), app_token.clone());
                async move { register(&target, &app_token, username, &password, xff).await }
            })
            .await?;
        let users: Vec<User> = users.into_iter().flatten().collect();
        if users.len() != self.users as usize || users.is_empty() {
            bail!("registered {} of {} accounts", users.len(), self.users);
        }
        eprintln!("setup: e.g. @{} (id {})", users[0].username, users[0].id);
        Ok(users)
    }

    /// Creates every edge of `graph` (`POST /api/v1/accounts/:id/follow` as the follower).
    pub async fn follow_graph(&self, users: &[User], graph: &FollowGraph) -> anyhow::Result<()> {
        let edges: Vec<(Arc<str>, String)> = graph
            .follows
            .iter()
            .zip(users)
            .flat_map(|(out, follower)| {
                out.iter().filter_map(|&j| users.get(j as usize)).map(|f| (Arc::clone(&follower.token), f.id.clone()))
            })
            .collect();
        if edges.is_empty() {
            return Ok(());
        }
        let target = self.target.clone();
        self.run_all("setup: follows", edges, self.concurrency, TOLERATED_FAILURES, move |(token, id)| {
            let target = target.clone();
            async move {
                let path = format!("/api/v1/accounts/{id}/follow");
                let req = target.client.post(target.url(&path)).bearer_auth(&*token);
                expect_json(req.send().await, "POST /api/v1/accounts/:id/follow").await.map(|_| ())
            }
        })
        .await?;
        Ok(())
    }

    /// `reader` follows `author`.
    pub async fn follow(&self, reader: &User, author: &User) -> anyhow::Result<()> {
        let req = self
            .target
            .client
            .post(self.target.url(&format!("/api/v1/accounts/{}/follow", author.id)))
            .bearer_auth(&*reader.token);
        expect_json(req.send().await, "POST /api/v1/accounts/:id/follow").await.map(|_| ())
    }

    /// Posts `per_user` public statuses as every user; returns their ids, per user, oldest first.
    pub async fn seed_posts(&self, users: &[User], per_user: u32) -> anyhow::Result<Vec<Vec<String>>> {
        let jobs: Vec<(usize, u32, Arc<str>)> = users
            .iter()
            .enumerate()
            .flat_map(|(i, u)| (0..per_user).map(move |k| (i, k, Arc::clone(&u.token))))
            .collect();
        let mut by_user = vec![Vec::new(); users.len()];
        if jobs.is_empty() {
            return Ok(by_user);
        }
        let target = self.target.clone();
        let ids = self
            .run_all("setup: posts", jobs.clone(), self.concurrency, TOLERATED_FAILURES, move |(_, k, token)| {
                let target = target.clone();
                async move { post_status(&target, &token, &format!("agora-bench seed status {k}")).await }
            })
            .await?;
        for ((i, _, _), id) in jobs.into_iter().zip(ids) {
            if let (Some(list), Some(id)) = (by_user.get_mut(i), id) {
                list.push(id);
            }
        }
        Ok(by_user)
    }

    /// Waits until fan-out has caught up with setup: until, for every `(reader, status_id)` pair
    /// (each author's newest seeded status and one of its followers), the reader's home holds
    /// the status. The newest event of every bus partition is some author's newest status, and a
    /// partition is consumed in order, so once they all show, the backlog is gone; one probe
    /// alone can show while other partitions still lag. Measuring while the feed still works
    /// through thousands of seed posts would measure setup, not the workload. Gives up (with a
    /// warning) after `limit`.
    pub async fn settle(&self, pairs: Vec<(User, String)>, limit: Duration) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        eprintln!("setup: waiting for fan-out of the seed posts to settle ({} authors)", pairs.len());
        let mut pending = pairs;
        while started.elapsed() < limit {
            let mut checks: JoinSet<anyhow::Result<Option<(User, String)>>> = JoinSet::new();
            for (reader, id) in std::mem::take(&mut pending) {
                let target = self.target.clone();
                checks.spawn(async move {
                    // The newest home entry older than id + 1 is the status itself once fanned out.
                    let upper = id.parse::<i64>().unwrap_or(0) + 1;
                    let url = target.url(&format!("/api/v1/timelines/home?limit=1&max_id={upper}"));
                    let req = target.client.get(url).bearer_auth(&*reader.token);
                    let page = expect_json(req.send().await, "GET /api/v1/timelines/home").await?;
                    let seen = page.get(0).and_then(|s| s.get("id")).and_then(Value::as_str) == Some(id.as_str());
                    Ok((!seen).then_some((reader, id)))
                });
                while checks.len() >= self.concurrency.max(1) {
                    if let Some(r) = checks.join_next().await {
                        pending.extend(r.context("settle check failed")??);
                    }
                }
            }
            while let Some(r) = checks.join_next().await {
                pending.extend(r.context("settle check failed")??);
            }
            if pending.is_empty() {
                eprintln!("setup: fan-out settled in {:.1}s", started.elapsed().as_secs_f64());
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "setup: fan-out still busy after {:.0}s ({} authors' newest statuses not delivered); measuring anyway",
            limit.as_secs_f64(),
            pending.len()
        );
        Ok(())
    }

    /// Runs `f` over `items` with at most `concurrency` in flight and a progress bar. Results come
    /// back in the order of `items`, `None` for a failed item. Fails on HTTP 429 at once, and at
    /// the end if more than `tolerated` of the items failed.
    async fn run_all<T, R, F, Fut>(
        &self,
        label: &'static str,
        items: Vec<T>,
        concurrency: usize,
        tolerated: f64,
        f: F,
    ) -> anyhow::Result<Vec<Option<R>>>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(T) -> Fut,
        Fut: Future<Output = anyhow::Result<R>> + Send + 'static,
    {
        let total = items.len();
        let bar = SetupBar::start(label, total as u64, self.progress);
        let label = label.trim_start_matches("setup: ");
        let mut results: Vec<Option<R>> = (0..total).map(|_| None).collect();
        let mut pending = items.into_iter().enumerate();
        let mut tasks: JoinSet<(usize, anyhow::Result<R>)> = JoinSet::new();
        let (mut failures, mut first_error) = (0usize, None);
        loop {
            while tasks.len() < concurrency.max(1) {
                let Some((i, item)) = pending.next() else { break };
                let fut = f(item);
                tasks.spawn(async move { (i, fut.await) });
            }
            let Some(joined) = tasks.join_next().await else { break };
            let (i, result) = joined.with_context(|| format!("setup task ({label}) failed"))?;
            match result {
                Ok(r) => {
                    bar.done.fetch_add(1, Ordering::Relaxed);
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(r);
                    }
                }
                Err(e) => {
                    bar.failed.fetch_add(1, Ordering::Relaxed);
                    failures += 1;
                    let limited = e.to_string().contains(RATE_LIMIT_HINT);
                    if limited || failures as f64 > tolerated * total as f64 {
                        bar.finish();
                        return Err(e.context(format!("setup ({label}): {failures} failed")));
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        bar.finish();
        if let Some(e) = first_error {
            eprintln!("setup: {failures} of {total} {label} failed (tolerated), first: {e:#}");
        }
        Ok(results)
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
    // The registration answers with a token only; the account id comes from the account itself.
    let me = expect_json(
        target.client.get(target.url("/api/v1/accounts/verify_credentials")).bearer_auth(&access).send().await,
        "GET /api/v1/accounts/verify_credentials",
    )
    .await?;
    let id = string_field(&me, "id", "GET /api/v1/accounts/verify_credentials")?;
    Ok(User { username, id, token: Arc::from(access.as_str()) })
}

/// `POST /api/v1/statuses` (public); returns the new status id.
pub async fn post_status(target: &Target, token: &str, text: &str) -> anyhow::Result<String> {
    let req = target
        .client
        .post(target.url("/api/v1/statuses"))
        .bearer_auth(token)
        .form(&[("status", text), ("visibility", "public")]);
    let status = expect_json(req.send().await, "POST /api/v1/statuses").await?;
    string_field(&status, "id", "POST /api/v1/statuses")
}

pub async fn expect_json(sent: reqwest::Result<reqwest::Response>, what: &str) -> anyhow::Result<Value> {
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

pub fn string_field(v: &Value, key: &str, what: &str) -> anyhow::Result<String> {
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
