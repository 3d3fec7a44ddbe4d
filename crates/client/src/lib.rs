//! agora-client: what a service needs to act for a caller. Tokens are verified against the user
//! service's signing keys and revocations (cached, refreshed in the background); a gRPC request's
//! caller is whoever its bearer token says, and nothing else.
//!
//! It must never accept a caller id from a request field or header: only from a verified token.

pub mod epoch;
pub mod graph_facts;
pub mod live;

/// The Web Push alert names Mastodon clients send in `data[alerts]` (the notification service
/// pushes them; the gateway renders every one in the WebPushSubscription entity).
pub const PUSH_ALERTS: &[&str] = &[
    "mention",
    "status",
    "reblog",
    "follow",
    "follow_request",
    "favourite",
    "poll",
    "update",
    "admin.sign_up",
    "admin.report",
];
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use agora_kit::Shutdown;
use agora_kit::grpc::Channel;
use agora_kit::jwt::{Claims, KeySource, PublicKey, Revocation, Verifier};
use agora_proto::user::v1 as pb;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use futures::future::BoxFuture;

/// The `aud` of every access token the user service issues.
pub const AUDIENCE: &str = "agora";

/// Keys and revocations fetched from the user service.
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

/// A verifier that follows the user service's keys and revocations, refreshed every second
/// until `shutdown`. `issuer` is the public URL (the tokens' `iss`); the audience is
/// [`AUDIENCE`].
pub fn user_service_verifier(user: UserServiceClient<Channel>, issuer: &str, shutdown: Shutdown) -> Arc<Verifier> {
    let verifier = Verifier::new(issuer, AUDIENCE, Arc::new(UserServiceKeys { client: user }));
    verifier.spawn_refresh(Duration::from_secs(1), shutdown);
    verifier
}

/// [`user_service_verifier`] for the user service at `user_url` (a lazily connecting channel).
pub fn user_service_verifier_at(
    user_url: &str,
    issuer: &str,
    shutdown: Shutdown,
) -> Result<Arc<Verifier>, agora_kit::Error> {
    let client = UserServiceClient::new(agora_kit::grpc::channel(user_url)?);
    Ok(user_service_verifier(client, issuer, shutdown))
}

/// The verified caller of a gRPC request: its claims and the raw token, to forward to the next
/// service.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Claims,
    pub token: String,
}

impl Caller {
    /// The caller's account, or PERMISSION_DENIED for an application-only token.
    pub fn account_id(&self) -> Result<i64, tonic::Status> {
        self.claims
            .account_id()
            .ok_or_else(|| tonic::Status::permission_denied("This method requires an authenticated user"))
    }

    /// PERMISSION_DENIED unless the token grants `scope` (e.g. `write:statuses`).
    pub fn require(&self, scope: &str) -> Result<(), tonic::Status> {
        if self.claims.allows(scope) {
            Ok(())
        } else {
            Err(tonic::Status::permission_denied("This action is outside the authorized scopes"))
        }
    }
}

/// The caller of `req` if it carries a token; UNAUTHENTICATED for a bad one.
pub async fn optional_caller<T>(verifier: &Verifier, req: &tonic::Request<T>) -> Result<Option<Caller>, tonic::Status> {
    let Some(token) = agora_kit::grpc::bearer_token(req) else {
        return Ok(None);
    };
    let claims = verifier.verify(token).await.map_err(|e| tonic::Status::from(agora_kit::Error::from(e)))?;
    Ok(Some(Caller { claims, token: token.to_owned() }))
}

/// The caller of `req`; UNAUTHENTICATED without a valid token.
pub async fn caller<T>(verifier: &Verifier, req: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
    optional_caller(verifier, req).await?.ok_or_else(|| tonic::Status::unauthenticated("The access token is invalid"))
}

/// The caller of `req`, who must be a user whose token grants `scope`. Returns the account id too.
pub async fn user_with_scope<T>(
    verifier: &Verifier,
    req: &tonic::Request<T>,
    scope: &str,
) -> Result<(Caller, i64), tonic::Status> {
    let c = caller(verifier, req).await?;
    c.require(scope)?;
    let id = c.account_id()?;
    Ok((c, id))
}
