//! Mastodon pagination at the edge: `max_id` / `since_id` / `min_id` / `limit` parsed once and
//! handed to whichever service answers, and a `Link` header built from the cursors it returns.

use axum::response::{IntoResponse, Response};

use agora_kit::pagination::{PageQuery, link_header};

use crate::error::{ApiError, ApiResult};
use crate::params::Params;

/// Validated bounds, in the shape every service's `Page` message shares.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_id: i64,
    pub since_id: i64,
    pub min_id: i64,
    pub limit: i32,
}

pub fn bounds(p: &Params, default_limit: usize, max_limit: usize) -> ApiResult<Bounds> {
    let q = PageQuery {
        max_id: p.str("max_id").map(str::to_owned),
        since_id: p.str("since_id").map(str::to_owned),
        min_id: p.str("min_id").map(str::to_owned),
        limit: p.str("limit").map(str::to_owned),
    };
    if let Some(l) = q.limit.as_deref().and_then(|l| l.trim().parse::<i64>().ok())
        && l < 0
    {
        return Err(ApiError::unprocessable("limit must not be negative"));
    }
    let page = q.parse(default_limit, max_limit)?;
    Ok(Bounds {
        max_id: page.max_id.unwrap_or(0),
        since_id: page.since_id.unwrap_or(0),
        min_id: page.min_id.unwrap_or(0),
        limit: page.limit as i32,
    })
}

macro_rules! into_page {
    ($($ty:path),*) => {$(
        impl From<Bounds> for $ty {
            fn from(b: Bounds) -> Self {
                Self { max_id: b.max_id, since_id: b.since_id, min_id: b.min_id, limit: b.limit }
            }
        }
    )*};
}
into_page!(agora_proto::post::v1::Page, agora_proto::graph::v1::Page, agora_proto::feed::v1::Page);

/// A JSON list with a `Link` header spanning `cursors` (newest first). `path` is the endpoint
/// path; `keep` the query parameters the next page must repeat.
pub fn linked<T: serde::Serialize>(
    base: &str,
    path: &str,
    keep: &[(String, String)],
    cursors: &[i64],
    body: Vec<T>,
) -> Response {
    with_link(json_list(&body), base, path, keep, cursors)
}

/// [`linked`] for a body that is one object (e.g. grouped notifications), paged by `cursors`.
pub fn linked_object<T: serde::Serialize>(
    base: &str,
    path: &str,
    keep: &[(String, String)],
    cursors: &[i64],
    body: &T,
) -> Response {
    let resp = match serde_json::to_vec(body) {
        Ok(buf) => ([(http::header::CONTENT_TYPE, "application/json")], buf).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not render a JSON object");
            return ApiError::internal().into_response();
        }
    };
    with_link(resp, base, path, keep, cursors)
}

fn with_link(mut resp: Response, base: &str, path: &str, keep: &[(String, String)], cursors: &[i64]) -> Response {
    if let (Some(newest), Some(oldest)) = (cursors.iter().max(), cursors.iter().min()) {
        let link = link_header(&format!("{base}{path}"), keep, *newest, *oldest);
        if let Ok(v) = link.parse() {
            resp.headers_mut().insert(http::header::LINK, v);
        }
    }
    resp
}

/// About what one rendered entity of a list takes (a status with its account is 1.5-3 KiB).
const ENTITY_BYTES: usize = 2048;

/// A JSON array serialized into a buffer sized for it up front: `axum::Json` starts at 128 bytes
/// and doubles, so a page of statuses was copied a dozen times on its way out.
fn json_list<T: serde::Serialize>(body: &[T]) -> Response {
    let mut buf = Vec::with_capacity((body.len() * ENTITY_BYTES).clamp(64, 256 * 1024));
    match serde_json::to_writer(&mut buf, body) {
        Ok(()) => ([(http::header::CONTENT_TYPE, "application/json")], buf).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not render a JSON list");
            ApiError::internal().into_response()
        }
    }
}

/// The filter parameters of `p` a `Link` must carry over (booleans and tags, not cursors).
pub fn keep(p: &Params, keys: &[&str]) -> Vec<(String, String)> {
    keys.iter().filter_map(|k| p.str(k).map(|v| ((*k).to_owned(), v.to_owned()))).collect()
}
