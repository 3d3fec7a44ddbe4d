//! Bearer-token checks at the edge. Tokens are verified locally against cached keys and
//! revocations (no network call per request); the verified token itself is what the gateway
//! forwards to services, which verify it again — never a bare user id.

use std::sync::Arc;

use agora_kit::grpc::Channel;
use agora_kit::jwt::Claims;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::error::ApiError;
use crate::state::AppState;

/// A verified caller: the claims and the raw token to forward.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Claims,
    pub token: String,
}

impl Caller {
    /// The account id, or 401 for an application-only token.
    pub fn account_id(&self) -> Result<i64, ApiError> {
        self.claims.account_id().ok_or_else(|| {
            ApiError::new(http::StatusCode::UNPROCESSABLE_ENTITY, "This method requires an authenticated user")
        })
    }

    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.claims.allows(scope) { Ok(()) } else { Err(ApiError::forbidden_scope()) }
    }

    /// A user token (not an application's) that grants `scope`.
    pub fn require_user(&self, scope: &str) -> Result<(), ApiError> {
        self.account_id()?;
        self.require(scope)
    }
}

/// The verified caller stashed by the rate-limit middleware, if the request had a valid token.
#[derive(Debug, Clone)]
pub struct MaybeCaller(pub Option<Caller>);

/// Extractor: a request that must carry a valid token (application or user).
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(MaybeCaller(Some(c))) = parts.extensions.get::<MaybeCaller>() {
            return Ok(Authenticated(c.clone()));
        }
        let token = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(agora_kit::jwt::bearer)
            .ok_or_else(ApiError::unauthorized)?;
        let claims = state.verifier.verify(token).await.map_err(|e| ApiError::from(agora_kit::Error::from(e)))?;
        Ok(Authenticated(Caller { claims, token: token.to_owned() }))
    }
}

/// Extractor: a token if one was sent (and valid); an invalid token is still a 401.
pub struct OptionalCaller(pub Option<Caller>);

impl FromRequestParts<AppState> for OptionalCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if parts.headers.get(http::header::AUTHORIZATION).is_none() {
            return Ok(OptionalCaller(None));
        }
        Authenticated::from_request_parts(parts, state).await.map(|a| OptionalCaller(Some(a.0)))
    }
}

pub use agora_client::UserServiceKeys;

pub fn shared(client: UserServiceClient<Channel>) -> Arc<UserServiceKeys> {
    Arc::new(UserServiceKeys { client })
}
