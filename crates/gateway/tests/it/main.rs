//! agora-gateway integration tests: the rate-limiter conformance suite on memory and Redis, and
//! the public API over real HTTP against an in-process platform.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod api;
mod caches;
mod cancellation;
mod connections;
mod push;
mod ratelimit;
mod social;
mod streaming;
mod tokens;
