//! Mastodon conversations, derived from direct statuses as the feed receives them. Each account
//! a direct status is between (its author and the accounts it mentions) has the status filed in
//! its conversation for the status's thread and the other accounts, as Mastodon files it:
//! unread for everyone but the author. A deleted status leaves every conversation it was in,
//! and a conversation left with none goes. The account's streams hear of each change
//! (`conversation`).
//!
//! Reading applies the reader's filter set: a conversation whose last status is by an account
//! the reader blocks, is blocked by or mutes is left out, as that status is left out of every
//! timeline.

use super::{Feed, FeedError, FeedResult, LiveEvent, Topic, Viewer};
use crate::domain::{Conversation, StatusFacts, Window, participants};

/// Whether filing a status tells the streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Filing {
    /// A status as it arrives: unread for its recipients, and announced.
    Live,
    /// A rebuild: nothing becomes unread and nothing is announced.
    Quiet,
}

/// Conversations read per store call while filtering leaves a page short.
const MAX_WALKS: usize = 5;

impl Feed {
    /// The thread of a status: its parent's thread when the parent is in a conversation, else
    /// the parent itself, else (no parent) the status.
    async fn thread(&self, s: &StatusFacts) -> FeedResult<i64> {
        if s.in_reply_to_id == 0 {
            return Ok(s.id);
        }
        Ok(self.store.thread_of(s.in_reply_to_id).await?.unwrap_or(s.in_reply_to_id))
    }

    /// Files a direct status in the conversation of each account it is between.
    pub(super) async fn converse(&self, s: &StatusFacts, how: Filing) -> FeedResult<()> {
        let thread = self.thread(s).await?;
        let mut accounts: Vec<i64> = std::iter::once(s.account_id).chain(s.mention_ids.iter().copied()).collect();
        accounts.sort_unstable();
        accounts.dedup();
        for account in accounts {
            let others = participants(account, s.account_id, &s.mention_ids);
            let unread = how == Filing::Live && account != s.account_id;
            let filed = self.store.add_to_conversation(account, thread, &others, s.id, s.account_id, unread).await?;
            if let (Some(c), Filing::Live) = (filed, how) {
                metrics::counter!("agora_feed_conversation_updates_total", "cause" => "status").increment(1);
                self.tell_conversation(account, c.id).await;
            }
        }
        Ok(())
    }

    async fn tell_conversation(&self, account: i64, id: i64) {
        agora_client::live::publish_best_effort(
            self.live.as_ref(),
            &Topic::Account(account),
            LiveEvent::Conversation(id),
        )
        .await;
    }

    /// Takes a deleted status out of its conversations; those that remain are announced again
    /// (their last status changed).
    pub(super) async fn leave_conversations(&self, status_id: i64) -> FeedResult<()> {
        for change in self.store.remove_from_conversations(status_id).await? {
            let cause = if change.now.is_some() { "delete" } else { "emptied" };
            metrics::counter!("agora_feed_conversation_updates_total", "cause" => cause).increment(1);
            if let Some(c) = change.now {
                self.tell_conversation(change.account_id, c.id).await;
            }
        }
        Ok(())
    }

    /// The viewer's conversations, newest last status first (`window` bounds last status ids),
    /// without those whose last status the viewer's filter set hides.
    #[tracing::instrument(skip_all, fields(account = account_id))]
    pub async fn conversations(&self, account_id: i64, token: &str, window: Window) -> FeedResult<Vec<Conversation>> {
        let filters = self.filter_set(&Viewer { account_id: Some(account_id), token: Some(token.to_owned()) }).await?;
        let mut out = Vec::new();
        let mut w = window;
        for _ in 0..MAX_WALKS {
            let batch = self.store.conversations(account_id, &w).await?;
            let full = batch.len() >= w.limit;
            let last = batch.last().map(|c| c.last_status_id);
            out.extend(batch.into_iter().filter(|c| !filters.hidden.contains(&c.last_author_id)));
            match last {
                Some(l) if full && out.len() < window.limit => w = w.after(l),
                _ => break,
            }
        }
        out.truncate(window.limit);
        if window.ascending {
            out.reverse();
        }
        Ok(out)
    }

    /// One of the viewer's conversations (404 for an id that is not theirs or is hidden from them).
    pub async fn conversation(&self, account_id: i64, token: &str, id: i64) -> FeedResult<Conversation> {
        let c = self.store.conversation(account_id, id).await?.ok_or(FeedError::NotFound("Record"))?;
        self.visible(account_id, token, c).await
    }

    async fn visible(&self, account_id: i64, token: &str, c: Conversation) -> FeedResult<Conversation> {
        let filters = self.filter_set(&Viewer { account_id: Some(account_id), token: Some(token.to_owned()) }).await?;
        if filters.hidden.contains(&c.last_author_id) {
            return Err(FeedError::NotFound("Record"));
        }
        Ok(c)
    }

    /// Marks one of the viewer's conversations read.
    pub async fn read_conversation(&self, account_id: i64, token: &str, id: i64) -> FeedResult<Conversation> {
        self.conversation(account_id, token, id).await?;
        let c = self.store.read_conversation(account_id, id).await?.ok_or(FeedError::NotFound("Record"))?;
        // The account's other devices hear of it, as they hear of a new status.
        self.tell_conversation(account_id, c.id).await;
        Ok(c)
    }

    /// Removes one of the viewer's conversations, for them alone.
    pub async fn delete_conversation(&self, account_id: i64, id: i64) -> FeedResult<()> {
        if !self.store.delete_conversation(account_id, id).await? {
            return Err(FeedError::NotFound("Record"));
        }
        Ok(())
    }
}
