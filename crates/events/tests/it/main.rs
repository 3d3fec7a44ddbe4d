//! agora-events integration tests: one bus conformance suite for the in-process and Kafka
//! adapters, and the outbox relay against a real SQLite outbox.

mod bus;
mod outbox;
