//! Mastodon conversations: the direct statuses the caller takes part in, grouped per thread
//! and set of participants by the feed service. The post service hydrates each last status as
//! the caller may see it; a conversation whose last status they may not see is left out.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use agora_kit::grpc::request;
use agora_proto::feed::v1 as fpb;

use crate::auth::{Authenticated, Caller};
use crate::error::{ApiError, ApiResult};
use crate::paging::{self, linked};
use crate::params::{Params, path_id};
use crate::render;
use crate::state::AppState;

/// Mastodon's Conversation entity.
#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    id: String,
    unread: bool,
    /// The other participants; the caller alone for a conversation with themselves.
    accounts: Vec<render::SharedAccount>,
    last_status: Option<render::Status>,
}

/// Conversation entities for the feed's records, in order: one status call and one account
/// call for the whole list. A conversation whose last status the caller may not see (deleted
/// meanwhile, or hidden) is left out.
pub async fn entities(st: &AppState, caller: &Caller, list: Vec<fpb::Conversation>) -> ApiResult<Vec<Conversation>> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let me = caller.account_id()?;
    let ids: Vec<i64> = list.iter().map(|c| c.last_status_id).collect();
    let mut accounts: Vec<i64> = list.iter().flat_map(|c| c.participant_ids.iter().copied()).collect();
    accounts.push(me);
    let (statuses, people) =
        tokio::join!(render::status_ids(st, Some(caller), ids), render::account_entities(st, &accounts));
    let (statuses, people) = (statuses?, people?);
    let mut by_id: std::collections::HashMap<i64, render::Status> =
        statuses.into_iter().map(|s| (s.numeric_id, s)).collect();
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let status = by_id.remove(&c.last_status_id)?;
            let who = if c.participant_ids.is_empty() { vec![me] } else { c.participant_ids.clone() };
            Some(Conversation {
                id: c.id.to_string(),
                unread: c.unread,
                accounts: who.iter().filter_map(|id| people.get(id)).map(render::SharedAccount::from).collect(),
                last_status: Some(status),
            })
        })
        .collect())
}

/// The one conversation as a JSON text, for a stream; None when the caller may not see it.
pub async fn one(st: &AppState, caller: &Caller, c: fpb::Conversation) -> ApiResult<Option<Conversation>> {
    Ok(entities(st, caller, vec![c]).await?.pop())
}

fn reader(c: &Caller, scope: &str) -> ApiResult<()> {
    c.account_id()?;
    c.require(scope)
}

/// `GET /api/v1/conversations`: newest last status first, paged by last status id.
pub async fn list(State(st): State<AppState>, Authenticated(c): Authenticated, p: Params) -> ApiResult<Response> {
    reader(&c, "read:statuses")?;
    let page = paging::bounds(&p, 20, 40)?;
    let found = st
        .feed
        .clone()
        .get_conversations(request(fpb::GetConversationsRequest { page: Some(page.into()) }, Some(&c.token)))
        .await?
        .into_inner()
        .conversations;
    // The cursors are the feed's, so a page whose last statuses were all hidden still moves on.
    let cursors: Vec<i64> = found.iter().map(|c| c.last_status_id).collect();
    let list = entities(&st, &c, found).await?;
    Ok(linked(&st.config.public_url, "/api/v1/conversations", &[], &cursors, list))
}

/// `POST /api/v1/conversations/:id/read`.
pub async fn read(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    reader(&c, "write:conversations")?;
    let id = path_id(&id)?;
    let found = st.feed.clone().read_conversation(request(fpb::ConversationRequest { id }, Some(&c.token))).await?;
    let entity = one(&st, &c, found.into_inner()).await?.ok_or_else(ApiError::not_found)?;
    Ok(axum::Json(entity).into_response())
}

/// `DELETE /api/v1/conversations/:id`: gone for the caller alone; `{}`.
pub async fn remove(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    reader(&c, "write:conversations")?;
    let id = path_id(&id)?;
    st.feed.clone().delete_conversation(request(fpb::ConversationRequest { id }, Some(&c.token))).await?;
    Ok(axum::Json(serde_json::json!({})).into_response())
}
