//! The tonic face of the graph service: wire types in, [`Graph`] calls, wire types out.

use std::sync::Arc;

use agora_kit::grpc::bearer_token;
use agora_proto::graph::v1 as pb;
use agora_proto::graph::v1::graph_service_server::GraphService;
use tonic::{Request, Response, Status};

use crate::domain::Relationship;
use crate::graph::{AccountPage, FollowOptions, Graph, PageRequest};

pub struct GraphGrpc {
    pub graph: Arc<Graph>,
}

pub fn relationship_pb(r: Relationship) -> pb::Relationship {
    pb::Relationship {
        id: r.id,
        following: r.following,
        showing_reblogs: r.showing_reblogs,
        notifying: r.notifying,
        followed_by: r.followed_by,
        blocking: r.blocking,
        blocked_by: r.blocked_by,
        muting: r.muting,
        muting_notifications: r.muting_notifications,
        requested: r.requested,
        requested_by: r.requested_by,
        // Neither domain blocks nor endorsements nor private notes live here (yet).
        domain_blocking: false,
        endorsed: false,
        note: String::new(),
        languages: r.languages,
    }
}

fn page_of(p: Option<pb::Page>) -> PageRequest {
    let p = p.unwrap_or_default();
    PageRequest { max_id: p.max_id, since_id: p.since_id, min_id: p.min_id, limit: p.limit }
}

fn account_page_pb(p: AccountPage) -> pb::AccountPage {
    pb::AccountPage { account_ids: p.account_ids, cursor_ids: p.cursor_ids }
}

fn token<T>(req: &Request<T>) -> Option<String> {
    bearer_token(req).map(str::to_owned)
}

fn rel(r: Relationship) -> Response<pb::RelationshipResponse> {
    Response::new(pb::RelationshipResponse { relationship: Some(relationship_pb(r)) })
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl GraphService for GraphGrpc {
    #[tracing::instrument(skip_all, fields(rpc = "Follow", target_id = req.get_ref().target_id))]
    async fn follow(&self, req: Request<pb::FollowRequest>) -> R<pb::RelationshipResponse> {
        let t = token(&req);
        let r = req.into_inner();
        let options = FollowOptions { reblogs: r.reblogs, notify: r.notify, languages: r.languages };
        Ok(rel(self.graph.follow(t.as_deref(), r.target_id, options).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Unfollow", target_id = req.get_ref().target_id))]
    async fn unfollow(&self, req: Request<pb::TargetRequest>) -> R<pb::RelationshipResponse> {
        let t = token(&req);
        Ok(rel(self.graph.unfollow(t.as_deref(), req.into_inner().target_id).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RemoveFollower", target_id = req.get_ref().target_id))]
    async fn remove_follower(&self, req: Request<pb::TargetRequest>) -> R<pb::RelationshipResponse> {
        let t = token(&req);
        Ok(rel(self.graph.remove_follower(t.as_deref(), req.into_inner().target_id).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Block", target_id = req.get_ref().target_id))]
    async fn block(&self, req: Request<pb::TargetRequest>) -> R<pb::RelationshipResponse> {
        let t = token(&req);
        Ok(rel(self.graph.block(t.as_deref(), req.into_inner().target_id).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Unblock", target_id = req.get_ref().target_id))]
    async fn unblock(&self, req: Request<pb::TargetRequest>) -> R<pb::RelationshipResponse> {
        let t = token(&req);
        Ok(rel(self.graph.unblock(t.as_deref(), req.into_inner().target_id).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Mute", target_id = req.get_ref().target_id))]
    async fn mute(&self, req: Request<pb::MuteRequest>) -> R<pb::RelationshipResponse> {
        let t = token(&req);
        let r = req.into_inner();
        Ok(rel(self.graph.mute(t.as_deref(), r.target_id, r.notifications, r.duration_s).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Unmute", target_id = req.get_ref().target_id))]
    async fn unmute(&self, req: Request<pb::TargetRequest>) -> R<pb::RelationshipResponse> {
        let t = token(&req);
        Ok(rel(self.graph.unmute(t.as_deref(), req.into_inner().target_id).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListFollowRequests"))]
    async fn list_follow_requests(&self, req: Request<pb::ListFollowRequestsRequest>) -> R<pb::AccountPage> {
        let t = token(&req);
        let page = self.graph.follow_requests(t.as_deref(), page_of(req.into_inner().page)).await?;
        Ok(Response::new(account_page_pb(page)))
    }

    #[tracing::instrument(skip_all, fields(rpc = "AuthorizeFollowRequest", target_id = req.get_ref().target_id))]
    async fn authorize_follow_request(&self, req: Request<pb::TargetRequest>) -> R<pb::RelationshipResponse> {
        let t = token(&req);
        Ok(rel(self.graph.authorize_follow_request(t.as_deref(), req.into_inner().target_id).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RejectFollowRequest", target_id = req.get_ref().target_id))]
    async fn reject_follow_request(&self, req: Request<pb::TargetRequest>) -> R<pb::RelationshipResponse> {
        let t = token(&req);
        Ok(rel(self.graph.reject_follow_request(t.as_deref(), req.into_inner().target_id).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetRelationships", ids = req.get_ref().ids.len()))]
    async fn get_relationships(&self, req: Request<pb::GetRelationshipsRequest>) -> R<pb::GetRelationshipsResponse> {
        let t = token(&req);
        let list = self.graph.relationships(t.as_deref(), &req.into_inner().ids).await?;
        Ok(Response::new(pb::GetRelationshipsResponse {
            relationships: list.into_iter().map(relationship_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListFollowers", account_id = req.get_ref().account_id))]
    async fn list_followers(&self, req: Request<pb::ListAccountsRequest>) -> R<pb::AccountPage> {
        let t = token(&req);
        let r = req.into_inner();
        let page = self.graph.followers(t.as_deref(), r.account_id, page_of(r.page)).await?;
        Ok(Response::new(account_page_pb(page)))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListFollowing", account_id = req.get_ref().account_id))]
    async fn list_following(&self, req: Request<pb::ListAccountsRequest>) -> R<pb::AccountPage> {
        let t = token(&req);
        let r = req.into_inner();
        let page = self.graph.following(t.as_deref(), r.account_id, page_of(r.page)).await?;
        Ok(Response::new(account_page_pb(page)))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListBlocks"))]
    async fn list_blocks(&self, req: Request<pb::ListAccountsRequest>) -> R<pb::AccountPage> {
        let t = token(&req);
        let page = self.graph.blocks(t.as_deref(), page_of(req.into_inner().page)).await?;
        Ok(Response::new(account_page_pb(page)))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListMutes"))]
    async fn list_mutes(&self, req: Request<pb::ListAccountsRequest>) -> R<pb::AccountPage> {
        let t = token(&req);
        let page = self.graph.mutes(t.as_deref(), page_of(req.into_inner().page)).await?;
        Ok(Response::new(account_page_pb(page)))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetFamiliarFollowers", ids = req.get_ref().ids.len()))]
    async fn get_familiar_followers(
        &self,
        req: Request<pb::GetFamiliarFollowersRequest>,
    ) -> R<pb::GetFamiliarFollowersResponse> {
        let t = token(&req);
        let list = self.graph.familiar_followers(t.as_deref(), &req.into_inner().ids).await?;
        Ok(Response::new(pb::GetFamiliarFollowersResponse {
            entries: list.into_iter().map(|f| pb::FamiliarFollowers { id: f.id, account_ids: f.account_ids }).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetSuggestions"))]
    async fn get_suggestions(&self, req: Request<pb::GetSuggestionsRequest>) -> R<pb::GetSuggestionsResponse> {
        let t = token(&req);
        let list = self.graph.suggestions(t.as_deref(), req.into_inner().limit).await?;
        Ok(Response::new(pb::GetSuggestionsResponse {
            suggestions: list
                .into_iter()
                .map(|s| pb::Suggestion {
                    account_id: s.account_id,
                    mutuals: i32::try_from(s.mutuals).unwrap_or(i32::MAX),
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "DismissSuggestion", target_id = req.get_ref().target_id))]
    async fn dismiss_suggestion(&self, req: Request<pb::TargetRequest>) -> R<pb::DismissSuggestionResponse> {
        let t = token(&req);
        self.graph.dismiss_suggestion(t.as_deref(), req.into_inner().target_id).await?;
        Ok(Response::new(pb::DismissSuggestionResponse {}))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetFilterSet"))]
    async fn get_filter_set(&self, req: Request<pb::GetFilterSetRequest>) -> R<pb::GetFilterSetResponse> {
        let t = token(&req);
        let set = self.graph.filter_set(t.as_deref()).await?;
        Ok(Response::new(pb::GetFilterSetResponse {
            blocking: set.blocking,
            blocked_by: set.blocked_by,
            muting: set.muting,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetCounts", ids = req.get_ref().ids.len()))]
    async fn get_counts(&self, req: Request<pb::GetCountsRequest>) -> R<pb::GetCountsResponse> {
        let t = token(&req);
        let list = self.graph.counts(t.as_deref(), &req.into_inner().ids).await?;
        Ok(Response::new(pb::GetCountsResponse {
            counts: list
                .into_iter()
                .map(|c| pb::Counts {
                    id: c.id,
                    followers_count: c.followers_count,
                    following_count: c.following_count,
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListFollowerIds", account_id = req.get_ref().account_id))]
    async fn list_follower_ids(&self, req: Request<pb::ListFollowerIdsRequest>) -> R<pb::ListFollowerIdsResponse> {
        let r = req.into_inner();
        let page = self.graph.follower_ids(r.account_id, r.after_id, r.limit).await?;
        Ok(Response::new(pb::ListFollowerIdsResponse {
            follower_ids: page.follower_ids,
            next_after_id: page.next_after_id,
            total: page.total,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "FilterFollowers", account_id = req.get_ref().account_id))]
    async fn filter_followers(&self, req: Request<pb::FilterFollowersRequest>) -> R<pb::FilterFollowersResponse> {
        let r = req.into_inner();
        let follower_ids = self.graph.filter_followers(r.account_id, &r.candidate_ids).await?;
        Ok(Response::new(pb::FilterFollowersResponse { follower_ids }))
    }
}
