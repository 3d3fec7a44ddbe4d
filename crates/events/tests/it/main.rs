//! agora-events integration tests: one bus conformance suite for the in-process and Kafka
//! adapters, and the outbox relay against a real SQLite outbox.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod bus;
mod consumer;
mod outbox;
