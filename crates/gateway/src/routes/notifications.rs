//! Notifications: the notification service answers with (type, actor, status id); accounts come
//! from the user service and statuses from the post service, which leaves out what the caller
//! may not see — and a notification whose status the caller may not see is left out with it.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};

use agora_kit::grpc::request;
use agora_proto::feed::v1 as fpb;
use agora_proto::notification::v1 as npb;

use crate::auth::{Authenticated, Caller};
use crate::error::ApiResult;
use crate::paging::{self, linked};
use crate::params::{Params, path_id};
use crate::render::{self, SharedAccount};
use crate::state::AppState;

const READ: &str = "read:notifications";
const WRITE: &str = "write:notifications";

/// Mastodon's Notification entity.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    group_key: String,
    created_at: String,
    account: SharedAccount,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<render::Status>,
}

/// The type filters of a request, repeated as given (`types[]`, `exclude_types[]`).
fn type_filters(p: &Params) -> (Vec<String>, Vec<String>) {
    (p.list("types"), p.list("exclude_types"))
}

/// The page a list request asks for: bounds and filters (40 by default, at most 80).
fn list_request(p: &Params) -> ApiResult<npb::ListNotificationsRequest> {
    let page = paging::bounds(p, 40, 80)?;
    let (types, exclude_types) = type_filters(p);
    Ok(npb::ListNotificationsRequest {
        types,
        exclude_types,
        account_id: account_filter(p)?,
        max_id: page.max_id,
        since_id: page.since_id,
        min_id: page.min_id,
        limit: page.limit,
    })
}

/// The filters a `Link` to the next or previous page repeats.
fn kept_filters(p: &Params, also: &[&str]) -> Vec<(String, String)> {
    let mut keep = Vec::new();
    for key in ["types", "exclude_types"].iter().chain(also) {
        keep.extend(p.list(key).into_iter().map(|v| (format!("{key}[]"), v)));
    }
    keep.extend(paging::keep(p, &["account_id"]));
    keep
}

fn account_filter(p: &Params) -> ApiResult<i64> {
    match p.str("account_id").map(str::trim).filter(|s| !s.is_empty()) {
        Some(raw) => path_id(raw),
        None => Ok(0),
    }
}

/// Entities for the service's notifications, in order. One dropped when its account is gone or
/// its status is one the caller may not see (deleted, private, from a blocked account).
pub(crate) async fn hydrate(st: &AppState, c: &Caller, list: Vec<npb::Notification>) -> ApiResult<Vec<Notification>> {
    let account_ids: Vec<i64> = list.iter().map(|n| n.account_id).collect();
    let mut status_ids: Vec<i64> = list.iter().map(|n| n.status_id).filter(|id| *id > 0).collect();
    status_ids.sort_unstable();
    status_ids.dedup();
    let (accounts, statuses) =
        tokio::join!(render::account_entities(st, &account_ids), render::status_ids(st, Some(c), status_ids));
    let accounts = accounts?;
    let statuses: HashMap<i64, render::Status> = statuses?.into_iter().map(|s| (s.numeric_id, s)).collect();
    Ok(list
        .into_iter()
        .filter_map(|n| {
            let account = SharedAccount::from(accounts.get(&n.account_id)?);
            let status = match n.status_id {
                0 => None,
                id => Some(statuses.get(&id)?.clone()),
            };
            Some(Notification {
                id: n.id.to_string(),
                kind: n.r#type,
                group_key: n.group_key,
                created_at: agora_kit::time::rfc3339_ms(n.created_at_ms),
                account,
                status,
            })
        })
        .collect())
}

/// `GET /api/v1/notifications`.
pub async fn list(State(st): State<AppState>, Authenticated(c): Authenticated, p: Params) -> ApiResult<Response> {
    c.require_user(READ)?;
    let req = list_request(&p)?;
    let found = st.notification.clone().list_notifications(request(req, Some(&c.token))).await?.into_inner();
    // The cursors are the service's page, before hydration drops anything, so a page whose
    // notifications were all hidden still leads to the next one.
    let cursors: Vec<i64> = found.notifications.iter().map(|n| n.id).collect();
    let list = hydrate(&st, &c, found.notifications).await?;
    Ok(linked(&st.config.public_url, "/api/v1/notifications", &kept_filters(&p, &[]), &cursors, list))
}

/// `GET /api/v1/notifications/:id`: 404 for another account's, exactly as for a missing one.
pub async fn get(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Notification>> {
    c.require_user(READ)?;
    let id = path_id(&id)?;
    let n =
        st.notification.clone().get_notification(request(npb::NotificationIdRequest { id }, Some(&c.token))).await?;
    let mut list = hydrate(&st, &c, vec![n.into_inner()]).await?;
    list.pop().map(axum::Json).ok_or_else(crate::error::ApiError::not_found)
}

/// `POST /api/v1/notifications/:id/dismiss`.
pub async fn dismiss(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    c.require_user(WRITE)?;
    let id = path_id(&id)?;
    st.notification.clone().dismiss_notification(request(npb::NotificationIdRequest { id }, Some(&c.token))).await?;
    Ok(axum::Json(json!({})))
}

/// `POST /api/v1/notifications/clear`.
pub async fn clear(State(st): State<AppState>, Authenticated(c): Authenticated) -> ApiResult<axum::Json<Value>> {
    c.require_user(WRITE)?;
    st.notification.clone().clear_notifications(request(npb::ClearNotificationsRequest {}, Some(&c.token))).await?;
    Ok(axum::Json(json!({})))
}

/// `GET /api/v1/notifications/unread_count`: those newer than the `notifications` read marker.
pub async fn unread_count(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    p: Params,
) -> ApiResult<axum::Json<Value>> {
    c.require_user(READ)?;
    let limit = match p.str("limit").map(str::trim).filter(|s| !s.is_empty()) {
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| crate::error::ApiError::unprocessable("limit must be a non-negative number"))?
            .min(1000) as i32,
        None => 0,
    };
    let markers = st
        .feed
        .clone()
        .get_markers(request(fpb::GetMarkersRequest { timelines: vec!["notifications".into()] }, Some(&c.token)))
        .await?
        .into_inner()
        .markers;
    let after_id = markers.iter().find(|m| m.timeline == "notifications").map_or(0, |m| m.last_read_id);
    let (types, exclude_types) = type_filters(&p);
    let req = npb::GetUnreadCountRequest { after_id, limit, types, exclude_types, account_id: account_filter(&p)? };
    let count = st.notification.clone().get_unread_count(request(req, Some(&c.token))).await?.into_inner().count;
    Ok(axum::Json(json!({ "count": count })))
}

/// One group of Mastodon 4.3's grouped notifications.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationGroup {
    group_key: String,
    notifications_count: i64,
    #[serde(rename = "type")]
    kind: String,
    most_recent_notification_id: String,
    page_min_id: String,
    page_max_id: String,
    latest_page_notification_at: String,
    sample_account_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct GroupedNotifications {
    accounts: Vec<SharedAccount>,
    statuses: Vec<render::Status>,
    notification_groups: Vec<NotificationGroup>,
}

/// `GET /api/v2/notifications`: a page of notifications folded into groups, with the accounts
/// and statuses they name listed once each.
pub async fn grouped(State(st): State<AppState>, Authenticated(c): Authenticated, p: Params) -> ApiResult<Response> {
    c.require_user(READ)?;
    let req =
        npb::ListNotificationGroupsRequest { page: Some(list_request(&p)?), grouped_types: p.list("grouped_types") };
    let found = st.notification.clone().list_notification_groups(request(req, Some(&c.token))).await?.into_inner();

    let mut account_ids: Vec<i64> = found.groups.iter().flat_map(|g| g.sample_account_ids.iter().copied()).collect();
    account_ids.sort_unstable();
    account_ids.dedup();
    let mut status_ids: Vec<i64> = found.groups.iter().map(|g| g.status_id).filter(|id| *id > 0).collect();
    status_ids.sort_unstable();
    status_ids.dedup();
    let (accounts, statuses) =
        tokio::join!(render::account_entities(&st, &account_ids), render::status_ids(&st, Some(&c), status_ids));
    let accounts = accounts?;
    let statuses = statuses?;
    let visible: std::collections::HashSet<i64> = statuses.iter().map(|s| s.numeric_id).collect();
    let groups: Vec<NotificationGroup> = found
        .groups
        .into_iter()
        .filter(|g| g.status_id == 0 || visible.contains(&g.status_id))
        .filter_map(|g| {
            let sample: Vec<String> =
                g.sample_account_ids.iter().filter(|id| accounts.contains_key(id)).map(|id| id.to_string()).collect();
            (!sample.is_empty()).then(|| NotificationGroup {
                group_key: g.group_key,
                notifications_count: g.notifications_count,
                kind: g.r#type,
                most_recent_notification_id: g.most_recent_notification_id.to_string(),
                page_min_id: g.page_min_id.to_string(),
                page_max_id: g.page_max_id.to_string(),
                latest_page_notification_at: agora_kit::time::rfc3339_ms(g.latest_page_notification_at_ms),
                sample_account_ids: sample,
                status_id: (g.status_id > 0).then(|| g.status_id.to_string()),
            })
        })
        .collect();
    let accounts: Vec<SharedAccount> =
        account_ids.iter().filter_map(|id| accounts.get(id)).map(SharedAccount::from).collect();
    let body = GroupedNotifications { accounts, statuses, notification_groups: groups };

    let keep = kept_filters(&p, &["grouped_types"]);
    Ok(paging::linked_object(&st.config.public_url, "/api/v2/notifications", &keep, &found.page_ids, &body))
}
