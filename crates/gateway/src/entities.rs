//! Mastodon API entities rendered from service replies (Account, CredentialAccount,
//! Application, Token).

use agora_proto::user::v1 as pb;
use serde::Serialize;
use serde::ser::SerializeSeq as _;
use serde_json::{Value, json};

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A plain-text note as Mastodon renders it: escaped, paragraphs on blank lines, `<br />` on
/// single newlines.
pub fn note_html(note: &str) -> String {
    if note.trim().is_empty() {
        return String::new();
    }
    let normalised = note.replace("\r\n", "\n");
    normalised
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| format!("<p>{}</p>", escape_html(p.trim_matches('\n')).replace('\n', "<br />")))
        .collect()
}

fn missing(base: &str, kind: &str) -> String {
    format!("{base}/{kind}/original/missing.png")
}

/// An always-empty list (`emojis`, `roles`, `media_attachments`, … until their features exist).
#[derive(Debug, Clone, Copy, Default)]
pub struct Empty;

impl Serialize for Empty {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_seq(Some(0))?.end()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountField {
    name: String,
    value: String,
    verified_at: Option<String>,
}

/// Mastodon's Account entity, serialized as is (no JSON tree is built for it).
#[derive(Debug, Clone, Serialize)]
pub struct Account {
    pub id: String,
    pub username: String,
    acct: String,
    display_name: String,
    locked: bool,
    bot: bool,
    discoverable: bool,
    indexable: bool,
    group: bool,
    noindex: bool,
    hide_collections: bool,
    created_at: String,
    note: String,
    url: String,
    uri: String,
    avatar: String,
    avatar_static: String,
    header: String,
    header_static: String,
    pub followers_count: i64,
    pub following_count: i64,
    pub statuses_count: i64,
    pub last_status_at: Option<String>,
    emojis: Empty,
    fields: Vec<AccountField>,
    roles: Empty,
}

pub fn account_entity(base: &str, a: &pb::Account) -> Account {
    let avatar = if a.avatar_url.is_empty() { missing(base, "avatars") } else { a.avatar_url.clone() };
    let header = if a.header_url.is_empty() { missing(base, "headers") } else { a.header_url.clone() };
    Account {
        id: a.id.to_string(),
        username: a.username.clone(),
        acct: a.username.clone(),
        display_name: a.display_name.clone(),
        locked: a.locked,
        bot: a.bot,
        discoverable: true,
        indexable: false,
        group: false,
        noindex: false,
        hide_collections: false,
        created_at: agora_kit::time::rfc3339_ms(a.created_at_ms - a.created_at_ms.rem_euclid(86_400_000)),
        note: note_html(&a.note),
        url: format!("{base}/@{}", a.username),
        uri: format!("{base}/users/{}", a.username),
        avatar_static: avatar.clone(),
        avatar,
        header_static: header.clone(),
        header,
        followers_count: 0,
        following_count: 0,
        statuses_count: 0,
        last_status_at: None,
        emojis: Empty,
        fields: a
            .fields
            .iter()
            .map(|f| AccountField { name: escape_html(&f.name), value: escape_html(&f.value), verified_at: None })
            .collect(),
        roles: Empty,
    }
}

fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Admin) => "Admin",
        Ok(pb::Role::Moderator) => "Moderator",
        _ => "",
    }
}

/// The caller's own account (`entity`, rendered from `a`) with `source` (plain-text note and
/// fields) and `role`.
pub fn credential_account(entity: &Account, a: &pb::Account) -> Value {
    let mut v = serde_json::to_value(entity).unwrap_or(Value::Null);
    let src = a.source.clone().unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "source".into(),
            json!({
                "note": a.note,
                "fields": a.fields.iter().map(|f| json!({"name": f.name, "value": f.value, "verified_at": Value::Null})).collect::<Vec<_>>(),
                "privacy": if src.privacy.is_empty() { "public".to_owned() } else { src.privacy },
                "sensitive": src.sensitive,
                "language": if src.language.is_empty() { Value::Null } else { Value::String(src.language) },
                "follow_requests_count": 0,
                "hide_collections": false,
                "discoverable": true,
                "indexable": false,
            }),
        );
        obj.insert(
            "role".into(),
            json!({ "id": role_id(a.role), "name": role_name(a.role), "color": "", "permissions": "0", "highlighted": role_id(a.role) != "-99" }),
        );
    }
    v
}

fn role_id(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Admin) => "3",
        Ok(pb::Role::Moderator) => "2",
        _ => "-99",
    }
}

pub fn application(a: &pb::Application, with_secret: bool, vapid_key: &str) -> Value {
    let mut v = json!({
        "id": a.id.to_string(),
        "name": a.name,
        "website": if a.website.is_empty() { Value::Null } else { Value::String(a.website.clone()) },
        "scopes": a.scopes,
        "redirect_uri": a.redirect_uris.join("\n"),
        "redirect_uris": a.redirect_uris,
        "vapid_key": vapid_key,
    });
    if with_secret && let Some(obj) = v.as_object_mut() {
        obj.insert("client_id".into(), Value::String(a.client_id.clone()));
        obj.insert("client_secret".into(), Value::String(a.client_secret.clone()));
        obj.insert("client_secret_expires_at".into(), json!(0));
    }
    v
}

pub fn token(t: &pb::Token) -> Value {
    let mut v = json!({
        "access_token": t.access_token,
        "token_type": "Bearer",
        "scope": t.scopes.join(" "),
        "created_at": t.created_at_ms / 1000,
        "expires_in": t.expires_in_seconds,
    });
    if !t.refresh_token.is_empty()
        && let Some(obj) = v.as_object_mut()
    {
        obj.insert("refresh_token".into(), Value::String(t.refresh_token.clone()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_cannot_inject_markup() {
        assert_eq!(note_html("<script>alert(1)</script>"), "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>");
        assert_eq!(note_html("a\nb\n\nc"), "<p>a<br />b</p><p>c</p>");
        assert_eq!(note_html("  "), "");
    }
}
