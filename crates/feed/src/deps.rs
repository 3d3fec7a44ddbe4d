//! What the feed asks other services, behind traits so the rules can be tested with fakes:
//! the graph service (who follows whom, a viewer's filter set) and the post service (an
//! account's statuses, for rebuilds). The gRPC adapters forward the viewer's token where the
//! question is asked on their behalf.

use agora_kit::grpc::Channel;
use async_trait::async_trait;

use agora_proto::events::v1::StatusPosted;
use agora_proto::graph::v1 as gpb;
use agora_proto::graph::v1::graph_service_client::GraphServiceClient;
use agora_proto::post::v1 as ppb;
use agora_proto::post::v1::post_service_client::PostServiceClient;

use crate::domain::FilterSet;

#[derive(Debug, thiserror::Error)]
#[error("{service} service: {detail}")]
pub struct DependencyError {
    pub service: &'static str,
    pub detail: String,
    /// The peer refused the caller's token (so the caller, not the peer, is at fault).
    pub unauthenticated: bool,
}

impl DependencyError {
    fn from_status(service: &'static str, s: tonic::Status) -> Self {
        DependencyError {
            service,
            detail: format!("{:?}: {}", s.code(), s.message()),
            unauthenticated: matches!(s.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied),
        }
    }
}

/// One page of an account's accepted followers, in follow order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowerPage {
    pub follower_ids: Vec<i64>,
    /// Pass as `after_id` for the next page; 0 when done.
    pub next_after_id: i64,
    /// Accepted followers in total.
    pub total: i64,
}

#[async_trait]
pub trait GraphView: Send + Sync + 'static {
    /// Accepted followers of `account_id` after follow id `after_id` (internal, for fan-out).
    async fn follower_ids(&self, account_id: i64, after_id: i64, limit: i32) -> Result<FollowerPage, DependencyError>;
    /// Which of `candidates` follow `account_id` (internal).
    async fn filter_followers(&self, account_id: i64, candidates: &[i64]) -> Result<Vec<i64>, DependencyError>;
    /// The filter set of `viewer` (whose token is `token`): who they block, are blocked by, or mute.
    async fn filter_set(&self, viewer: i64, token: &str) -> Result<FilterSet, DependencyError>;
    /// Which of `ids` `viewer` (whose token is `token`) follows.
    async fn followed_among(&self, viewer: i64, token: &str, ids: &[i64]) -> Result<Vec<i64>, DependencyError>;
    /// Everyone `account_id` follows (up to `max`), asking with `token` when there is one.
    async fn following(&self, account_id: i64, token: Option<&str>, max: usize) -> Result<Vec<i64>, DependencyError>;
}

#[async_trait]
pub trait PostSource: Send + Sync + 'static {
    /// Statuses of `account_id` older than `max_id` (0 = newest), newest first, as the events
    /// that announced them (internal).
    async fn account_statuses(
        &self,
        account_id: i64,
        max_id: i64,
        limit: i32,
    ) -> Result<Vec<StatusPosted>, DependencyError>;
}

/// [`GraphView`] over the graph service's gRPC API; a viewer's filter set and follows are cached
/// under their epoch (`agora_client::graph_facts`).
pub struct GrpcGraph {
    pub client: GraphServiceClient<Channel>,
    pub facts: std::sync::Arc<agora_client::graph_facts::GraphFacts>,
}

#[async_trait]
impl GraphView for GrpcGraph {
    async fn follower_ids(&self, account_id: i64, after_id: i64, limit: i32) -> Result<FollowerPage, DependencyError> {
        let resp = self
            .client
            .clone()
            .list_follower_ids(agora_kit::grpc::request(
                gpb::ListFollowerIdsRequest { account_id, after_id, limit },
                None,
            ))
            .await
            .map_err(|s| DependencyError::from_status("graph", s))?
            .into_inner();
        Ok(FollowerPage { follower_ids: resp.follower_ids, next_after_id: resp.next_after_id, total: resp.total })
    }

    async fn filter_followers(&self, account_id: i64, candidates: &[i64]) -> Result<Vec<i64>, DependencyError> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let resp = self
            .client
            .clone()
            .filter_followers(agora_kit::grpc::request(
                gpb::FilterFollowersRequest { account_id, candidate_ids: candidates.to_vec() },
                None,
            ))
            .await
            .map_err(|s| DependencyError::from_status("graph", s))?
            .into_inner();
        Ok(resp.follower_ids)
    }

    async fn filter_set(&self, viewer: i64, token: &str) -> Result<FilterSet, DependencyError> {
        let set = self.facts.filter_set(viewer, token).await.map_err(|s| DependencyError::from_status("graph", s))?;
        Ok(FilterSet { hidden: set.blocking.iter().chain(&set.blocked_by).chain(&set.muting).copied().collect() })
    }

    async fn followed_among(&self, viewer: i64, token: &str, ids: &[i64]) -> Result<Vec<i64>, DependencyError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let relations =
            self.facts.relationships(viewer, token, ids).await.map_err(|s| DependencyError::from_status("graph", s))?;
        Ok(ids.iter().copied().filter(|id| relations.get(id).is_some_and(|r| r.following)).collect())
    }

    async fn following(&self, account_id: i64, token: Option<&str>, max: usize) -> Result<Vec<i64>, DependencyError> {
        let mut out = Vec::new();
        let mut max_id = 0;
        loop {
            let resp = self
                .client
                .clone()
                .list_following(agora_kit::grpc::request(
                    gpb::ListAccountsRequest {
                        account_id,
                        page: Some(gpb::Page { max_id, since_id: 0, min_id: 0, limit: 80 }),
                    },
                    token,
                ))
                .await
                .map_err(|s| DependencyError::from_status("graph", s))?
                .into_inner();
            let done = resp.account_ids.is_empty();
            out.extend(resp.account_ids);
            match resp.cursor_ids.last() {
                Some(c) if !done && out.len() < max && *c != max_id => max_id = *c,
                _ => break,
            }
        }
        out.truncate(max);
        Ok(out)
    }
}

/// [`PostSource`] over the post service's gRPC API.
pub struct GrpcPosts {
    pub client: PostServiceClient<Channel>,
}

#[async_trait]
impl PostSource for GrpcPosts {
    async fn account_statuses(
        &self,
        account_id: i64,
        max_id: i64,
        limit: i32,
    ) -> Result<Vec<StatusPosted>, DependencyError> {
        let resp = self
            .client
            .clone()
            .list_account_status_events(agora_kit::grpc::request(
                ppb::ListAccountStatusEventsRequest { account_id, max_id, limit },
                None,
            ))
            .await
            .map_err(|s| DependencyError::from_status("post", s))?
            .into_inner();
        Ok(resp.statuses)
    }
}
