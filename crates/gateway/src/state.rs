//! What every handler shares.

use std::sync::Arc;

use agora_kit::jwt::Verifier;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use tonic::transport::Channel;

use crate::Config;
use crate::ratelimit::RateLimiter;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub user: UserServiceClient<Channel>,
    pub verifier: Arc<Verifier>,
    pub limiter: Arc<dyn RateLimiter>,
}
