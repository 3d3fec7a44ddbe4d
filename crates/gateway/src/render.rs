//! Hydration: turns the ids and records services answer with into Mastodon entities, with a
//! bounded number of internal calls per response whatever its length — one batch each to the user
//! service (accounts), the graph service (follower counts) and the post service (statuses, status
//! counts).

use std::collections::{HashMap, HashSet};

use agora_kit::grpc::request;
use agora_proto::graph::v1 as gpb;
use agora_proto::post::v1 as ppb;
use agora_proto::user::v1 as upb;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::entities;
use crate::error::ApiResult;
use crate::state::AppState;

fn token(caller: Option<&Caller>) -> Option<&str> {
    caller.map(|c| c.token.as_str())
}

/// Account entities with their counts, by id. Unknown ids are absent.
pub async fn accounts(st: &AppState, ids: &[i64]) -> ApiResult<HashMap<i64, Value>> {
    let mut unique: Vec<i64> = Vec::with_capacity(ids.len());
    let mut seen = HashSet::new();
    for id in ids {
        if seen.insert(*id) {
            unique.push(*id);
        }
    }
    if unique.is_empty() {
        return Ok(HashMap::new());
    }
    let mut user = st.user.clone();
    let (accounts, (counts, stats)) = tokio::join!(
        user.batch_get_accounts(request(upb::BatchGetAccountsRequest { ids: unique.clone() }, None)),
        counts(st, unique.clone()),
    );
    let accounts = accounts?.into_inner().accounts;
    let base = &st.config.public_url;
    Ok(accounts
        .iter()
        .map(|a| {
            let mut v = entities::account(base, a);
            apply_counts(&mut v, counts.get(&a.id), stats.get(&a.id));
            (a.id, v)
        })
        .collect())
}

/// Follower counts (graph service) and status counts (post service) by account, fetched
/// together. They are decoration: an outage of either degrades them to zero rather than failing
/// the response.
async fn counts(st: &AppState, ids: Vec<i64>) -> (HashMap<i64, gpb::Counts>, HashMap<i64, ppb::AccountStats>) {
    let (mut graph, mut post) = (st.graph.clone(), st.post.clone());
    let (counts, stats) = tokio::join!(
        graph.get_counts(request(gpb::GetCountsRequest { ids: ids.clone() }, None)),
        post.get_account_stats(request(ppb::GetAccountStatsRequest { ids }, None)),
    );
    let counts = match counts {
        Ok(c) => c.into_inner().counts.into_iter().map(|c| (c.id, c)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "follower counts unavailable");
            HashMap::new()
        }
    };
    let stats = match stats {
        Ok(s) => s.into_inner().stats.into_iter().map(|s| (s.id, s)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "status counts unavailable");
            HashMap::new()
        }
    };
    (counts, stats)
}

fn apply_counts(v: &mut Value, counts: Option<&gpb::Counts>, stats: Option<&ppb::AccountStats>) {
    let Some(obj) = v.as_object_mut() else { return };
    if let Some(c) = counts {
        obj.insert("followers_count".into(), json!(c.followers_count));
        obj.insert("following_count".into(), json!(c.following_count));
    }
    if let Some(s) = stats {
        obj.insert("statuses_count".into(), json!(s.statuses_count));
        if s.last_status_at_ms > 0 {
            obj.insert("last_status_at".into(), json!(agora_kit::time::date_only(s.last_status_at_ms)));
        }
    }
}

/// An account the caller already holds (e.g. their own, with `source`), with its counts added.
pub async fn with_counts(st: &AppState, id: i64, mut v: Value) -> Value {
    let (counts, stats) = counts(st, vec![id]).await;
    let (counts, stats) = (counts.get(&id), stats.get(&id));
    apply_counts(&mut v, counts, stats);
    v
}

/// One account entity with counts (404 if unknown).
pub async fn account(st: &AppState, id: i64) -> ApiResult<Value> {
    accounts(st, &[id]).await?.remove(&id).ok_or_else(crate::error::ApiError::not_found)
}

/// Account entities in the order of `ids`, skipping unknown ones.
pub async fn account_list(st: &AppState, ids: &[i64]) -> ApiResult<Vec<Value>> {
    let mut map = accounts(st, ids).await?;
    Ok(ids.iter().filter_map(|id| map.remove(id)).collect())
}

/// Status entities for records the post service returned, in order. Statuses whose author is
/// unknown (a deleted account) are left out.
pub async fn statuses(st: &AppState, list: &[ppb::Status]) -> ApiResult<Vec<Value>> {
    let mut ids = Vec::new();
    for s in list {
        ids.push(s.account_id);
        if let Some(r) = &s.reblog {
            ids.push(r.account_id);
        }
    }
    let accounts = accounts(st, &ids).await?;
    Ok(list.iter().filter_map(|s| status(&st.config.public_url, s, &accounts)).collect())
}

pub async fn one_status(st: &AppState, s: &ppb::Status) -> ApiResult<Value> {
    statuses(st, std::slice::from_ref(s)).await?.pop().ok_or_else(crate::error::ApiError::not_found)
}

/// Status entities for ids (a timeline page), in order; the post service leaves out what the
/// caller may not see.
pub async fn status_ids(st: &AppState, caller: Option<&Caller>, ids: Vec<i64>) -> ApiResult<Vec<Value>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = st
        .post
        .clone()
        .get_statuses(request(ppb::GetStatusesRequest { ids }, token(caller)))
        .await?
        .into_inner()
        .statuses;
    statuses(st, &list).await
}

pub fn visibility_name(v: i32) -> &'static str {
    match ppb::Visibility::try_from(v) {
        Ok(ppb::Visibility::Unlisted) => "unlisted",
        Ok(ppb::Visibility::Private) => "private",
        Ok(ppb::Visibility::Direct) => "direct",
        _ => "public",
    }
}

/// Parses Mastodon's visibility parameter; empty means `default`.
pub fn parse_visibility(raw: &str, default: ppb::Visibility) -> Result<ppb::Visibility, crate::error::ApiError> {
    match raw.trim() {
        "" => Ok(default),
        "public" => Ok(ppb::Visibility::Public),
        "unlisted" => Ok(ppb::Visibility::Unlisted),
        "private" => Ok(ppb::Visibility::Private),
        "direct" => Ok(ppb::Visibility::Direct),
        _ => Err(crate::error::ApiError::unprocessable("Validation failed: Visibility is not included in the list")),
    }
}

fn opt_id(id: i64) -> Value {
    if id > 0 { Value::String(id.to_string()) } else { Value::Null }
}

/// Mastodon's Status entity.
pub fn status(base: &str, s: &ppb::Status, accounts: &HashMap<i64, Value>) -> Option<Value> {
    let account = accounts.get(&s.account_id)?.clone();
    let reblog = match &s.reblog {
        Some(r) => Some(status(base, r, accounts)?),
        None => None,
    };
    let username = account.get("username").and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut v = json!({
        "id": s.id.to_string(),
        "created_at": agora_kit::time::rfc3339_ms(s.created_at_ms),
        "in_reply_to_id": opt_id(s.in_reply_to_id),
        "in_reply_to_account_id": opt_id(s.in_reply_to_account_id),
        "sensitive": s.sensitive,
        "spoiler_text": s.spoiler_text,
        "visibility": visibility_name(s.visibility),
        "language": if s.language.is_empty() { Value::Null } else { Value::String(s.language.clone()) },
        "uri": format!("{base}/users/{username}/statuses/{}", s.id),
        "url": format!("{base}/@{username}/{}", s.id),
        "replies_count": s.replies_count,
        "reblogs_count": s.reblogs_count,
        "favourites_count": s.favourites_count,
        "edited_at": if s.edited_at_ms > 0 { Value::String(agora_kit::time::rfc3339_ms(s.edited_at_ms)) } else { Value::Null },
        "favourited": s.favourited,
        "reblogged": s.reblogged,
        "muted": false,
        "bookmarked": s.bookmarked,
        "pinned": s.pinned,
        "content": s.content,
        "filtered": [],
        "reblog": reblog,
        "application": if s.application_name.is_empty() { Value::Null } else { json!({"name": s.application_name, "website": Value::Null}) },
        "account": account,
        "media_attachments": [],
        "mentions": s.mentions.iter().map(|m| json!({
            "id": m.account_id.to_string(),
            "username": m.username,
            "acct": m.username,
            "url": format!("{base}/@{}", m.username),
        })).collect::<Vec<_>>(),
        "tags": s.tags.iter().map(|t| json!({"name": t, "url": format!("{base}/tags/{t}")})).collect::<Vec<_>>(),
        "emojis": [],
        "card": Value::Null,
        "poll": Value::Null,
    });
    if !s.text.is_empty()
        && let Some(obj) = v.as_object_mut()
    {
        obj.insert("text".into(), Value::String(s.text.clone()));
    }
    Some(v)
}

/// Mastodon's Relationship entity.
pub fn relationship(r: &gpb::Relationship) -> Value {
    json!({
        "id": r.id.to_string(),
        "following": r.following,
        "showing_reblogs": r.showing_reblogs,
        "notifying": r.notifying,
        "followed_by": r.followed_by,
        "blocking": r.blocking,
        "blocked_by": r.blocked_by,
        "muting": r.muting,
        "muting_notifications": r.muting_notifications,
        "requested": r.requested,
        "requested_by": r.requested_by,
        "domain_blocking": r.domain_blocking,
        "endorsed": r.endorsed,
        "note": r.note,
        "languages": if r.languages.is_empty() { Value::Null } else { json!(r.languages) },
    })
}
