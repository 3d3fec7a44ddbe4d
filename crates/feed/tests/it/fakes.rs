//! In-memory stand-ins for the graph and post services, and helpers to feed events.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use agora_events::Envelope;
use agora_feed::deps::{DependencyError, FollowerPage, GraphView, PostSource};
use agora_feed::domain::FilterSet;
use agora_feed::{Feed, FeedSettings};
use agora_proto::events::v1::{GraphChanged, StatusDeleted, StatusFavourited, StatusPosted};
use async_trait::async_trait;
use parking_lot::Mutex;

/// Tokens in these tests are just `token-<account id>`.
pub fn token(account: i64) -> String {
    format!("token-{account}")
}

#[derive(Default)]
pub struct FakeGraph {
    /// follower -> followees, in follow order.
    follows: Mutex<BTreeMap<i64, BTreeSet<i64>>>,
    blocks: Mutex<HashSet<(i64, i64)>>,
    mutes: Mutex<HashSet<(i64, i64)>>,
    /// Real tokens minted by a test, and whose they are.
    minted: Mutex<std::collections::HashMap<String, i64>>,
}

impl FakeGraph {
    pub fn register_token(&self, token: &str, account: i64) {
        self.minted.lock().insert(token.to_owned(), account);
    }

    fn account_of(&self, token: &str) -> i64 {
        if let Some(a) = self.minted.lock().get(token) {
            return *a;
        }
        token.trim_start_matches("token-").parse().unwrap()
    }

    pub fn follow(&self, follower: i64, target: i64) {
        self.follows.lock().entry(follower).or_default().insert(target);
    }

    pub fn unfollow(&self, follower: i64, target: i64) {
        self.follows.lock().entry(follower).or_default().remove(&target);
    }

    pub fn block(&self, a: i64, b: i64) {
        self.blocks.lock().insert((a, b));
        self.unfollow(a, b);
        self.unfollow(b, a);
    }

    pub fn mute(&self, a: i64, b: i64) {
        self.mutes.lock().insert((a, b));
    }

    pub fn unmute(&self, a: i64, b: i64) {
        self.mutes.lock().remove(&(a, b));
    }

    fn followers_of(&self, account: i64) -> Vec<i64> {
        self.follows.lock().iter().filter(|(_, t)| t.contains(&account)).map(|(f, _)| *f).collect()
    }
}

#[async_trait]
impl GraphView for FakeGraph {
    async fn follower_ids(&self, account_id: i64, after_id: i64, limit: i32) -> Result<FollowerPage, DependencyError> {
        // Follow ids here are simply the follower ids (ascending).
        let all = self.followers_of(account_id);
        let page: Vec<i64> = all.iter().copied().filter(|f| *f > after_id).take(limit as usize).collect();
        let next = if page.len() == limit as usize { *page.last().unwrap() } else { 0 };
        Ok(FollowerPage { follower_ids: page, next_after_id: next, total: all.len() as i64 })
    }

    async fn filter_followers(&self, account_id: i64, candidates: &[i64]) -> Result<Vec<i64>, DependencyError> {
        let followers: HashSet<i64> = self.followers_of(account_id).into_iter().collect();
        Ok(candidates.iter().copied().filter(|c| followers.contains(c)).collect())
    }

    async fn filter_set(&self, _viewer: i64, token: &str) -> Result<FilterSet, DependencyError> {
        let me = self.account_of(token);
        let mut hidden = HashSet::new();
        for (a, b) in self.blocks.lock().iter() {
            if *a == me {
                hidden.insert(*b);
            }
            if *b == me {
                hidden.insert(*a);
            }
        }
        for (a, b) in self.mutes.lock().iter() {
            if *a == me {
                hidden.insert(*b);
            }
        }
        Ok(FilterSet { hidden })
    }

    async fn followed_among(&self, _viewer: i64, token: &str, ids: &[i64]) -> Result<Vec<i64>, DependencyError> {
        let me = self.account_of(token);
        let follows = self.follows.lock().get(&me).cloned().unwrap_or_default();
        Ok(ids.iter().copied().filter(|i| follows.contains(i)).collect())
    }

    async fn following(&self, account_id: i64, _token: Option<&str>, max: usize) -> Result<Vec<i64>, DependencyError> {
        Ok(self.follows.lock().get(&account_id).map(|s| s.iter().copied().take(max).collect()).unwrap_or_default())
    }
}

/// The post service's statuses, newest first per account.
#[derive(Default)]
pub struct FakePosts {
    pub statuses: Mutex<Vec<StatusPosted>>,
}

#[async_trait]
impl PostSource for FakePosts {
    async fn account_statuses(
        &self,
        account_id: i64,
        max_id: i64,
        limit: i32,
    ) -> Result<Vec<StatusPosted>, DependencyError> {
        let mut mine: Vec<StatusPosted> = self
            .statuses
            .lock()
            .iter()
            .filter(|s| s.account_id == account_id && (max_id == 0 || s.id < max_id))
            .cloned()
            .collect();
        mine.sort_by_key(|s| std::cmp::Reverse(s.id));
        mine.truncate(limit as usize);
        Ok(mine)
    }
}

/// A feed on a fresh SQLite store and an in-memory hot set, with the fakes and an event log.
pub struct World {
    pub feed: Arc<Feed>,
    pub graph: Arc<FakeGraph>,
    pub posts: Arc<FakePosts>,
    pub log: Mutex<Vec<Envelope>>,
    next_event: AtomicI64,
    next_status: AtomicI64,
}

impl World {
    pub async fn new(settings: FeedSettings) -> Self {
        let dir = agora_testkit::scratch_dir().unwrap();
        let url = format!("sqlite://{}/feed.db", dir.display());
        let store = agora_feed::store::connect(&url, true).await.unwrap();
        let hot = agora_feed::hotset::connect("memory://", settings.hot_set_size).await.unwrap();
        let graph = Arc::new(FakeGraph::default());
        let posts = Arc::new(FakePosts::default());
        let feed = Arc::new(Feed::new(store, hot, graph.clone(), posts.clone(), settings));
        Self {
            feed,
            graph,
            posts,
            log: Mutex::new(Vec::new()),
            next_event: AtomicI64::new(1),
            next_status: AtomicI64::new(1_000),
        }
    }

    pub async fn start() -> Self {
        Self::new(FeedSettings::default()).await
    }

    pub fn status_id(&self) -> i64 {
        self.next_status.fetch_add(1, Ordering::Relaxed)
    }

    pub async fn emit<M: prost::Message>(&self, kind: &str, payload: &M) {
        let env = Envelope {
            id: self.next_event.fetch_add(1, Ordering::Relaxed),
            r#type: kind.into(),
            aggregate_id: "0".into(),
            occurred_at_ms: agora_kit::time::now_ms(),
            payload: payload.encode_to_vec(),
            ..Default::default()
        };
        self.log.lock().push(env.clone());
        self.feed.handle(&env).await.unwrap();
    }

    /// Posts a public status by `author` and returns its id.
    pub async fn post(&self, author: i64) -> i64 {
        self.post_with(StatusPosted { account_id: author, visibility: "public".into(), ..Default::default() }).await
    }

    pub async fn post_with(&self, mut s: StatusPosted) -> i64 {
        if s.id == 0 {
            s.id = self.status_id();
        }
        if s.created_at_ms == 0 {
            s.created_at_ms = agora_kit::time::now_ms();
        }
        self.posts.statuses.lock().push(s.clone());
        self.emit("post.created", &s).await;
        s.id
    }

    pub async fn reblog(&self, by: i64, original: i64, original_author: i64) -> i64 {
        self.post_with(StatusPosted {
            account_id: by,
            visibility: "public".into(),
            reblog_of_id: original,
            reblog_of_account_id: original_author,
            ..Default::default()
        })
        .await
    }

    pub async fn delete(&self, id: i64, author: i64) {
        self.posts.statuses.lock().retain(|s| s.id != id);
        self.emit("post.deleted", &StatusDeleted { id, account_id: author, ..Default::default() }).await;
    }

    pub async fn favourite(&self, status: i64, by: i64) {
        self.emit(
            "post.favourited",
            &StatusFavourited {
                status_id: status,
                account_id: by,
                occurred_at_ms: agora_kit::time::now_ms(),
                ..Default::default()
            },
        )
        .await;
    }

    pub async fn follow(&self, follower: i64, target: i64) {
        self.graph.follow(follower, target);
        self.emit("graph.followed", &graph_event(follower, target, true)).await;
    }

    pub async fn unfollow(&self, follower: i64, target: i64) {
        self.graph.unfollow(follower, target);
        self.emit("graph.unfollowed", &graph_event(follower, target, false)).await;
    }

    pub async fn block(&self, a: i64, b: i64) {
        self.graph.block(a, b);
        self.emit("graph.blocked", &graph_event(a, b, false)).await;
    }

    pub async fn mute(&self, a: i64, b: i64) {
        self.graph.mute(a, b);
        self.emit("graph.muted", &graph_event(a, b, false)).await;
    }

    /// The account's home, newest first (first page of 40).
    pub async fn home(&self, account: i64) -> Vec<i64> {
        self.feed.home(account, &token(account), agora_feed::domain::Window::newest(40)).await.unwrap()
    }

    /// The home exactly as stored, without the read path (no rebuild, no filters, no merge).
    pub async fn stored_home(&self, account: i64) -> Vec<i64> {
        let page = self
            .feed
            .store()
            .page(
                &agora_feed::domain::TimelineKey::home(account),
                &agora_feed::domain::Window::newest(1000),
                &Default::default(),
            )
            .await
            .unwrap();
        page.into_iter().map(|e| e.status_id).collect()
    }
}

pub fn graph_event(account_id: i64, target_id: i64, show_reblogs: bool) -> GraphChanged {
    GraphChanged {
        account_id,
        target_id,
        occurred_at_ms: agora_kit::time::now_ms(),
        show_reblogs,
        ..Default::default()
    }
}
