//! A small Mastodon API client for tests: an app, registration, tokens, follows, posts and
//! timelines over real HTTP, against an in-process platform or any running gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: failing loudly is its job

use reqwest::StatusCode;
use serde_json::Value;

use crate::Platform;

pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub client_id: String,
    pub client_secret: String,
    pub app_token: String,
}

pub fn uniq(p: &str) -> String {
    format!("{p}{:06x}", rand::random::<u32>() & 0xff_ffff)
}

impl Api {
    pub async fn new(p: &Platform) -> Api {
        Self::at(p.url()).await
    }

    /// A client of the gateway at `base` (e.g. `http://127.0.0.1:8080`).
    pub async fn at(base: &str) -> Api {
        let http = reqwest::Client::new();
        let base = base.trim_end_matches('/').to_owned();
        let app: Value = http
            .post(format!("{base}/api/v1/apps"))
            .form(&[
                ("client_name", "it"),
                ("scopes", "read write follow push"),
                ("redirect_uris", "urn:ietf:wg:oauth:2.0:oob"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let client_id = app["client_id"].as_str().unwrap().to_owned();
        let client_secret = app["client_secret"].as_str().unwrap().to_owned();
        let tok: Value = http
            .post(format!("{base}/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("client_secret", &client_secret),
                ("scope", "read write"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Api { http, base, client_id, client_secret, app_token: tok["access_token"].as_str().unwrap().to_owned() }
    }

    pub async fn register_raw(&self, username: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/api/v1/accounts", self.base))
            .bearer_auth(&self.app_token)
            .form(&[
                ("username", username),
                ("email", &format!("{}@example.com", uniq("m"))),
                ("password", "long enough password"),
                ("agreement", "true"),
            ])
            .send()
            .await
            .unwrap()
    }

    /// Registers a fresh account; returns (username, access token, refresh token).
    pub async fn user(&self) -> (String, String, String) {
        let name = uniq("u");
        let r = self.register_raw(&name).await;
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        (name, v["access_token"].as_str().unwrap().to_owned(), v["refresh_token"].as_str().unwrap().to_owned())
    }

    /// `POST /oauth/token` with the password grant of this app, for the caller to add headers
    /// (a bearer token, `X-Forwarded-For`) before sending.
    pub fn sign_in(&self, username: &str, password: &str, scope: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}/oauth/token", self.base)).form(&[
            ("grant_type", "password"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
            ("username", username),
            ("password", password),
            ("scope", scope),
        ])
    }

    /// `POST /oauth/revoke` for `token` with this client's credentials.
    pub async fn revoke(&self, token: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/oauth/revoke", self.base))
            .form(&[("client_id", self.client_id.as_str()), ("client_secret", &self.client_secret), ("token", token)])
            .send()
            .await
            .unwrap()
    }

    pub async fn me(&self, token: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/api/v1/accounts/verify_credentials", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

impl Api {
    pub async fn account_id(&self, token: &str) -> String {
        let me: Value = self.me(token).await.json().await.unwrap();
        me["id"].as_str().unwrap().to_owned()
    }

    pub async fn follow(&self, token: &str, id: &str) {
        let r = self
            .http
            .post(format!("{}/api/v1/accounts/{id}/follow", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap_or_default());
    }

    pub async fn post(&self, token: &str, text: &str) -> String {
        let r = self
            .http
            .post(format!("{}/api/v1/statuses", self.base))
            .bearer_auth(token)
            .form(&[("status", text)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap_or_default());
        let v: Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    pub async fn home_page(&self, token: &str, query: &str) -> Vec<Value> {
        let r = self
            .http
            .get(format!("{}/api/v1/timelines/home?{query}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    /// Every status id of a home timeline, walking pages with max_id.
    pub async fn whole_home(&self, token: &str) -> Vec<String> {
        let mut all = Vec::new();
        let mut query = "limit=40".to_owned();
        loop {
            let page = self.home_page(token, &query).await;
            let Some(last) = page.last() else { break };
            query = format!("limit=40&max_id={}", last["id"].as_str().unwrap());
            all.extend(page.iter().map(|s| s["id"].as_str().unwrap().to_owned()));
        }
        all
    }
}
