//! agora-kit integration tests: token verification and in-process gRPC as the gateway and
//! services rely on them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod grpc;
mod jwt;
