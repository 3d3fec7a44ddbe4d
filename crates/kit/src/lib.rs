//! agora-kit: the plumbing every Agora process shares — typed configuration from `AGORA_*`
//! variables, telemetry (logs, traces, Prometheus metrics), health endpoints, graceful shutdown,
//! snowflake ids, the one error vocabulary, JWT verification and Mastodon-style pagination.
//!
//! It must never know about any particular service's domain, and never talk to a database.

pub mod config;
pub mod error;
pub mod grpc;
pub mod health;
pub mod id;
pub mod jwt;
pub mod metrics;
pub mod pagination;
pub mod shutdown;
pub mod telemetry;
pub mod time;

pub use error::{Error, ErrorKind, Result};
pub use id::{IdGenerator, Snowflake};
pub use shutdown::Shutdown;
