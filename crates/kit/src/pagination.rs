//! Mastodon-style pagination: `max_id`, `since_id`, `min_id` and `limit` in, a `Link` header with
//! `next` and `prev` out.

use serde::Deserialize;

use crate::{Error, Snowflake};

/// Raw query parameters, as clients send them (ids are strings).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PageQuery {
    pub max_id: Option<String>,
    pub since_id: Option<String>,
    pub min_id: Option<String>,
    pub limit: Option<String>,
}

/// Validated page bounds. Results are newest first unless `min_id` is set, in which case the
/// page is the oldest entries just above `min_id` (returned newest first, as Mastodon does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub max_id: Option<Snowflake>,
    pub since_id: Option<Snowflake>,
    pub min_id: Option<Snowflake>,
    pub limit: usize,
}

impl PageQuery {
    /// Validates with the endpoint's default and maximum `limit`. Out-of-range limits are clamped
    /// as Mastodon does; a non-numeric id or limit is a 422 naming the parameter.
    pub fn parse(&self, default_limit: usize, max_limit: usize) -> Result<Page, Error> {
        let id = |name: &str, v: &Option<String>| -> Result<Option<Snowflake>, Error> {
            match v.as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some(s) => s
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .map(Some)
                    .ok_or_else(|| Error::invalid(name, "ERR_INVALID", format!("{name} must be a numeric id"))),
            }
        };
        let limit = match self.limit.as_deref().map(str::trim) {
            None | Some("") => default_limit,
            Some(s) => s
                .parse::<i64>()
                .map_err(|_| Error::invalid("limit", "ERR_INVALID", "limit must be a number"))?
                .clamp(1, max_limit as i64) as usize,
        };
        Ok(Page {
            max_id: id("max_id", &self.max_id)?,
            since_id: id("since_id", &self.since_id)?,
            min_id: id("min_id", &self.min_id)?,
            limit,
        })
    }
}

/// Builds the `Link` header for a page whose items span ids `newest..=oldest`.
/// `base` is the absolute URL of the endpoint, `extra` any other query pairs to keep.
pub fn link_header(base: &str, extra: &[(String, String)], newest: Snowflake, oldest: Snowflake) -> String {
    let with = |k: &str, v: Snowflake| {
        let mut pairs: Vec<(String, String)> = extra.to_vec();
        pairs.push((k.to_owned(), v.to_string()));
        let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
        format!("{base}?{}", q.join("&"))
    };
    format!("<{}>; rel=\"next\", <{}>; rel=\"prev\"", with("max_id", oldest), with("min_id", newest))
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_and_validates() {
        let q = PageQuery { limit: Some("500".into()), ..Default::default() };
        assert_eq!(q.parse(20, 40).unwrap().limit, 40);
        let q = PageQuery { limit: Some("0".into()), ..Default::default() };
        assert_eq!(q.parse(20, 40).unwrap().limit, 1);
        let q = PageQuery { max_id: Some("abc".into()), ..Default::default() };
        let e = q.parse(20, 40).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("max_id"));
    }

    #[test]
    fn link_has_next_and_prev() {
        let l = link_header("https://a.example/api/v1/x", &[("tag".into(), "a b".into())], 9, 3);
        assert_eq!(
            l,
            "<https://a.example/api/v1/x?tag=a+b&max_id=3>; rel=\"next\", <https://a.example/api/v1/x?tag=a+b&min_id=9>; rel=\"prev\""
        );
    }
}
