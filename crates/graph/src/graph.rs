//! The graph service's behaviour, independent of gRPC: who may follow, block or mute whom, what a
//! listing returns, how suggestions are made. `grpc.rs` only translates wire types to these calls.

use std::sync::Arc;

use agora_client::Caller;
use agora_client::epoch::Epochs;
use agora_events::Envelope;
use agora_kit::jwt::Verifier;
use agora_kit::pagination::Page;
use agora_kit::{Error, IdGenerator};
use agora_proto::events::v1::GraphChanged;
use tokio::sync::Notify;

use crate::accounts::{AccountDirectory, AccountFacts};
use crate::domain::{
    Counts, Entry, FamiliarFollowers, FilterSet, FollowerIds, GraphChange, NewFollow, NewMute, Relationship, Suggestion,
};
use crate::store::GraphStore;

/// Page size when none is asked for, and the most a page may hold (Mastodon clamps above it).
pub const DEFAULT_LIMIT: i64 = 40;
pub const MAX_LIMIT: i64 = 80;
/// Fan-out pages of follower ids.
pub const DEFAULT_FOLLOWER_IDS: i64 = 1_000;
pub const MAX_FOLLOWER_IDS: i64 = 10_000;
/// The most ids one batch question (relationships, counts, familiar followers) may name.
pub const MAX_BATCH_IDS: usize = 1_000;
/// The most candidates one FilterFollowers call may name.
pub const MAX_CANDIDATES: usize = 10_000;
/// A follow may list at most this many languages.
const MAX_LANGUAGES: usize = 32;

/// Mastodon page parameters as received; 0 means "not given".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageRequest {
    pub max_id: i64,
    pub since_id: i64,
    pub min_id: i64,
    pub limit: i32,
}

/// Options of a follow. Unset `reblogs` means true and unset `notify` false, as in Mastodon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowOptions {
    pub reblogs: Option<bool>,
    pub notify: Option<bool>,
    pub languages: Vec<String>,
}

/// A page of accounts with the cursor of each, aligned, for Link headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountPage {
    pub account_ids: Vec<i64>,
    pub cursor_ids: Vec<i64>,
}

impl From<Vec<Entry>> for AccountPage {
    fn from(entries: Vec<Entry>) -> Self {
        Self {
            account_ids: entries.iter().map(|e| e.account_id).collect(),
            cursor_ids: entries.iter().map(|e| e.cursor_id).collect(),
        }
    }
}

/// The graph: follows, requests, blocks, mutes and suggestions, for verified callers.
pub struct Graph {
    pub store: Arc<dyn GraphStore>,
    pub verifier: Arc<Verifier>,
    accounts: Arc<dyn AccountDirectory>,
    ids: Arc<IdGenerator>,
    outbox_wake: Arc<Notify>,
    /// Given new values for both accounts of every change, so caches elsewhere drop what they
    /// hold about them (see `agora_client::graph_facts`).
    epochs: Option<Arc<dyn Epochs>>,
}

impl Graph {
    /// `outbox_wake` is the relay's waker, notified after each committed change.
    pub fn new(
        store: Arc<dyn GraphStore>,
        accounts: Arc<dyn AccountDirectory>,
        verifier: Arc<Verifier>,
        ids: Arc<IdGenerator>,
        outbox_wake: Arc<Notify>,
        epochs: Option<Arc<dyn Epochs>>,
    ) -> Self {
        Self { store, verifier, accounts, ids, outbox_wake, epochs }
    }

    // ---- writes -------------------------------------------------------------------------

    /// Follows `target_id`, or asks to when the target is locked.
    pub async fn follow(
        &self,
        token: Option<&str>,
        target_id: i64,
        options: FollowOptions,
    ) -> Result<Relationship, Error> {
        let me = self.user(token, "write:follows").await?;
        let target = account_id_arg("id", target_id)?;
        if target == me {
            return Err(Error::invalid("id", "ERR_SELF", "You cannot follow yourself"));
        }
        let languages = languages_arg(options.languages)?;
        let facts = self.existing(target, token).await?;
        let follow = NewFollow {
            id: self.ids.next_id(),
            account_id: me,
            target_id: target,
            show_reblogs: options.reblogs.unwrap_or(true),
            notify: options.notify.unwrap_or(false),
            languages,
            created_at_ms: agora_kit::time::now_ms(),
        };
        let changes = self.store.follow(&follow, facts.locked, &|c| self.event(c)).await?;
        self.announce(&changes).await;
        self.relationship(me, target).await
    }

    /// Stops following `target_id`, or withdraws the pending request.
    pub async fn unfollow(&self, token: Option<&str>, target_id: i64) -> Result<Relationship, Error> {
        let me = self.user(token, "write:follows").await?;
        let target = account_id_arg("id", target_id)?;
        let changes = self.store.unfollow(me, target, &|c| self.event(c)).await?;
        self.announce(&changes).await;
        self.relationship(me, target).await
    }

    /// Makes `target_id` stop following the caller.
    pub async fn remove_follower(&self, token: Option<&str>, target_id: i64) -> Result<Relationship, Error> {
        let me = self.user(token, "write:follows").await?;
        let target = account_id_arg("id", target_id)?;
        let changes = self.store.remove_follower(me, target, &|c| self.event(c)).await?;
        self.announce(&changes).await;
        self.relationship(me, target).await
    }

    /// Blocks `target_id`, removing follows and pending requests in both directions.
    pub async fn block(&self, token: Option<&str>, target_id: i64) -> Result<Relationship, Error> {
        let me = self.user(token, "write:blocks").await?;
        let target = account_id_arg("id", target_id)?;
        if target == me {
            return Err(Error::invalid("id", "ERR_SELF", "You cannot block yourself"));
        }
        self.existing(target, token).await?;
        let now = agora_kit::time::now_ms();
        let changes = self.store.block(self.ids.next_id(), me, target, now, &|c| self.event(c)).await?;
        self.announce(&changes).await;
        self.relationship(me, target).await
    }

    pub async fn unblock(&self, token: Option<&str>, target_id: i64) -> Result<Relationship, Error> {
        let me = self.user(token, "write:blocks").await?;
        let target = account_id_arg("id", target_id)?;
        let changes = self.store.unblock(me, target, &|c| self.event(c)).await?;
        self.announce(&changes).await;
        self.relationship(me, target).await
    }

    /// Mutes `target_id`; `notifications` unset means true, `duration_s` 0 means indefinitely.
    pub async fn mute(
        &self,
        token: Option<&str>,
        target_id: i64,
        notifications: Option<bool>,
        duration_s: i64,
    ) -> Result<Relationship, Error> {
        let me = self.user(token, "write:mutes").await?;
        let target = account_id_arg("id", target_id)?;
        if target == me {
            return Err(Error::invalid("id", "ERR_SELF", "You cannot mute yourself"));
        }
        if duration_s < 0 {
            return Err(Error::invalid(
                "duration",
                "ERR_INVALID",
                "duration must be 0 (indefinitely) or a number of seconds",
            ));
        }
        self.existing(target, token).await?;
        let now = agora_kit::time::now_ms();
        let mute = NewMute {
            id: self.ids.next_id(),
            account_id: me,
            target_id: target,
            notifications: notifications.unwrap_or(true),
            expires_at_ms: if duration_s == 0 { 0 } else { now.saturating_add(duration_s.saturating_mul(1000)) },
            created_at_ms: now,
        };
        let changes = self.store.mute(&mute, &|c| self.event(c)).await?;
        self.announce(&changes).await;
        self.relationship(me, target).await
    }

    pub async fn unmute(&self, token: Option<&str>, target_id: i64) -> Result<Relationship, Error> {
        let me = self.user(token, "write:mutes").await?;
        let target = account_id_arg("id", target_id)?;
        let now = agora_kit::time::now_ms();
        let changes = self.store.unmute(me, target, now, &|c| self.event(c)).await?;
        self.announce(&changes).await;
        self.relationship(me, target).await
    }

    /// Accepts the pending request of `requester_id` to follow the caller.
    pub async fn authorize_follow_request(
        &self,
        token: Option<&str>,
        requester_id: i64,
    ) -> Result<Relationship, Error> {
        let me = self.user(token, "write:follows").await?;
        let requester = account_id_arg("id", requester_id)?;
        let now = agora_kit::time::now_ms();
        let changes = self.store.authorize_request(me, requester, self.ids.next_id(), now, &|c| self.event(c)).await?;
        self.announce(&changes).await;
        self.relationship(me, requester).await
    }

    pub async fn reject_follow_request(&self, token: Option<&str>, requester_id: i64) -> Result<Relationship, Error> {
        let me = self.user(token, "write:follows").await?;
        let requester = account_id_arg("id", requester_id)?;
        let changes = self.store.reject_request(me, requester, &|c| self.event(c)).await?;
        self.announce(&changes).await;
        self.relationship(me, requester).await
    }

    /// Never suggests `target_id` to the caller again.
    pub async fn dismiss_suggestion(&self, token: Option<&str>, target_id: i64) -> Result<(), Error> {
        let me = self.user(token, "write").await?;
        let target = account_id_arg("id", target_id)?;
        Ok(self.store.dismiss_suggestion(me, target, agora_kit::time::now_ms()).await?)
    }

    // ---- reads for the caller ------------------------------------------------------------

    /// The caller's relationship to each of `ids`, in request order.
    pub async fn relationships(&self, token: Option<&str>, ids: &[i64]) -> Result<Vec<Relationship>, Error> {
        let me = self.user(token, "read:follows").await?;
        batch_arg(ids, MAX_BATCH_IDS)?;
        Ok(self.store.relationships(me, ids, agora_kit::time::now_ms()).await?)
    }

    /// Pending requests to follow the caller, newest first.
    pub async fn follow_requests(&self, token: Option<&str>, page: PageRequest) -> Result<AccountPage, Error> {
        let me = self.user(token, "read:follows").await?;
        Ok(self.store.follow_requests(me, &page_arg(page)?).await?.into())
    }

    pub async fn blocks(&self, token: Option<&str>, page: PageRequest) -> Result<AccountPage, Error> {
        let me = self.user(token, "read:blocks").await?;
        Ok(self.store.blocks(me, &page_arg(page)?).await?.into())
    }

    /// The caller's live mutes.
    pub async fn mutes(&self, token: Option<&str>, page: PageRequest) -> Result<AccountPage, Error> {
        let me = self.user(token, "read:mutes").await?;
        Ok(self.store.mutes(me, &page_arg(page)?, agora_kit::time::now_ms()).await?.into())
    }

    /// Per id: the accounts the caller follows that follow it too.
    pub async fn familiar_followers(&self, token: Option<&str>, ids: &[i64]) -> Result<Vec<FamiliarFollowers>, Error> {
        let me = self.user(token, "read:follows").await?;
        batch_arg(ids, MAX_BATCH_IDS)?;
        Ok(self.store.familiar_followers(me, ids).await?)
    }

    /// Friends of friends, most mutual follows first.
    pub async fn suggestions(&self, token: Option<&str>, limit: i32) -> Result<Vec<Suggestion>, Error> {
        let me = self.user(token, "read").await?;
        let limit = limit_arg(i64::from(limit), DEFAULT_LIMIT, MAX_LIMIT)?;
        Ok(self.store.suggestions(me, limit, agora_kit::time::now_ms()).await?)
    }

    /// Whom the caller must not see. Any user token will do: services ask this on behalf of
    /// whatever the caller is reading, and the answer only ever hides things from them.
    pub async fn filter_set(&self, token: Option<&str>) -> Result<FilterSet, Error> {
        let me = self.user(token, "").await?;
        Ok(self.store.filter_set(me, agora_kit::time::now_ms()).await?)
    }

    // ---- public reads (token optional) -----------------------------------------------------

    pub async fn followers(
        &self,
        token: Option<&str>,
        account_id: i64,
        page: PageRequest,
    ) -> Result<AccountPage, Error> {
        self.check_optional(token).await?;
        let account = account_id_arg("account_id", account_id)?;
        Ok(self.store.followers(account, &page_arg(page)?).await?.into())
    }

    pub async fn following(
        &self,
        token: Option<&str>,
        account_id: i64,
        page: PageRequest,
    ) -> Result<AccountPage, Error> {
        self.check_optional(token).await?;
        let account = account_id_arg("account_id", account_id)?;
        Ok(self.store.following(account, &page_arg(page)?).await?.into())
    }

    pub async fn counts(&self, token: Option<&str>, ids: &[i64]) -> Result<Vec<Counts>, Error> {
        self.check_optional(token).await?;
        batch_arg(ids, MAX_BATCH_IDS)?;
        Ok(self.store.counts(ids).await?)
    }

    // ---- internal (no token) -------------------------------------------------------------

    /// Accepted followers of `account_id` after follow id `after_id`, ascending, for fan-out.
    pub async fn follower_ids(&self, account_id: i64, after_id: i64, limit: i32) -> Result<FollowerIds, Error> {
        let account = account_id_arg("account_id", account_id)?;
        if after_id < 0 {
            return Err(Error::invalid("after_id", "ERR_INVALID", "after_id must not be negative"));
        }
        let limit = limit_arg(i64::from(limit), DEFAULT_FOLLOWER_IDS, MAX_FOLLOWER_IDS)?;
        Ok(self.store.follower_ids(account, after_id, limit).await?)
    }

    /// Which of `candidate_ids` follow `account_id`.
    pub async fn filter_followers(&self, account_id: i64, candidate_ids: &[i64]) -> Result<Vec<i64>, Error> {
        let account = account_id_arg("account_id", account_id)?;
        batch_arg(candidate_ids, MAX_CANDIDATES)?;
        Ok(self.store.filter_followers(account, candidate_ids).await?)
    }

    // ---- plumbing ------------------------------------------------------------------------

    /// The caller's account; `scope` empty means any scope will do.
    async fn user(&self, token: Option<&str>, scope: &str) -> Result<i64, Error> {
        let token = token.ok_or_else(|| Error::unauthenticated("The access token is invalid"))?;
        let claims = self.verifier.verify(token).await?;
        let caller = Caller { claims, token: token.to_owned() };
        if !scope.is_empty() {
            caller.require(scope)?;
        }
        Ok(caller.account_id()?)
    }

    /// A token is optional, but one that is present must be valid.
    async fn check_optional(&self, token: Option<&str>) -> Result<(), Error> {
        if let Some(t) = token {
            self.verifier.verify(t).await?;
        }
        Ok(())
    }

    async fn existing(&self, id: i64, token: Option<&str>) -> Result<AccountFacts, Error> {
        self.accounts.account(id, token).await?.ok_or_else(|| Error::not_found("Record"))
    }

    async fn relationship(&self, me: i64, other: i64) -> Result<Relationship, Error> {
        let mut list = self.store.relationships(me, &[other], agora_kit::time::now_ms()).await?;
        list.pop().ok_or_else(|| Error::internal("relationship query returned nothing"))
    }

    fn event(&self, c: &GraphChange) -> Envelope {
        let payload = GraphChanged {
            account_id: c.account_id,
            target_id: c.target_id,
            occurred_at_ms: agora_kit::time::now_ms(),
            show_reblogs: c.show_reblogs,
            notify: c.notify,
            mute_notifications: c.mute_notifications,
            mute_expires_at_ms: c.mute_expires_at_ms,
        };
        // Keyed by the follower/blocker/muter even when the other side acted (remove-follower,
        // reject): every event about one edge then lands on one partition, in order.
        agora_events::envelope(&self.ids, "graph", c.kind.event_type(), c.account_id, &payload)
    }

    /// Counts committed changes, gives the accounts they touch new epochs (before the caller
    /// hears back, so their next read anywhere sees the change) and wakes the relay.
    async fn announce(&self, changes: &[GraphChange]) {
        for c in changes {
            metrics::counter!("agora_graph_changes_total", "kind" => c.kind.label()).increment(1);
        }
        if changes.is_empty() {
            return;
        }
        let mut touched: Vec<i64> = changes.iter().flat_map(|c| [c.account_id, c.target_id]).collect();
        touched.sort_unstable();
        touched.dedup();
        agora_client::epoch::bump_after_commit(self.epochs.as_ref(), &touched).await;
        self.outbox_wake.notify_one();
    }
}

fn account_id_arg(field: &str, id: i64) -> Result<i64, Error> {
    if id > 0 {
        Ok(id)
    } else {
        Err(Error::invalid(field, "ERR_INVALID", format!("{field} must be a positive account id")))
    }
}

fn batch_arg(ids: &[i64], max: usize) -> Result<(), Error> {
    if ids.len() > max {
        return Err(Error::invalid("id", "ERR_TOO_MANY", format!("at most {max} ids may be asked at once")));
    }
    Ok(())
}

/// 0 → the default; above the maximum → the maximum (as Mastodon clamps); negative → refused.
fn limit_arg(limit: i64, default: i64, max: i64) -> Result<i64, Error> {
    match limit {
        l if l < 0 => Err(Error::invalid("limit", "ERR_INVALID", "limit must not be negative")),
        0 => Ok(default),
        l => Ok(l.min(max)),
    }
}

fn page_arg(p: PageRequest) -> Result<Page, Error> {
    let cursor = |field: &str, v: i64| -> Result<Option<i64>, Error> {
        match v {
            v if v < 0 => Err(Error::invalid(field, "ERR_INVALID", format!("{field} must be a numeric id"))),
            0 => Ok(None),
            v => Ok(Some(v)),
        }
    };
    Ok(Page {
        max_id: cursor("max_id", p.max_id)?,
        since_id: cursor("since_id", p.since_id)?,
        min_id: cursor("min_id", p.min_id)?,
        limit: limit_arg(i64::from(p.limit), DEFAULT_LIMIT, MAX_LIMIT)? as usize,
    })
}

/// ISO 639 codes, lower-cased; anything else is refused rather than silently dropped.
fn languages_arg(languages: Vec<String>) -> Result<Vec<String>, Error> {
    if languages.len() > MAX_LANGUAGES {
        return Err(Error::invalid("languages", "ERR_TOO_MANY", format!("at most {MAX_LANGUAGES} languages")));
    }
    let mut out: Vec<String> = Vec::with_capacity(languages.len());
    for l in languages {
        let code = l.trim().to_ascii_lowercase();
        if !(2..=3).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(Error::invalid("languages", "ERR_INVALID", format!("{l:?} is not a language code")));
        }
        if !out.contains(&code) {
            out.push(code);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_clamp_and_refuse_negatives() {
        assert_eq!(limit_arg(0, 40, 80).ok(), Some(40));
        assert_eq!(limit_arg(500, 40, 80).ok(), Some(80));
        assert_eq!(limit_arg(7, 40, 80).ok(), Some(7));
        assert!(limit_arg(-1, 40, 80).is_err());
        assert!(page_arg(PageRequest { max_id: -3, ..Default::default() }).is_err());
        let p = page_arg(PageRequest { min_id: 5, ..Default::default() }).ok();
        assert_eq!(p.map(|p| (p.min_id, p.max_id, p.limit)), Some((Some(5), None, 40)));
    }

    #[test]
    fn languages_are_codes() {
        assert_eq!(
            languages_arg(vec!["EN".into(), "de".into(), "en".into()]).ok(),
            Some(vec!["en".into(), "de".into()])
        );
        assert!(languages_arg(vec!["english!".into()]).is_err());
        assert!(languages_arg(vec!["e,n".into()]).is_err());
    }
}
