//! The `agora` binary as operators run it: whole processes started, killed with SIGKILL in the
//! middle of work and started again on the same data.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod crash;
mod process;
mod readiness;
mod shutdown;
