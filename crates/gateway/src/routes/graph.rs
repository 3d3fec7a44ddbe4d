//! Follows, follow requests, blocks, mutes, relationships and suggestions.

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Value, json};

use agora_kit::grpc::request;
use agora_proto::graph::v1 as gpb;

use crate::auth::{Authenticated, Caller, OptionalCaller};
use crate::error::{ApiError, ApiResult};
use crate::paging::{self, linked};
use crate::params::{Params, path_id as parse_id};
use crate::render;
use crate::state::AppState;

type Json = axum::Json<Value>;

fn rel(r: tonic::Response<gpb::RelationshipResponse>) -> Json {
    axum::Json(render::relationship(&r.into_inner().relationship.unwrap_or_default()))
}

/// The target must exist: a relationship with an unknown id is a 404, as in Mastodon. Follow,
/// block and mute skip this: the graph service looks the target up itself (it needs its lock
/// state), and a second lookup here would be one more user-service call per request.
async fn existing(st: &AppState, raw: &str) -> ApiResult<i64> {
    let id = parse_id(raw)?;
    render::require_account(st, id).await?;
    Ok(id)
}

pub async fn follow(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    Path(id): Path<String>,
    p: Params,
) -> ApiResult<Json> {
    c.require_user("write:follows")?;
    let target_id = parse_id(&id)?;
    let req = gpb::FollowRequest {
        target_id,
        reblogs: p.bool("reblogs")?,
        notify: p.bool("notify")?,
        languages: p.list("languages"),
    };
    Ok(rel(st.graph.clone().follow(request(req, Some(&c.token))).await?))
}

/// The follow-graph actions that take only a target.
#[derive(Clone, Copy)]
enum Action {
    Unfollow,
    RemoveFollower,
    Block,
    Unblock,
    Unmute,
    Authorize,
    Reject,
}

async fn act(st: &AppState, c: &Caller, raw: &str, action: Action) -> ApiResult<Json> {
    let scope = match action {
        Action::Block | Action::Unblock => "write:blocks",
        Action::Unmute => "write:mutes",
        _ => "write:follows",
    };
    c.require_user(scope)?;
    let target_id = if matches!(action, Action::Block) { parse_id(raw)? } else { existing(st, raw).await? };
    let req = request(gpb::TargetRequest { target_id }, Some(&c.token));
    let mut g = st.graph.clone();
    let r = match action {
        Action::Unfollow => g.unfollow(req).await,
        Action::RemoveFollower => g.remove_follower(req).await,
        Action::Block => g.block(req).await,
        Action::Unblock => g.unblock(req).await,
        Action::Unmute => g.unmute(req).await,
        Action::Authorize => g.authorize_follow_request(req).await,
        Action::Reject => g.reject_follow_request(req).await,
    }?;
    Ok(rel(r))
}

macro_rules! action_handler {
    ($($name:ident => $action:ident),* $(,)?) => {$(
        pub async fn $name(
            State(st): State<AppState>,
            Authenticated(c): Authenticated,
            Path(id): Path<String>,
        ) -> ApiResult<Json> {
            act(&st, &c, &id, Action::$action).await
        }
    )*};
}

action_handler!(
    unfollow => Unfollow,
    remove_from_followers => RemoveFollower,
    block => Block,
    unblock => Unblock,
    unmute => Unmute,
    authorize => Authorize,
    reject => Reject,
);

pub async fn mute(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    Path(id): Path<String>,
    p: Params,
) -> ApiResult<Json> {
    c.require_user("write:mutes")?;
    let target_id = parse_id(&id)?;
    let duration_s = match p.str("duration").map(str::trim) {
        None | Some("") => 0,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| ApiError::unprocessable("duration must be a number of seconds"))?,
    };
    let req = gpb::MuteRequest { target_id, notifications: p.bool("notifications")?, duration_s };
    Ok(rel(st.graph.clone().mute(request(req, Some(&c.token))).await?))
}

fn ids(p: &Params) -> ApiResult<Vec<i64>> {
    let list = p.list("id");
    if list.len() > 40 {
        return Err(ApiError::unprocessable("at most 40 ids"));
    }
    // Unparseable ids cannot name an account; Mastodon leaves them out.
    Ok(list.iter().filter_map(|s| s.trim().parse::<i64>().ok()).filter(|n| *n > 0).collect())
}

pub async fn relationships(State(st): State<AppState>, Authenticated(c): Authenticated, p: Params) -> ApiResult<Json> {
    c.require_user("read:follows")?;
    let ids = ids(&p)?;
    let list = st
        .graph
        .clone()
        .get_relationships(request(gpb::GetRelationshipsRequest { ids }, Some(&c.token)))
        .await?
        .into_inner()
        .relationships;
    Ok(axum::Json(Value::Array(list.iter().map(render::relationship).collect())))
}

pub async fn familiar_followers(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    p: Params,
) -> ApiResult<Json> {
    c.require_user("read:follows")?;
    let ids = ids(&p)?;
    let entries = st
        .graph
        .clone()
        .get_familiar_followers(request(gpb::GetFamiliarFollowersRequest { ids }, Some(&c.token)))
        .await?
        .into_inner()
        .entries;
    let all: Vec<i64> = entries.iter().flat_map(|e| e.account_ids.iter().copied()).collect();
    let accounts = render::accounts(&st, &all).await?;
    let list = entries
        .iter()
        .map(|e| {
            json!({
                "id": e.id.to_string(),
                "accounts": e.account_ids.iter().filter_map(|id| accounts.get(id).cloned()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(axum::Json(Value::Array(list)))
}

#[derive(Clone, Copy, PartialEq)]
enum List {
    Followers,
    Following,
    Blocks,
    Mutes,
    Requests,
}

async fn list(
    st: &AppState,
    c: Option<&Caller>,
    account_id: i64,
    p: &Params,
    which: List,
    path: &str,
) -> ApiResult<Response> {
    let page = paging::bounds(p, 40, 80)?;
    let token = c.map(|c| c.token.as_str());
    let mut g = st.graph.clone();
    let req = gpb::ListAccountsRequest { account_id, page: Some(page.into()) };
    let resp = match which {
        List::Followers => g.list_followers(request(req, token)).await,
        List::Following => g.list_following(request(req, token)).await,
        List::Blocks => g.list_blocks(request(req, token)).await,
        List::Mutes => g.list_mutes(request(req, token)).await,
        List::Requests => {
            g.list_follow_requests(request(gpb::ListFollowRequestsRequest { page: Some(page.into()) }, token)).await
        }
    }?
    .into_inner();
    let accounts = render::account_list(st, &resp.account_ids).await?;
    Ok(linked(&st.config.public_url, path, &[], &resp.cursor_ids, accounts))
}

pub async fn followers(
    State(st): State<AppState>,
    OptionalCaller(c): OptionalCaller,
    Path(id): Path<String>,
    p: Params,
) -> ApiResult<Response> {
    let account_id = existing(&st, &id).await?;
    list(&st, c.as_ref(), account_id, &p, List::Followers, &format!("/api/v1/accounts/{account_id}/followers")).await
}

pub async fn following(
    State(st): State<AppState>,
    OptionalCaller(c): OptionalCaller,
    Path(id): Path<String>,
    p: Params,
) -> ApiResult<Response> {
    let account_id = existing(&st, &id).await?;
    list(&st, c.as_ref(), account_id, &p, List::Following, &format!("/api/v1/accounts/{account_id}/following")).await
}

pub async fn blocks(State(st): State<AppState>, Authenticated(c): Authenticated, p: Params) -> ApiResult<Response> {
    c.require_user("read:blocks")?;
    list(&st, Some(&c), 0, &p, List::Blocks, "/api/v1/blocks").await
}

pub async fn mutes(State(st): State<AppState>, Authenticated(c): Authenticated, p: Params) -> ApiResult<Response> {
    c.require_user("read:mutes")?;
    list(&st, Some(&c), 0, &p, List::Mutes, "/api/v1/mutes").await
}

pub async fn follow_requests(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    p: Params,
) -> ApiResult<Response> {
    c.require_user("read:follows")?;
    list(&st, Some(&c), 0, &p, List::Requests, "/api/v1/follow_requests").await
}

/// `GET /api/v2/suggestions`: friends of friends.
pub async fn suggestions(State(st): State<AppState>, Authenticated(c): Authenticated, p: Params) -> ApiResult<Json> {
    c.require_user("read")?;
    let limit = match p.str("limit").map(str::trim) {
        None | Some("") => 40,
        Some(s) => s.parse::<i32>().map_err(|_| ApiError::unprocessable("limit must be a number"))?.clamp(1, 80),
    };
    let list = st
        .graph
        .clone()
        .get_suggestions(request(gpb::GetSuggestionsRequest { limit }, Some(&c.token)))
        .await?
        .into_inner()
        .suggestions;
    let ids: Vec<i64> = list.iter().map(|s| s.account_id).collect();
    let accounts = render::accounts(&st, &ids).await?;
    let out = list
        .iter()
        .filter_map(|s| {
            Some(json!({
                "source": "past_interactions",
                "sources": ["friends_of_friends"],
                "account": accounts.get(&s.account_id)?.clone(),
            }))
        })
        .collect();
    Ok(axum::Json(Value::Array(out)))
}

/// `GET /api/v1/suggestions`: the v1 shape, a plain list of accounts.
pub async fn suggestions_v1(State(st): State<AppState>, a: Authenticated, p: Params) -> ApiResult<Json> {
    let axum::Json(v2) = suggestions(State(st), a, p).await?;
    let list = v2.as_array().map(|l| l.iter().map(|s| s["account"].clone()).collect()).unwrap_or_default();
    Ok(axum::Json(Value::Array(list)))
}

pub async fn dismiss_suggestion(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    c.require_user("write")?;
    let target_id = parse_id(&id)?;
    st.graph.clone().dismiss_suggestion(request(gpb::TargetRequest { target_id }, Some(&c.token))).await?;
    Ok(axum::Json(json!({})))
}
