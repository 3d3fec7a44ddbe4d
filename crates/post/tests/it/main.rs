//! agora-post integration tests: the store conformance suite on every backend, and the
//! service's rules (visibility, validation, reblogs, threads) through its domain API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod service;
mod store;
