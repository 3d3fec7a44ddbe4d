//! Bearer-token checks at the edge. Tokens are verified locally against cached keys and
//! revocations (no network call per request); the verified token itself is what the gateway
//! forwards to services, which verify it again — never a bare user id.

use std::sync::Arc;

use agora_kit::jwt::{Claims, KeySource, PublicKey, Revocation};
use agora_proto::user::v1 as pb;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use axum::extract::FromRequestParts;
use futures::future::BoxFuture;
use http::request::Parts;
use tonic::transport::Channel;

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

/// Keys and revocations from the user service, for the gateway's verifier.
pub struct UserServiceKeys {
    pub client: UserServiceClient<Channel>,
}

impl KeySource for UserServiceKeys {
    fn signing_keys(&self) -> BoxFuture<'_, Result<Vec<PublicKey>, agora_kit::Error>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let resp = client.get_signing_keys(agora_kit::grpc::request(pb::GetSigningKeysRequest {}, None)).await?;
            Ok(resp.into_inner().keys.into_iter().map(|k| PublicKey { kid: k.kid, key: k.public_key }).collect())
        })
    }

    fn revoked_since(&self, since_ms: i64) -> BoxFuture<'_, Result<(Vec<Revocation>, i64), agora_kit::Error>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let resp = client
                .list_revoked_sessions(agora_kit::grpc::request(pb::ListRevokedSessionsRequest { since_ms }, None))
                .await?
                .into_inner();
            Ok((
                resp.sessions
                    .into_iter()
                    .map(|s| Revocation { session_id: s.session_id, expires_at_ms: s.expires_at_ms })
                    .collect(),
                resp.now_ms,
            ))
        })
    }
}

pub fn shared(client: UserServiceClient<Channel>) -> Arc<UserServiceKeys> {
    Arc::new(UserServiceKeys { client })
}
