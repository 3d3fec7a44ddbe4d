//! OAuth 2 and application registration: `/api/v1/apps`, `/oauth/token`, `/oauth/revoke`,
//! `/oauth/authorize` (a minimal login page for the authorization-code grant).

use axum::extract::State;
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use agora_kit::grpc::request;
use agora_proto::user::v1 as pb;

use crate::auth::Authenticated;
use crate::edge::ClientIp;
use crate::entities::{self, escape_html};
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::state::AppState;

fn scopes(p: &Params, key: &str) -> Vec<String> {
    p.list(key).iter().flat_map(|s| s.split([' ', '+', ','])).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

pub async fn create_app(State(st): State<AppState>, p: Params) -> ApiResult<axum::Json<Value>> {
    let name = p.text_or_empty("client_name")?;
    if name.trim().is_empty() {
        return Err(ApiError::unprocessable("Validation failed: Application name can't be blank"));
    }
    let mut redirect_uris = p.list("redirect_uris");
    if redirect_uris.is_empty() {
        redirect_uris = p.list("redirect_uri");
    }
    let req = pb::CreateApplicationRequest {
        name,
        website: p.text_or_empty("website")?,
        redirect_uris,
        scopes: scopes(&p, "scopes"),
    };
    let app =
        st.user.clone().create_application(request(req, None)).await?.into_inner().application.unwrap_or_default();
    Ok(axum::Json(entities::application(&app, true, &super::push::vapid_key(&st).await)))
}

pub async fn verify_app(State(st): State<AppState>, Authenticated(c): Authenticated) -> ApiResult<axum::Json<Value>> {
    let app = st
        .user
        .clone()
        .get_application(request(pb::GetApplicationRequest {}, Some(&c.token)))
        .await?
        .into_inner()
        .application
        .unwrap_or_default();
    Ok(axum::Json(entities::application(&app, false, &super::push::vapid_key(&st).await)))
}

/// Client credentials from the body or from HTTP Basic auth (RFC 6749 §2.3.1).
fn client_credentials(headers: &HeaderMap, p: &Params) -> (String, String) {
    if let Some((id, secret)) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())))
    {
        return (id, secret);
    }
    (p.string("client_id"), p.string("client_secret"))
}

fn invalid_request(msg: &str) -> ApiError {
    ApiError::oauth(StatusCode::BAD_REQUEST, "invalid_request", msg)
}

/// The client's address, as the edge saw it, for the sign-in throttle.
fn address(ip: Option<axum::Extension<ClientIp>>) -> String {
    ip.map(|axum::Extension(ClientIp(ip))| ip.to_string()).unwrap_or_default()
}

pub async fn token(
    State(st): State<AppState>,
    ip: Option<axum::Extension<ClientIp>>,
    headers: HeaderMap,
    p: Params,
) -> ApiResult<Response> {
    let (client_id, client_secret) = client_credentials(&headers, &p);
    if client_id.is_empty() {
        return Err(ApiError::oauth(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed: client_id is missing.",
        ));
    }
    let mut user = st.user.clone();
    let scope = scopes(&p, "scope");
    let token = match p.str("grant_type").unwrap_or("") {
        "password" => {
            let login = p.text_or_empty("username")?;
            let password = p.text_or_empty("password")?;
            if login.is_empty() || password.is_empty() {
                return Err(invalid_request("username and password are required"));
            }
            user.authenticate(request(
                pb::AuthenticateRequest {
                    client_id,
                    client_secret,
                    login,
                    password,
                    scopes: scope,
                    client_address: address(ip),
                },
                None,
            ))
            .await?
            .into_inner()
            .token
        }
        "client_credentials" => {
            user.issue_client_token(request(
                pb::IssueClientTokenRequest { client_id, client_secret, scopes: scope },
                None,
            ))
            .await?
            .into_inner()
            .token
        }
        "refresh_token" => {
            let refresh_token = p.string("refresh_token");
            if refresh_token.is_empty() {
                return Err(invalid_request("refresh_token is required"));
            }
            user.refresh(request(pb::RefreshRequest { client_id, client_secret, refresh_token }, None))
                .await?
                .into_inner()
                .token
        }
        "authorization_code" => {
            let code = p.string("code");
            if code.is_empty() {
                return Err(invalid_request("code is required"));
            }
            user.exchange_authorization_code(request(
                pb::ExchangeAuthorizationCodeRequest {
                    client_id,
                    client_secret,
                    code,
                    redirect_uri: p.string("redirect_uri"),
                    code_verifier: p.string("code_verifier"),
                },
                None,
            ))
            .await?
            .into_inner()
            .token
        }
        "" => return Err(invalid_request("grant_type is required")),
        other => {
            return Err(ApiError::oauth(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("The authorization grant type {other:?} is not supported."),
            ));
        }
    };
    let token = token.unwrap_or_default();
    let mut resp = axum::Json(entities::token(&token)).into_response();
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    Ok(resp)
}

pub async fn revoke(State(st): State<AppState>, headers: HeaderMap, p: Params) -> ApiResult<axum::Json<Value>> {
    let (client_id, client_secret) = client_credentials(&headers, &p);
    let token = p.string("token");
    if token.is_empty() {
        return Err(invalid_request("token is required"));
    }
    st.user.clone().revoke(request(pb::RevokeRequest { client_id, client_secret, token }, None)).await?;
    Ok(axum::Json(json!({})))
}

const AUTHORIZE_FIELDS: &[&str] =
    &["client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method", "response_type"];

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem}}\
         input{{display:block;width:100%;margin:.3rem 0 1rem;padding:.5rem}}button{{padding:.6rem 1.2rem}}.err{{color:#b00}}</style>\
         </head><body>{body}</body></html>",
        title = escape_html(title)
    ))
}

fn login_form(p: &Params, error: Option<&str>) -> Html<String> {
    let hidden: String = AUTHORIZE_FIELDS
        .iter()
        .map(|k| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", escape_html(&p.string(k))))
        .collect();
    let err = error.map(|e| format!("<p class=\"err\">{}</p>", escape_html(e))).unwrap_or_default();
    page(
        "Authorize application",
        &format!(
            "<h1>Sign in to authorize</h1><p>An application is asking for access with scopes <b>{scopes}</b>.</p>{err}\
             <form method=\"post\" action=\"/oauth/authorize\">{hidden}\
             <label>Username or email<input name=\"username\" autocomplete=\"username\" required></label>\
             <label>Password<input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\">Authorize</button></form>",
            scopes = escape_html(&p.str("scope").unwrap_or("read").replace('+', " "))
        ),
    )
}

pub async fn authorize_page(p: Params) -> ApiResult<Response> {
    // RFC 6749 §4.1.1: response_type is required.
    if p.str("response_type").is_none_or(str::is_empty) {
        return Err(invalid_request("response_type is required"));
    }
    if p.str("response_type") != Some("code") {
        return Err(ApiError::oauth(
            StatusCode::BAD_REQUEST,
            "unsupported_response_type",
            "Only response_type=code is supported.",
        ));
    }
    if p.string("client_id").is_empty() {
        return Err(invalid_request("client_id is required"));
    }
    let mut resp = login_form(&p, None).into_response();
    resp.headers_mut().insert("x-frame-options", http::HeaderValue::from_static("DENY"));
    Ok(resp)
}

pub async fn authorize_submit(
    State(st): State<AppState>,
    ip: Option<axum::Extension<ClientIp>>,
    p: Params,
) -> ApiResult<Response> {
    let redirect_uri = p.str("redirect_uri").unwrap_or(crate::OOB).to_owned();
    let result = st
        .user
        .clone()
        .create_authorization_code(request(
            pb::CreateAuthorizationCodeRequest {
                client_id: p.string("client_id"),
                redirect_uri: redirect_uri.clone(),
                scopes: scopes(&p, "scope"),
                login: p.string("username"),
                password: p.string("password"),
                code_challenge: p.string("code_challenge"),
                code_challenge_method: p.string("code_challenge_method"),
                client_address: address(ip),
            },
            None,
        ))
        .await;
    let code = match result {
        Ok(r) => r.into_inner().code,
        Err(s)
            if s.code() == tonic::Code::Unauthenticated
                && s.metadata().get("agora-code").is_some_and(|v| v == "invalid_grant") =>
        {
            let mut resp = login_form(&p, Some("Invalid username or password.")).into_response();
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            return Ok(resp);
        }
        Err(s) => return Err(s.into()),
    };
    if redirect_uri == crate::OOB {
        return Ok(page(
            "Authorization code",
            &format!(
                "<h1>Authorization code</h1><p>Copy this code into the application:</p><pre>{}</pre>",
                escape_html(&code)
            ),
        )
        .into_response());
    }
    let mut url =
        url::Url::parse(&redirect_uri).map_err(|_| ApiError::unprocessable("redirect_uri is not a valid URL"))?;
    url.query_pairs_mut().append_pair("code", &code);
    if let Some(state) = p.str("state") {
        url.query_pairs_mut().append_pair("state", state);
    }
    Ok(Redirect::to(url.as_str()).into_response())
}
