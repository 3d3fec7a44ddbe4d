//! The tonic face of the post service: wire types in, [`Posts`] calls, wire types out. The
//! caller's token is passed on as presented; [`Posts`] verifies it.

use std::sync::Arc;

use agora_kit::grpc::bearer_token;
use agora_proto::post::v1 as pb;
use agora_proto::post::v1::post_service_server::PostService;
use tonic::{Request, Response, Status};

use crate::service::Posts;

pub struct PostGrpc {
    pub posts: Arc<Posts>,
}

type R<T> = Result<Response<T>, Status>;

fn token<T>(req: &Request<T>) -> Option<String> {
    bearer_token(req).map(str::to_owned)
}

fn status(s: pb::Status) -> R<pb::StatusResponse> {
    Ok(Response::new(pb::StatusResponse { status: Some(s) }))
}

#[tonic::async_trait]
impl PostService for PostGrpc {
    #[tracing::instrument(skip_all, fields(rpc = "CreateStatus", in_reply_to_id = req.get_ref().in_reply_to_id))]
    async fn create_status(&self, req: Request<pb::CreateStatusRequest>) -> R<pb::StatusResponse> {
        let t = token(&req);
        status(self.posts.create_status(t.as_deref(), req.into_inner()).await?)
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetStatuses", count = req.get_ref().ids.len()))]
    async fn get_statuses(&self, req: Request<pb::GetStatusesRequest>) -> R<pb::GetStatusesResponse> {
        let statuses = self.posts.get_statuses(bearer_token(&req), &req.get_ref().ids).await?;
        let author_stats =
            if req.get_ref().with_author_stats { self.posts.author_stats(&statuses).await? } else { Vec::new() };
        Ok(Response::new(pb::GetStatusesResponse { statuses, author_stats }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetStatusForViewers", id = req.get_ref().id, viewers = req.get_ref().tokens.len()))]
    async fn get_status_for_viewers(
        &self,
        req: Request<pb::GetStatusForViewersRequest>,
    ) -> R<pb::GetStatusForViewersResponse> {
        let r = req.get_ref();
        Ok(Response::new(self.posts.status_for_viewers(r.id, &r.tokens).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "DeleteStatus", id = req.get_ref().id))]
    async fn delete_status(&self, req: Request<pb::StatusIdRequest>) -> R<pb::StatusResponse> {
        status(self.posts.delete_status(bearer_token(&req), req.get_ref().id).await?)
    }

    #[tracing::instrument(skip_all, fields(rpc = "EditStatus", id = req.get_ref().id))]
    async fn edit_status(&self, req: Request<pb::EditStatusRequest>) -> R<pb::StatusResponse> {
        let t = token(&req);
        status(self.posts.edit_status(t.as_deref(), req.into_inner()).await?)
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetHistory", id = req.get_ref().id))]
    async fn get_history(&self, req: Request<pb::StatusIdRequest>) -> R<pb::GetHistoryResponse> {
        let edits = self.posts.get_history(bearer_token(&req), req.get_ref().id).await?;
        Ok(Response::new(pb::GetHistoryResponse { edits }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetSource", id = req.get_ref().id))]
    async fn get_source(&self, req: Request<pb::StatusIdRequest>) -> R<pb::GetSourceResponse> {
        Ok(Response::new(self.posts.get_source(bearer_token(&req), req.get_ref().id).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetContext", id = req.get_ref().id))]
    async fn get_context(&self, req: Request<pb::StatusIdRequest>) -> R<pb::GetContextResponse> {
        Ok(Response::new(self.posts.get_context(bearer_token(&req), req.get_ref().id).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Favourite", id = req.get_ref().id))]
    async fn favourite(&self, req: Request<pb::StatusIdRequest>) -> R<pb::StatusResponse> {
        status(self.posts.favourite(bearer_token(&req), req.get_ref().id).await?)
    }

    #[tracing::instrument(skip_all, fields(rpc = "Unfavourite", id = req.get_ref().id))]
    async fn unfavourite(&self, req: Request<pb::StatusIdRequest>) -> R<pb::StatusResponse> {
        status(self.posts.unfavourite(bearer_token(&req), req.get_ref().id).await?)
    }

    #[tracing::instrument(skip_all, fields(rpc = "Reblog", id = req.get_ref().id))]
    async fn reblog(&self, req: Request<pb::ReblogRequest>) -> R<pb::StatusResponse> {
        let t = token(&req);
        status(self.posts.reblog(t.as_deref(), req.into_inner()).await?)
    }

    #[tracing::instrument(skip_all, fields(rpc = "Unreblog", id = req.get_ref().id))]
    async fn unreblog(&self, req: Request<pb::StatusIdRequest>) -> R<pb::StatusResponse> {
        status(self.posts.unreblog(bearer_token(&req), req.get_ref().id).await?)
    }

    #[tracing::instrument(skip_all, fields(rpc = "Bookmark", id = req.get_ref().id))]
    async fn bookmark(&self, req: Request<pb::StatusIdRequest>) -> R<pb::StatusResponse> {
        status(self.posts.bookmark(bearer_token(&req), req.get_ref().id).await?)
    }

    #[tracing::instrument(skip_all, fields(rpc = "Unbookmark", id = req.get_ref().id))]
    async fn unbookmark(&self, req: Request<pb::StatusIdRequest>) -> R<pb::StatusResponse> {
        status(self.posts.unbookmark(bearer_token(&req), req.get_ref().id).await?)
    }

    #[tracing::instrument(skip_all, fields(rpc = "Pin", id = req.get_ref().id))]
    async fn pin(&self, req: Request<pb::StatusIdRequest>) -> R<pb::StatusResponse> {
        status(self.posts.pin(bearer_token(&req), req.get_ref().id).await?)
    }

    #[tracing::instrument(skip_all, fields(rpc = "Unpin", id = req.get_ref().id))]
    async fn unpin(&self, req: Request<pb::StatusIdRequest>) -> R<pb::StatusResponse> {
        status(self.posts.unpin(bearer_token(&req), req.get_ref().id).await?)
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListFavouritedBy", id = req.get_ref().id))]
    async fn list_favourited_by(&self, req: Request<pb::ListByStatusRequest>) -> R<pb::AccountPage> {
        let t = token(&req);
        Ok(Response::new(self.posts.favourited_by(t.as_deref(), req.into_inner()).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListRebloggedBy", id = req.get_ref().id))]
    async fn list_reblogged_by(&self, req: Request<pb::ListByStatusRequest>) -> R<pb::AccountPage> {
        let t = token(&req);
        Ok(Response::new(self.posts.reblogged_by(t.as_deref(), req.into_inner()).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListFavourites"))]
    async fn list_favourites(&self, req: Request<pb::ListMineRequest>) -> R<pb::StatusPage> {
        Ok(Response::new(self.posts.list_favourites(bearer_token(&req), req.get_ref().page.as_ref()).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListBookmarks"))]
    async fn list_bookmarks(&self, req: Request<pb::ListMineRequest>) -> R<pb::StatusPage> {
        Ok(Response::new(self.posts.list_bookmarks(bearer_token(&req), req.get_ref().page.as_ref()).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListPinned", account_id = req.get_ref().account_id))]
    async fn list_pinned(&self, req: Request<pb::ListPinnedRequest>) -> R<pb::StatusPage> {
        Ok(Response::new(self.posts.list_pinned(bearer_token(&req), req.get_ref().account_id).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "AddReaction", id = req.get_ref().id))]
    async fn add_reaction(&self, req: Request<pb::ReactionRequest>) -> R<pb::ReactionsResponse> {
        let t = token(&req);
        let reactions = self.posts.add_reaction(t.as_deref(), req.into_inner()).await?;
        Ok(Response::new(pb::ReactionsResponse { reactions }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RemoveReaction", id = req.get_ref().id))]
    async fn remove_reaction(&self, req: Request<pb::ReactionRequest>) -> R<pb::ReactionsResponse> {
        let t = token(&req);
        let reactions = self.posts.remove_reaction(t.as_deref(), req.into_inner()).await?;
        Ok(Response::new(pb::ReactionsResponse { reactions }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListReactions", id = req.get_ref().id))]
    async fn list_reactions(&self, req: Request<pb::StatusIdRequest>) -> R<pb::ReactionsResponse> {
        let reactions = self.posts.list_reactions(bearer_token(&req), req.get_ref().id).await?;
        Ok(Response::new(pb::ReactionsResponse { reactions }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetAccountStats", count = req.get_ref().ids.len()))]
    async fn get_account_stats(&self, req: Request<pb::GetAccountStatsRequest>) -> R<pb::GetAccountStatsResponse> {
        let stats = self.posts.account_stats(bearer_token(&req), &req.get_ref().ids).await?;
        Ok(Response::new(pb::GetAccountStatsResponse { stats }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListAccountStatusEvents", account_id = req.get_ref().account_id))]
    async fn list_account_status_events(
        &self,
        req: Request<pb::ListAccountStatusEventsRequest>,
    ) -> R<pb::ListAccountStatusEventsResponse> {
        let statuses = self.posts.account_status_events(req.into_inner()).await?;
        Ok(Response::new(pb::ListAccountStatusEventsResponse { statuses }))
    }
}
