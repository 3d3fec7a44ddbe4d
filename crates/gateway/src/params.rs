//! Request parameters as Mastodon clients send them: query string, form-urlencoded or JSON,
//! flattened into one list of `key` / `key[]` / `key[sub]` pairs so handlers read them one way.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use http::header::CONTENT_TYPE;

use crate::error::ApiError;

#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
    /// Keys whose JSON value was not a string (a number, a boolean, an object, an array).
    non_text: Vec<String>,
}

/// The longest parameter value we accept (the body limit bounds the total).
const MAX_VALUE: usize = 64 * 1024;

impl Params {
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Self { pairs, non_text: Vec::new() }
    }

    /// A free-text parameter (a status, a name, a password): a JSON number, boolean, object or
    /// array there is a client bug, refused with 422 rather than turned into the text "false"
    /// or silently ignored.
    pub fn text(&self, key: &str) -> Result<Option<&str>, ApiError> {
        if self.non_text.iter().any(|k| k == key) {
            return Err(ApiError::unprocessable(&format!("{key} must be a string")));
        }
        Ok(self.str(key))
    }

    /// [`Self::text`], empty when absent.
    pub fn text_or_empty(&self, key: &str) -> Result<String, ApiError> {
        Ok(self.text(key)?.unwrap_or_default().to_owned())
    }

    /// The last value of `key` (later values override earlier ones, as in Rails).
    pub fn str(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn string(&self, key: &str) -> String {
        self.str(key).unwrap_or_default().to_owned()
    }

    /// Booleans as clients send them: `true`/`false`, `1`/`0`, `on`/`off`.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        if self.str(key).is_none() && self.non_text.iter().any(|k| k == key) {
            // A JSON object or array where a boolean belongs.
            return Err(ApiError::unprocessable(&format!("{key} must be a boolean")));
        }
        match self.str(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(None),
            Some(v) => match v.as_str() {
                "1" | "true" | "on" | "yes" | "t" => Ok(Some(true)),
                "0" | "false" | "off" | "no" | "f" | "" => Ok(Some(false)),
                _ => Err(ApiError::unprocessable(&format!("{key} must be a boolean"))),
            },
        }
    }

    /// Every value of `key` or `key[]`.
    pub fn list(&self, key: &str) -> Vec<String> {
        let bracket = format!("{key}[]");
        self.pairs.iter().filter(|(k, _)| k == key || *k == bracket).map(|(_, v)| v.clone()).collect()
    }

    /// Pairs under `prefix[`, e.g. `fields_attributes[0][name]` → (`0`, `name`, value).
    pub fn nested(&self, prefix: &str) -> Vec<(String, String, String)> {
        let start = format!("{prefix}[");
        self.pairs
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(&start)?;
                let (idx, rest) = rest.split_once(']')?;
                let sub = rest.strip_prefix('[')?.strip_suffix(']')?;
                Some((idx.to_owned(), sub.to_owned(), v.clone()))
            })
            .collect()
    }

    fn merge(&mut self, other: Vec<(String, String)>) {
        self.pairs.extend(other);
    }
}

/// An id in a path: a positive decimal snowflake. Anything else cannot name a record: 404.
pub fn path_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(ApiError::not_found)
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>, non_text: &mut Vec<String>) {
    use serde_json::Value;
    if !prefix.is_empty() && !value.is_string() && !value.is_null() {
        non_text.push(prefix.to_owned());
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}[{k}]") };
                flatten(&key, v, out, non_text);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                if v.is_object() {
                    flatten(&format!("{prefix}[{i}]"), v, out, non_text);
                } else {
                    flatten(&format!("{prefix}[]"), v, out, non_text);
                }
            }
        }
        Value::Null => {}
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

fn check_sizes(pairs: &[(String, String)]) -> Result<(), ApiError> {
    if pairs.iter().any(|(k, v)| k.len() > 256 || v.len() > MAX_VALUE) {
        return Err(ApiError::unprocessable("a parameter is too long"));
    }
    if pairs.len() > 1_000 {
        return Err(ApiError::unprocessable("too many parameters"));
    }
    Ok(())
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let mut params = Params::default();
        if let Some(q) = req.uri().query() {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_str(q).map_err(|_| ApiError::bad_request("malformed query string"))?;
            params.merge(pairs);
        }
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .unwrap_or_default();
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large()
            } else {
                ApiError::bad_request("could not read the request body")
            }
        })?;
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            check_sizes(&params.pairs)?;
            return Ok(params);
        }
        match content_type.as_str() {
            "application/json" => {
                let value: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(&format!("malformed JSON: {e}")))?;
                if !value.is_object() {
                    return Err(ApiError::bad_request("the JSON body must be an object"));
                }
                let mut pairs = Vec::new();
                flatten("", &value, &mut pairs, &mut params.non_text);
                params.merge(pairs);
            }
            "application/x-www-form-urlencoded" | "" => {
                let pairs: Vec<(String, String)> =
                    serde_urlencoded::from_bytes(&body).map_err(|_| ApiError::bad_request("malformed form body"))?;
                params.merge(pairs);
            }
            other => {
                return Err(ApiError::new(
                    http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &format!("unsupported content type {other}"),
                ));
            }
        }
        if params.pairs.iter().any(|(k, v)| k.contains('\0') || v.contains('\0')) {
            return Err(ApiError::unprocessable("parameters must not contain NUL characters"));
        }
        check_sizes(&params.pairs)?;
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_flattens_like_forms() {
        let v = serde_json::json!({
            "display_name": "A",
            "locked": true,
            "fields_attributes": [{"name": "n", "value": "v"}],
            "source": {"privacy": "private"},
            "scopes": ["read", "write"]
        });
        let mut pairs = Vec::new();
        let mut non_text = Vec::new();
        flatten("", &v, &mut pairs, &mut non_text);
        let p = Params { pairs, non_text };
        assert!(p.text("locked").is_err(), "a JSON boolean is not text");
        assert_eq!(p.text("display_name").unwrap(), Some("A"));
        assert_eq!(p.str("display_name"), Some("A"));
        assert_eq!(p.bool("locked").unwrap(), Some(true));
        assert_eq!(
            p.nested("fields_attributes"),
            vec![("0".into(), "name".into(), "n".into()), ("0".into(), "value".into(), "v".into())]
        );
        assert_eq!(p.str("source[privacy]"), Some("private"));
        assert_eq!(p.list("scopes"), vec!["read", "write"]);
    }

    #[test]
    fn bools_are_strict() {
        let p = Params::from_pairs(vec![("a".into(), "1".into()), ("b".into(), "maybe".into())]);
        assert_eq!(p.bool("a").unwrap(), Some(true));
        assert!(p.bool("b").is_err());
        assert_eq!(p.bool("c").unwrap(), None);
    }
}
