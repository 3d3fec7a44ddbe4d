//! Hydration: turns the ids and records services answer with into Mastodon entities, with a
//! bounded number of internal calls per response whatever its length — one batch each to the user
//! service (accounts), the graph service (follower counts) and the post service (statuses, status
//! counts).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use agora_kit::grpc::request;
use agora_proto::graph::v1 as gpb;
use agora_proto::post::v1 as ppb;
use agora_proto::user::v1 as upb;
use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::entities;
use crate::error::ApiResult;
use crate::state::AppState;

fn token(caller: Option<&Caller>) -> Option<&str> {
    caller.map(|c| c.token.as_str())
}

/// Account entities with their counts, by id. Unknown ids are absent.
pub async fn account_entities(st: &AppState, ids: &[i64]) -> ApiResult<HashMap<i64, Arc<entities::Account>>> {
    with_stats(st, ids, None).await
}

/// [`account_entities`], with the status counts taken from `stats` when the caller already has
/// them (the post service answers them with statuses) instead of asking the post service.
async fn with_stats(
    st: &AppState,
    ids: &[i64],
    stats: Option<HashMap<i64, ppb::AccountStats>>,
) -> ApiResult<HashMap<i64, Arc<entities::Account>>> {
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
    let (accounts, stats) = match stats {
        Some(stats) => (st.accounts.get(st, &unique).await, stats),
        None => tokio::join!(st.accounts.get(st, &unique), status_counts(st, unique.clone())),
    };
    Ok(accounts?
        .into_iter()
        .map(|(id, a)| match stats.get(&id) {
            Some(s) => {
                let mut e = (*a).clone();
                apply_stats(&mut e, s);
                (id, Arc::new(e))
            }
            None => (id, a),
        })
        .collect())
}

/// Account entities with their counts as JSON values, by id (for responses that add to them).
pub async fn accounts(st: &AppState, ids: &[i64]) -> ApiResult<HashMap<i64, Value>> {
    Ok(account_entities(st, ids)
        .await?
        .into_iter()
        .map(|(id, a)| (id, serde_json::to_value(&*a).unwrap_or(Value::Null)))
        .collect())
}

/// Status counts by account (post service). They are decoration: an outage degrades them to
/// zero rather than failing the response.
async fn status_counts(st: &AppState, ids: Vec<i64>) -> HashMap<i64, ppb::AccountStats> {
    match st.post.clone().get_account_stats(request(ppb::GetAccountStatsRequest { ids }, None)).await {
        Ok(s) => s.into_inner().stats.into_iter().map(|s| (s.id, s)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "status counts unavailable");
            HashMap::new()
        }
    }
}

fn apply_stats(e: &mut entities::Account, s: &ppb::AccountStats) {
    e.statuses_count = s.statuses_count;
    if s.last_status_at_ms > 0 {
        e.last_status_at = Some(agora_kit::time::date_only(s.last_status_at_ms));
    }
}

/// The entity of an account the caller already holds (e.g. their own), with its counts.
pub async fn with_counts(st: &AppState, a: &upb::Account) -> entities::Account {
    let mut graph = st.graph.clone();
    let (counts, stats) = tokio::join!(
        graph.get_counts(request(gpb::GetCountsRequest { ids: vec![a.id] }, None)),
        status_counts(st, vec![a.id]),
    );
    let mut e = entities::account_entity(&st.config.public_url, a);
    match counts {
        Ok(c) => {
            if let Some(c) = c.into_inner().counts.first() {
                e.followers_count = c.followers_count;
                e.following_count = c.following_count;
            }
        }
        Err(err) => tracing::warn!(error = %err, "follower counts unavailable"),
    }
    if let Some(s) = stats.get(&a.id) {
        apply_stats(&mut e, s);
    }
    e
}

/// 404 unless the account exists. Read through the account cache: a page that then shows the
/// account's statuses needs its entity anyway.
pub async fn require_account(st: &AppState, id: i64) -> ApiResult<()> {
    if st.accounts.get(st, &[id]).await?.contains_key(&id) { Ok(()) } else { Err(crate::error::ApiError::not_found()) }
}

/// One account entity with counts (404 if unknown).
pub async fn account(st: &AppState, id: i64) -> ApiResult<SharedAccount> {
    account_entities(st, &[id]).await?.remove(&id).map(SharedAccount).ok_or_else(crate::error::ApiError::not_found)
}

/// Account entities in the order of `ids`, skipping unknown ones.
pub async fn account_list(st: &AppState, ids: &[i64]) -> ApiResult<Vec<SharedAccount>> {
    let map = account_entities(st, ids).await?;
    Ok(ids.iter().filter_map(|id| map.get(id).cloned().map(SharedAccount)).collect())
}

/// Status entities for records the post service returned, in order. Statuses whose author is
/// unknown (a deleted account) are left out.
pub async fn statuses(st: &AppState, list: &[ppb::Status]) -> ApiResult<Vec<Status>> {
    render_statuses(st, list, None).await
}

pub(crate) async fn render_statuses(
    st: &AppState,
    list: &[ppb::Status],
    stats: Option<HashMap<i64, ppb::AccountStats>>,
) -> ApiResult<Vec<Status>> {
    let mut ids = Vec::new();
    for s in list {
        ids.push(s.account_id);
        if let Some(r) = &s.reblog {
            ids.push(r.account_id);
        }
    }
    let accounts = with_stats(st, &ids, stats).await?;
    Ok(list.iter().filter_map(|s| status(&st.config.public_url, s, &accounts)).collect())
}

pub async fn one_status(st: &AppState, s: &ppb::Status) -> ApiResult<Status> {
    statuses(st, std::slice::from_ref(s)).await?.pop().ok_or_else(crate::error::ApiError::not_found)
}

/// Status entities for ids (a timeline page), in order; the post service leaves out what the
/// caller may not see.
pub async fn status_ids(st: &AppState, caller: Option<&Caller>, ids: Vec<i64>) -> ApiResult<Vec<Status>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let page = st
        .post
        .clone()
        .get_statuses(request(ppb::GetStatusesRequest { ids, with_author_stats: true }, token(caller)))
        .await?
        .into_inner();
    let stats = page.author_stats.into_iter().map(|s| (s.id, s)).collect();
    render_statuses(st, &page.statuses, Some(stats)).await
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

fn opt_id(id: i64) -> Option<String> {
    (id > 0).then(|| id.to_string())
}

/// An account entity shared by every status of a page it wrote (and by a list naming it twice).
#[derive(Debug, Clone)]
pub struct SharedAccount(Arc<entities::Account>);

impl From<&Arc<entities::Account>> for SharedAccount {
    fn from(a: &Arc<entities::Account>) -> Self {
        Self(Arc::clone(a))
    }
}

impl Serialize for SharedAccount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusMention {
    id: String,
    username: String,
    acct: String,
    url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusTag {
    name: String,
    url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusApplication {
    name: String,
    website: Option<String>,
}

/// Mastodon's Status entity, serialized as is (no JSON tree is built for it).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The id as a number, for paging; not part of the entity.
    #[serde(skip)]
    pub numeric_id: i64,
    id: String,
    created_at: String,
    in_reply_to_id: Option<String>,
    in_reply_to_account_id: Option<String>,
    sensitive: bool,
    spoiler_text: String,
    visibility: &'static str,
    language: Option<String>,
    uri: String,
    url: String,
    replies_count: i64,
    reblogs_count: i64,
    favourites_count: i64,
    edited_at: Option<String>,
    favourited: bool,
    reblogged: bool,
    muted: bool,
    bookmarked: bool,
    pinned: bool,
    content: String,
    filtered: entities::Empty,
    reblog: Option<Box<Status>>,
    application: Option<StatusApplication>,
    account: SharedAccount,
    media_attachments: entities::Empty,
    mentions: Vec<StatusMention>,
    tags: Vec<StatusTag>,
    emojis: entities::Empty,
    card: Option<()>,
    poll: Option<()>,
    /// The source text, present only where Mastodon gives it (a delete, for redrafting).
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// Mastodon's Status entity; `None` when its author (or its reblogged status's) is unknown.
pub fn status(base: &str, s: &ppb::Status, accounts: &HashMap<i64, Arc<entities::Account>>) -> Option<Status> {
    let account = Arc::clone(accounts.get(&s.account_id)?);
    let reblog = match &s.reblog {
        Some(r) => Some(Box::new(status(base, r, accounts)?)),
        None => None,
    };
    let username = &account.username;
    Some(Status {
        numeric_id: s.id,
        id: s.id.to_string(),
        created_at: agora_kit::time::rfc3339_ms(s.created_at_ms),
        in_reply_to_id: opt_id(s.in_reply_to_id),
        in_reply_to_account_id: opt_id(s.in_reply_to_account_id),
        sensitive: s.sensitive,
        spoiler_text: s.spoiler_text.clone(),
        visibility: visibility_name(s.visibility),
        language: (!s.language.is_empty()).then(|| s.language.clone()),
        uri: format!("{base}/users/{username}/statuses/{}", s.id),
        url: format!("{base}/@{username}/{}", s.id),
        replies_count: s.replies_count,
        reblogs_count: s.reblogs_count,
        favourites_count: s.favourites_count,
        edited_at: (s.edited_at_ms > 0).then(|| agora_kit::time::rfc3339_ms(s.edited_at_ms)),
        favourited: s.favourited,
        reblogged: s.reblogged,
        muted: false,
        bookmarked: s.bookmarked,
        pinned: s.pinned,
        content: s.content.clone(),
        filtered: entities::Empty,
        reblog,
        application: (!s.application_name.is_empty())
            .then(|| StatusApplication { name: s.application_name.clone(), website: None }),
        account: SharedAccount(account),
        media_attachments: entities::Empty,
        mentions: s
            .mentions
            .iter()
            .map(|m| StatusMention {
                id: m.account_id.to_string(),
                username: m.username.clone(),
                acct: m.username.clone(),
                url: format!("{base}/@{}", m.username),
            })
            .collect(),
        tags: s.tags.iter().map(|t| StatusTag { name: t.clone(), url: format!("{base}/tags/{t}") }).collect(),
        emojis: entities::Empty,
        card: None,
        poll: None,
        text: (!s.text.is_empty()).then(|| s.text.clone()),
    })
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
