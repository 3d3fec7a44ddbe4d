//! The tonic face of the feed service: verify the caller, wire types in, [`Feed`] calls, status
//! ids out.

use std::sync::Arc;

use agora_client::Caller;
use agora_kit::jwt::Verifier;
use agora_proto::feed::v1 as pb;
use agora_proto::feed::v1::feed_service_server::FeedService;
use tonic::{Request, Response, Status};

use crate::domain::{EntryFilter, Window};
use crate::feed::{Feed, Viewer};

pub struct FeedGrpc {
    pub feed: Arc<Feed>,
    pub verifier: Arc<Verifier>,
}

const READ: &str = "read:statuses";
const WRITE: &str = "write:statuses";
const CONVERSATIONS: &str = "write:conversations";

fn window(page: Option<pb::Page>) -> Result<Window, Status> {
    let p = page.unwrap_or_default();
    Window::from_page(p.max_id, p.since_id, p.min_id, p.limit)
        .map_err(|e| agora_kit::Error::invalid(e.field, "ERR_INVALID", format!("{} {}", e.field, e.reason)).into())
}

fn page(ids: Vec<i64>) -> Response<pb::TimelinePage> {
    Response::new(pb::TimelinePage { status_ids: ids })
}

fn conversation_pb(c: crate::domain::Conversation) -> pb::Conversation {
    pb::Conversation {
        id: c.id,
        participant_ids: c.participant_ids,
        last_status_id: c.last_status_id,
        unread: c.unread,
    }
}

fn marker_pb(m: crate::domain::Marker) -> pb::Marker {
    pb::Marker {
        timeline: m.timeline,
        last_read_id: m.last_read_id,
        version: m.version,
        updated_at_ms: m.updated_at_ms,
    }
}

impl FeedGrpc {
    /// An optional caller; one that presents a token must hold `read:statuses` (as Mastodon's
    /// public timelines do).
    async fn viewer<T>(&self, req: &Request<T>) -> Result<Viewer, Status> {
        match agora_client::optional_caller(&self.verifier, req).await? {
            Some(c) => {
                c.require(READ)?;
                Ok(viewer_of(c))
            }
            None => Ok(Viewer::default()),
        }
    }
}

fn viewer_of(c: Caller) -> Viewer {
    Viewer { account_id: c.claims.account_id(), token: Some(c.token) }
}

#[tonic::async_trait]
impl FeedService for FeedGrpc {
    async fn get_home_timeline(
        &self,
        req: Request<pb::GetHomeTimelineRequest>,
    ) -> Result<Response<pb::TimelinePage>, Status> {
        let (caller, account) = agora_client::user_with_scope(&self.verifier, &req, READ).await?;
        let w = window(req.into_inner().page)?;
        Ok(page(self.feed.home(account, &caller.token, w).await?))
    }

    async fn get_public_timeline(
        &self,
        req: Request<pb::GetPublicTimelineRequest>,
    ) -> Result<Response<pb::TimelinePage>, Status> {
        let viewer = self.viewer(&req).await?;
        let r = req.into_inner();
        let w = window(r.page)?;
        Ok(page(self.feed.public(&viewer, w, r.only_media).await?))
    }

    async fn get_tag_timeline(
        &self,
        req: Request<pb::GetTagTimelineRequest>,
    ) -> Result<Response<pb::TimelinePage>, Status> {
        let viewer = self.viewer(&req).await?;
        let r = req.into_inner();
        let w = window(r.page)?;
        Ok(page(self.feed.tag(&viewer, &r.tag, w, r.only_media).await?))
    }

    async fn get_account_timeline(
        &self,
        req: Request<pb::GetAccountTimelineRequest>,
    ) -> Result<Response<pb::TimelinePage>, Status> {
        let viewer = self.viewer(&req).await?;
        let r = req.into_inner();
        let w = window(r.page)?;
        let filter = EntryFilter {
            only_media: r.only_media,
            exclude_replies: r.exclude_replies,
            exclude_reblogs: r.exclude_reblogs,
            visibilities: Vec::new(),
        };
        Ok(page(self.feed.account(&viewer, r.account_id, w, filter).await?))
    }

    async fn get_trending_tags(
        &self,
        req: Request<pb::GetTrendsRequest>,
    ) -> Result<Response<pb::GetTrendingTagsResponse>, Status> {
        let r = req.into_inner();
        let tags = self.feed.trending_tags(r.limit, r.offset).await?;
        Ok(Response::new(pb::GetTrendingTagsResponse {
            tags: tags
                .into_iter()
                .map(|t| pb::TrendingTag {
                    name: t.name,
                    score: t.score,
                    history: t
                        .history
                        .into_iter()
                        .map(|d| pb::DayUse { day_start_ms: d.day_start_ms, uses: d.uses, accounts: d.accounts })
                        .collect(),
                })
                .collect(),
        }))
    }

    async fn get_trending_statuses(
        &self,
        req: Request<pb::GetTrendsRequest>,
    ) -> Result<Response<pb::TimelinePage>, Status> {
        let r = req.into_inner();
        Ok(page(self.feed.trending_statuses(r.limit, r.offset).await?))
    }

    async fn get_markers(
        &self,
        req: Request<pb::GetMarkersRequest>,
    ) -> Result<Response<pb::GetMarkersResponse>, Status> {
        let (_, account) = agora_client::user_with_scope(&self.verifier, &req, READ).await?;
        let r = req.into_inner();
        let markers = self.feed.markers(account, &r.timelines).await?;
        Ok(Response::new(pb::GetMarkersResponse { markers: markers.into_iter().map(marker_pb).collect() }))
    }

    async fn save_markers(
        &self,
        req: Request<pb::SaveMarkersRequest>,
    ) -> Result<Response<pb::GetMarkersResponse>, Status> {
        let (_, account) = agora_client::user_with_scope(&self.verifier, &req, WRITE).await?;
        let r = req.into_inner();
        let wanted: Vec<(String, i64)> = r.markers.into_iter().map(|m| (m.timeline, m.last_read_id)).collect();
        let markers = self.feed.save_markers(account, &wanted).await?;
        Ok(Response::new(pb::GetMarkersResponse { markers: markers.into_iter().map(marker_pb).collect() }))
    }

    async fn get_conversations(
        &self,
        req: Request<pb::GetConversationsRequest>,
    ) -> Result<Response<pb::GetConversationsResponse>, Status> {
        let (caller, account) = agora_client::user_with_scope(&self.verifier, &req, READ).await?;
        let w = window(req.into_inner().page)?;
        let list = self.feed.conversations(account, &caller.token, w).await?;
        Ok(Response::new(pb::GetConversationsResponse {
            conversations: list.into_iter().map(conversation_pb).collect(),
        }))
    }

    async fn get_conversation(
        &self,
        req: Request<pb::ConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let (caller, account) = agora_client::user_with_scope(&self.verifier, &req, READ).await?;
        let id = req.into_inner().id;
        Ok(Response::new(conversation_pb(self.feed.conversation(account, &caller.token, id).await?)))
    }

    async fn read_conversation(
        &self,
        req: Request<pb::ConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let (caller, account) = agora_client::user_with_scope(&self.verifier, &req, CONVERSATIONS).await?;
        let id = req.into_inner().id;
        Ok(Response::new(conversation_pb(self.feed.read_conversation(account, &caller.token, id).await?)))
    }

    async fn delete_conversation(
        &self,
        req: Request<pb::ConversationRequest>,
    ) -> Result<Response<pb::DeleteConversationResponse>, Status> {
        let (_, account) = agora_client::user_with_scope(&self.verifier, &req, CONVERSATIONS).await?;
        self.feed.delete_conversation(account, req.into_inner().id).await?;
        Ok(Response::new(pb::DeleteConversationResponse {}))
    }
}
