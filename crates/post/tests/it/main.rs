//! agora-post integration tests: the store conformance suite on every backend, the service's
//! rules (visibility, validation, reblogs, threads) through its domain API, and the service
//! served over gRPC with its events reaching the bus.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod fakes;
mod grpc;
mod service;
mod store;
