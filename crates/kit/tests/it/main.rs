//! agora-kit integration tests: token verification as the gateway and services rely on it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod jwt;
