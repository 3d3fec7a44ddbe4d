//! Notifications as values: their types, Mastodon's grouping, and what a read asks for. No I/O.

/// Mastodon's notification types that Agora writes, plus the extension `agora.reaction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Mention,
    Status,
    Reblog,
    Follow,
    FollowRequest,
    Favourite,
    Update,
    Reaction,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Mention,
        Kind::Status,
        Kind::Reblog,
        Kind::Follow,
        Kind::FollowRequest,
        Kind::Favourite,
        Kind::Update,
        Kind::Reaction,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mention => "mention",
            Kind::Status => "status",
            Kind::Reblog => "reblog",
            Kind::Follow => "follow",
            Kind::FollowRequest => "follow_request",
            Kind::Favourite => "favourite",
            Kind::Update => "update",
            Kind::Reaction => "agora.reaction",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: i64,
    pub recipient_id: i64,
    pub kind: Kind,
    /// Who acted.
    pub account_id: i64,
    /// The status it is about; 0 for follows and follow requests.
    pub status_id: i64,
    pub created_at_ms: i64,
}

pub const DAY_MS: i64 = 24 * 3600 * 1000;

impl Notification {
    /// Mastodon 4.3's group key: favourites and reblogs of one status group together, follows
    /// group per day, everything else stands alone.
    pub fn group_key(&self) -> String {
        match self.group() {
            Group::OfStatus { kind, status_id } => format!("{}-{status_id}", kind.as_str()),
            Group::OfDay { kind, day } => format!("{}-{day}", kind.as_str()),
            Group::Single(id) => format!("ungrouped-{id}"),
        }
    }

    pub fn group(&self) -> Group {
        match self.kind {
            Kind::Favourite | Kind::Reblog => Group::OfStatus { kind: self.kind, status_id: self.status_id },
            Kind::Follow => Group::OfDay { kind: self.kind, day: self.created_at_ms.div_euclid(DAY_MS) },
            _ => Group::Single(self.id),
        }
    }
}

/// The notifications one group key stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// One type about one status (favourites, reblogs).
    OfStatus { kind: Kind, status_id: i64 },
    /// One type on one UTC day (follows).
    OfDay { kind: Kind, day: i64 },
    /// A notification of its own.
    Single(i64),
}

impl Group {
    /// The first and last millisecond of a day group.
    pub fn day_bounds(day: i64) -> (i64, i64) {
        (day * DAY_MS, (day + 1) * DAY_MS - 1)
    }
}

/// What a group holds beyond one page of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStats {
    pub count: i64,
    pub most_recent_id: i64,
    /// Up to [`GROUP_SAMPLE`] of the most recent actors, newest first.
    pub sample_account_ids: Vec<i64>,
}

pub const GROUP_SAMPLE: usize = 8;
/// The types Mastodon groups when a client names none.
pub const DEFAULT_GROUPED: [Kind; 3] = [Kind::Favourite, Kind::Follow, Kind::Reblog];

/// One group as a page of notifications shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageGroup {
    pub key: String,
    pub group: Group,
    pub kind: Kind,
    pub status_id: i64,
    pub page_min_id: i64,
    pub page_max_id: i64,
    pub latest_page_at_ms: i64,
    /// The group's actors within the page, newest first, for a group of one.
    pub page_account_ids: Vec<i64>,
}

/// Folds a page of notifications (newest first) into groups, newest group first: notifications
/// of the `grouped` types share their group key; any other is a group of its own.
pub fn fold(page: &[Notification], grouped: &[Kind]) -> Vec<PageGroup> {
    let mut out: Vec<PageGroup> = Vec::new();
    for n in page {
        let group = if grouped.contains(&n.kind) { n.group() } else { Group::Single(n.id) };
        let key = match group {
            Group::Single(id) => format!("ungrouped-{id}"),
            _ => n.group_key(),
        };
        match out.iter_mut().find(|g| g.key == key) {
            Some(g) => {
                g.page_min_id = g.page_min_id.min(n.id);
                g.page_max_id = g.page_max_id.max(n.id);
                g.latest_page_at_ms = g.latest_page_at_ms.max(n.created_at_ms);
                if !g.page_account_ids.contains(&n.account_id) {
                    g.page_account_ids.push(n.account_id);
                }
            }
            None => out.push(PageGroup {
                key,
                group,
                kind: n.kind,
                status_id: n.status_id,
                page_min_id: n.id,
                page_max_id: n.id,
                latest_page_at_ms: n.created_at_ms,
                page_account_ids: vec![n.account_id],
            }),
        }
    }
    out
}

/// Why one account's actions do not notify another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The recipient blocks the actor.
    Blocking,
    /// The actor blocks the recipient.
    BlockedBy,
    /// The recipient mutes the actor, notifications included.
    Muting,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Blocking => "blocking",
            Reason::BlockedBy => "blocked_by",
            Reason::Muting => "muting",
        }
    }
}

/// How an account took part in a status, which makes it hear of the status's edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    Reblog,
    Favourite,
    Reply,
}

impl Interaction {
    pub fn as_str(self) -> &'static str {
        match self {
            Interaction::Reblog => "reblog",
            Interaction::Favourite => "favourite",
            Interaction::Reply => "reply",
        }
    }
}

/// One change an event makes. A store applies all the changes of one event in one transaction,
/// together with the record that the event was handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Writes the notification unless its cause is already there or the recipient does not hear
    /// from the actor (a block either way, a mute covering notifications).
    Add(Notification),
    /// Removes the notification of one cause; any recipient when `recipient_id` is `None`.
    Remove {
        recipient_id: Option<i64>,
        kind: Kind,
        account_id: i64,
        status_id: i64,
    },
    /// Replaces the notification of the same cause with this newer one (a second edit of a
    /// status notifies again, at the top).
    Renew(Notification),
    /// Removes every notification about a status, and who took part in it (it was deleted).
    RemoveAboutStatus {
        status_id: i64,
    },
    /// An accepted follow: the follow request's notification goes, and a `follow` one is
    /// written only when there was no request (the recipient accepted it themselves).
    Followed(Notification),
    /// From now on `account_id` does not notify `recipient_id` (until `expires_at_ms`, 0 never),
    /// and what it notified before goes.
    Suppress {
        recipient_id: i64,
        account_id: i64,
        reason: Reason,
        expires_at_ms: i64,
    },
    Unsuppress {
        recipient_id: i64,
        account_id: i64,
        reason: Reason,
    },
    /// `follower_id` hears of `target_id`'s new statuses (or, unsubscribed, no longer does).
    Subscribe {
        target_id: i64,
        follower_id: i64,
    },
    Unsubscribe {
        target_id: i64,
        follower_id: i64,
    },
    /// `account_id` took part in a status (or no longer does), so hears of its edits.
    Interacted {
        status_id: i64,
        account_id: i64,
        how: Interaction,
    },
    Uninteracted {
        status_id: i64,
        account_id: i64,
        how: Interaction,
    },
}

/// What a read of notifications asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only these types; empty means every type.
    pub types: Vec<Kind>,
    pub exclude_types: Vec<Kind>,
    /// Only from this account.
    pub account_id: Option<i64>,
    pub max_id: Option<i64>,
    pub since_id: Option<i64>,
    pub min_id: Option<i64>,
    pub limit: usize,
}

impl Query {
    /// The types the query admits, in [`Kind::ALL`] order.
    pub fn kinds(&self) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|k| (self.types.is_empty() || self.types.contains(k)) && !self.exclude_types.contains(k))
            .collect()
    }
}

/// A name in `types[]` or `exclude_types[]` that is not a notification type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown notification type {0:?}")]
pub struct UnknownKind(pub String);

pub fn parse_kinds(names: &[String]) -> Result<Vec<Kind>, UnknownKind> {
    names.iter().map(|n| Kind::parse(n).ok_or_else(|| UnknownKind(n.clone()))).collect()
}

pub const DEFAULT_LIMIT: usize = 40;
pub const MAX_LIMIT: usize = 80;

/// Mastodon's page size: 0 (unset) is the default, more than the maximum is the maximum.
pub fn page_limit(requested: i32) -> usize {
    match requested {
        n if n <= 0 => DEFAULT_LIMIT,
        n => (n as usize).min(MAX_LIMIT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(kind: Kind, status_id: i64, created_at_ms: i64) -> Notification {
        Notification { id: 99, recipient_id: 1, kind, account_id: 2, status_id, created_at_ms }
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("poll"), None);
        assert_eq!(parse_kinds(&["mention".into(), "bogus".into()]), Err(UnknownKind("bogus".into())));
    }

    #[test]
    fn groups_follow_mastodon() {
        assert_eq!(n(Kind::Favourite, 7, 0).group_key(), "favourite-7");
        assert_eq!(n(Kind::Reblog, 7, 0).group_key(), "reblog-7");
        assert_eq!(n(Kind::Follow, 0, DAY_MS + 5).group_key(), n(Kind::Follow, 0, 2 * DAY_MS - 1).group_key());
        assert_ne!(n(Kind::Follow, 0, DAY_MS - 1).group_key(), n(Kind::Follow, 0, DAY_MS).group_key());
        assert_eq!(n(Kind::Mention, 7, 0).group_key(), "ungrouped-99");
    }

    #[test]
    fn a_page_folds_into_groups_newest_first() {
        let at = |id: i64, kind: Kind, actor: i64, status: i64| Notification {
            id,
            recipient_id: 1,
            kind,
            account_id: actor,
            status_id: status,
            created_at_ms: DAY_MS * 3 + id,
        };
        let page = [
            at(9, Kind::Favourite, 5, 100),
            at(8, Kind::Mention, 5, 101),
            at(7, Kind::Favourite, 6, 100),
            at(6, Kind::Follow, 7, 0),
            at(5, Kind::Follow, 8, 0),
            at(4, Kind::Favourite, 5, 102),
        ];
        let groups = fold(&page, &DEFAULT_GROUPED);
        let keys: Vec<&str> = groups.iter().map(|g| g.key.as_str()).collect();
        assert_eq!(keys, vec!["favourite-100", "ungrouped-8", "follow-3", "favourite-102"]);
        assert_eq!((groups[0].page_min_id, groups[0].page_max_id), (7, 9));
        assert_eq!(groups[0].page_account_ids, vec![5, 6]);
        assert_eq!(groups[2].page_account_ids, vec![7, 8]);
        // Not asked to group follows: each is its own group.
        let keys: Vec<String> = fold(&page, &[Kind::Favourite]).into_iter().map(|g| g.key).collect();
        assert!(keys.contains(&"ungrouped-6".to_owned()) && keys.contains(&"ungrouped-5".to_owned()));
    }

    #[test]
    fn queries_admit_types_minus_exclusions() {
        let q =
            Query { types: vec![Kind::Mention, Kind::Follow], exclude_types: vec![Kind::Follow], ..Default::default() };
        assert_eq!(q.kinds(), vec![Kind::Mention]);
        assert_eq!(Query::default().kinds().len(), Kind::ALL.len());
        assert_eq!((page_limit(0), page_limit(5), page_limit(500)), (40, 5, 80));
    }
}
