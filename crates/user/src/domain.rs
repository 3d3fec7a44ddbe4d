//! Account rules: what a valid username, email, password and profile look like. No I/O here.

use agora_kit::Error;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

pub const USERNAME_MAX: usize = 30;
pub const DISPLAY_NAME_MAX: usize = 30;
pub const NOTE_MAX: usize = 500;
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 72;
pub const FIELDS_MAX: usize = 4;
pub const FIELD_LEN_MAX: usize = 255;
pub const EMAIL_MAX: usize = 254;
pub const URL_MAX: usize = 2048;

/// Usernames that would impersonate the instance or collide with routes.
const RESERVED: &[&str] = &[
    "admin",
    "administrator",
    "root",
    "support",
    "help",
    "moderator",
    "mod",
    "system",
    "agora",
    "api",
    "oauth",
    "well-known",
    "settings",
    "about",
    "instance",
    "null",
    "undefined",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Moderator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Moderator => "moderator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Role {
        match s {
            "admin" => Role::Admin,
            "moderator" => Role::Moderator,
            _ => Role::User,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub display_name: String,
    pub note: String,
    pub avatar_url: String,
    pub header_url: String,
    pub locked: bool,
    pub bot: bool,
    pub fields: Vec<Field>,
    pub role: Role,
    pub privacy: String,
    pub sensitive: bool,
    pub language: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub id: i64,
    pub name: String,
    pub website: String,
    pub redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub client_id: String,
    pub client_secret_hash: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: i64,
    pub account_id: Option<i64>,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// A profile change; `None` leaves a value as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfilePatch {
    pub display_name: Option<String>,
    pub note: Option<String>,
    pub avatar_url: Option<String>,
    pub header_url: Option<String>,
    pub locked: Option<bool>,
    pub bot: Option<bool>,
    pub fields: Option<Vec<Field>>,
    pub privacy: Option<String>,
    pub sensitive: Option<bool>,
    pub language: Option<String>,
}

pub use agora_kit::jwt::KNOWN_SCOPES;

/// Parses a space- or comma-separated scope list; empty means Mastodon's default `read`.
pub fn parse_scopes(raw: &[String]) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    for s in raw.iter().flat_map(|r| r.split([' ', ',', '+'])).map(str::trim).filter(|s| !s.is_empty()) {
        if !KNOWN_SCOPES.contains(&s) {
            return Err(Error::invalid("scope", "ERR_INVALID", format!("unknown scope {s:?}")));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    if out.is_empty() {
        out.push("read".to_owned());
    }
    Ok(out)
}

/// Whether `requested` is within what an application registered for.
pub fn scopes_within(requested: &[String], allowed: &[String]) -> bool {
    requested.iter().all(|r| {
        let parent = r.split(':').next().unwrap_or(r);
        allowed.iter().any(|a| a == r || a == parent)
    })
}

/// Mastodon's username rule: ASCII letters, digits and underscores, with dots and dashes allowed
/// inside; at most 30 characters. ASCII-only also rules out confusables and direction marks.
pub fn validate_username(raw: &str) -> Result<String, Error> {
    let u = raw.trim();
    let err = |code: &str, msg: &str| Error::invalid("username", code, msg);
    if u.is_empty() {
        return Err(err("ERR_BLANK", "Username can't be blank"));
    }
    if u.chars().count() > USERNAME_MAX {
        return Err(err("ERR_TOO_LONG", "Username is too long (maximum is 30 characters)"));
    }
    let bytes = u.as_bytes();
    let inner_ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-';
    let edge_ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let valid = bytes.iter().all(|b| inner_ok(*b))
        && bytes.first().is_some_and(|b| edge_ok(*b))
        && bytes.last().is_some_and(|b| edge_ok(*b));
    if !valid {
        return Err(err("ERR_INVALID", "Username must contain only letters, numbers and underscores"));
    }
    if RESERVED.contains(&u.to_ascii_lowercase().as_str()) {
        return Err(err("ERR_RESERVED", "Username is reserved"));
    }
    Ok(u.to_owned())
}

/// An address people actually receive mail at, by RFC 5322's grammar (the `email_address`
/// parser) narrowed to what Mastodon accepts: a bare address (no display name, no quoted local
/// part, no comments, no `[IP]` literal), a local part of plain ASCII atoms, a domain of at least
/// two labels that is a valid host name (internationalised names allowed) with a non-numeric
/// top-level label. So `<script>@x.com`, `"a b"@x.com`, `a@[127.0.0.1]` and addresses holding
/// non-characters or invisible formatting are refused.
pub fn validate_email(raw: &str) -> Result<String, Error> {
    let e = raw.trim();
    let err = || Error::invalid("email", "ERR_INVALID", "Email is invalid");
    if e.is_empty() {
        return Err(Error::invalid("email", "ERR_BLANK", "Email can't be blank"));
    }
    if e.len() > EMAIL_MAX || e.chars().any(|c| c.is_whitespace() || c.is_control() || is_format_char(c)) {
        return Err(err());
    }
    let options = email_address::Options {
        minimum_sub_domains: 2,
        allow_domain_literal: false,
        allow_display_text: false,
        allow_long_local_parts: false,
    };
    let parsed = email_address::EmailAddress::parse_with_options(e, options).map_err(|_| err())?;
    let (local, domain) = (parsed.local_part(), parsed.domain());
    // Dot-atoms of RFC 5322 `atext` only: no quoted strings, no comments, nothing non-ASCII.
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    if local.split('.').any(|atom| atom.is_empty() || !atom.chars().all(atext)) {
        return Err(err());
    }
    // The domain must be a host name; IDNs are checked in their ASCII (punycode) form.
    let ascii = match url::Host::parse(domain) {
        Ok(url::Host::Domain(d)) => d,
        _ => return Err(err()),
    };
    let labels: Vec<&str> = ascii.split('.').collect();
    let valid_label = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let tld_ok = labels.last().is_some_and(|t| t.chars().any(|c| c.is_ascii_alphabetic()));
    if labels.len() < 2 || !labels.iter().all(valid_label) || !tld_ok {
        return Err(err());
    }
    Ok(e.to_owned())
}

/// The backoff on failed sign-ins. It slows guessing down and never locks anyone out: after
/// `free_failures` failures under one throttle key, each further attempt must wait twice as
/// long as the one before (from `base` up to `max`), and a key forgets its failures `forget_after`
/// its last one. The owner signing in from an address they used before (within
/// `known_address_for`) has a key of their own, so guessing from elsewhere does not slow them.
#[derive(Debug, Clone, Copy)]
pub struct LoginThrottle {
    pub free_failures: i64,
    pub base: std::time::Duration,
    pub max: std::time::Duration,
    pub forget_after: std::time::Duration,
    pub known_address_for: std::time::Duration,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            free_failures: 5,
            base: std::time::Duration::from_secs(1),
            max: std::time::Duration::from_secs(300),
            forget_after: std::time::Duration::from_secs(24 * 3600),
            known_address_for: std::time::Duration::from_secs(90 * 24 * 3600),
        }
    }
}

impl LoginThrottle {
    /// How long after the last failure the next attempt must wait, given `failures` so far.
    pub fn delay(&self, failures: i64) -> std::time::Duration {
        if failures < self.free_failures {
            return std::time::Duration::ZERO;
        }
        let doublings = (failures - self.free_failures).min(30) as u32;
        self.base.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// Milliseconds still to wait before an attempt is allowed, if any.
    pub fn wait_ms(&self, failures: i64, last_failure_at_ms: i64, now_ms: i64) -> Option<i64> {
        if now_ms - last_failure_at_ms > self.forget_after.as_millis() as i64 {
            return None;
        }
        let until = last_failure_at_ms + self.delay(failures).as_millis() as i64;
        (until > now_ms).then_some(until - now_ms)
    }
}

pub fn validate_password(p: &str) -> Result<(), Error> {
    if p.chars().count() < PASSWORD_MIN {
        return Err(Error::invalid("password", "ERR_TOO_SHORT", "Password is too short (minimum is 8 characters)"));
    }
    if p.len() > PASSWORD_MAX {
        return Err(Error::invalid("password", "ERR_TOO_LONG", "Password is too long (maximum is 72 bytes)"));
    }
    if p.contains('\0') {
        return Err(Error::invalid("password", "ERR_INVALID", "Password contains a NUL character"));
    }
    Ok(())
}

/// Bidirectional overrides/isolates and other invisible formatting characters that let a name
/// display as something it is not.
fn is_format_char(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// NFC-normalises free text and refuses NUL, control characters (newlines allowed where
/// `multiline`) and direction overrides; checks the length in characters.
pub fn clean_text(field: &str, raw: &str, max: usize, multiline: bool) -> Result<String, Error> {
    let text: String = raw.nfc().collect();
    for c in text.chars() {
        let allowed_ws = multiline && (c == '\n' || c == '\r' || c == '\t');
        if (c.is_control() && !allowed_ws) || is_format_char(c) {
            return Err(Error::invalid(
                field,
                "ERR_INVALID",
                format!("{field} contains characters that are not allowed"),
            ));
        }
    }
    if text.chars().count() > max {
        return Err(Error::invalid(
            field,
            "ERR_TOO_LONG",
            format!("{field} is too long (maximum is {max} characters)"),
        ));
    }
    Ok(text)
}

pub fn validate_url(field: &str, raw: &str) -> Result<String, Error> {
    let u = raw.trim();
    if u.is_empty() {
        return Ok(String::new());
    }
    if u.len() > URL_MAX
        || !(u.starts_with("https://") || u.starts_with("http://"))
        || u.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::invalid(field, "ERR_INVALID", format!("{field} must be an http(s) URL")));
    }
    Ok(u.to_owned())
}

/// Validates and normalises a profile patch.
pub fn validate_patch(mut p: ProfilePatch) -> Result<ProfilePatch, Error> {
    if let Some(d) = p.display_name.take() {
        p.display_name = Some(clean_text("display_name", d.trim(), DISPLAY_NAME_MAX, false)?);
    }
    if let Some(n) = p.note.take() {
        p.note = Some(clean_text("note", &n, NOTE_MAX, true)?);
    }
    if let Some(a) = p.avatar_url.take() {
        p.avatar_url = Some(validate_url("avatar", &a)?);
    }
    if let Some(h) = p.header_url.take() {
        p.header_url = Some(validate_url("header", &h)?);
    }
    if let Some(fields) = p.fields.take() {
        if fields.len() > FIELDS_MAX {
            return Err(Error::invalid("fields_attributes", "ERR_TOO_LONG", "at most 4 profile fields"));
        }
        let mut out = Vec::with_capacity(fields.len());
        for f in fields {
            let name = clean_text("fields_attributes", f.name.trim(), FIELD_LEN_MAX, false)?;
            let value = clean_text("fields_attributes", f.value.trim(), FIELD_LEN_MAX, false)?;
            if !name.is_empty() || !value.is_empty() {
                out.push(Field { name, value });
            }
        }
        p.fields = Some(out);
    }
    if let Some(v) = p.privacy.as_deref()
        && !matches!(v, "public" | "unlisted" | "private" | "direct")
    {
        return Err(Error::invalid(
            "source[privacy]",
            "ERR_INVALID",
            "privacy must be public, unlisted, private or direct",
        ));
    }
    if let Some(l) = p.language.as_deref()
        && (l.len() > 8 || !l.chars().all(|c| c.is_ascii_alphabetic() || c == '-'))
    {
        return Err(Error::invalid("source[language]", "ERR_INVALID", "language must be an ISO 639 code"));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    #[test]
    fn login_backoff_grows_and_is_capped() {
        let t = LoginThrottle::default();
        assert_eq!(t.delay(4), std::time::Duration::ZERO, "a few typos cost nothing");
        assert_eq!(t.delay(5), std::time::Duration::from_secs(1));
        assert_eq!(t.delay(7), std::time::Duration::from_secs(4));
        assert_eq!(t.delay(50), std::time::Duration::from_secs(300), "never more than the cap: no hard lock");
        assert_eq!(t.wait_ms(7, 1_000, 2_000), Some(3_000));
        assert_eq!(t.wait_ms(7, 1_000, 6_000), None);
        assert_eq!(t.wait_ms(50, 0, 25 * 3600 * 1000), None, "failures are forgotten after a day");
    }

    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(validate_username(" alice_1 ").unwrap(), "alice_1");
        assert!(validate_username("a.b-c").is_ok());
        for bad in [
            "",
            "bad name!",
            ".alice",
            "alice-",
            "ａlice",
            "al\u{202E}ice",
            "a\0b",
            "admin",
            &"x".repeat(31),
            "' OR 1=1 --",
        ] {
            assert!(validate_username(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn emails() {
        for good in ["a@example.com", "first.last+tag@mail.example.co.uk", "o'brien@example.ie", "x@bücher.example"] {
            assert!(validate_email(good).is_ok(), "{good:?} should be accepted");
        }
        for bad in [
            "<script>@x.com",
            "a<b>@x.com",
            "\"quoted local\"@example.com",
            "a@[127.0.0.1]",
            "Alice <alice@example.com>",
            "a(comment)@example.com",
            "a@example.123",
            "a@-example.com",
            "a.@example.com",
            ".a@example.com",
            "a\u{FFFE}@example.com",
            "a@exa\u{FDD0}mple.com",
            "ä@example.com",
            "",
            "a",
            "a@b",
            "@example.com",
            "a b@example.com",
            "a@exa mple.com",
            "a@@example.com",
            "a@example..com",
            "a\u{200B}@example.com",
        ] {
            assert!(validate_email(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn text_rules() {
        assert!(clean_text("display_name", "Zoë 🌱", 30, false).is_ok());
        assert!(clean_text("display_name", "a\u{202E}b", 30, false).is_err());
        assert!(clean_text("display_name", "a\nb", 30, false).is_err());
        assert!(clean_text("note", "a\nb", 30, true).is_ok());
        assert!(clean_text("note", "x\0", 30, true).is_err());
        // NFC: e + combining acute counts as one character.
        assert_eq!(clean_text("n", "e\u{301}", 1, false).unwrap(), "é");
    }

    #[test]
    fn scopes() {
        assert_eq!(parse_scopes(&[]).unwrap(), vec!["read"]);
        assert_eq!(parse_scopes(&["read write".into()]).unwrap(), vec!["read", "write"]);
        assert!(parse_scopes(&["root".into()]).is_err());
        assert!(scopes_within(&["read:accounts".into()], &["read".into()]));
        assert!(!scopes_within(&["write".into()], &["read".into()]));
    }
}
