//! agora-notification integration tests: the store conformance suite on every backend, and the
//! notification rules driven by post and graph events.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod rules;
mod store;
