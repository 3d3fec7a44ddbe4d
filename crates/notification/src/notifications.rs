//! The notification rules: which events notify whom, and what a recipient may read.

use std::sync::Arc;

use agora_events::Envelope;
use agora_events::consumer::{HandlerError, decode};
use agora_kit::IdGenerator;
use agora_proto::events::v1::{GraphChanged, StatusDeleted, StatusFavourited, StatusPosted, StatusReacted};

use crate::domain::{Change, Group, GroupStats, Interaction, Kind, Notification, PageGroup, Query, Reason};
use crate::store::{NotificationStore, StoreError};
use agora_client::live::{Live, LiveEvent, Topic, publish_best_effort};

use crate::push::deliver::Pusher;

#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("notification not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<NotificationError> for agora_kit::Error {
    fn from(e: NotificationError) -> Self {
        match e {
            NotificationError::Invalid { field, message } => agora_kit::Error::invalid(field, "ERR_INVALID", message),
            NotificationError::NotFound => agora_kit::Error::not_found("notification"),
            NotificationError::Store(s) => s.into(),
        }
    }
}

impl From<NotificationError> for tonic::Status {
    fn from(e: NotificationError) -> Self {
        agora_kit::Error::from(e).into()
    }
}

pub type NotificationResult<T> = Result<T, NotificationError>;

fn transient(e: StoreError) -> HandlerError {
    HandlerError::Transient(e.to_string())
}

pub struct Notifications {
    store: Arc<dyn NotificationStore>,
    ids: Arc<IdGenerator>,
    /// Where new notifications are announced to the recipients' open streams.
    live: Option<Arc<dyn Live>>,
    /// Where new notifications are queued for Web Push.
    pusher: Option<Arc<Pusher>>,
}

impl Notifications {
    pub fn new(store: Arc<dyn NotificationStore>, ids: Arc<IdGenerator>, live: Option<Arc<dyn Live>>) -> Self {
        Self { store, ids, live, pusher: None }
    }

    /// Pushes each new notification, after its commit, through `pusher`.
    pub fn with_pusher(mut self, pusher: Arc<Pusher>) -> Self {
        self.pusher = Some(pusher);
        self
    }

    pub fn next_id(&self) -> i64 {
        self.ids.next_id()
    }

    pub fn store(&self) -> &Arc<dyn NotificationStore> {
        &self.store
    }

    fn notification(&self, kind: Kind, recipient_id: i64, account_id: i64, status_id: i64, at: i64) -> Notification {
        Notification { id: self.ids.next_id(), recipient_id, kind, account_id, status_id, created_at_ms: at }
    }

    /// What one event changes. Nobody is notified of their own actions.
    pub async fn changes(&self, env: &Envelope) -> Result<Vec<Change>, HandlerError> {
        let at = env.occurred_at_ms;
        let mut out = Vec::new();
        match env.r#type.as_str() {
            "post.created" => {
                let s: StatusPosted = decode(env)?;
                if s.reblog_of_id != 0 {
                    if s.reblog_of_account_id != s.account_id {
                        let n =
                            self.notification(Kind::Reblog, s.reblog_of_account_id, s.account_id, s.reblog_of_id, at);
                        out.push(Change::Add(n));
                    }
                    out.push(Change::Interacted {
                        status_id: s.reblog_of_id,
                        account_id: s.account_id,
                        how: Interaction::Reblog,
                    });
                } else {
                    // Every mentioned account hears of it, whatever the visibility: a private
                    // or direct status is addressed to them.
                    let mut mentioned = s.mention_ids.clone();
                    mentioned.sort_unstable();
                    mentioned.dedup();
                    mentioned.retain(|m| *m != s.account_id);
                    for m in &mentioned {
                        out.push(Change::Add(self.notification(Kind::Mention, *m, s.account_id, s.id, at)));
                    }
                    if s.in_reply_to_id != 0 {
                        out.push(Change::Interacted {
                            status_id: s.in_reply_to_id,
                            account_id: s.account_id,
                            how: Interaction::Reply,
                        });
                    }
                    // Followers who asked to hear of new statuses (Mastodon's `notify`), for
                    // what reaches them: not direct messages, not replies to someone else;
                    // a mention already told them.
                    let reaches_followers = s.visibility != "direct"
                        && (s.in_reply_to_account_id == 0 || s.in_reply_to_account_id == s.account_id);
                    if reaches_followers {
                        for f in self.store.subscribers(s.account_id).await.map_err(transient)? {
                            if f != s.account_id && mentioned.binary_search(&f).is_err() {
                                out.push(Change::Add(self.notification(Kind::Status, f, s.account_id, s.id, at)));
                            }
                        }
                    }
                }
            }
            "post.updated" => {
                let s: StatusPosted = decode(env)?;
                // Those who reblogged, favourited or replied to it hear of the edit, the latest
                // edit replacing an earlier one's notification.
                for a in self.store.interested(s.id).await.map_err(transient)? {
                    if a != s.account_id {
                        out.push(Change::Renew(self.notification(Kind::Update, a, s.account_id, s.id, at)));
                    }
                }
            }
            "post.deleted" => {
                let d: StatusDeleted = decode(env)?;
                out.push(Change::RemoveAboutStatus { status_id: d.id });
                if d.reblog_of_id != 0 {
                    out.push(Change::Uninteracted {
                        status_id: d.reblog_of_id,
                        account_id: d.account_id,
                        how: Interaction::Reblog,
                    });
                    out.push(Change::Remove {
                        recipient_id: None,
                        kind: Kind::Reblog,
                        account_id: d.account_id,
                        status_id: d.reblog_of_id,
                    });
                }
            }
            "post.favourited" => {
                let f: StatusFavourited = decode(env)?;
                if f.status_account_id != f.account_id {
                    let n = self.notification(Kind::Favourite, f.status_account_id, f.account_id, f.status_id, at);
                    out.push(Change::Add(n));
                }
                out.push(Change::Interacted {
                    status_id: f.status_id,
                    account_id: f.account_id,
                    how: Interaction::Favourite,
                });
            }
            "post.unfavourited" => {
                let f: StatusFavourited = decode(env)?;
                out.push(Change::Remove {
                    recipient_id: Some(f.status_account_id),
                    kind: Kind::Favourite,
                    account_id: f.account_id,
                    status_id: f.status_id,
                });
                out.push(Change::Uninteracted {
                    status_id: f.status_id,
                    account_id: f.account_id,
                    how: Interaction::Favourite,
                });
            }
            // One agora.reaction notification per account and status, however many emoji it
            // adds; it goes when the account takes back its last one.
            "post.reacted" => {
                let r: StatusReacted = decode(env)?;
                if r.status_account_id != r.account_id {
                    let n = self.notification(Kind::Reaction, r.status_account_id, r.account_id, r.status_id, at);
                    out.push(Change::Add(n));
                }
            }
            "post.unreacted" => {
                let r: StatusReacted = decode(env)?;
                out.push(Change::Remove {
                    recipient_id: Some(r.status_account_id),
                    kind: Kind::Reaction,
                    account_id: r.account_id,
                    status_id: r.status_id,
                });
            }
            "graph.followed" => {
                let g: GraphChanged = decode(env)?;
                out.push(Change::Followed(self.notification(Kind::Follow, g.target_id, g.account_id, 0, at)));
                let (target_id, follower_id) = (g.target_id, g.account_id);
                out.push(if g.notify {
                    Change::Subscribe { target_id, follower_id }
                } else {
                    Change::Unsubscribe { target_id, follower_id }
                });
            }
            "graph.follow_requested" => {
                let g: GraphChanged = decode(env)?;
                out.push(Change::Add(self.notification(Kind::FollowRequest, g.target_id, g.account_id, 0, at)));
            }
            "graph.unfollowed" => {
                let g: GraphChanged = decode(env)?;
                for kind in [Kind::Follow, Kind::FollowRequest] {
                    out.push(Change::Remove {
                        recipient_id: Some(g.target_id),
                        kind,
                        account_id: g.account_id,
                        status_id: 0,
                    });
                }
                out.push(Change::Unsubscribe { target_id: g.target_id, follower_id: g.account_id });
            }
            "graph.blocked" => {
                let g: GraphChanged = decode(env)?;
                let (a, t) = (g.account_id, g.target_id);
                out.push(Change::Unsubscribe { target_id: a, follower_id: t });
                out.push(Change::Unsubscribe { target_id: t, follower_id: a });
                out.push(Change::Suppress {
                    recipient_id: a,
                    account_id: t,
                    reason: Reason::Blocking,
                    expires_at_ms: 0,
                });
                out.push(Change::Suppress {
                    recipient_id: t,
                    account_id: a,
                    reason: Reason::BlockedBy,
                    expires_at_ms: 0,
                });
            }
            "graph.unblocked" => {
                let g: GraphChanged = decode(env)?;
                let (a, t) = (g.account_id, g.target_id);
                out.push(Change::Unsuppress { recipient_id: a, account_id: t, reason: Reason::Blocking });
                out.push(Change::Unsuppress { recipient_id: t, account_id: a, reason: Reason::BlockedBy });
            }
            "graph.muted" => {
                let g: GraphChanged = decode(env)?;
                let (a, t) = (g.account_id, g.target_id);
                // A mute that leaves notifications on (or a re-mute that turns them back on)
                // lifts an earlier notification mute.
                out.push(if g.mute_notifications {
                    Change::Suppress {
                        recipient_id: a,
                        account_id: t,
                        reason: Reason::Muting,
                        expires_at_ms: g.mute_expires_at_ms,
                    }
                } else {
                    Change::Unsuppress { recipient_id: a, account_id: t, reason: Reason::Muting }
                });
            }
            "graph.unmuted" => {
                let g: GraphChanged = decode(env)?;
                out.push(Change::Unsuppress {
                    recipient_id: g.account_id,
                    account_id: g.target_id,
                    reason: Reason::Muting,
                });
            }
            _ => {}
        }
        Ok(out)
    }

    /// Applies one post or graph event, exactly once: its changes and the record that it was
    /// handled commit together, and a redelivery finds the record.
    pub async fn handle(&self, env: &Envelope) -> Result<(), HandlerError> {
        let changes = self.changes(env).await?;
        let applied = self.store.apply(env.id, agora_kit::time::now_ms(), &changes).await.map_err(transient)?;
        if applied {
            for c in &changes {
                if let Change::Add(n) | Change::Followed(n) | Change::Renew(n) = c {
                    metrics::counter!("agora_notification_written_total", "type" => n.kind.as_str()).increment(1);
                    // After the commit. A notification the store did not write (a suppressed
                    // actor, a cause that notified before) is announced too: the gateway fetches
                    // it with the recipient's token, finds nothing, and sends nothing.
                    publish_best_effort(
                        self.live.as_ref(),
                        &Topic::Account(n.recipient_id),
                        LiveEvent::Notification(n.id),
                    )
                    .await;
                    // The pusher asks the store first, so what was not written is not pushed.
                    if let Some(p) = &self.pusher {
                        p.enqueue(n.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// The recipient's notifications that `query` admits, newest first.
    pub async fn list(&self, recipient_id: i64, query: &Query) -> NotificationResult<Vec<Notification>> {
        Ok(self.store.page(recipient_id, query, agora_kit::time::now_ms()).await?)
    }

    /// A page of the recipient's notifications folded into groups (Mastodon 4.3), each with what
    /// the whole group holds; and the ids of the page, for paging.
    pub async fn groups(
        &self,
        recipient_id: i64,
        query: &Query,
        grouped: &[Kind],
    ) -> NotificationResult<(Vec<(PageGroup, GroupStats)>, Vec<i64>)> {
        let now = agora_kit::time::now_ms();
        let page = self.store.page(recipient_id, query, now).await?;
        let ids = page.iter().map(|n| n.id).collect();
        let mut out = Vec::new();
        for g in crate::domain::fold(&page, grouped) {
            let stats = match g.group {
                Group::Single(id) => {
                    GroupStats { count: 1, most_recent_id: id, sample_account_ids: g.page_account_ids.clone() }
                }
                group => self.store.group_stats(recipient_id, group, now).await?,
            };
            out.push((g, stats));
        }
        Ok((out, ids))
    }

    /// One of the recipient's notifications; another account's is not found, like a missing one.
    pub async fn get(&self, recipient_id: i64, id: i64) -> NotificationResult<Notification> {
        self.store.get(recipient_id, id, agora_kit::time::now_ms()).await?.ok_or(NotificationError::NotFound)
    }

    /// Dismisses one of the recipient's notifications; another account's is not found.
    pub async fn dismiss(&self, recipient_id: i64, id: i64) -> NotificationResult<()> {
        if self.store.dismiss(recipient_id, id).await? { Ok(()) } else { Err(NotificationError::NotFound) }
    }

    pub async fn clear(&self, recipient_id: i64) -> NotificationResult<u64> {
        Ok(self.store.clear(recipient_id).await?)
    }

    pub async fn unread_count(&self, recipient_id: i64, after_id: i64, query: &Query) -> NotificationResult<i64> {
        Ok(self.store.unread_count(recipient_id, after_id, query, agora_kit::time::now_ms()).await?)
    }
}
