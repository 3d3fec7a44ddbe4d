//! The tonic face of the notification service: verify the caller, wire types in,
//! [`Notifications`] calls, notifications out.

use std::sync::Arc;

use agora_kit::jwt::Verifier;
use agora_proto::notification::v1 as pb;
use agora_proto::notification::v1::notification_service_server::NotificationService;
use tonic::{Request, Response, Status};

use crate::domain::{self, Notification, Query};
use crate::notifications::{NotificationError, Notifications};
use crate::push::deliver::Pusher;
use crate::push::{Policy, PushSubscription, normalize_alerts, normalize_keys};

pub struct NotificationGrpc {
    pub notifications: Arc<Notifications>,
    pub verifier: Arc<Verifier>,
    pub pusher: Arc<Pusher>,
}

const READ: &str = "read:notifications";
const WRITE: &str = "write:notifications";
const PUSH: &str = "push";

fn invalid(field: &'static str, message: impl Into<String>) -> Status {
    NotificationError::Invalid { field, message: message.into() }.into()
}

fn store_error(e: crate::store::StoreError) -> Status {
    agora_kit::Error::from(e).into()
}

fn push_pb(s: &PushSubscription) -> pb::PushSubscription {
    pb::PushSubscription {
        id: s.id,
        endpoint: s.endpoint.clone(),
        standard: s.standard,
        alerts: s.alerts.clone(),
        policy: s.policy.as_str().to_owned(),
        server_key: s.server_key.clone(),
    }
}

fn policy(raw: &str) -> Result<Policy, Status> {
    Policy::parse(raw).ok_or_else(|| invalid("policy", "policy must be all, followed, follower or none"))
}

/// The caller's account and session: push subscriptions belong to a user token's session.
async fn push_caller<T>(verifier: &Verifier, req: &Request<T>) -> Result<(agora_client::Caller, i64, i64), Status> {
    let (caller, me) = agora_client::user_with_scope(verifier, req, PUSH).await?;
    let session = caller.claims.session_id().ok_or_else(|| Status::unauthenticated("The access token is invalid"))?;
    Ok((caller, me, session))
}

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

    async fn put_push_subscription(
        &self,
        req: Request<pb::PutPushSubscriptionRequest>,
    ) -> Result<Response<pb::PushSubscription>, Status> {
        let (caller, me, session) = push_caller(&self.verifier, &req).await?;
        let r = req.into_inner();
        let endpoint = crate::push::check_endpoint(&r.endpoint, self.pusher.allow_private())
            .await
            .map_err(|e| invalid("subscription[endpoint]", e))?;
        let (p256dh, auth) = normalize_keys(&r.p256dh, &r.auth).map_err(|e| invalid("subscription[keys]", e))?;
        let key = self.pusher.vapid_key().await.map_err(store_error)?;
        let sub = PushSubscription {
            id: self.notifications.next_id(),
            account_id: me,
            session_id: session,
            endpoint: endpoint.to_string(),
            p256dh,
            auth,
            standard: r.standard,
            alerts: normalize_alerts(r.alerts),
            policy: policy(&r.policy)?,
            access_token: caller.token,
            server_key: key.public_key,
            created_at_ms: agora_kit::time::now_ms(),
        };
        self.notifications.store().put_push_subscription(&sub).await.map_err(store_error)?;
        metrics::counter!("agora_push_subscriptions_changed_total", "change" => "put").increment(1);
        Ok(Response::new(push_pb(&sub)))
    }

    async fn get_push_subscription(
        &self,
        req: Request<pb::GetPushSubscriptionRequest>,
    ) -> Result<Response<pb::PushSubscription>, Status> {
        let (_, me, session) = push_caller(&self.verifier, &req).await?;
        let found = self.notifications.store().push_subscription(me, session).await.map_err(store_error)?;
        let sub = found.ok_or_else(|| Status::not_found("Record not found"))?;
        Ok(Response::new(push_pb(&sub)))
    }

    async fn update_push_subscription(
        &self,
        req: Request<pb::UpdatePushSubscriptionRequest>,
    ) -> Result<Response<pb::PushSubscription>, Status> {
        let (_, me, session) = push_caller(&self.verifier, &req).await?;
        let r = req.into_inner();
        let policy = policy(&r.policy)?;
        let store = self.notifications.store();
        let found = store.push_subscription(me, session).await.map_err(store_error)?;
        let mut sub = found.ok_or_else(|| Status::not_found("Record not found"))?;
        sub.alerts = normalize_alerts(r.alerts);
        sub.policy = policy;
        store.put_push_subscription(&sub).await.map_err(store_error)?;
        metrics::counter!("agora_push_subscriptions_changed_total", "change" => "update").increment(1);
        Ok(Response::new(push_pb(&sub)))
    }

    async fn delete_push_subscription(
        &self,
        req: Request<pb::DeletePushSubscriptionRequest>,
    ) -> Result<Response<pb::DeletePushSubscriptionResponse>, Status> {
        let (_, me, session) = push_caller(&self.verifier, &req).await?;
        if self.notifications.store().delete_push_subscription(me, session).await.map_err(store_error)? {
            metrics::counter!("agora_push_subscriptions_changed_total", "change" => "delete").increment(1);
        }
        Ok(Response::new(pb::DeletePushSubscriptionResponse {}))
    }

    async fn get_vapid_key(
        &self,
        _: Request<pb::GetVapidKeyRequest>,
    ) -> Result<Response<pb::GetVapidKeyResponse>, Status> {
        let key = self.pusher.vapid_key().await.map_err(store_error)?;
        Ok(Response::new(pb::GetVapidKeyResponse { public_key: key.public_key }))
    }
}
