//! agora-client's integration tests: the epochs and live backplane ports on every adapter.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod epochs;
mod live;
