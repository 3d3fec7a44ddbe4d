//! Typed configuration read from `AGORA_*` variables through a small [`Env`] trait, so tests build
//! configs from a map and never touch the process environment.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// Where settings come from.
pub trait Env: Send + Sync {
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

/// A fixed map, for tests and for composing configs in-process.
#[derive(Debug, Clone, Default)]
pub struct MapEnv(pub HashMap<String, String>);

impl MapEnv {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.0.insert(key.to_owned(), value.into());
        self
    }
}

impl Env for MapEnv {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned().filter(|v| !v.is_empty())
    }
}

/// A start-up error that names the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(var: &str, value: &str, reason: impl Display) -> Self {
        Self { var: var.to_owned(), value: value.to_owned(), reason: reason.to_string() }
    }
}

/// A secret setting (a private key, a password): never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A secret from `key` itself or from the file named by `{key}_FILE` (how Kubernetes mounts a
/// Secret); `None` when neither is set. Setting both is an error, and so is an unreadable file.
pub fn secret(env: &dyn Env, key: &str) -> Result<Option<Secret>, ConfigError> {
    let file_key = format!("{key}_FILE");
    match (env.get(key).filter(|v| !v.is_empty()), env.get(&file_key).filter(|v| !v.is_empty())) {
        (Some(_), Some(path)) => {
            Err(ConfigError::new(&file_key, &path, format!("set either {key} or {file_key}, not both")))
        }
        (Some(v), None) => Ok(Some(Secret(v))),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map(|v| Some(Secret(v)))
            .map_err(|e| ConfigError::new(&file_key, &path, format!("cannot read it: {e}"))),
        (None, None) => Ok(None),
    }
}

/// Reads `key`, falling back to `default` when unset.
pub fn string(env: &dyn Env, key: &str, default: &str) -> String {
    env.get(key).unwrap_or_else(|| default.to_owned())
}

/// Reads and parses `key`; a value that does not parse is an error naming `key`.
pub fn parse<T>(env: &dyn Env, key: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match env.get(key) {
        None => Ok(default),
        Some(raw) => raw.trim().parse::<T>().map_err(|e| ConfigError::new(key, &raw, e)),
    }
}

pub fn socket_addr(env: &dyn Env, key: &str, default: &str) -> Result<SocketAddr, ConfigError> {
    let raw = string(env, key, default);
    raw.parse().map_err(|e| ConfigError::new(key, &raw, e))
}

pub fn boolean(env: &dyn Env, key: &str, default: bool) -> Result<bool, ConfigError> {
    match env.get(key) {
        None => Ok(default),
        Some(raw) => match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(ConfigError::new(key, &raw, "expected true or false")),
        },
    }
}

/// Seconds as a duration.
pub fn seconds(env: &dyn Env, key: &str, default: u64) -> Result<Duration, ConfigError> {
    parse::<u64>(env, key, default).map(Duration::from_secs)
}

/// A store or bus URL whose scheme must be one of `schemes`.
pub fn url(env: &dyn Env, key: &str, default: &str, schemes: &[&str]) -> Result<String, ConfigError> {
    let raw = string(env, key, default);
    let scheme = raw.split_once("://").map(|(s, _)| s).unwrap_or("");
    if schemes.contains(&scheme) {
        Ok(raw)
    } else {
        Err(ConfigError::new(key, &redact_url(&raw), format!("scheme must be one of {}", schemes.join(", "))))
    }
}

/// A peer service's gRPC URL: `http(s)://host:port`, or `inproc://NAME` for a service running
/// in this process (see [`crate::grpc::channel`]).
pub fn service_url(env: &dyn Env, key: &str, default: &str) -> Result<String, ConfigError> {
    url(env, key, default, &["http", "https", "inproc"])
}

/// Hides the password in a URL so it can be logged or shown in an error.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_the_variable() {
        let env = MapEnv::new().with("AGORA_X_PORT", "eighty");
        let err = parse::<u16>(&env, "AGORA_X_PORT", 1).unwrap_err();
        assert!(err.to_string().contains("AGORA_X_PORT"));
        let err = url(&MapEnv::new().with("AGORA_U", "mysql://a:secret@h/db"), "AGORA_U", "", &["postgres", "sqlite"])
            .unwrap_err();
        assert!(err.to_string().contains("AGORA_U"));
        assert!(!err.to_string().contains("secret"), "passwords never reach logs: {err}");
    }

    #[test]
    fn defaults_apply_when_unset() {
        let env = MapEnv::new();
        assert_eq!(parse::<u16>(&env, "AGORA_X", 7).unwrap(), 7);
        assert!(boolean(&env, "AGORA_B", true).unwrap());
        assert!(!boolean(&MapEnv::new().with("AGORA_B", "off"), "AGORA_B", true).unwrap());
    }
}
