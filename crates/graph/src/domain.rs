//! The graph's vocabulary: relationships between two accounts and the changes that announce them.
//! Plain values, no I/O.

/// How one account stands towards another, from the first one's point of view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relationship {
    /// The other account.
    pub id: i64,
    pub following: bool,
    /// Options of the follow, or of the pending request when only requested.
    pub showing_reblogs: bool,
    pub notifying: bool,
    pub languages: Vec<String>,
    pub followed_by: bool,
    pub blocking: bool,
    pub blocked_by: bool,
    /// Live mutes only: an expired mute counts as none.
    pub muting: bool,
    pub muting_notifications: bool,
    pub requested: bool,
    pub requested_by: bool,
}

/// What kind of graph change an event announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Followed,
    /// A follow or a pending request is gone (unfollow, remove-follower, reject, or a block).
    Unfollowed,
    FollowRequested,
    Blocked,
    Unblocked,
    Muted,
    Unmuted,
}

impl ChangeKind {
    /// The event type on topic `agora.graph.v1`.
    pub fn event_type(self) -> &'static str {
        match self {
            ChangeKind::Followed => "graph.followed",
            ChangeKind::Unfollowed => "graph.unfollowed",
            ChangeKind::FollowRequested => "graph.follow_requested",
            ChangeKind::Blocked => "graph.blocked",
            ChangeKind::Unblocked => "graph.unblocked",
            ChangeKind::Muted => "graph.muted",
            ChangeKind::Unmuted => "graph.unmuted",
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        self.event_type().trim_start_matches("graph.")
    }
}

/// One committed change: `account_id` follows / blocks / mutes (or stops) `target_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphChange {
    pub kind: ChangeKind,
    pub account_id: i64,
    pub target_id: i64,
    pub show_reblogs: bool,
    /// For a follow: notify the follower of the target's new statuses.
    pub notify: bool,
    pub mute_notifications: bool,
    /// 0 = no expiry.
    pub mute_expires_at_ms: i64,
}

impl GraphChange {
    pub fn new(kind: ChangeKind, account_id: i64, target_id: i64) -> Self {
        Self {
            kind,
            account_id,
            target_id,
            show_reblogs: false,
            notify: false,
            mute_notifications: false,
            mute_expires_at_ms: 0,
        }
    }
}

/// A follow (or follow request) about to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFollow {
    /// Row id and pagination cursor.
    pub id: i64,
    pub account_id: i64,
    pub target_id: i64,
    pub show_reblogs: bool,
    pub notify: bool,
    pub languages: Vec<String>,
    pub created_at_ms: i64,
}

/// A mute about to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMute {
    pub id: i64,
    pub account_id: i64,
    pub target_id: i64,
    pub notifications: bool,
    /// 0 = indefinitely.
    pub expires_at_ms: i64,
    pub created_at_ms: i64,
}

/// One entry of a listing: the other account and the row id that serves as cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub cursor_id: i64,
    pub account_id: i64,
}

/// A page of accepted follower ids for fan-out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowerIds {
    pub follower_ids: Vec<i64>,
    /// The follow id of the last entry; 0 when there is nothing more.
    pub next_after_id: i64,
    /// Accepted followers in total.
    pub total: i64,
}

/// For one account: the accounts the caller follows that follow it too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamiliarFollowers {
    pub id: i64,
    pub account_ids: Vec<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suggestion {
    pub account_id: i64,
    /// How many of the caller's follows follow this account.
    pub mutuals: i64,
}

/// Who the caller must not see: accounts they block, that block them, or that they mute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterSet {
    pub blocking: Vec<i64>,
    pub blocked_by: Vec<i64>,
    pub muting: Vec<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub id: i64,
    pub followers_count: i64,
    pub following_count: i64,
}

/// Whether a mute with this expiry is in force at `now_ms`.
pub fn mute_is_live(expires_at_ms: i64, now_ms: i64) -> bool {
    expires_at_ms == 0 || expires_at_ms > now_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_mutes_are_not_live() {
        assert!(mute_is_live(0, 5));
        assert!(mute_is_live(6, 5));
        assert!(!mute_is_live(5, 5));
    }
}
