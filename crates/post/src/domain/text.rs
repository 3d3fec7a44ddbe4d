//! Status text: what the author typed, turned into mentions, hashtags and links, and rendered
//! as HTML that carries no markup of the author's own. Pure functions, no I/O.
//!
//! Every character the author typed goes through [`escape`]; the only tags in the output are
//! the `<p>`, `<br>`, `<a>` and `<span>` written here.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization as _;

/// Mastodon counts every link as this many characters, whatever its length.
pub const LINK_LENGTH: usize = 23;

/// A piece of a paragraph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token<'a> {
    Text(&'a str),
    /// `@name` or `@name@domain`; `raw` is everything as typed, `@` included.
    Mention {
        raw: &'a str,
        username: &'a str,
        domain: Option<&'a str>,
    },
    /// `#tag`; `name` as typed, without `#`.
    Tag {
        raw: &'a str,
        name: &'a str,
    },
    Link(&'a str),
}

/// A mention that resolved to a local account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedMention {
    pub account_id: i64,
    /// The canonical spelling, from the account itself.
    pub username: String,
}

/// Usernames mentioned in `text` that may be local (no domain, or `local_host`), lower-cased,
/// deduplicated, in order of first appearance.
pub fn mentioned_usernames(text: &str, local_host: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for token in tokens(text) {
        if let Token::Mention { username, domain, .. } = token
            && domain.is_none_or(|d| d.eq_ignore_ascii_case(local_host))
        {
            let lower = username.to_lowercase();
            if !out.contains(&lower) {
                out.push(lower);
            }
        }
    }
    out
}

/// Hashtags in `text`, lower-cased, deduplicated, in order of first appearance.
pub fn hashtags(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for token in tokens(text) {
        if let Token::Tag { name, .. } = token {
            let lower = name.to_lowercase();
            if !out.contains(&lower) {
                out.push(lower);
            }
        }
    }
    out
}

/// The length Mastodon would count: characters after NFC normalisation, each link as
/// [`LINK_LENGTH`].
pub fn length(text: &str) -> usize {
    let normalized: String = text.nfc().collect();
    tokens(&normalized)
        .into_iter()
        .map(|t| match t {
            Token::Link(_) => LINK_LENGTH,
            Token::Text(s) => s.chars().count(),
            Token::Mention { raw, .. } | Token::Tag { raw, .. } => raw.chars().count(),
        })
        .sum()
}

/// Escapes every character with a meaning in HTML text or attribute values.
pub fn escape(s: &str) -> String {
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

/// Renders `text` as safe HTML. Mentions whose lower-cased username is in `resolved` become
/// profile links; others stay text. `public_url` has no trailing slash.
pub fn render(text: &str, public_url: &str, resolved: &HashMap<String, ResolvedMention>) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut html = String::new();
    for paragraph in text.split("\n\n").map(|p| p.trim_matches('\n')).filter(|p| !p.trim().is_empty()) {
        html.push_str("<p>");
        for (i, line) in paragraph.split('\n').enumerate() {
            if i > 0 {
                html.push_str("<br>");
            }
            render_line(line, public_url, resolved, &mut html);
        }
        html.push_str("</p>");
    }
    html
}

fn render_line(line: &str, public_url: &str, resolved: &HashMap<String, ResolvedMention>, html: &mut String) {
    for token in tokens(line) {
        match token {
            Token::Text(s) => html.push_str(&escape(s)),
            Token::Mention { raw, username, .. } => match resolved.get(&username.to_lowercase()) {
                Some(m) if is_local_mention(&token, public_url) => {
                    let name = escape(&m.username);
                    html.push_str(&format!(
                        "<span class=\"h-card\"><a href=\"{}/@{name}\" class=\"u-url mention\">@<span>{name}</span></a></span>",
                        escape(public_url)
                    ));
                }
                _ => html.push_str(&escape(raw)),
            },
            Token::Tag { name, .. } => {
                html.push_str(&format!(
                    "<a href=\"{}/tags/{}\" class=\"mention hashtag\" rel=\"tag\">#<span>{}</span></a>",
                    escape(public_url),
                    escape(&name.to_lowercase()),
                    escape(name)
                ));
            }
            Token::Link(url) => {
                let href = escape(url);
                html.push_str(&format!(
                    "<a href=\"{href}\" rel=\"nofollow noopener noreferrer\" target=\"_blank\">{href}</a>"
                ));
            }
        }
    }
}

fn is_local_mention(token: &Token<'_>, public_url: &str) -> bool {
    match token {
        Token::Mention { domain: None, .. } => true,
        Token::Mention { domain: Some(d), .. } => d.eq_ignore_ascii_case(host_of(public_url)),
        _ => false,
    }
}

/// The host (and port) of a base URL: `https://social.example:8443/x` → `social.example:8443`.
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_username_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Splits `text` into plain text, mentions, hashtags and links. Never fails: whatever is not
/// recognised is text.
pub fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < text.len() {
        let prev = text[..i].chars().next_back();
        let found = match bytes[i] {
            b'h' | b'H' if prev.is_none_or(|p| !is_word(p)) => {
                link_at(text, i).map(|end| (end, Token::Link(&text[i..end])))
            }
            b'@' if prev.is_none_or(|p| !is_word(p) && p != '/' && p != '@' && p != '=') => mention_at(text, i),
            b'#' if prev.is_none_or(|p| !is_word(p) && p != '&' && p != '/') => tag_at(text, i),
            _ => None,
        };
        match found {
            Some((end, token)) => {
                if text_start < i {
                    out.push(Token::Text(&text[text_start..i]));
                }
                out.push(token);
                i = end;
                text_start = end;
            }
            None => {
                i += text[i..].chars().next().map_or(1, char::len_utf8);
            }
        }
    }
    if text_start < text.len() {
        out.push(Token::Text(&text[text_start..]));
    }
    out
}

/// An http(s) link starting at `start`: its end offset.
fn link_at(text: &str, start: usize) -> Option<usize> {
    let rest = &text[start..];
    let scheme_len = if rest.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://")) {
        8
    } else if rest.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://")) {
        7
    } else {
        return None;
    };
    // A link ends at whitespace or at a character that cannot appear unescaped in a URL.
    let mut end = rest
        .char_indices()
        .find(|(_, c)| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\'' | '`' | '\\' | '{' | '}' | '|' | '^'))
        .map_or(rest.len(), |(i, _)| i);
    // Trailing punctuation belongs to the sentence, not the link; a closing parenthesis stays
    // when the link opened one.
    while let Some(last) = rest[..end].chars().next_back() {
        let unbalanced_paren = last == ')' && rest[..end].matches('(').count() < rest[..end].matches(')').count();
        if matches!(last, '.' | ',' | ';' | ':' | '!' | '?') || unbalanced_paren {
            end -= last.len_utf8();
        } else {
            break;
        }
    }
    let host = rest[scheme_len..end].split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty()
        || !host.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '@' | '_'))
    {
        return None;
    }
    Some(start + end)
}

fn mention_at(text: &str, start: usize) -> Option<(usize, Token<'_>)> {
    let after = start + 1;
    let name_len = text[after..].find(|c: char| !is_username_char(c)).unwrap_or(text.len() - after);
    if name_len == 0 || name_len > 30 {
        return None;
    }
    let name_end = after + name_len;
    let username = &text[after..name_end];
    let mut end = name_end;
    let mut domain = None;
    if text[name_end..].starts_with('@') {
        let d_start = name_end + 1;
        let d_len = text[d_start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
            .unwrap_or(text.len() - d_start);
        let d = text[d_start..d_start + d_len].trim_end_matches(['.', '-']);
        if d.contains('.') && !d.starts_with('.') {
            domain = Some(d);
            end = d_start + d.len();
        }
    }
    Some((end, Token::Mention { raw: &text[start..end], username, domain }))
}

fn tag_at(text: &str, start: usize) -> Option<(usize, Token<'_>)> {
    let after = start + 1;
    let len = text[after..].find(|c: char| !is_word(c)).unwrap_or(text.len() - after);
    let name = &text[after..after + len];
    if name.is_empty() || name.chars().all(|c| c.is_numeric() || c == '_') || name.chars().count() > 100 {
        return None;
    }
    Some((after + len, Token::Tag { raw: &text[start..after + len], name }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BASE: &str = "https://social.example";

    fn alice() -> HashMap<String, ResolvedMention> {
        HashMap::from([("alice".to_owned(), ResolvedMention { account_id: 1, username: "Alice".into() })])
    }

    #[test]
    fn plain_text_is_escaped_into_paragraphs() {
        assert_eq!(render("hello\nworld\n\nsecond", BASE, &HashMap::new()), "<p>hello<br>world</p><p>second</p>");
        assert_eq!(
            render("a < b & \"c\" 'd'", BASE, &HashMap::new()),
            "<p>a &lt; b &amp; &quot;c&quot; &#39;d&#39;</p>"
        );
    }

    #[test]
    fn markup_never_survives() {
        for evil in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "https://example.com/\"onmouseover=alert(1)",
            "https://example.com/'><script>x</script>",
            "javascript:alert(1)",
            "<a href=\"javascript:alert(1)\">x</a>",
            "@<b>x</b> #<i>y</i>",
        ] {
            let html = render(evil, BASE, &alice());
            assert!(!html.contains("<script"), "{html}");
            assert!(!html.contains("<img"), "{html}");
            assert!(!html.contains("<b>") && !html.contains("<i>"), "{html}");
            assert!(!html.contains("href=\"javascript"), "{html}");
            assert!(!html.contains("\"onmouseover"), "{html}");
            assert!(!html.contains("'>"), "{html}");
        }
        assert_eq!(render("javascript:alert(1)", BASE, &HashMap::new()), "<p>javascript:alert(1)</p>");
    }

    #[test]
    fn links_stop_at_quotes_and_trailing_punctuation() {
        let html = render("see https://example.com/a?b=1&c=2. ok", BASE, &HashMap::new());
        assert_eq!(
            html,
            "<p>see <a href=\"https://example.com/a?b=1&amp;c=2\" rel=\"nofollow noopener noreferrer\" target=\"_blank\">https://example.com/a?b=1&amp;c=2</a>. ok</p>"
        );
        let html = render("(https://en.wikipedia.org/wiki/Rust_(language))", BASE, &HashMap::new());
        assert!(html.contains("href=\"https://en.wikipedia.org/wiki/Rust_(language)\""), "{html}");
        let html = render("x https://example.com/\"onmouseover=alert(1)", BASE, &HashMap::new());
        assert!(html.contains("href=\"https://example.com/\""), "{html}");
        assert!(html.contains("&quot;onmouseover=alert(1)"), "{html}");
        assert!(!render("https:// nothing", BASE, &HashMap::new()).contains("<a"));
    }

    #[test]
    fn mentions_link_only_when_resolved_and_local() {
        let html = render("hi @alice and @bob and @alice@social.example and @alice@elsewhere.org", BASE, &alice());
        let link = "<span class=\"h-card\"><a href=\"https://social.example/@Alice\" class=\"u-url mention\">@<span>Alice</span></a></span>";
        assert_eq!(html, format!("<p>hi {link} and @bob and {link} and @alice@elsewhere.org</p>"));
        assert_eq!(
            mentioned_usernames("@Alice @bob @ALICE x@carol @dave@social.example @eve@other.org", "social.example"),
            vec!["alice", "bob", "dave"]
        );
    }

    #[test]
    fn hashtags_are_unicode_lowercased_and_not_numeric() {
        assert_eq!(hashtags("#Rust #rust #日本語 #123 #café_2 a#b &#39; #_"), vec!["rust", "日本語", "café_2"]);
        let html = render("#Rust", BASE, &HashMap::new());
        assert_eq!(
            html,
            "<p><a href=\"https://social.example/tags/rust\" class=\"mention hashtag\" rel=\"tag\">#<span>Rust</span></a></p>"
        );
    }

    #[test]
    fn length_counts_characters_and_links_as_23() {
        assert_eq!(length("héllo"), 5);
        assert_eq!(length("e\u{301}"), 1); // NFC composes to é
        assert_eq!(length("🦀🦀"), 2);
        assert_eq!(length(&format!("a https://example.com/{}", "x".repeat(200))), 2 + LINK_LENGTH);
    }

    #[test]
    fn odd_input_stays_text() {
        let none = HashMap::new();
        assert_eq!(
            render("C# and a@b and @ and # and http://", BASE, &none),
            "<p>C# and a@b and @ and # and http://</p>"
        );
        assert_eq!(render("one\r\ntwo\r\n\r\n\r\n\nthree", BASE, &none), "<p>one<br>two</p><p>three</p>");
        assert_eq!(render("", BASE, &none), "");
        assert!(hashtags("https://example.com/#anchor").is_empty(), "a fragment is not a hashtag");
        assert!(mentioned_usernames("https://example.com/@alice", "social.example").is_empty());
    }

    #[test]
    fn host_of_strips_scheme_and_path() {
        assert_eq!(host_of("https://social.example:8443/x"), "social.example:8443");
        assert_eq!(host_of("social.example"), "social.example");
    }
}
