//! agora-user integration tests: the store conformance suite on every backend, the service's
//! session rules, and events surviving a broker outage.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod outage;
mod service;
mod store;
