//! The tonic face of the user service: wire types in, [`Accounts`] calls, wire types out.

use std::sync::Arc;

use agora_kit::grpc::bearer_token;
use agora_proto::user::v1 as pb;
use agora_proto::user::v1::user_service_server::UserService;
use tonic::{Request, Response, Status};

use crate::domain::{Account, Application, Field, ProfilePatch, Role};
use crate::service::{Accounts, IssuedToken};

pub struct UserGrpc {
    pub accounts: Arc<Accounts>,
}

pub fn account_pb(a: &Account, with_source: bool) -> pb::Account {
    pb::Account {
        id: a.id,
        username: a.username.clone(),
        display_name: a.display_name.clone(),
        note: a.note.clone(),
        avatar_url: a.avatar_url.clone(),
        header_url: a.header_url.clone(),
        locked: a.locked,
        bot: a.bot,
        fields: a.fields.iter().map(|f| pb::ProfileField { name: f.name.clone(), value: f.value.clone() }).collect(),
        role: match a.role {
            Role::User => pb::Role::User,
            Role::Moderator => pb::Role::Moderator,
            Role::Admin => pb::Role::Admin,
        } as i32,
        created_at_ms: a.created_at_ms,
        updated_at_ms: a.updated_at_ms,
        source: with_source.then(|| pb::AccountSource {
            email: a.email.clone(),
            privacy: a.privacy.clone(),
            sensitive: a.sensitive,
            language: a.language.clone(),
        }),
    }
}

fn app_pb(a: &Application, secret: Option<String>) -> pb::Application {
    pb::Application {
        id: a.id,
        name: a.name.clone(),
        website: a.website.clone(),
        redirect_uris: a.redirect_uris.clone(),
        scopes: a.scopes.clone(),
        client_id: a.client_id.clone(),
        client_secret: secret.unwrap_or_default(),
        created_at_ms: a.created_at_ms,
    }
}

fn token_pb(t: IssuedToken) -> pb::Token {
    pb::Token {
        access_token: t.access_token,
        token_type: "Bearer".into(),
        scopes: t.scopes,
        created_at_ms: t.created_at_ms,
        expires_in_seconds: t.expires_in,
        refresh_token: t.refresh_token.unwrap_or_default(),
    }
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl UserService for UserGrpc {
    async fn create_application(&self, req: Request<pb::CreateApplicationRequest>) -> R<pb::CreateApplicationResponse> {
        let r = req.into_inner();
        let (app, secret) = self.accounts.create_application(&r.name, &r.website, &r.redirect_uris, &r.scopes).await?;
        Ok(Response::new(pb::CreateApplicationResponse { application: Some(app_pb(&app, Some(secret))) }))
    }

    async fn get_application(&self, req: Request<pb::GetApplicationRequest>) -> R<pb::GetApplicationResponse> {
        let app = self.accounts.application_of(bearer_token(&req)).await?;
        Ok(Response::new(pb::GetApplicationResponse { application: Some(app_pb(&app, None)) }))
    }

    async fn register(&self, req: Request<pb::RegisterRequest>) -> R<pb::RegisterResponse> {
        let token = bearer_token(&req).map(str::to_owned);
        let r = req.into_inner();
        let (t, a) = self
            .accounts
            .register(token.as_deref(), &r.username, &r.email, &r.password, r.agreement, &r.scopes)
            .await?;
        Ok(Response::new(pb::RegisterResponse { token: Some(token_pb(t)), account: Some(account_pb(&a, true)) }))
    }

    async fn authenticate(&self, req: Request<pb::AuthenticateRequest>) -> R<pb::AuthenticateResponse> {
        let r = req.into_inner();
        let t = self
            .accounts
            .password_grant(&r.client_id, &r.client_secret, &r.login, &r.password, &r.scopes, &r.client_address)
            .await?;
        Ok(Response::new(pb::AuthenticateResponse { token: Some(token_pb(t)) }))
    }

    async fn issue_client_token(&self, req: Request<pb::IssueClientTokenRequest>) -> R<pb::IssueClientTokenResponse> {
        let r = req.into_inner();
        let t = self.accounts.client_grant(&r.client_id, &r.client_secret, &r.scopes).await?;
        Ok(Response::new(pb::IssueClientTokenResponse { token: Some(token_pb(t)) }))
    }

    async fn create_authorization_code(
        &self,
        req: Request<pb::CreateAuthorizationCodeRequest>,
    ) -> R<pb::CreateAuthorizationCodeResponse> {
        let r = req.into_inner();
        let code = self
            .accounts
            .create_authorization_code(
                &r.client_id,
                &r.redirect_uri,
                &r.scopes,
                &r.login,
                &r.password,
                &r.code_challenge,
                &r.code_challenge_method,
                &r.client_address,
            )
            .await?;
        Ok(Response::new(pb::CreateAuthorizationCodeResponse { code }))
    }

    async fn exchange_authorization_code(
        &self,
        req: Request<pb::ExchangeAuthorizationCodeRequest>,
    ) -> R<pb::ExchangeAuthorizationCodeResponse> {
        let r = req.into_inner();
        let t = self
            .accounts
            .exchange_code(&r.client_id, &r.client_secret, &r.code, &r.redirect_uri, &r.code_verifier)
            .await?;
        Ok(Response::new(pb::ExchangeAuthorizationCodeResponse { token: Some(token_pb(t)) }))
    }

    async fn refresh(&self, req: Request<pb::RefreshRequest>) -> R<pb::RefreshResponse> {
        let r = req.into_inner();
        let t = self.accounts.refresh(&r.client_id, &r.client_secret, &r.refresh_token).await?;
        Ok(Response::new(pb::RefreshResponse { token: Some(token_pb(t)) }))
    }

    async fn revoke(&self, req: Request<pb::RevokeRequest>) -> R<pb::RevokeResponse> {
        let r = req.into_inner();
        self.accounts.revoke(&r.client_id, &r.client_secret, &r.token).await?;
        Ok(Response::new(pb::RevokeResponse {}))
    }

    async fn change_password(&self, req: Request<pb::ChangePasswordRequest>) -> R<pb::ChangePasswordResponse> {
        let token = bearer_token(&req).map(str::to_owned);
        let r = req.into_inner();
        let n = self.accounts.change_password(token.as_deref(), &r.current_password, &r.new_password).await?;
        Ok(Response::new(pb::ChangePasswordResponse { revoked_sessions: n as i32 }))
    }

    async fn get_account(&self, req: Request<pb::GetAccountRequest>) -> R<pb::GetAccountResponse> {
        let a = self.accounts.account(req.into_inner().id).await?;
        Ok(Response::new(pb::GetAccountResponse { account: Some(account_pb(&a, false)) }))
    }

    async fn batch_get_accounts(&self, req: Request<pb::BatchGetAccountsRequest>) -> R<pb::BatchGetAccountsResponse> {
        let list = self.accounts.accounts(&req.into_inner().ids).await?;
        Ok(Response::new(pb::BatchGetAccountsResponse {
            accounts: list.iter().map(|a| account_pb(a, false)).collect(),
        }))
    }

    async fn lookup_account(&self, req: Request<pb::LookupAccountRequest>) -> R<pb::LookupAccountResponse> {
        let a = self.accounts.lookup(&req.into_inner().username).await?;
        Ok(Response::new(pb::LookupAccountResponse { account: Some(account_pb(&a, false)) }))
    }

    async fn get_credential_account(
        &self,
        req: Request<pb::GetCredentialAccountRequest>,
    ) -> R<pb::GetCredentialAccountResponse> {
        let a = self.accounts.credential_account(bearer_token(&req)).await?;
        Ok(Response::new(pb::GetCredentialAccountResponse { account: Some(account_pb(&a, true)) }))
    }

    async fn update_profile(&self, req: Request<pb::UpdateProfileRequest>) -> R<pb::UpdateProfileResponse> {
        let token = bearer_token(&req).map(str::to_owned);
        let r = req.into_inner();
        let patch = ProfilePatch {
            display_name: r.display_name,
            note: r.note,
            avatar_url: r.avatar_url,
            header_url: r.header_url,
            locked: r.locked,
            bot: r.bot,
            fields: r
                .update_fields
                .then(|| r.fields.into_iter().map(|f| Field { name: f.name, value: f.value }).collect()),
            privacy: r.privacy,
            sensitive: r.sensitive,
            language: r.language,
        };
        let a = self.accounts.update_profile(token.as_deref(), patch).await?;
        Ok(Response::new(pb::UpdateProfileResponse { account: Some(account_pb(&a, true)) }))
    }

    async fn get_signing_keys(&self, _req: Request<pb::GetSigningKeysRequest>) -> R<pb::GetSigningKeysResponse> {
        use agora_kit::jwt::KeySource as _;
        let source = crate::tokens::StoreKeys {
            store: Arc::clone(&self.accounts.store),
            keyring: Arc::clone(&self.accounts.keyring),
        };
        let keys = source.signing_keys().await?;
        Ok(Response::new(pb::GetSigningKeysResponse {
            keys: keys
                .into_iter()
                .map(|k| pb::SigningKey {
                    kid: k.kid,
                    algorithm: agora_kit::jwt::ALGORITHM.into(),
                    public_key: k.key,
                    created_at_ms: 0,
                })
                .collect(),
            issuer: self.accounts.policy().issuer.clone(),
            audience: crate::service::AUDIENCE.into(),
        }))
    }

    async fn list_revoked_sessions(
        &self,
        req: Request<pb::ListRevokedSessionsRequest>,
    ) -> R<pb::ListRevokedSessionsResponse> {
        let (sessions, now) = self.accounts.revoked_since(req.into_inner().since_ms).await?;
        Ok(Response::new(pb::ListRevokedSessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|s| pb::RevokedSession {
                    session_id: s.id,
                    revoked_at_ms: s.revoked_at_ms.unwrap_or_default(),
                    expires_at_ms: s.expires_at_ms,
                })
                .collect(),
            now_ms: now,
        }))
    }
}
