//! Workloads: a setup phase (not measured) that prepares state through the public API, then a
//! stream of operations, one HTTP request each.
//!
//! To add a workload (DeathStarBench's compose-post, read-home-timeline, read-user-timeline, a
//! mix): add a `WorkloadKind` variant, a struct implementing `Workload`, and a `prepare` arm that
//! builds the state it needs (users, follows, posts) with the helpers in `setup`.

use std::sync::Arc;

use clap::ValueEnum;
use rand::Rng;
use rand::rngs::SmallRng;
use reqwest::{Method, StatusCode};

use crate::setup::{Setup, User};

/// One operation, ready to be sent. The runner owns the client and the base URL.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: String,
    pub bearer: Option<Arc<str>>,
    /// Form body (`application/x-www-form-urlencoded`); empty means no body.
    pub form: Vec<(&'static str, String)>,
}

impl Operation {
    pub fn get(path: impl Into<String>) -> Self {
        Self { method: Method::GET, path: path.into(), bearer: None, form: Vec::new() }
    }

    pub fn bearer(mut self, token: &Arc<str>) -> Self {
        self.bearer = Some(Arc::clone(token));
        self
    }
}

/// A prepared workload. `request` is called once per operation on the hot path: keep it cheap
/// and free of I/O.
pub trait Workload: Send + Sync + 'static {
    fn request(&self, rng: &mut SmallRng) -> Operation;

    /// Whether a response status counts as success for this workload.
    fn is_success(&self, status: StatusCode) -> bool {
        status == StatusCode::OK
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadKind {
    /// `GET /api/v1/accounts/verify_credentials` as a random registered user.
    VerifyCredentials,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::VerifyCredentials => "verify-credentials",
        }
    }

    /// Setup phase: builds whatever server-side state the workload needs.
    pub async fn prepare(self, setup: &Setup) -> anyhow::Result<Arc<dyn Workload>> {
        match self {
            WorkloadKind::VerifyCredentials => {
                let users = setup.register_users().await?;
                let w = VerifyCredentials { users };
                setup.smoke_test(&w).await?;
                Ok(Arc::new(w))
            }
        }
    }
}

/// Reads the caller's own account: the cheapest authenticated round trip through the gateway
/// and the user service.
pub struct VerifyCredentials {
    users: Vec<User>,
}

impl Workload for VerifyCredentials {
    fn request(&self, rng: &mut SmallRng) -> Operation {
        let user = &self.users[rng.random_range(0..self.users.len())];
        Operation::get("/api/v1/accounts/verify_credentials").bearer(&user.token)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn verify_credentials_uses_every_user() {
        let users: Vec<User> =
            (0..4).map(|i| User { username: format!("u{i}"), token: Arc::from(format!("t{i}").as_str()) }).collect();
        let w = VerifyCredentials { users };
        let mut rng = SmallRng::seed_from_u64(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let op = w.request(&mut rng);
            assert_eq!(op.method, Method::GET);
            assert_eq!(op.path, "/api/v1/accounts/verify_credentials");
            assert!(op.form.is_empty());
            seen.insert(op.bearer.map(|t| t.to_string()).unwrap_or_default());
        }
        assert_eq!(seen.len(), 4);
        assert!(w.is_success(StatusCode::OK));
        assert!(!w.is_success(StatusCode::UNAUTHORIZED));
    }
}
