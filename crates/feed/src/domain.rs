//! The vocabulary of timelines: statuses as the feed sees them, timeline entries, page windows
//! and the rules that decide who sees what. No I/O here.

use agora_proto::events::v1::StatusPosted;

/// Who may see a status (Mastodon's four levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Visibility {
    Public,
    Unlisted,
    Private,
    Direct,
}

impl Visibility {
    /// Unknown values are treated as direct: a status we cannot place is shown to the fewest.
    pub fn parse(s: &str) -> Self {
        match s {
            "public" => Visibility::Public,
            "unlisted" => Visibility::Unlisted,
            "private" => Visibility::Private,
            _ => Visibility::Direct,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Unlisted => "unlisted",
            Visibility::Private => "private",
            Visibility::Direct => "direct",
        }
    }
}

/// The facts of a status the feed keeps, so timelines can be derived again and a delete can
/// find every copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusFacts {
    pub id: i64,
    pub account_id: i64,
    pub created_at_ms: i64,
    pub visibility: Visibility,
    pub in_reply_to_id: i64,
    pub in_reply_to_account_id: i64,
    pub reblog_of_id: i64,
    pub reblog_of_account_id: i64,
    pub mention_ids: Vec<i64>,
    pub tags: Vec<String>,
    pub has_media: bool,
    pub sensitive: bool,
}

impl From<&StatusPosted> for StatusFacts {
    fn from(p: &StatusPosted) -> Self {
        let mut tags: Vec<String> = p.tags.iter().map(|t| normalize_tag(t)).filter(|t| !t.is_empty()).collect();
        tags.sort();
        tags.dedup();
        StatusFacts {
            id: p.id,
            account_id: p.account_id,
            created_at_ms: p.created_at_ms,
            visibility: Visibility::parse(&p.visibility),
            in_reply_to_id: p.in_reply_to_id,
            in_reply_to_account_id: p.in_reply_to_account_id,
            reblog_of_id: p.reblog_of_id,
            reblog_of_account_id: p.reblog_of_account_id,
            mention_ids: p.mention_ids.clone(),
            tags,
            has_media: p.has_media,
            sensitive: p.sensitive,
        }
    }
}

impl StatusFacts {
    pub fn is_reblog(&self) -> bool {
        self.reblog_of_id != 0
    }

    /// A reply to somebody else's status (a self-reply continues a thread and fans out normally).
    pub fn replies_to_other(&self) -> bool {
        self.in_reply_to_account_id != 0 && self.in_reply_to_account_id != self.account_id
    }

    pub fn entry(&self) -> Entry {
        Entry {
            status_id: self.id,
            author_id: self.account_id,
            reblog_of_id: self.reblog_of_id,
            reblog_of_author_id: self.reblog_of_account_id,
            in_reply_to_account_id: self.in_reply_to_account_id,
            visibility: self.visibility,
            has_media: self.has_media,
        }
    }

    /// The shared timelines this status belongs to (home timelines are decided by fan-out).
    /// Public and tag timelines take public originals only; the account timeline takes every
    /// status except direct ones.
    pub fn shared_timelines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.visibility == Visibility::Direct {
            return out;
        }
        out.push(TimelineKey::account(self.account_id));
        if self.visibility == Visibility::Public && !self.is_reblog() {
            out.push(TimelineKey::PUBLIC.to_owned());
            out.extend(self.tags.iter().map(|t| TimelineKey::tag(t)));
        }
        out
    }
}

/// One status placed in one timeline, with what read-time filters need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub status_id: i64,
    pub author_id: i64,
    pub reblog_of_id: i64,
    pub reblog_of_author_id: i64,
    pub in_reply_to_account_id: i64,
    pub visibility: Visibility,
    pub has_media: bool,
}

impl Entry {
    pub fn replies_to_other(&self) -> bool {
        self.in_reply_to_account_id != 0 && self.in_reply_to_account_id != self.author_id
    }
}

/// Names of timelines in the store.
pub struct TimelineKey;

impl TimelineKey {
    pub const PUBLIC: &'static str = "public";

    pub fn home(account_id: i64) -> String {
        format!("home:{account_id}")
    }

    pub fn account(account_id: i64) -> String {
        format!("account:{account_id}")
    }

    pub fn tag(name: &str) -> String {
        format!("tag:{}", normalize_tag(name))
    }
}

/// Tags compare without '#' and case-insensitively.
pub fn normalize_tag(tag: &str) -> String {
    tag.trim().trim_start_matches('#').to_lowercase()
}

/// Which statuses of a timeline a read keeps.
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    pub only_media: bool,
    /// Drop replies to other accounts (self-replies stay, as in Mastodon).
    pub exclude_replies: bool,
    pub exclude_reblogs: bool,
    /// Keep only these visibilities; empty keeps all.
    pub visibilities: Vec<Visibility>,
}

/// A page request in store terms: ids strictly between `lower` and `upper`, walked newest first,
/// or oldest first for `min_id` pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub upper: Option<i64>,
    pub lower: Option<i64>,
    pub ascending: bool,
    pub limit: usize,
}

pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct InvalidPage {
    pub field: &'static str,
    pub reason: &'static str,
}

impl Window {
    /// Mastodon semantics: `max_id` bounds from above, `since_id` from below (newest first),
    /// `min_id` from below walking up from it. `limit` 0 means 20 and is capped at 40.
    pub fn from_page(max_id: i64, since_id: i64, min_id: i64, limit: i32) -> Result<Self, InvalidPage> {
        for (field, v) in [("max_id", max_id), ("since_id", since_id), ("min_id", min_id)] {
            if v < 0 {
                return Err(InvalidPage { field, reason: "must not be negative" });
            }
        }
        if limit < 0 {
            return Err(InvalidPage { field: "limit", reason: "must not be negative" });
        }
        let limit = if limit == 0 { DEFAULT_LIMIT } else { (limit as usize).min(MAX_LIMIT) };
        let positive = |v: i64| (v > 0).then_some(v);
        let lower = match (positive(since_id), positive(min_id)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Ok(Window { upper: positive(max_id), lower, ascending: min_id > 0, limit })
    }

    pub fn newest(limit: usize) -> Self {
        Window { upper: None, lower: None, ascending: false, limit }
    }

    /// Whether `id` lies inside the bounds.
    pub fn contains(&self, id: i64) -> bool {
        self.upper.is_none_or(|u| id < u) && self.lower.is_none_or(|l| id > l)
    }

    /// The window after `last`, the final id of a walk that came up short after filtering.
    pub fn after(&self, last: i64) -> Self {
        let mut next = *self;
        if self.ascending {
            next.lower = Some(last);
        } else {
            next.upper = Some(last);
        }
        next
    }
}

/// The accounts whose statuses a viewer never sees: those they block, are blocked by, or mute.
#[derive(Debug, Clone, Default)]
pub struct FilterSet {
    pub hidden: std::collections::HashSet<i64>,
}

impl FilterSet {
    pub fn hides(&self, e: &Entry) -> bool {
        self.hidden.contains(&e.author_id)
            || (e.reblog_of_author_id != 0 && self.hidden.contains(&e.reblog_of_author_id))
    }
}

/// A read marker (Mastodon's `home` / `notifications`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub timeline: String,
    pub last_read_id: i64,
    pub version: i64,
    pub updated_at_ms: i64,
}

/// One account's Mastodon conversation: the direct statuses of one thread that it takes part in
/// with one set of other accounts (a new participant makes a new conversation, as in Mastodon).
/// Its id is the id of the status that began it for this account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: i64,
    pub account_id: i64,
    /// The other accounts, ascending; empty for a message to oneself.
    pub participant_ids: Vec<i64>,
    pub last_status_id: i64,
    pub last_author_id: i64,
    pub unread: bool,
}

/// The participants of `status` as `account` sees them: its author and the accounts it
/// mentions, without `account`, ascending.
pub fn participants(account: i64, author: i64, mentions: &[i64]) -> Vec<i64> {
    let mut out: Vec<i64> = std::iter::once(author).chain(mentions.iter().copied()).filter(|a| *a != account).collect();
    out.sort_unstable();
    out.dedup();
    out
}

pub const MARKER_TIMELINES: [&str; 2] = ["home", "notifications"];

/// One use of a tag by an account, for trends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagUse {
    pub tag: String,
    pub account_id: i64,
    pub used_at_ms: i64,
}

/// A trending tag with its daily history, newest day first.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendingTag {
    pub name: String,
    pub score: f64,
    pub history: Vec<DayUse>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayUse {
    pub day_start_ms: i64,
    pub uses: i64,
    pub accounts: i64,
}

const DAY_MS: i64 = 24 * 3600 * 1000;
/// Interest in a tag or status halves every this many milliseconds.
pub const TREND_HALF_LIFE_MS: f64 = 6.0 * 3600.0 * 1000.0;
/// Trends look back this far.
pub const TREND_WINDOW_MS: i64 = 7 * DAY_MS;

fn decay(age_ms: i64) -> f64 {
    (-(age_ms.max(0) as f64) * std::f64::consts::LN_2 / TREND_HALF_LIFE_MS).exp()
}

/// Ranks tags by the distinct accounts using them, each counted at its latest use and decayed by
/// age, so one account spamming a tag counts once and yesterday's trend fades.
pub fn rank_tags(uses: &[TagUse], now_ms: i64) -> Vec<TrendingTag> {
    use std::collections::{BTreeMap, HashMap, HashSet};
    let today = now_ms - now_ms.rem_euclid(DAY_MS);
    let mut latest: HashMap<(&str, i64), i64> = HashMap::new();
    let mut days: BTreeMap<&str, Vec<(i64, HashSet<i64>)>> = BTreeMap::new();
    for u in uses.iter().filter(|u| u.used_at_ms > now_ms - TREND_WINDOW_MS && u.used_at_ms <= now_ms) {
        let at = latest.entry((u.tag.as_str(), u.account_id)).or_insert(u.used_at_ms);
        *at = (*at).max(u.used_at_ms);
        let history = days.entry(u.tag.as_str()).or_insert_with(|| (0..7).map(|_| (0, HashSet::new())).collect());
        let day = ((today - (u.used_at_ms - u.used_at_ms.rem_euclid(DAY_MS))) / DAY_MS) as usize;
        if let Some(slot) = history.get_mut(day) {
            slot.0 += 1;
            slot.1.insert(u.account_id);
        }
    }
    let mut scores: HashMap<&str, f64> = HashMap::new();
    for ((tag, _), at) in latest {
        *scores.entry(tag).or_default() += decay(now_ms - at);
    }
    let mut out: Vec<TrendingTag> = days
        .into_iter()
        .map(|(tag, history)| TrendingTag {
            name: tag.to_owned(),
            score: scores.get(tag).copied().unwrap_or_default(),
            history: history
                .into_iter()
                .enumerate()
                .map(|(i, (uses, accounts))| DayUse {
                    day_start_ms: today - i as i64 * DAY_MS,
                    uses,
                    accounts: accounts.len() as i64,
                })
                .collect(),
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.name.cmp(&b.name)));
    out
}

/// Ranks statuses by favourites and reblogs, each decayed by its age. Input: (status id, when).
pub fn rank_statuses(engagements: &[(i64, i64)], now_ms: i64) -> Vec<(i64, f64)> {
    let mut scores: std::collections::HashMap<i64, f64> = std::collections::HashMap::new();
    for (id, at) in engagements.iter().filter(|(_, at)| *at > now_ms - TREND_WINDOW_MS) {
        *scores.entry(*id).or_default() += decay(now_ms - at);
    }
    let mut out: Vec<(i64, f64)> = scores.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_bounds_follow_mastodon() {
        let w = Window::from_page(0, 0, 0, 0).unwrap();
        assert_eq!(w, Window { upper: None, lower: None, ascending: false, limit: 20 });
        assert_eq!(Window::from_page(0, 0, 0, 500).unwrap().limit, 40);
        assert!(Window::from_page(-1, 0, 0, 0).is_err());
        assert!(Window::from_page(0, 0, 0, -3).is_err());
        let w = Window::from_page(100, 5, 10, 3).unwrap();
        assert_eq!(w, Window { upper: Some(100), lower: Some(10), ascending: true, limit: 3 });
    }

    #[test]
    fn one_account_spamming_a_tag_counts_once() {
        let now = 10 * DAY_MS + DAY_MS / 2;
        let mut uses: Vec<TagUse> =
            (0..50).map(|i| TagUse { tag: "spam".into(), account_id: 1, used_at_ms: now - i * 1000 }).collect();
        for a in 2..5 {
            uses.push(TagUse { tag: "rust".into(), account_id: a, used_at_ms: now - 3_600_000 });
        }
        let ranked = rank_tags(&uses, now);
        assert_eq!(ranked[0].name, "rust");
        assert_eq!(ranked[1].history[0].uses, 50);
        assert_eq!(ranked[1].history[0].accounts, 1);
    }
}
