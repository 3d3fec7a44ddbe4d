//! `/api/v1/accounts…`: registration, the caller's own account, profiles and lookups.

use axum::extract::{Path, State};
use serde_json::Value;

use agora_kit::grpc::request;
use agora_proto::user::v1 as pb;

use crate::auth::Authenticated;
use crate::entities;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::state::AppState;

type Json = axum::Json<Value>;

/// Registration: an application token (client credentials) creates an account and gets a user
/// token back, as Mastodon does.
pub async fn register(State(st): State<AppState>, Authenticated(c): Authenticated, p: Params) -> ApiResult<Json> {
    if c.claims.account_id().is_some() {
        return Err(ApiError::forbidden_scope());
    }
    c.require("write:accounts")?;
    let req = pb::RegisterRequest {
        username: p.text_or_empty("username")?,
        email: p.text_or_empty("email")?,
        password: p.text_or_empty("password")?,
        agreement: p.bool("agreement")?.unwrap_or(false),
        locale: p.text_or_empty("locale")?,
        reason: p.text_or_empty("reason")?,
        scopes: Vec::new(),
    };
    let resp = st.user.clone().register(request(req, Some(&c.token))).await?.into_inner();
    Ok(axum::Json(entities::token(&resp.token.unwrap_or_default())))
}

pub async fn verify_credentials(State(st): State<AppState>, Authenticated(c): Authenticated) -> ApiResult<Json> {
    c.account_id()?;
    if !(c.claims.allows("read:accounts") || c.claims.allows("profile")) {
        return Err(ApiError::forbidden_scope());
    }
    let a = st
        .user
        .clone()
        .get_credential_account(request(pb::GetCredentialAccountRequest {}, Some(&c.token)))
        .await?
        .into_inner()
        .account
        .unwrap_or_default();
    let e = crate::render::with_counts(&st, &a).await;
    Ok(axum::Json(entities::credential_account(&e, &a)))
}

pub async fn update_credentials(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    p: Params,
) -> ApiResult<Json> {
    c.account_id()?;
    c.require("write:accounts")?;
    let nested = p.nested("fields_attributes");
    let update_fields = !nested.is_empty();
    let mut fields: std::collections::BTreeMap<u32, pb::ProfileField> = std::collections::BTreeMap::new();
    for (idx, sub, value) in nested {
        let i: u32 = idx.parse().map_err(|_| ApiError::unprocessable("fields_attributes index must be a number"))?;
        if i > 16 {
            return Err(ApiError::unprocessable("too many profile fields"));
        }
        let f = fields.entry(i).or_default();
        match sub.as_str() {
            "name" => f.name = value,
            "value" => f.value = value,
            _ => {}
        }
    }
    let req = pb::UpdateProfileRequest {
        display_name: p.text("display_name")?.map(str::to_owned),
        note: p.text("note")?.map(str::to_owned),
        avatar_url: None,
        header_url: None,
        locked: p.bool("locked")?,
        bot: p.bool("bot")?,
        fields: fields.into_values().collect(),
        update_fields,
        privacy: p.text("source[privacy]")?.map(str::to_owned),
        sensitive: p.bool("source[sensitive]")?,
        language: p.text("source[language]")?.map(str::to_owned),
    };
    let a =
        st.user.clone().update_profile(request(req, Some(&c.token))).await?.into_inner().account.unwrap_or_default();
    Ok(axum::Json(entities::credential_account(&entities::account_entity(&st.config.public_url, &a), &a)))
}

pub async fn get(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<crate::render::SharedAccount>> {
    let id = crate::params::path_id(&id)?;
    Ok(axum::Json(crate::render::account(&st, id).await?))
}

/// `GET /api/v1/accounts?id[]=1&id[]=2`.
pub async fn batch(State(st): State<AppState>, p: Params) -> ApiResult<axum::Json<Vec<crate::render::SharedAccount>>> {
    let ids: Vec<i64> = p.list("id").iter().filter_map(|s| s.parse().ok()).collect();
    if ids.len() > 40 {
        return Err(ApiError::unprocessable("at most 40 ids"));
    }
    Ok(axum::Json(crate::render::account_list(&st, &ids).await?))
}

pub async fn lookup(State(st): State<AppState>, p: Params) -> ApiResult<axum::Json<entities::Account>> {
    let acct = p.string("acct");
    let acct = acct.trim().trim_start_matches('@');
    let (user, domain) = acct.split_once('@').unwrap_or((acct, ""));
    if user.is_empty() || (!domain.is_empty() && !domain.eq_ignore_ascii_case(&st.config.domain)) {
        return Err(ApiError::not_found());
    }
    let a = st
        .user
        .clone()
        .lookup_account(request(pb::LookupAccountRequest { username: user.to_owned() }, None))
        .await?
        .into_inner()
        .account
        .unwrap_or_default();
    Ok(axum::Json(crate::render::with_counts(&st, &a).await))
}

/// Extension: `POST /api/v1/agora/accounts/password` changes the password and signs out every
/// other session.
pub async fn change_password(
    State(st): State<AppState>,
    Authenticated(c): Authenticated,
    p: Params,
) -> ApiResult<Json> {
    c.account_id()?;
    c.require("write:accounts")?;
    let resp = st
        .user
        .clone()
        .change_password(request(
            pb::ChangePasswordRequest {
                current_password: p.text_or_empty("current_password")?,
                new_password: p.text_or_empty("new_password")?,
            },
            Some(&c.token),
        ))
        .await?
        .into_inner();
    Ok(axum::Json(serde_json::json!({ "revoked_sessions": resp.revoked_sessions })))
}
