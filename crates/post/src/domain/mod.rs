//! The post service's rules, free of I/O: statuses as stored, who may see one, and status text.

pub mod text;

use agora_proto::post::v1 as pb;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Visibility {
    Public,
    Unlisted,
    Private,
    Direct,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Unlisted => "unlisted",
            Visibility::Private => "private",
            Visibility::Direct => "direct",
        }
    }

    /// Unknown stored values read as the most restrictive visibility, never a wider one.
    pub fn parse(s: &str) -> Self {
        match s {
            "public" => Visibility::Public,
            "unlisted" => Visibility::Unlisted,
            "private" => Visibility::Private,
            _ => Visibility::Direct,
        }
    }

    /// From the wire; UNSPECIFIED means public. Unknown numbers are refused.
    pub fn from_pb(v: i32) -> Option<Self> {
        match pb::Visibility::try_from(v).ok()? {
            pb::Visibility::Unspecified | pb::Visibility::Public => Some(Visibility::Public),
            pb::Visibility::Unlisted => Some(Visibility::Unlisted),
            pb::Visibility::Private => Some(Visibility::Private),
            pb::Visibility::Direct => Some(Visibility::Direct),
        }
    }

    pub fn to_pb(self) -> pb::Visibility {
        match self {
            Visibility::Public => pb::Visibility::Public,
            Visibility::Unlisted => pb::Visibility::Unlisted,
            Visibility::Private => pb::Visibility::Private,
            Visibility::Direct => pb::Visibility::Direct,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MentionRecord {
    pub account_id: i64,
    pub username: String,
}

/// A status row with its mentions and tags. A reblog is a row whose `reblog_of_id` is set and
/// whose content fields are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRecord {
    pub id: i64,
    pub account_id: i64,
    pub text: String,
    pub content: String,
    pub spoiler_text: String,
    pub sensitive: bool,
    pub visibility: Visibility,
    pub language: String,
    pub in_reply_to_id: Option<i64>,
    pub in_reply_to_account_id: Option<i64>,
    pub reblog_of_id: Option<i64>,
    pub replies_count: i64,
    pub reblogs_count: i64,
    pub favourites_count: i64,
    pub edited_at_ms: Option<i64>,
    pub deleted: bool,
    pub created_at_ms: i64,
    pub application_name: String,
    pub mentions: Vec<MentionRecord>,
    pub tags: Vec<String>,
}

/// One version of a status, for its edit history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditRecord {
    pub content: String,
    pub spoiler_text: String,
    pub sensitive: bool,
    pub created_at_ms: i64,
}

/// What the visibility rule needs to know about the viewer and the author.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relation {
    /// The viewer follows the author.
    pub following: bool,
    /// The viewer blocks the author.
    pub blocking: bool,
    /// The author blocks the viewer.
    pub blocked_by: bool,
}

/// Whether `viewer` (None = anonymous) may see `status`, given the viewer's relation to its
/// author. Deleted statuses are seen by nobody.
pub fn may_see(status: &StatusRecord, viewer: Option<i64>, relation: Relation) -> bool {
    if status.deleted {
        return false;
    }
    let Some(viewer) = viewer else {
        return matches!(status.visibility, Visibility::Public | Visibility::Unlisted);
    };
    if viewer == status.account_id {
        return true;
    }
    if relation.blocking || relation.blocked_by {
        return false;
    }
    let mentioned = status.mentions.iter().any(|m| m.account_id == viewer);
    match status.visibility {
        Visibility::Public | Visibility::Unlisted => true,
        Visibility::Private => relation.following || mentioned,
        Visibility::Direct => mentioned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(visibility: Visibility) -> StatusRecord {
        StatusRecord {
            id: 1,
            account_id: 10,
            text: String::new(),
            content: String::new(),
            spoiler_text: String::new(),
            sensitive: false,
            visibility,
            language: String::new(),
            in_reply_to_id: None,
            in_reply_to_account_id: None,
            reblog_of_id: None,
            replies_count: 0,
            reblogs_count: 0,
            favourites_count: 0,
            edited_at_ms: None,
            deleted: false,
            created_at_ms: 0,
            application_name: String::new(),
            mentions: vec![MentionRecord { account_id: 30, username: "m".into() }],
            tags: vec![],
        }
    }

    #[test]
    fn visibility_matrix() {
        use Visibility::*;
        let none = Relation::default();
        let follower = Relation { following: true, ..none };
        let blocked = Relation { blocked_by: true, following: true, ..none };
        // (visibility, anonymous, stranger, follower, mentioned, author, blocked)
        for (v, anon, stranger, fol, mentioned, author, blk) in [
            (Public, true, true, true, true, true, false),
            (Unlisted, true, true, true, true, true, false),
            (Private, false, false, true, true, true, false),
            (Direct, false, false, false, true, true, false),
        ] {
            let s = status(v);
            assert_eq!(may_see(&s, None, none), anon, "{v:?} anonymous");
            assert_eq!(may_see(&s, Some(20), none), stranger, "{v:?} stranger");
            assert_eq!(may_see(&s, Some(20), follower), fol, "{v:?} follower");
            assert_eq!(may_see(&s, Some(30), none), mentioned, "{v:?} mentioned");
            assert_eq!(may_see(&s, Some(10), none), author, "{v:?} author");
            assert_eq!(may_see(&s, Some(30), blocked), blk, "{v:?} blocked");
        }
        let mut gone = status(Public);
        gone.deleted = true;
        assert!(!may_see(&gone, Some(10), none));
    }
}
