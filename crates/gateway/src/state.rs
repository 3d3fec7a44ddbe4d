//! What every handler shares.

use std::sync::Arc;

use agora_kit::grpc::Channel;
use agora_kit::jwt::Verifier;
use agora_proto::feed::v1::feed_service_client::FeedServiceClient;
use agora_proto::graph::v1::graph_service_client::GraphServiceClient;
use agora_proto::notification::v1::notification_service_client::NotificationServiceClient;
use agora_proto::post::v1::post_service_client::PostServiceClient;
use agora_proto::user::v1::user_service_client::UserServiceClient;

use crate::Config;
use crate::ratelimit::RateLimiter;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub user: UserServiceClient<Channel>,
    pub post: PostServiceClient<Channel>,
    pub graph: GraphServiceClient<Channel>,
    pub feed: FeedServiceClient<Channel>,
    pub notification: NotificationServiceClient<Channel>,
    pub verifier: Arc<Verifier>,
    pub limiter: Arc<dyn RateLimiter>,
    /// Account entities with follower counts, under the accounts' epochs.
    pub accounts: Arc<crate::cache::AccountCache>,
    /// Whom each viewer must not see (blocks both ways, mutes), cached under epochs: what the
    /// streams filter timeline events by.
    pub facts: Arc<agora_client::graph_facts::GraphFacts>,
    /// The live backplane streams hear new events on (none: streaming unavailable).
    pub live: Option<Arc<dyn agora_client::live::Live>>,
    /// Open streams per account, bounded.
    pub streams: Arc<crate::routes::streaming::Streams>,
    /// Cancelled when the gateway shuts down: open streams end.
    pub shutdown: agora_kit::shutdown::Shutdown,
    /// The VAPID public key, cached.
    pub vapid: Arc<crate::routes::push::VapidCache>,
}
