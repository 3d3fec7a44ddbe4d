//! The tonic face of the notification service: verify the caller, wire types in,
//! [`Notifications`] calls, notifications out.

use std::sync::Arc;

use agora_kit::jwt::Verifier;
use agora_proto::notification::v1 as pb;
use agora_proto::notification::v1::notification_service_server::NotificationService;
use tonic::{Request, Response, Status};

use crate::domain::{self, Notification, Query};
use crate::notifications::{NotificationError, Notifications};

pub struct NotificationGrpc {
    pub notifications: Arc<Notifications>,
    pub verifier: Arc<Verifier>,
}

const READ: &str = "read:notifications";
const WRITE: &str = "write:notifications";

fn kinds(field: &'static str, names: &[String]) -> Result<Vec<domain::Kind>, Status> {
    domain::parse_kinds(names).map_err(|e| NotificationError::Invalid { field, message: e.to_string() }.into())
}

fn positive(id: i64) -> Option<i64> {
    (id > 0).then_some(id)
}

fn to_pb(n: Notification) -> pb::Notification {
    pb::Notification {
        group_key: n.group_key(),
        id: n.id,
        r#type: n.kind.as_str().to_owned(),
        account_id: n.account_id,
        status_id: n.status_id,
        created_at_ms: n.created_at_ms,
    }
}

fn list_query(r: pb::ListNotificationsRequest) -> Result<Query, Status> {
    Ok(Query {
        types: kinds("types", &r.types)?,
        exclude_types: kinds("exclude_types", &r.exclude_types)?,
        account_id: positive(r.account_id),
        max_id: positive(r.max_id),
        since_id: positive(r.since_id),
        min_id: positive(r.min_id),
        limit: domain::page_limit(r.limit),
    })
}

/// Mastodon counts unread notifications up to 100 unless asked for more, and never past 1,000.
fn unread_limit(requested: i32) -> usize {
    match requested {
        n if n <= 0 => 100,
        n => (n as usize).min(1000),
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationGrpc {
    async fn list_notifications(
        &self,
        req: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let (_, me) = agora_client::user_with_scope(&self.verifier, &req, READ).await?;
        let query = list_query(req.into_inner())?;
        let found = self.notifications.list(me, &query).await?;
        Ok(Response::new(pb::ListNotificationsResponse { notifications: found.into_iter().map(to_pb).collect() }))
    }

    async fn get_notification(
        &self,
        req: Request<pb::NotificationIdRequest>,
    ) -> Result<Response<pb::Notification>, Status> {
        let (_, me) = agora_client::user_with_scope(&self.verifier, &req, READ).await?;
        let id = req.into_inner().id;
        Ok(Response::new(to_pb(self.notifications.get(me, id).await?)))
    }

    async fn dismiss_notification(
        &self,
        req: Request<pb::NotificationIdRequest>,
    ) -> Result<Response<pb::DismissNotificationResponse>, Status> {
        let (_, me) = agora_client::user_with_scope(&self.verifier, &req, WRITE).await?;
        let id = req.into_inner().id;
        self.notifications.dismiss(me, id).await?;
        Ok(Response::new(pb::DismissNotificationResponse {}))
    }

    async fn clear_notifications(
        &self,
        req: Request<pb::ClearNotificationsRequest>,
    ) -> Result<Response<pb::ClearNotificationsResponse>, Status> {
        let (_, me) = agora_client::user_with_scope(&self.verifier, &req, WRITE).await?;
        let removed = self.notifications.clear(me).await?;
        Ok(Response::new(pb::ClearNotificationsResponse { removed: removed as i64 }))
    }

    async fn list_notification_groups(
        &self,
        req: Request<pb::ListNotificationGroupsRequest>,
    ) -> Result<Response<pb::ListNotificationGroupsResponse>, Status> {
        let (_, me) = agora_client::user_with_scope(&self.verifier, &req, READ).await?;
        let r = req.into_inner();
        let query = list_query(r.page.unwrap_or_default())?;
        let grouped = match kinds("grouped_types", &r.grouped_types)? {
            g if g.is_empty() => domain::DEFAULT_GROUPED.to_vec(),
            g => g,
        };
        let (groups, page_ids) = self.notifications.groups(me, &query, &grouped).await?;
        let groups = groups
            .into_iter()
            .map(|(g, stats)| pb::NotificationGroup {
                group_key: g.key,
                r#type: g.kind.as_str().to_owned(),
                notifications_count: stats.count,
                most_recent_notification_id: stats.most_recent_id.max(g.page_max_id),
                page_min_id: g.page_min_id,
                page_max_id: g.page_max_id,
                latest_page_notification_at_ms: g.latest_page_at_ms,
                sample_account_ids: if stats.sample_account_ids.is_empty() {
                    g.page_account_ids
                } else {
                    stats.sample_account_ids
                },
                status_id: g.status_id,
            })
            .collect();
        Ok(Response::new(pb::ListNotificationGroupsResponse { groups, page_ids }))
    }

    async fn get_unread_count(
        &self,
        req: Request<pb::GetUnreadCountRequest>,
    ) -> Result<Response<pb::GetUnreadCountResponse>, Status> {
        let (_, me) = agora_client::user_with_scope(&self.verifier, &req, READ).await?;
        let r = req.into_inner();
        let query = Query {
            types: kinds("types", &r.types)?,
            exclude_types: kinds("exclude_types", &r.exclude_types)?,
            account_id: positive(r.account_id),
            limit: unread_limit(r.limit),
            ..Default::default()
        };
        let count = self.notifications.unread_count(me, r.after_id.max(0), &query).await?;
        Ok(Response::new(pb::GetUnreadCountResponse { count }))
    }
}
