//! Instance metadata: `/api/v1/instance`, `/api/v2/instance`, NodeInfo, the OAuth server
//! metadata (RFC 8414) and the OpenAPI document.

use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::state::AppState;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

fn mastodon_version() -> String {
    format!("4.3.0 (compatible; Agora {VERSION})")
}

fn configuration(st: &AppState, vapid_key: &str) -> Value {
    json!({
        "urls": { "streaming": st.config.streaming_url() },
        "vapid": { "public_key": vapid_key },
        "accounts": { "max_featured_tags": 10, "max_pinned_statuses": 5 },
        "statuses": { "max_characters": 500, "max_media_attachments": 4, "characters_reserved_per_url": 23 },
        "media_attachments": {
            "supported_mime_types": ["image/jpeg", "image/png", "image/gif", "image/webp"],
            "image_size_limit": 16_777_216, "image_matrix_limit": 33_177_600,
            "video_size_limit": 103_809_024, "video_frame_rate_limit": 120, "video_matrix_limit": 8_294_400
        },
        "polls": { "max_options": 4, "max_characters_per_option": 50, "min_expiration": 300, "max_expiration": 2_629_746 },
        "translation": { "enabled": false }
    })
}

pub async fn v1(State(st): State<AppState>) -> axum::Json<Value> {
    let c = &st.config;
    axum::Json(json!({
        "uri": c.domain,
        "title": c.title,
        "short_description": "A social platform built on Agora.",
        "description": "A social platform built on Agora.",
        "email": c.contact_email,
        "version": mastodon_version(),
        "urls": { "streaming_api": c.streaming_url() },
        "stats": { "user_count": 0, "status_count": 0, "domain_count": 1 },
        "thumbnail": Value::Null,
        "languages": ["en"],
        "registrations": c.registrations_open,
        "approval_required": false,
        "invites_enabled": false,
        "configuration": configuration(&st, &super::push::vapid_key(&st).await),
        "contact_account": Value::Null,
        "rules": []
    }))
}

pub async fn v2(State(st): State<AppState>) -> axum::Json<Value> {
    let c = &st.config;
    axum::Json(json!({
        "domain": c.domain,
        "title": c.title,
        "version": mastodon_version(),
        "source_url": "https://example.invalid/agora",
        "description": "A social platform built on Agora.",
        "usage": { "users": { "active_month": 0 } },
        "thumbnail": { "url": format!("{}/thumbnail.png", c.public_url) },
        "languages": ["en"],
        "configuration": configuration(&st, &super::push::vapid_key(&st).await),
        "registrations": { "enabled": c.registrations_open, "approval_required": false, "message": Value::Null },
        "api_versions": { "mastodon": 2 },
        "contact": { "email": c.contact_email, "account": Value::Null },
        "rules": []
    }))
}

pub async fn nodeinfo_links(State(st): State<AppState>) -> axum::Json<Value> {
    axum::Json(json!({
        "links": [{
            "rel": "http://nodeinfo.diaspora.software/ns/schema/2.0",
            "href": format!("{}/nodeinfo/2.0", st.config.public_url)
        }]
    }))
}

pub async fn nodeinfo(State(st): State<AppState>) -> axum::Json<Value> {
    axum::Json(json!({
        "version": "2.0",
        "software": { "name": "agora", "version": VERSION },
        "protocols": [],
        "services": { "outbound": [], "inbound": [] },
        "usage": { "users": { "total": 0, "activeMonth": 0, "activeHalfyear": 0 }, "localPosts": 0 },
        "openRegistrations": st.config.registrations_open,
        "metadata": { "nodeName": st.config.title }
    }))
}

pub async fn oauth_metadata(State(st): State<AppState>) -> axum::Json<Value> {
    let base = &st.config.public_url;
    axum::Json(json!({
        "issuer": format!("{base}/"),
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "userinfo_endpoint": format!("{base}/api/v1/accounts/verify_credentials"),
        "app_registration_endpoint": format!("{base}/api/v1/apps"),
        "scopes_supported": agora_kit::jwt::KNOWN_SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "grant_types_supported": ["authorization_code", "password", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "service_documentation": format!("{base}/api/openapi.json")
    }))
}

pub async fn openapi() -> impl IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/json")], include_str!("../../openapi.json"))
}

#[cfg(test)]
mod tests {
    /// Every public route the router serves is described in the OpenAPI document.
    #[test]
    fn openapi_documents_every_route() {
        let doc: serde_json::Value = serde_json::from_str(include_str!("../../openapi.json")).unwrap_or_default();
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        let source = include_str!("../lib.rs");
        let mut missing = Vec::new();
        for chunk in source.split(".route(\"").skip(1) {
            let route = chunk.split('"').next().unwrap_or_default();
            if !paths.contains_key(route) {
                missing.push(route.to_owned());
            }
        }
        assert!(missing.is_empty(), "routes missing from openapi.json: {missing:?}");
        assert!(paths.len() > 60);
    }
}
