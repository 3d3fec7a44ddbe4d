//! `/api/v1/statuses…`, favourites, bookmarks and the emoji-reaction extension.

use axum::extract::{Path, State};
use axum::response::Response;
use http::HeaderMap;
use serde_json::{Value, json};

use agora_kit::grpc::request;
use agora_proto::post::v1 as ppb;

use crate::auth::{Authenticated, Caller, OptionalCaller};
use crate::error::{ApiError, ApiResult};
use crate::paging::{self, linked};
use crate::params::{Params, path_id as parse_id};
use crate::render;
use crate::state::AppState;

type Json = axum::Json<Value>;
type StatusJson = axum::Json<render::Status>;

fn opt_id(p: &Params, key: &str) -> ApiResult<i64> {
    match p.str(key).map(str::trim) {
        None | Some("") => Ok(0),
        Some(s) => s.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(ApiError::not_found),
    }
}

async fn render_one(st: &AppState, s: Option<ppb::Status>) -> ApiResult<axum::Json<render::Status>> {
    let s = s.ok_or_else(ApiError::not_found)?;
    Ok(axum::Json(render::one_status(st, &s).await?))
}

pub async fn create(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    headers: HeaderMap,
    p: Params,
) -> ApiResult<StatusJson> {
    c.require_user("write:statuses")?;
    if !p.list("media_ids").is_empty() {
        return Err(ApiError::unprocessable("Media attachments are not supported yet"));
    }
    if p.str("poll[expires_in]").is_some() || !p.list("poll[options]").is_empty() {
        return Err(ApiError::unprocessable("Polls are not supported yet"));
    }
    if p.str("scheduled_at").is_some_and(|s| !s.trim().is_empty()) {
        return Err(ApiError::unprocessable("Scheduled statuses are not supported yet"));
    }
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if key.len() > 256 {
        return Err(ApiError::unprocessable("Idempotency-Key is too long"));
    }
    let req = ppb::CreateStatusRequest {
        text: p.text_or_empty("status")?,
        spoiler_text: p.text_or_empty("spoiler_text")?,
        sensitive: p.bool("sensitive")?.unwrap_or(false),
        visibility: render::parse_visibility(&p.text_or_empty("visibility")?, ppb::Visibility::Public)? as i32,
        language: p.text_or_empty("language")?,
        in_reply_to_id: opt_id(&p, "in_reply_to_id")?,
        idempotency_key: key.to_owned(),
    };
    let s = st.post.clone().create_status(request(req, Some(&c.token))).await?.into_inner().status;
    render_one(&st, s).await
}

pub async fn get(
    State(st): State<AppState>,
    OptionalCaller(c): OptionalCaller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<render::Status>> {
    let id = parse_id(&id)?;
    if let Some(c) = &c {
        c.require("read:statuses")?;
    }
    let mut list = render::status_ids(&st, c.as_ref(), vec![id]).await?;
    list.pop().map(axum::Json).ok_or_else(ApiError::not_found)
}

/// `GET /api/v1/statuses?id[]=…`.
pub async fn batch(
    State(st): State<AppState>,
    OptionalCaller(c): OptionalCaller,
    p: Params,
) -> ApiResult<axum::Json<Vec<render::Status>>> {
    let ids: Vec<i64> = p.list("id").iter().filter_map(|s| s.parse().ok()).collect();
    if ids.len() > 40 {
        return Err(ApiError::unprocessable("at most 40 ids"));
    }
    Ok(axum::Json(render::status_ids(&st, c.as_ref(), ids).await?))
}

pub async fn delete(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<StatusJson> {
    c.require_user("write:statuses")?;
    let id = parse_id(&id)?;
    let s = st.post.clone().delete_status(request(ppb::StatusIdRequest { id }, Some(&c.token))).await?.into_inner();
    render_one(&st, s.status).await
}

pub async fn edit(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    Path(id): Path<String>,
    p: Params,
) -> ApiResult<StatusJson> {
    c.require_user("write:statuses")?;
    let id = parse_id(&id)?;
    if !p.list("media_ids").is_empty() {
        return Err(ApiError::unprocessable("Media attachments are not supported yet"));
    }
    let req = ppb::EditStatusRequest {
        id,
        text: p.text_or_empty("status")?,
        spoiler_text: p.text_or_empty("spoiler_text")?,
        sensitive: p.bool("sensitive")?.unwrap_or(false),
        language: p.text_or_empty("language")?,
    };
    let s = st.post.clone().edit_status(request(req, Some(&c.token))).await?.into_inner().status;
    render_one(&st, s).await
}

pub async fn context(
    State(st): State<AppState>,
    OptionalCaller(c): OptionalCaller,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    let id = parse_id(&id)?;
    let token = c.as_ref().map(|c| c.token.as_str());
    let ctx = st.post.clone().get_context(request(ppb::StatusIdRequest { id }, token)).await?.into_inner();
    let n = ctx.ancestors.len();
    let all: Vec<ppb::Status> = ctx.ancestors.into_iter().chain(ctx.descendants).collect();
    let mut rendered = render::statuses(&st, &all).await?;
    // A status whose author vanished is dropped by rendering; keep the split point right.
    let ancestors: std::collections::HashSet<i64> = all[..n].iter().map(|s| s.id).collect();
    let split = rendered.iter().take_while(|s| ancestors.contains(&s.numeric_id)).count();
    let descendants = rendered.split_off(split);
    Ok(axum::Json(json!({ "ancestors": rendered, "descendants": descendants })))
}

pub async fn history(
    State(st): State<AppState>,
    OptionalCaller(c): OptionalCaller,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    let id = parse_id(&id)?;
    let token = c.as_ref().map(|c| c.token.as_str());
    let edits = st.post.clone().get_history(request(ppb::StatusIdRequest { id }, token)).await?.into_inner().edits;
    let ids: Vec<i64> = edits.iter().map(|e| e.account_id).collect();
    let accounts = render::accounts(&st, &ids).await?;
    let list = edits
        .iter()
        .map(|e| {
            json!({
                "content": e.content,
                "spoiler_text": e.spoiler_text,
                "sensitive": e.sensitive,
                "created_at": agora_kit::time::rfc3339_ms(e.created_at_ms),
                "account": accounts.get(&e.account_id).cloned().unwrap_or(Value::Null),
                "poll": Value::Null,
                "media_attachments": [],
                "emojis": [],
            })
        })
        .collect();
    Ok(axum::Json(Value::Array(list)))
}

pub async fn source(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    c.require_user("read:statuses")?;
    let id = parse_id(&id)?;
    let s = st.post.clone().get_source(request(ppb::StatusIdRequest { id }, Some(&c.token))).await?.into_inner();
    Ok(axum::Json(json!({ "id": s.id.to_string(), "text": s.text, "spoiler_text": s.spoiler_text })))
}

/// The one-word actions on a status: favourite, reblog, bookmark, pin and their undos.
#[derive(Clone, Copy)]
pub enum Action {
    Favourite,
    Unfavourite,
    Unreblog,
    Bookmark,
    Unbookmark,
    Pin,
    Unpin,
}

async fn act(st: &AppState, c: &Caller, id: &str, action: Action) -> ApiResult<StatusJson> {
    let scope = match action {
        Action::Favourite | Action::Unfavourite => "write:favourites",
        Action::Bookmark | Action::Unbookmark => "write:bookmarks",
        Action::Unreblog | Action::Pin | Action::Unpin => "write:statuses",
    };
    c.require_user(scope)?;
    let id = parse_id(id)?;
    let req = request(ppb::StatusIdRequest { id }, Some(&c.token));
    let mut post = st.post.clone();
    let s = match action {
        Action::Favourite => post.favourite(req).await,
        Action::Unfavourite => post.unfavourite(req).await,
        Action::Unreblog => post.unreblog(req).await,
        Action::Bookmark => post.bookmark(req).await,
        Action::Unbookmark => post.unbookmark(req).await,
        Action::Pin => post.pin(req).await,
        Action::Unpin => post.unpin(req).await,
    }?;
    render_one(st, s.into_inner().status).await
}

macro_rules! action_handler {
    ($($name:ident => $action:ident),* $(,)?) => {$(
        pub async fn $name(
            State(st): State<AppState>,
            Authenticated(c): Authenticated,
            Path(id): Path<String>,
        ) -> ApiResult<StatusJson> {
            act(&st, &c, &id, Action::$action).await
        }
    )*};
}

action_handler!(
    favourite => Favourite,
    unfavourite => Unfavourite,
    unreblog => Unreblog,
    bookmark => Bookmark,
    unbookmark => Unbookmark,
    pin => Pin,
    unpin => Unpin,
);

pub async fn reblog(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    Path(id): Path<String>,
    p: Params,
) -> ApiResult<StatusJson> {
    c.require_user("write:statuses")?;
    let id = parse_id(&id)?;
    let visibility = render::parse_visibility(&p.text_or_empty("visibility")?, ppb::Visibility::Public)?;
    if visibility == ppb::Visibility::Direct {
        return Err(ApiError::unprocessable("Validation failed: Visibility is not included in the list"));
    }
    let s = st
        .post
        .clone()
        .reblog(request(ppb::ReblogRequest { id, visibility: visibility as i32 }, Some(&c.token)))
        .await?
        .into_inner()
        .status;
    render_one(&st, s).await
}

async fn accounts_by_status(
    st: &AppState,
    c: Option<&Caller>,
    id: &str,
    p: &Params,
    reblogs: bool,
    path: &str,
) -> ApiResult<Response> {
    let id = parse_id(id)?;
    let page = paging::bounds(p, 40, 80)?;
    let req = request(ppb::ListByStatusRequest { id, page: Some(page.into()) }, c.map(|c| c.token.as_str()));
    let mut post = st.post.clone();
    let resp = if reblogs { post.list_reblogged_by(req).await } else { post.list_favourited_by(req).await }?;
    let page = resp.into_inner();
    let accounts = render::account_list(st, &page.account_ids).await?;
    Ok(linked(&st.config.public_url, path, &[], &page.cursor_ids, accounts))
}

pub async fn favourited_by(
    State(st): State<AppState>,
    OptionalCaller(c): OptionalCaller,
    Path(id): Path<String>,
    p: Params,
) -> ApiResult<Response> {
    let path = format!("/api/v1/statuses/{id}/favourited_by");
    accounts_by_status(&st, c.as_ref(), &id, &p, false, &path).await
}

pub async fn reblogged_by(
    State(st): State<AppState>,
    OptionalCaller(c): OptionalCaller,
    Path(id): Path<String>,
    p: Params,
) -> ApiResult<Response> {
    let path = format!("/api/v1/statuses/{id}/reblogged_by");
    accounts_by_status(&st, c.as_ref(), &id, &p, true, &path).await
}

async fn mine(st: &AppState, c: &Caller, p: &Params, bookmarks: bool) -> ApiResult<Response> {
    c.require_user(if bookmarks { "read:bookmarks" } else { "read:favourites" })?;
    let page = paging::bounds(p, 20, 40)?;
    let req = request(ppb::ListMineRequest { page: Some(page.into()) }, Some(&c.token));
    let mut post = st.post.clone();
    let resp = if bookmarks { post.list_bookmarks(req).await } else { post.list_favourites(req).await }?;
    let page = resp.into_inner();
    let list = render::statuses(st, &page.statuses).await?;
    let path = if bookmarks { "/api/v1/bookmarks" } else { "/api/v1/favourites" };
    Ok(linked(&st.config.public_url, path, &[], &page.cursor_ids, list))
}

pub async fn favourites(State(st): State<AppState>, Authenticated(c): Authenticated, p: Params) -> ApiResult<Response> {
    mine(&st, &c, &p, false).await
}

pub async fn bookmarks(State(st): State<AppState>, Authenticated(c): Authenticated, p: Params) -> ApiResult<Response> {
    mine(&st, &c, &p, true).await
}

fn reactions_json(r: ppb::ReactionsResponse) -> Json {
    axum::Json(Value::Array(
        r.reactions.iter().map(|r| json!({ "name": r.name, "count": r.count, "me": r.me })).collect(),
    ))
}

/// Extension: `GET /api/v1/agora/statuses/:id/reactions`.
pub async fn reactions(
    State(st): State<AppState>,
    OptionalCaller(c): OptionalCaller,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    let id = parse_id(&id)?;
    let token = c.as_ref().map(|c| c.token.as_str());
    let r = st.post.clone().list_reactions(request(ppb::StatusIdRequest { id }, token)).await?.into_inner();
    Ok(reactions_json(r))
}

/// Extension: `PUT /api/v1/agora/statuses/:id/reactions/:emoji`.
pub async fn react(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    Path((id, emoji)): Path<(String, String)>,
) -> ApiResult<Json> {
    c.require_user("write:favourites")?;
    let id = parse_id(&id)?;
    let r = st.post.clone().add_reaction(request(ppb::ReactionRequest { id, emoji }, Some(&c.token))).await?;
    Ok(reactions_json(r.into_inner()))
}

/// Extension: `DELETE /api/v1/agora/statuses/:id/reactions/:emoji`.
pub async fn unreact(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    Path((id, emoji)): Path<(String, String)>,
) -> ApiResult<Json> {
    c.require_user("write:favourites")?;
    let id = parse_id(&id)?;
    let r = st.post.clone().remove_reaction(request(ppb::ReactionRequest { id, emoji }, Some(&c.token))).await?;
    Ok(reactions_json(r.into_inner()))
}
