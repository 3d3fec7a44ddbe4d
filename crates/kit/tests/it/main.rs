//! agora-kit integration tests: token verification as the gateway and services rely on it.

mod jwt;
