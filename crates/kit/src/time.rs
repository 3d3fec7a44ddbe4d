//! Wall-clock helpers in the units Agora stores (milliseconds since the Unix epoch).

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 with millisecond precision and a `Z`, as Mastodon renders timestamps.
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Date only (`YYYY-MM-DD`), as Mastodon renders `last_status_at`.
pub fn date_only(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().format("%Y-%m-%d").to_string()
}
