//! Request rate limits by the generic cell rate algorithm (GCRA), with state in Redis (shared by
//! every gateway replica) or in memory (`agora dev`). Both adapters pass the conformance suite in
//! `tests/it/ratelimit.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

/// A limit: `max` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub max: u64,
    pub window: Duration,
}

impl Limit {
    /// Parses `N/SECONDS` (e.g. `300/300`) or `off`.
    pub fn parse(raw: &str) -> Result<Option<Limit>, String> {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("off") || raw == "0" {
            return Ok(None);
        }
        let (n, s) = raw.split_once('/').ok_or("expected N/SECONDS or off")?;
        let max: u64 = n.trim().parse().map_err(|_| "N must be a whole number")?;
        let secs: u64 = s.trim().parse().map_err(|_| "SECONDS must be a whole number")?;
        if max == 0 || secs == 0 {
            return Err("N and SECONDS must be positive".into());
        }
        Ok(Some(Limit { max, window: Duration::from_secs(secs) }))
    }
}

/// The outcome of counting one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// When the whole budget is available again (ms since the epoch): `X-RateLimit-Reset`.
    pub reset_at_ms: i64,
    /// For a refused request: how long until one more would be allowed (`Retry-After`).
    pub retry_after_ms: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct LimiterError(pub String);

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request against `key` under `limit`.
    async fn hit(&self, key: &str, limit: Limit) -> Result<Decision, LimiterError>;
    async fn ping(&self) -> Result<(), LimiterError>;
}

/// The generic cell rate algorithm, in microseconds. A key's state is one instant, its
/// theoretical arrival time (TAT): each allowed request moves it on by the emission interval
/// `window / max`, and a request is allowed while the TAT stays within `window` of now. So a
/// burst is at most `max` long, and after it requests are allowed at the steady rate — unlike
/// fixed windows, nothing lets `2 × max` through around a window's edge.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    interval_us: i64,
    window_us: i64,
    max: u64,
}

impl Gcra {
    fn new(limit: Limit) -> Self {
        let window_us = limit.window.as_micros() as i64;
        Self { interval_us: (window_us / limit.max as i64).max(1), window_us, max: limit.max }
    }

    /// Given the stored TAT (if any) and now, returns the decision and the TAT to store (if the
    /// request is allowed).
    fn step(&self, stored_tat_us: Option<i64>, now_us: i64) -> (Decision, Option<i64>) {
        let tat = stored_tat_us.unwrap_or(now_us).max(now_us);
        let new_tat = tat + self.interval_us;
        let ms = |us: i64| us.div_euclid(1000);
        if new_tat - now_us > self.window_us {
            let d = Decision {
                allowed: false,
                limit: self.max,
                remaining: 0,
                reset_at_ms: ms(tat),
                retry_after_ms: ms(new_tat - self.window_us - now_us).max(1),
            };
            return (d, None);
        }
        let remaining = ((self.window_us - (new_tat - now_us)) / self.interval_us).max(0) as u64;
        let d = Decision {
            allowed: true,
            limit: self.max,
            remaining: remaining.min(self.max),
            reset_at_ms: ms(new_tat),
            retry_after_ms: 0,
        };
        (d, Some(new_tat))
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// State in this process.
#[derive(Default)]
pub struct MemoryLimiter {
    tats: Mutex<HashMap<String, i64>>,
}

impl MemoryLimiter {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn hit(&self, key: &str, limit: Limit) -> Result<Decision, LimiterError> {
        let now = now_us();
        let gcra = Gcra::new(limit);
        let mut map = self.tats.lock();
        if map.len() > 100_000 {
            // A TAT in the past is the same as no state: forget those, so a flood of distinct
            // keys cannot grow memory forever.
            map.retain(|_, tat| *tat > now);
        }
        let (decision, store) = gcra.step(map.get(key).copied(), now);
        if let Some(tat) = store {
            map.insert(key.to_owned(), tat);
        }
        Ok(decision)
    }

    async fn ping(&self) -> Result<(), LimiterError> {
        Ok(())
    }
}

/// State in Redis: one key per limited name holding its TAT, expiring when it is in the past.
/// The step runs in a script on Redis's own clock, so every gateway replica agrees.
pub struct RedisLimiter {
    client: fred::clients::Client,
}

/// ARGV: interval µs, window µs. Returns {allowed, tat µs, now µs}.
const GCRA_SCRIPT: &str = "local t = redis.call('TIME') \
local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) \
local interval = tonumber(ARGV[1]) local window = tonumber(ARGV[2]) \
local tat = tonumber(redis.call('GET', KEYS[1]) or now) \
if tat < now then tat = now end \
local new_tat = tat + interval \
if new_tat - now > window then return {0, tat, now} end \
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000) \
return {1, tat, now}";

impl RedisLimiter {
    pub async fn connect(url: &str) -> Result<Self, LimiterError> {
        let client = agora_client::redis::connect(url, Duration::from_millis(500))
            .await
            .map_err(|e| LimiterError(e.to_string()))?;
        Ok(Self { client })
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn hit(&self, key: &str, limit: Limit) -> Result<Decision, LimiterError> {
        use fred::interfaces::LuaInterface as _;
        let gcra = Gcra::new(limit);
        let reply: Vec<i64> = self
            .client
            .eval(
                GCRA_SCRIPT,
                vec![format!("agora:rl2:{key}")],
                vec![gcra.interval_us.to_string(), gcra.window_us.to_string()],
            )
            .await
            .map_err(|e| LimiterError(e.to_string()))?;
        let [_, tat, now] = reply[..] else {
            return Err(LimiterError(format!("unexpected limiter reply {reply:?}")));
        };
        // The script already decided; replaying the step on its numbers builds the same answer.
        Ok(gcra.step(Some(tat), now).0)
    }

    async fn ping(&self) -> Result<(), LimiterError> {
        use fred::interfaces::ClientLike as _;
        self.client.ping::<String>(None).await.map(|_| ()).map_err(|e| LimiterError(e.to_string()))
    }
}

/// Picks the adapter by URL: `memory://` or `redis://host:port`.
pub async fn connect(url: &str) -> Result<Arc<dyn RateLimiter>, LimiterError> {
    match url.split_once("://").map(|(s, _)| s) {
        Some("memory") => Ok(Arc::new(MemoryLimiter::new())),
        Some("redis") | Some("rediss") => Ok(Arc::new(RedisLimiter::connect(url).await?)),
        _ => Err(LimiterError(format!("unsupported rate limit url {url:?} (memory://, redis://)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits() {
        assert_eq!(Limit::parse("300/300").unwrap(), Some(Limit { max: 300, window: Duration::from_secs(300) }));
        assert_eq!(Limit::parse("off").unwrap(), None);
        assert!(Limit::parse("abc").is_err());
        assert!(Limit::parse("5/0").is_err());
    }
}
