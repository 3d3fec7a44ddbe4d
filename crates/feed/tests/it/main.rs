//! agora-feed integration tests: the timeline-store and hot-set conformance suites on every
//! backend, the timeline rules driven by events against fake graph and post services, and the
//! gRPC face with locally minted tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod fakes;
mod hotset;
mod rules;
mod service;
mod store;
