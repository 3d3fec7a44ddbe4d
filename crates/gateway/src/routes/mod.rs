pub mod accounts;
pub mod graph;
pub mod instance;
pub mod notifications;
pub mod oauth;
pub mod statuses;
pub mod streaming;
pub mod timelines;
