//! agora-user integration tests: the store conformance suite on every backend, the service's
//! session rules, and events surviving a broker outage.

mod outage;
mod service;
mod store;
