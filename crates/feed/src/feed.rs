//! [`Feed`]: the timeline rules. Writes come from post and graph events (fan-out on write to
//! home timelines, public/tag/account timelines, removals on unfollow, block, mute and delete);
//! reads page a timeline for a viewer, merging very large accounts in at read time and dropping
//! whatever the viewer's filter set hides.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_client::live::{Live, LiveEvent, Topic};
use agora_events::Envelope;
use agora_events::consumer::{HandlerError, decode};
use agora_proto::events::v1::{GraphChanged, StatusDeleted, StatusFavourited, StatusPosted};

use crate::deps::{DependencyError, GraphView, PostSource};
use crate::domain::{
    Entry, EntryFilter, FilterSet, MARKER_TIMELINES, Marker, StatusFacts, TimelineKey, TrendingTag, Visibility, Window,
    normalize_tag, rank_statuses, rank_tags,
};
use crate::hotset::{HotEntry, HotSet, HotSetError};
use crate::store::{AuthorScope, Recorded, StoreError, TimelineStore};

mod conversations;
use conversations::Filing;

/// The consumer name under which handled events are remembered.
pub const CONSUMER: &str = "feed";
/// Followers asked for per page during fan-out.
const FOLLOWER_PAGE: i32 = 1000;
/// A read that filtering left short walks on at most this many times.
const MAX_WALKS: usize = 4;
/// Rebuilds follow at most this many accounts and copy this many statuses per account.
const REBUILD_MAX_FOLLOWING: usize = 10_000;
const REBUILD_MAX_STATUSES: usize = 1_000;
/// Entries a cold home is warmed with: two pages of 40 (most reads are of the newest page).
/// Fan-out grows a warm home up to the hot set's size; reads below what it holds go to the store.
const FILL_DEPTH: usize = 80;
/// Hot-set writes in flight at once during a fan-out.
const HOT_CONCURRENCY: usize = 32;

/// Tunables of the timeline rules.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    pub hot_set_size: usize,
    /// Authors with more followers than this are merged at read time instead of fanned out.
    pub large_account_followers: i64,
    /// Followers idle this long are skipped by fan-out and rebuilt when they return.
    pub inactive_after: Duration,
    /// Statuses copied into a home on a new follow.
    pub backfill: usize,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            hot_set_size: 800,
            large_account_followers: 10_000,
            inactive_after: Duration::from_secs(14 * 24 * 3600),
            backfill: 40,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dependency(#[from] DependencyError),
    #[error(transparent)]
    HotSet(#[from] HotSetError),
    /// The reader has no such thing (never someone else's: theirs is not found either).
    #[error("{0} not found")]
    NotFound(&'static str),
}

impl From<FeedError> for agora_kit::Error {
    fn from(e: FeedError) -> Self {
        match e {
            FeedError::Invalid { field, message } => agora_kit::Error::invalid(field, "ERR_INVALID", message),
            FeedError::Store(e) => e.into(),
            FeedError::Dependency(e) if e.unauthenticated => {
                agora_kit::Error::unauthenticated("The access token is invalid")
            }
            FeedError::Dependency(e) => {
                tracing::warn!(error = %e, "dependency failed");
                agora_kit::Error::unavailable("A service the feed depends on is unavailable")
            }
            FeedError::HotSet(e) => agora_kit::Error::internal(e),
            FeedError::NotFound(what) => agora_kit::Error::not_found(what),
        }
    }
}

impl From<FeedError> for tonic::Status {
    fn from(e: FeedError) -> Self {
        agora_kit::Error::from(e).into()
    }
}

impl From<FeedError> for HandlerError {
    fn from(e: FeedError) -> Self {
        match e {
            FeedError::Invalid { .. } => HandlerError::Permanent(e.to_string()),
            other => HandlerError::Transient(other.to_string()),
        }
    }
}

type FeedResult<T> = Result<T, FeedError>;

/// Who is reading: an account and its token (to ask the graph on their behalf), or nobody.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    pub account_id: Option<i64>,
    pub token: Option<String>,
}

/// What `rebuild` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    pub accounts: usize,
    pub statuses: usize,
    pub home_entries: usize,
}

/// Where a read takes entries from.
enum Source<'a> {
    Home(i64),
    Timeline(&'a str, &'a EntryFilter),
}

pub struct Feed {
    store: Arc<dyn TimelineStore>,
    hot: Arc<dyn HotSet>,
    graph: Arc<dyn GraphView>,
    posts: Arc<dyn PostSource>,
    settings: FeedSettings,
    /// When this process last saw each reader. A home read within [`ACTIVITY_REFRESH`] of the
    /// last one skips the activity check; the stored activity is rewritten only once it is
    /// [`Feed::activity_write_interval`] old, since fan-out compares it with a threshold of days.
    recently_active: parking_lot::Mutex<std::collections::HashMap<i64, Instant>>,
    /// The large-account list for home reads, refreshed every [`LARGE_ACCOUNTS_TTL`].
    large_accounts: parking_lot::Mutex<Option<(Instant, Arc<Vec<i64>>)>>,
    /// Where what enters or leaves a home is announced to its owner's open streams.
    live: Option<Arc<dyn Live>>,
}

/// How often a reader's stored activity is checked while they keep reading.
const ACTIVITY_REFRESH: Duration = Duration::from_secs(600);
/// The stored activity is rewritten when it is this fraction of `inactive_after` old (a day
/// against the default 14): precise enough for the idleness rule, and a reader costs one write
/// a day instead of one every [`ACTIVITY_REFRESH`].
const ACTIVITY_WRITES_PER_IDLE_PERIOD: u32 = 14;
/// How stale the large-account list may be on the read path (a newly large author's statuses
/// are still fanned out until the list catches up, so nothing is missed meanwhile).
const LARGE_ACCOUNTS_TTL: Duration = Duration::from_secs(5);
/// Bounds the activity cache; past it the cache starts over (costing one write per reader).
const ACTIVITY_CACHE_MAX: usize = 1_000_000;

fn hot_entry(e: &Entry) -> HotEntry {
    HotEntry { status_id: e.status_id, author_id: e.author_id, reblog_of_author_id: e.reblog_of_author_id }
}

/// The visibilities a home may show from an account the viewer follows.
/// What a fan-out does at each recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Writes the status into the home (and tells its streams: `update`).
    Write,
    /// The status is already there and was edited: only tells the streams (`status.update`).
    AnnounceEdit,
}

/// The live topics whose streams carry `s`: public originals go to the public streams (the
/// media one too when they have media) and to each of their hashtags' streams, as they go to
/// the public and tag timelines.
fn shared_topics(s: &StatusFacts) -> Vec<Topic> {
    if s.visibility != Visibility::Public || s.is_reblog() {
        return Vec::new();
    }
    let mut out = vec![Topic::Public];
    if s.has_media {
        out.push(Topic::PublicMedia);
    }
    out.extend(s.tags.iter().map(|t| Topic::Tag(t.clone())));
    out
}

fn followed_visibilities() -> Vec<Visibility> {
    vec![Visibility::Public, Visibility::Unlisted, Visibility::Private]
}

impl Feed {
    pub fn new(
        store: Arc<dyn TimelineStore>,
        hot: Arc<dyn HotSet>,
        graph: Arc<dyn GraphView>,
        posts: Arc<dyn PostSource>,
        settings: FeedSettings,
    ) -> Self {
        Self {
            store,
            hot,
            graph,
            posts,
            settings,
            recently_active: parking_lot::Mutex::new(std::collections::HashMap::new()),
            large_accounts: parking_lot::Mutex::new(None),
            live: None,
        }
    }

    /// Announces each status a home gains (`update`) or loses (`delete`) on `live`, after the
    /// write, to the home's owner.
    pub fn with_live(mut self, live: Option<Arc<dyn Live>>) -> Self {
        self.live = live;
        self
    }

    async fn large_accounts_cached(&self) -> FeedResult<Arc<Vec<i64>>> {
        if let Some((at, list)) = self.large_accounts.lock().as_ref()
            && at.elapsed() < LARGE_ACCOUNTS_TTL
        {
            return Ok(Arc::clone(list));
        }
        let list = Arc::new(self.store.large_accounts().await?);
        *self.large_accounts.lock() = Some((Instant::now(), Arc::clone(&list)));
        Ok(list)
    }

    pub fn store(&self) -> &Arc<dyn TimelineStore> {
        &self.store
    }

    pub fn hot_set(&self) -> &Arc<dyn HotSet> {
        &self.hot
    }

    // ---- events -------------------------------------------------------------------------

    /// Applies one post or graph event. Idempotent: every write is an insert-if-absent or a
    /// delete, and handled event ids are remembered, so redelivery changes nothing.
    pub async fn handle(&self, env: &Envelope) -> Result<(), HandlerError> {
        if self.store.processed(CONSUMER, env.id).await.map_err(FeedError::from)? {
            return Ok(());
        }
        match env.r#type.as_str() {
            "post.created" => self.status_posted(StatusFacts::from(&decode::<StatusPosted>(env)?), false).await?,
            "post.updated" => self.status_posted(StatusFacts::from(&decode::<StatusPosted>(env)?), true).await?,
            "post.deleted" => self.status_deleted(&decode::<StatusDeleted>(env)?).await?,
            "post.favourited" | "post.unfavourited" => {
                let f: StatusFavourited = decode(env)?;
                let at = if f.occurred_at_ms > 0 { f.occurred_at_ms } else { env.occurred_at_ms };
                self.store
                    .set_engagement(f.status_id, f.account_id, "favourite", at, env.r#type == "post.favourited")
                    .await
                    .map_err(FeedError::from)?;
            }
            "graph.followed" => self.followed(&decode::<GraphChanged>(env)?).await?,
            "graph.unfollowed" => self.unfollowed(&decode::<GraphChanged>(env)?).await?,
            "graph.blocked" => self.blocked(&decode::<GraphChanged>(env)?).await?,
            "graph.muted" => self.muted(&decode::<GraphChanged>(env)?).await?,
            // Unblocking, unmuting and follow requests change no timeline (as in Mastodon).
            _ => return Ok(()),
        }
        self.store.mark_processed(CONSUMER, env.id).await.map_err(FeedError::from)?;
        Ok(())
    }

    /// Records a status, places it in its shared timelines and fans it out to home timelines.
    /// An edit updates what changed and does not fan out again.
    #[tracing::instrument(skip_all, fields(status.id = s.id, author = s.account_id, edit = edit))]
    pub async fn status_posted(&self, s: StatusFacts, edit: bool) -> FeedResult<()> {
        let recorded = self.store.record_status(&s).await?;
        if recorded == Recorded::Deleted {
            return Ok(());
        }
        let entry = s.entry();
        self.store.insert(&s.shared_timelines(), &entry).await?;
        let public_original = s.visibility == Visibility::Public && !s.is_reblog();
        if let Recorded::Known(old) = &recorded {
            if old.has_media != s.has_media {
                self.store.set_media(s.id, s.has_media).await?;
            }
            if old.tags != s.tags && public_original {
                self.store.retag(&entry, &s.tags).await?;
            }
        }
        // A status seen for the first time has no tag uses to replace; without tags there is
        // nothing to write either.
        if public_original && !(s.tags.is_empty() && recorded == Recorded::New) {
            self.store.record_tag_uses(s.id, s.account_id, &s.tags, s.created_at_ms).await?;
        }
        if s.is_reblog() {
            self.store.set_engagement(s.reblog_of_id, s.account_id, "reblog", s.created_at_ms, true).await?;
        }
        // A failed first attempt is retried as a redelivery of post.created, so only edits of
        // a known status skip the fan-out; their readers hear of the edit instead.
        if edit && matches!(recorded, Recorded::Known(_)) {
            for topic in shared_topics(&s) {
                agora_client::live::publish_best_effort(self.live.as_ref(), &topic, LiveEvent::StatusUpdate(s.id))
                    .await;
            }
            return self.fan_out(&s, Delivery::AnnounceEdit).await;
        }
        if recorded == Recorded::New {
            // The public and hashtag streams hear of a status once, when it is first recorded.
            for topic in shared_topics(&s) {
                agora_client::live::publish_best_effort(self.live.as_ref(), &topic, LiveEvent::Update(s.id)).await;
            }
        }
        self.fan_out(&s, Delivery::Write).await
    }

    async fn fan_out(&self, s: &StatusFacts, how: Delivery) -> FeedResult<()> {
        if how == Delivery::AnnounceEdit && self.live.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        let entry = s.entry();
        let mut delivered = 0usize;
        if s.visibility == Visibility::Direct {
            let mut to: Vec<i64> = std::iter::once(s.account_id).chain(s.mention_ids.iter().copied()).collect();
            to.sort_unstable();
            to.dedup();
            delivered += self.deliver(&to, &entry, how).await?;
            if how == Delivery::Write {
                self.converse(s, Filing::Live).await?;
            }
        } else {
            delivered += self.fan_out_to_followers(s, &entry, how).await?;
        }
        if how == Delivery::Write {
            metrics::histogram!("agora_feed_fanout_seconds").record(started.elapsed().as_secs_f64());
            metrics::counter!("agora_feed_fanout_recipients_total").increment(delivered as u64);
        }
        tracing::debug!(delivered, ?how, "fanned out");
        Ok(())
    }

    async fn fan_out_to_followers(&self, s: &StatusFacts, entry: &Entry, how: Delivery) -> FeedResult<usize> {
        let cutoff = agora_kit::time::now_ms() - self.settings.inactive_after.as_millis() as i64;
        let mut delivered = 0;
        let mut after = 0;
        let mut first = true;
        let mut author_pending = true;
        loop {
            let page = self.graph.follower_ids(s.account_id, after, FOLLOWER_PAGE).await?;
            if first {
                first = false;
                if page.total > self.settings.large_account_followers {
                    // Too many homes to write: viewers who follow this author merge its account
                    // timeline in when they read.
                    self.store.set_large_account(s.account_id, Some(page.total)).await?;
                    *self.large_accounts.lock() = None;
                    return self.deliver(&[s.account_id], entry, how).await;
                }
                // Written only when the author was large and no longer is: fan-out is the hot
                // path and the list is almost always unchanged.
                if self.large_accounts_cached().await?.contains(&s.account_id) {
                    self.store.set_large_account(s.account_id, None).await?;
                    *self.large_accounts.lock() = None;
                }
            }
            let mut to: Vec<i64> = page.follower_ids.iter().copied().filter(|id| *id != s.account_id).collect();
            if s.replies_to_other() {
                // A reply reaches those who follow both people in the conversation, and the
                // replied-to account itself when it follows the author.
                let replied_to = s.in_reply_to_account_id;
                let mut both = self.graph.filter_followers(replied_to, &to).await?;
                if to.contains(&replied_to) {
                    both.push(replied_to);
                }
                to = both;
            }
            if s.is_reblog() {
                to.retain(|id| *id != s.reblog_of_account_id);
                let hiding: HashSet<i64> = self.store.hiding_reblogs(s.account_id, &to).await?.into_iter().collect();
                to.retain(|id| !hiding.contains(id));
            }
            let idle: HashSet<i64> = self.store.inactive_among(&to, cutoff).await?.into_iter().collect();
            if !idle.is_empty() {
                if how == Delivery::Write {
                    let idle_ids: Vec<i64> = idle.iter().copied().collect();
                    self.store.mark_needs_rebuild(&idle_ids).await?;
                }
                to.retain(|id| !idle.contains(id));
            }
            if author_pending {
                // The author's own home is written with the first page, in the same statement.
                author_pending = false;
                to.insert(0, s.account_id);
            }
            delivered += self.deliver(&to, entry, how).await?;
            if page.next_after_id == 0 || page.follower_ids.is_empty() || page.next_after_id == after {
                return Ok(delivered);
            }
            after = page.next_after_id;
        }
    }

    /// Writes `entry` into the homes of `recipients` and their hot sets (or, for an edit, only
    /// tells their streams).
    async fn deliver(&self, recipients: &[i64], entry: &Entry, how: Delivery) -> FeedResult<usize> {
        if recipients.is_empty() {
            return Ok(0);
        }
        if how == Delivery::AnnounceEdit {
            self.announce(recipients, LiveEvent::StatusUpdate(entry.status_id)).await;
            return Ok(recipients.len());
        }
        let holders = self.store.insert_home(recipients, entry).await?;
        let hot = hot_entry(entry);
        for chunk in holders.chunks(HOT_CONCURRENCY) {
            futures::future::try_join_all(chunk.iter().map(|r| self.hot.insert(*r, std::slice::from_ref(&hot))))
                .await?;
        }
        self.announce(&holders, LiveEvent::Update(entry.status_id)).await;
        Ok(holders.len())
    }

    /// Tells each of `accounts`' open streams of `event`; best-effort (the home is written).
    async fn announce(&self, accounts: &[i64], event: LiveEvent) {
        let Some(live) = &self.live else { return };
        for chunk in accounts.chunks(HOT_CONCURRENCY) {
            let sent = chunk.iter().map(|a| async move {
                agora_client::live::publish_best_effort(Some(live), &Topic::Account(*a), event).await
            });
            futures::future::join_all(sent).await;
        }
    }

    #[tracing::instrument(skip_all, fields(status.id = d.id))]
    async fn status_deleted(&self, d: &StatusDeleted) -> FeedResult<()> {
        let removed = self.store.delete_status(d.id, d.account_id).await?;
        self.leave_conversations(d.id).await?;
        let mut told = Vec::new();
        for r in removed {
            if let Some(account) = r.timeline.strip_prefix("home:").and_then(|a| a.parse::<i64>().ok()) {
                self.hot.remove(account, &[r.status_id]).await?;
                told.push((Topic::Account(account), r.status_id));
            } else if r.timeline == TimelineKey::PUBLIC {
                // Mastodon tells every public stream; a client drops an id it never had.
                told.push((Topic::Public, r.status_id));
                told.push((Topic::PublicMedia, r.status_id));
            } else if let Some(tag) = r.timeline.strip_prefix("tag:") {
                told.push((Topic::Tag(tag.to_owned()), r.status_id));
            }
        }
        for (topic, status_id) in told {
            agora_client::live::publish_best_effort(self.live.as_ref(), &topic, LiveEvent::Delete(status_id)).await;
        }
        if d.reblog_of_id != 0 {
            self.store.set_engagement(d.reblog_of_id, d.account_id, "reblog", 0, false).await?;
        }
        Ok(())
    }

    /// Backfills the follower's home with the followee's recent statuses.
    #[tracing::instrument(skip_all, fields(follower = g.account_id, target = g.target_id))]
    async fn followed(&self, g: &GraphChanged) -> FeedResult<()> {
        let (follower, target) = (g.account_id, g.target_id);
        self.store.set_hides_reblogs(follower, target, !g.show_reblogs).await?;
        if self.store.large_accounts().await?.contains(&target) {
            return Ok(());
        }
        let filter = EntryFilter {
            exclude_reblogs: !g.show_reblogs,
            visibilities: followed_visibilities(),
            ..Default::default()
        };
        let entries =
            self.store.page(&TimelineKey::account(target), &Window::newest(self.settings.backfill), &filter).await?;
        // The reply rule, as fan-out would have applied it: a reply to someone else only if the
        // follower follows (or is) the replied-to account.
        let mut replied_to: Vec<i64> = entries
            .iter()
            .filter(|e| e.replies_to_other() && e.in_reply_to_account_id != follower)
            .map(|e| e.in_reply_to_account_id)
            .collect();
        replied_to.sort_unstable();
        replied_to.dedup();
        let mut followed = HashSet::new();
        for r in replied_to {
            if self.graph.filter_followers(r, &[follower]).await?.contains(&follower) {
                followed.insert(r);
            }
        }
        let wanted = entries.iter().filter(|e| {
            e.reblog_of_author_id != follower
                && (!e.replies_to_other()
                    || e.in_reply_to_account_id == follower
                    || followed.contains(&e.in_reply_to_account_id))
        });
        for e in wanted {
            self.deliver(&[follower], e, Delivery::Write).await?;
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(follower = g.account_id, target = g.target_id))]
    async fn unfollowed(&self, g: &GraphChanged) -> FeedResult<()> {
        self.store.set_hides_reblogs(g.account_id, g.target_id, false).await?;
        self.remove_author(g.account_id, g.target_id, AuthorScope::Authored).await
    }

    #[tracing::instrument(skip_all, fields(account = g.account_id, target = g.target_id))]
    async fn blocked(&self, g: &GraphChanged) -> FeedResult<()> {
        self.remove_author(g.account_id, g.target_id, AuthorScope::Everything).await?;
        self.remove_author(g.target_id, g.account_id, AuthorScope::Everything).await
    }

    #[tracing::instrument(skip_all, fields(account = g.account_id, target = g.target_id))]
    async fn muted(&self, g: &GraphChanged) -> FeedResult<()> {
        self.remove_author(g.account_id, g.target_id, AuthorScope::Everything).await
    }

    async fn remove_author(&self, home_of: i64, author: i64, scope: AuthorScope) -> FeedResult<()> {
        let removed = self.store.remove_author(&TimelineKey::home(home_of), author, scope).await?;
        self.hot.remove(home_of, &removed).await?;
        Ok(())
    }

    // ---- reads --------------------------------------------------------------------------

    async fn filter_set(&self, viewer: &Viewer) -> FeedResult<FilterSet> {
        match (&viewer.token, viewer.account_id) {
            (Some(t), Some(me)) => Ok(self.graph.filter_set(me, t).await?),
            _ => Ok(FilterSet::default()),
        }
    }

    /// Reads one window from a source; for a home, from the hot set when it covers the window.
    async fn fetch(&self, source: &Source<'_>, w: &Window) -> FeedResult<Vec<Entry>> {
        match source {
            Source::Timeline(timeline, filter) => Ok(self.store.page(timeline, w, filter).await?),
            Source::Home(account) => self.fetch_home(*account, w).await,
        }
    }

    async fn fetch_home(&self, account: i64, w: &Window) -> FeedResult<Vec<Entry>> {
        match self.hot.page(account, w).await {
            Ok(Some(hot)) => {
                metrics::counter!("agora_feed_hot_set_hits_total", "result" => "hit").increment(1);
                return Ok(hot
                    .into_iter()
                    .map(|h| Entry {
                        status_id: h.status_id,
                        author_id: h.author_id,
                        reblog_of_id: 0,
                        reblog_of_author_id: h.reblog_of_author_id,
                        in_reply_to_account_id: 0,
                        visibility: Visibility::Public,
                        has_media: false,
                    })
                    .collect());
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "hot set read failed; reading the store"),
        }
        metrics::counter!("agora_feed_hot_set_hits_total", "result" => "miss").increment(1);
        let timeline = TimelineKey::home(account);
        let all = EntryFilter::default();
        if w.upper.is_none() && w.lower.is_none() {
            // The newest page: warm the hot set with the same read.
            let depth = self.hot.capacity().min(FILL_DEPTH);
            let newest = self.store.page(&timeline, &Window::newest(depth), &all).await?;
            let hot: Vec<HotEntry> = newest.iter().map(hot_entry).collect();
            if let Err(e) = self.hot.fill(account, &hot, newest.len() < depth).await {
                tracing::warn!(error = %e, "could not warm the hot set");
            }
            return Ok(newest.into_iter().take(w.limit).collect());
        }
        Ok(self.store.page(&timeline, w, &all).await?)
    }

    /// Walks a source until `limit` entries pass `keep` or the source runs out, so filtering
    /// does not leave a short page while more entries exist.
    async fn walk(&self, source: Source<'_>, window: Window, filters: &FilterSet) -> FeedResult<Vec<Entry>> {
        let mut out = Vec::new();
        let mut w = window;
        for _ in 0..MAX_WALKS {
            let batch = self.fetch(&source, &w).await?;
            let full = batch.len() >= w.limit;
            let last = batch.last().map(|e| e.status_id);
            out.extend(batch.into_iter().filter(|e| !filters.hides(e)));
            match last {
                Some(l) if full && out.len() < window.limit => w = w.after(l),
                _ => break,
            }
        }
        out.truncate(window.limit);
        Ok(out)
    }

    /// Turns walked entries into the answer: newest first.
    fn ids(mut entries: Vec<Entry>, w: &Window) -> Vec<i64> {
        if w.ascending {
            entries.reverse();
        }
        entries.into_iter().map(|e| e.status_id).collect()
    }

    /// The viewer's home: marks them active (rebuilding a home that fan-out skipped), reads it,
    /// merges in the large accounts they follow and drops what their filter set hides.
    #[tracing::instrument(skip_all, fields(account = account_id))]
    pub async fn home(&self, account_id: i64, token: &str, window: Window) -> FeedResult<Vec<i64>> {
        self.prepare_home(account_id, token).await?;
        let viewer = Viewer { account_id: Some(account_id), token: Some(token.to_owned()) };
        let filters = self.filter_set(&viewer).await?;
        let mut entries = self.walk(Source::Home(account_id), window, &filters).await?;

        let large: Vec<i64> =
            self.large_accounts_cached().await?.iter().copied().filter(|id| *id != account_id).collect();
        let followed_large =
            if large.is_empty() { Vec::new() } else { self.graph.followed_among(account_id, token, &large).await? };
        if !followed_large.is_empty() {
            let filter =
                EntryFilter { exclude_replies: true, visibilities: followed_visibilities(), ..Default::default() };
            for author in followed_large {
                let timeline = TimelineKey::account(author);
                let more = self.walk(Source::Timeline(&timeline, &filter), window, &filters).await?;
                entries.extend(more.into_iter().filter(|e| e.reblog_of_author_id != account_id));
            }
            entries.sort_by_key(|e| std::cmp::Reverse(e.status_id));
            entries.dedup_by_key(|e| e.status_id);
            // A reblog shows once even when it arrives from two sources.
            let mut seen = HashSet::new();
            entries.retain(|e| {
                let original = if e.reblog_of_id != 0 { e.reblog_of_id } else { e.status_id };
                seen.insert(original)
            });
            if window.ascending {
                entries.reverse();
            }
            entries.truncate(window.limit);
        }
        Ok(Self::ids(entries, &window))
    }

    /// How old a reader's stored activity may grow before a read rewrites it.
    fn activity_write_interval(&self) -> Duration {
        (self.settings.inactive_after / ACTIVITY_WRITES_PER_IDLE_PERIOD).max(ACTIVITY_REFRESH)
    }

    async fn prepare_home(&self, account_id: i64, token: &str) -> FeedResult<()> {
        if self.recently_active.lock().get(&account_id).is_some_and(|t| t.elapsed() < ACTIVITY_REFRESH) {
            return Ok(());
        }
        let now = agora_kit::time::now_ms();
        let activity = self.store.activity(account_id).await?;
        let rebuild = match activity {
            Some(a) => a.needs_rebuild,
            None => {
                !self.store.has_entries(&TimelineKey::home(account_id)).await?
                    && !self.graph.following(account_id, Some(token), 1).await?.is_empty()
            }
        };
        if rebuild {
            self.rebuild_home(account_id, Some(token)).await?;
        }
        // Recorded recently (by this process before a restart, or by another replica): no write.
        let write_after = self.activity_write_interval().as_millis() as i64;
        let fresh = activity.is_some_and(|a| !a.needs_rebuild && now.saturating_sub(a.last_active_ms) < write_after);
        if !fresh {
            self.store.touch(account_id, now).await?;
        }
        let mut seen = self.recently_active.lock();
        if seen.len() >= ACTIVITY_CACHE_MAX {
            seen.clear();
        }
        seen.insert(account_id, Instant::now());
        Ok(())
    }

    /// Recomputes a home from the accounts it follows: their recent statuses under the home
    /// rules. Adds to what is there (direct messages stay). Returns the entries added.
    #[tracing::instrument(skip_all, fields(account = account_id))]
    pub async fn rebuild_home(&self, account_id: i64, token: Option<&str>) -> FeedResult<usize> {
        let following: HashSet<i64> =
            self.graph.following(account_id, token, REBUILD_MAX_FOLLOWING).await?.into_iter().collect();
        let large: HashSet<i64> = self.store.large_accounts().await?.into_iter().collect();
        let filter = EntryFilter { visibilities: followed_visibilities(), ..Default::default() };
        let per_account = self.settings.backfill.max(1);
        let mut added = 0;
        let sources = following.iter().copied().filter(|f| !large.contains(f)).chain(std::iter::once(account_id));
        for author in sources {
            let hides_reblogs =
                author != account_id && !self.store.hiding_reblogs(author, &[account_id]).await?.is_empty();
            let entries = self.store.page(&TimelineKey::account(author), &Window::newest(per_account), &filter).await?;
            for e in entries {
                let reply_ok = !e.replies_to_other()
                    || e.in_reply_to_account_id == account_id
                    || following.contains(&e.in_reply_to_account_id);
                let reblog_ok = e.reblog_of_id == 0 || (!hides_reblogs && e.reblog_of_author_id != account_id);
                if reply_ok && reblog_ok {
                    added += self.store.insert_home(&[account_id], &e).await?.len();
                }
            }
        }
        // The hot copy may lack what was just added; the next read warms it again.
        self.hot.forget(account_id).await?;
        Ok(added)
    }

    /// The local public timeline: public statuses, no reblogs.
    pub async fn public(&self, viewer: &Viewer, window: Window, only_media: bool) -> FeedResult<Vec<i64>> {
        let filters = self.filter_set(viewer).await?;
        let filter = EntryFilter { only_media, ..Default::default() };
        let entries = self.walk(Source::Timeline(TimelineKey::PUBLIC, &filter), window, &filters).await?;
        Ok(Self::ids(entries, &window))
    }

    pub async fn tag(&self, viewer: &Viewer, tag: &str, window: Window, only_media: bool) -> FeedResult<Vec<i64>> {
        let name = normalize_tag(tag);
        if name.is_empty() {
            return Err(FeedError::Invalid { field: "tag", message: "tag must not be empty".into() });
        }
        let filters = self.filter_set(viewer).await?;
        let filter = EntryFilter { only_media, ..Default::default() };
        let timeline = TimelineKey::tag(&name);
        let entries = self.walk(Source::Timeline(&timeline, &filter), window, &filters).await?;
        Ok(Self::ids(entries, &window))
    }

    /// An account's statuses and reblogs; private ones only for its followers and itself.
    pub async fn account(
        &self,
        viewer: &Viewer,
        account_id: i64,
        window: Window,
        mut filter: EntryFilter,
    ) -> FeedResult<Vec<i64>> {
        let sees_private = match (&viewer.account_id, &viewer.token) {
            (Some(me), _) if *me == account_id => true,
            (Some(me), Some(token)) => {
                self.graph.followed_among(*me, token, &[account_id]).await?.contains(&account_id)
            }
            _ => false,
        };
        filter.visibilities =
            if sees_private { followed_visibilities() } else { vec![Visibility::Public, Visibility::Unlisted] };
        let filters = self.filter_set(viewer).await?;
        let timeline = TimelineKey::account(account_id);
        let entries = self.walk(Source::Timeline(&timeline, &filter), window, &filters).await?;
        Ok(Self::ids(entries, &window))
    }

    pub async fn trending_tags(&self, limit: i32, offset: i32) -> FeedResult<Vec<TrendingTag>> {
        let (limit, offset) = trend_bounds(limit, offset, 20)?;
        let now = agora_kit::time::now_ms();
        let uses = self.store.tag_uses_since(now - crate::domain::TREND_WINDOW_MS).await?;
        Ok(rank_tags(&uses, now).into_iter().skip(offset).take(limit).collect())
    }

    pub async fn trending_statuses(&self, limit: i32, offset: i32) -> FeedResult<Vec<i64>> {
        let (limit, offset) = trend_bounds(limit, offset, 40)?;
        let now = agora_kit::time::now_ms();
        let engagements = self.store.engagements_since(now - crate::domain::TREND_WINDOW_MS).await?;
        Ok(rank_statuses(&engagements, now).into_iter().skip(offset).take(limit).map(|(id, _)| id).collect())
    }

    /// The viewer's markers, only those asked for (all when none are named).
    pub async fn markers(&self, account_id: i64, timelines: &[String]) -> FeedResult<Vec<Marker>> {
        let all = self.store.markers(account_id).await?;
        Ok(all.into_iter().filter(|m| timelines.is_empty() || timelines.contains(&m.timeline)).collect())
    }

    /// Saves markers; each save bumps the marker's version.
    pub async fn save_markers(&self, account_id: i64, markers: &[(String, i64)]) -> FeedResult<Vec<Marker>> {
        for (timeline, last_read_id) in markers {
            if !MARKER_TIMELINES.contains(&timeline.as_str()) {
                return Err(FeedError::Invalid { field: "timeline", message: "must be home or notifications".into() });
            }
            if *last_read_id < 0 {
                return Err(FeedError::Invalid { field: "last_read_id", message: "must not be negative".into() });
            }
        }
        let now = agora_kit::time::now_ms();
        let mut out = Vec::new();
        for (timeline, last_read_id) in markers {
            out.push(self.store.save_marker(account_id, timeline, *last_read_id, now).await?);
        }
        Ok(out)
    }

    // ---- rebuild ------------------------------------------------------------------------

    /// Recomputes timelines from the post and graph services: every status of each account is
    /// recorded again (shared timelines, direct messages), then each account's home is rebuilt.
    /// `None` means every account this store knows.
    pub async fn rebuild(&self, account_ids: Option<Vec<i64>>) -> FeedResult<RebuildReport> {
        let accounts = match account_ids {
            Some(ids) => ids,
            None => self.store.known_accounts().await?,
        };
        let mut report = RebuildReport { accounts: accounts.len(), ..Default::default() };
        let mut direct = Vec::new();
        for account in &accounts {
            let mut max_id = 0;
            let mut copied = 0;
            while copied < REBUILD_MAX_STATUSES {
                let batch = self.posts.account_statuses(*account, max_id, 100).await?;
                let Some(last) = batch.last().map(|s| s.id) else { break };
                let short = batch.len() < 100;
                for p in &batch {
                    let s = StatusFacts::from(p);
                    if self.store.record_status(&s).await? == Recorded::Deleted {
                        continue;
                    }
                    let entry = s.entry();
                    self.store.insert(&s.shared_timelines(), &entry).await?;
                    if s.visibility == Visibility::Public && !s.is_reblog() {
                        self.store.record_tag_uses(s.id, s.account_id, &s.tags, s.created_at_ms).await?;
                    }
                    if s.visibility == Visibility::Direct {
                        let mut to = s.mention_ids.clone();
                        to.push(s.account_id);
                        self.store.insert_home(&to, &entry).await?;
                        direct.push(s);
                    }
                    report.statuses += 1;
                }
                copied += batch.len();
                if short || last == max_id {
                    break;
                }
                max_id = last;
            }
        }
        // Oldest first, so a reply finds the thread its parent is in.
        direct.sort_by_key(|s| s.id);
        for s in &direct {
            self.converse(s, Filing::Quiet).await?;
        }
        for account in &accounts {
            report.home_entries += self.rebuild_home(*account, None).await?;
        }
        Ok(report)
    }
}

fn trend_bounds(limit: i32, offset: i32, max: usize) -> FeedResult<(usize, usize)> {
    if limit < 0 {
        return Err(FeedError::Invalid { field: "limit", message: "must not be negative".into() });
    }
    if offset < 0 {
        return Err(FeedError::Invalid { field: "offset", message: "must not be negative".into() });
    }
    let limit = if limit == 0 { 10 } else { (limit as usize).min(max) };
    Ok((limit, offset as usize))
}
