//! Request rate limits: fixed windows counted in Redis (shared by every gateway replica) or in
//! memory (`agora dev`). Both adapters pass the conformance suite in `tests/it/ratelimit.rs`.

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
    /// When the current window ends (ms since the epoch).
    pub reset_at_ms: i64,
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

fn window_of(now_ms: i64, limit: Limit) -> (i64, i64) {
    let w = limit.window.as_millis() as i64;
    let idx = now_ms / w;
    (idx, (idx + 1) * w)
}

fn decide(count: u64, limit: Limit, reset_at_ms: i64) -> Decision {
    Decision { allowed: count <= limit.max, limit: limit.max, remaining: limit.max.saturating_sub(count), reset_at_ms }
}

/// Counters in this process.
#[derive(Default)]
pub struct MemoryLimiter {
    counters: Mutex<HashMap<String, (i64, u64)>>,
}

impl MemoryLimiter {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn hit(&self, key: &str, limit: Limit) -> Result<Decision, LimiterError> {
        let now = agora_kit::time::now_ms();
        let (idx, reset) = window_of(now, limit);
        let mut map = self.counters.lock();
        if map.len() > 100_000 {
            // Forget finished windows so a flood of distinct keys cannot grow memory forever.
            map.retain(|_, (i, _)| *i >= idx - 1);
        }
        let entry = map.entry(key.to_owned()).or_insert((idx, 0));
        if entry.0 != idx {
            *entry = (idx, 0);
        }
        entry.1 += 1;
        Ok(decide(entry.1, limit, reset))
    }

    async fn ping(&self) -> Result<(), LimiterError> {
        Ok(())
    }
}

/// Counters in Redis: one key per (name, window), expiring with the window.
pub struct RedisLimiter {
    client: fred::clients::Client,
}

const HIT_SCRIPT: &str = "local c = redis.call('INCR', KEYS[1]) \
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end \
return c";

impl RedisLimiter {
    pub async fn connect(url: &str) -> Result<Self, LimiterError> {
        use fred::interfaces::ClientLike as _;
        let config = fred::types::config::Config::from_url(url).map_err(|e| LimiterError(e.to_string()))?;
        let client = fred::types::Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(3);
                c.internal_command_timeout = Duration::from_secs(3);
            })
            .set_policy(fred::types::config::ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .with_performance_config(|p| {
                p.default_command_timeout = Duration::from_millis(500);
            })
            .build()
            .map_err(|e| LimiterError(e.to_string()))?;
        client.init().await.map_err(|e| LimiterError(e.to_string()))?;
        Ok(Self { client })
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn hit(&self, key: &str, limit: Limit) -> Result<Decision, LimiterError> {
        use fred::interfaces::LuaInterface as _;
        let now = agora_kit::time::now_ms();
        let (idx, reset) = window_of(now, limit);
        let redis_key = format!("agora:rl:{key}:{idx}");
        let ttl_ms = (limit.window.as_millis() as i64 + 1_000).to_string();
        let count: i64 = self
            .client
            .eval(HIT_SCRIPT, vec![redis_key], vec![ttl_ms])
            .await
            .map_err(|e| LimiterError(e.to_string()))?;
        Ok(decide(count.max(0) as u64, limit, reset))
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
