//! The feed's event handlers: post and graph events applied to timelines through [`Feed`].
//! Both are idempotent (see [`Feed::handle`]).

use std::sync::Arc;

use agora_events::Envelope;
use agora_events::consumer::{Handler, HandlerError};
use async_trait::async_trait;

use crate::feed::Feed;

pub const POST_TOPIC: &str = "agora.post.v1";
pub const GRAPH_TOPIC: &str = "agora.graph.v1";
pub const GROUP: &str = "feed";

/// Applies events from one topic to the timelines.
pub struct TimelineHandler {
    pub feed: Arc<Feed>,
}

#[async_trait]
impl Handler for TimelineHandler {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError> {
        self.feed.handle(envelope).await
    }
}
