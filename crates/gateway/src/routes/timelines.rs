//! Timelines (home, public, hashtag, account), trends and read markers. The feed service answers
//! with status ids; the post service hydrates them and applies visibility once more.

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Value, json};

use agora_kit::grpc::request;
use agora_proto::feed::v1 as fpb;
use agora_proto::post::v1 as ppb;

use crate::auth::{Authenticated, OptionalCaller};
use crate::error::{ApiError, ApiResult};
use crate::paging::{self, keep, linked};
use crate::params::{Params, path_id as parse_id};
use crate::render;
use crate::state::AppState;

type Json = axum::Json<Value>;

fn cursors(list: &[render::Status]) -> Vec<i64> {
    list.iter().map(|s| s.numeric_id).collect()
}

fn flag(p: &Params, key: &str) -> ApiResult<bool> {
    Ok(p.bool(key)?.unwrap_or(false))
}

pub async fn home(State(st): State<AppState>, Authenticated(c): Authenticated, p: Params) -> ApiResult<Response> {
    c.account_id()?;
    c.require("read:statuses")?;
    let page = paging::bounds(&p, 20, 40)?;
    let ids = st
        .feed
        .clone()
        .get_home_timeline(request(fpb::GetHomeTimelineRequest { page: Some(page.into()) }, Some(&c.token)))
        .await?
        .into_inner()
        .status_ids;
    let list = render::status_ids(&st, Some(&c), ids).await?;
    let cur = cursors(&list);
    Ok(linked(&st.config.public_url, "/api/v1/timelines/home", &[], &cur, list))
}

pub async fn public(State(st): State<AppState>, OptionalCaller(c): OptionalCaller, p: Params) -> ApiResult<Response> {
    if let Some(c) = &c {
        c.require("read:statuses")?;
    }
    if flag(&p, "remote")? {
        // Agora does not federate: there are no remote statuses.
        return Ok(linked(&st.config.public_url, "/api/v1/timelines/public", &[], &[], Vec::<Value>::new()));
    }
    let page = paging::bounds(&p, 20, 40)?;
    let token = c.as_ref().map(|c| c.token.as_str());
    let req = fpb::GetPublicTimelineRequest { page: Some(page.into()), only_media: flag(&p, "only_media")? };
    let ids = st.feed.clone().get_public_timeline(request(req, token)).await?.into_inner().status_ids;
    let list = render::status_ids(&st, c.as_ref(), ids).await?;
    let cur = cursors(&list);
    let kept = keep(&p, &["local", "only_media"]);
    Ok(linked(&st.config.public_url, "/api/v1/timelines/public", &kept, &cur, list))
}

pub async fn tag(
    State(st): State<AppState>,
    OptionalCaller(c): OptionalCaller,
    Path(tag): Path<String>,
    p: Params,
) -> ApiResult<Response> {
    if let Some(c) = &c {
        c.require("read:statuses")?;
    }
    let name = tag.trim_start_matches('#').to_owned();
    if name.is_empty() || name.chars().count() > 100 || !name.chars().all(|ch| ch.is_alphanumeric() || ch == '_') {
        return Err(ApiError::not_found());
    }
    let page = paging::bounds(&p, 20, 40)?;
    let token = c.as_ref().map(|c| c.token.as_str());
    let req =
        fpb::GetTagTimelineRequest { tag: name.clone(), page: Some(page.into()), only_media: flag(&p, "only_media")? };
    let ids = st.feed.clone().get_tag_timeline(request(req, token)).await?.into_inner().status_ids;
    let list = render::status_ids(&st, c.as_ref(), ids).await?;
    let cur = cursors(&list);
    let path =
        format!("/api/v1/timelines/tag/{}", url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>());
    Ok(linked(&st.config.public_url, &path, &keep(&p, &["only_media"]), &cur, list))
}

/// `GET /api/v1/accounts/:id/statuses`.
pub async fn account(
    State(st): State<AppState>,
    OptionalCaller(c): OptionalCaller,
    Path(id): Path<String>,
    p: Params,
) -> ApiResult<Response> {
    let account_id = parse_id(&id)?;
    if let Some(c) = &c {
        c.require("read:statuses")?;
    }
    // 404 for an unknown account, as Mastodon answers.
    render::require_account(&st, account_id).await?;
    let token = c.as_ref().map(|c| c.token.as_str());
    let path = format!("/api/v1/accounts/{account_id}/statuses");
    if flag(&p, "pinned")? {
        let page =
            st.post.clone().list_pinned(request(ppb::ListPinnedRequest { account_id }, token)).await?.into_inner();
        let list = render::statuses(&st, &page.statuses).await?;
        return Ok(linked(&st.config.public_url, &path, &[], &[], list));
    }
    let page = paging::bounds(&p, 20, 40)?;
    let req = fpb::GetAccountTimelineRequest {
        account_id,
        page: Some(page.into()),
        exclude_replies: flag(&p, "exclude_replies")?,
        only_media: flag(&p, "only_media")?,
        exclude_reblogs: flag(&p, "exclude_reblogs")?,
    };
    let ids = st.feed.clone().get_account_timeline(request(req, token)).await?.into_inner().status_ids;
    let list = render::status_ids(&st, c.as_ref(), ids).await?;
    let cur = cursors(&list);
    let kept = keep(&p, &["exclude_replies", "only_media", "exclude_reblogs"]);
    Ok(linked(&st.config.public_url, &path, &kept, &cur, list))
}

fn trends_request(p: &Params, max: i32) -> ApiResult<fpb::GetTrendsRequest> {
    let num = |k: &str, default: i32| -> ApiResult<i32> {
        match p.str(k).map(str::trim) {
            None | Some("") => Ok(default),
            Some(s) => s
                .parse::<i32>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::unprocessable(&format!("{k} must be a number"))),
        }
    };
    Ok(fpb::GetTrendsRequest { limit: num("limit", 10)?.clamp(1, max), offset: num("offset", 0)? })
}

pub async fn trending_tags(State(st): State<AppState>, p: Params) -> ApiResult<Json> {
    let req = trends_request(&p, 20)?;
    let tags = st.feed.clone().get_trending_tags(request(req, None)).await?.into_inner().tags;
    let base = &st.config.public_url;
    Ok(axum::Json(Value::Array(
        tags.iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "url": format!("{base}/tags/{}", t.name),
                    "history": t.history.iter().map(|d| json!({
                        "day": (d.day_start_ms / 1000).to_string(),
                        "uses": d.uses.to_string(),
                        "accounts": d.accounts.to_string(),
                    })).collect::<Vec<_>>(),
                    "following": false,
                })
            })
            .collect(),
    )))
}

pub async fn trending_statuses(
    State(st): State<AppState>,
    OptionalCaller(c): OptionalCaller,
    p: Params,
) -> ApiResult<axum::Json<Vec<render::Status>>> {
    let req = trends_request(&p, 40)?;
    let ids = st.feed.clone().get_trending_statuses(request(req, None)).await?.into_inner().status_ids;
    Ok(axum::Json(render::status_ids(&st, c.as_ref(), ids).await?))
}

fn markers_json(markers: &[fpb::Marker]) -> Json {
    let mut obj = serde_json::Map::new();
    for m in markers {
        obj.insert(
            m.timeline.clone(),
            json!({
                "last_read_id": m.last_read_id.to_string(),
                "version": m.version,
                "updated_at": agora_kit::time::rfc3339_ms(m.updated_at_ms),
            }),
        );
    }
    axum::Json(Value::Object(obj))
}

pub async fn get_markers(State(st): State<AppState>, Authenticated(c): Authenticated, p: Params) -> ApiResult<Json> {
    c.account_id()?;
    c.require("read:statuses")?;
    let timelines: Vec<String> = p.list("timeline");
    let resp =
        st.feed.clone().get_markers(request(fpb::GetMarkersRequest { timelines }, Some(&c.token))).await?.into_inner();
    Ok(markers_json(&resp.markers))
}

pub async fn save_markers(State(st): State<AppState>, Authenticated(c): Authenticated, p: Params) -> ApiResult<Json> {
    c.account_id()?;
    c.require("write:statuses")?;
    let mut markers = Vec::new();
    for timeline in ["home", "notifications"] {
        if let Some(raw) = p.str(&format!("{timeline}[last_read_id]")) {
            let last_read_id = raw
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::unprocessable("last_read_id must be a numeric id"))?;
            markers.push(fpb::Marker { timeline: timeline.to_owned(), last_read_id, ..Default::default() });
        }
    }
    if markers.is_empty() {
        return Err(ApiError::unprocessable("give home[last_read_id] or notifications[last_read_id]"));
    }
    let resp =
        st.feed.clone().save_markers(request(fpb::SaveMarkersRequest { markers }, Some(&c.token))).await?.into_inner();
    Ok(markers_json(&resp.markers))
}
