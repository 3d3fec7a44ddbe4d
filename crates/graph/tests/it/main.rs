//! agora-graph integration tests: the store conformance suite on every backend, and the service's
//! rules through its domain object and over gRPC with locally minted tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod service;
mod store;
