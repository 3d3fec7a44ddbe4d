//! What readers ask the graph service about a viewer, cached where they run: the filter set
//! (whom the viewer blocks, who blocks them, whom they mute) and the viewer's relationship to the
//! authors of a page. Both are read on every timeline page and change rarely.
//!
//! An entry belongs to one viewer and one token (a token without `read:follows` never fills one,
//! and never reads another token's) and is good while the viewer's [epoch](crate::epoch) is the one
//! read before it was filled. The graph service gives both accounts of every change a new epoch
//! after the change commits and before it answers, so the read after a block, a mute, a follow or
//! an unfollow misses, wherever it runs. Entries also expire after [`MAX_AGE`]: that bounds what a
//! failed epoch bump (Redis down, a crash between commit and bump) can cost, and is when a timed
//! mute's end shows. Without epochs, nothing is cached.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Instant;

use agora_kit::grpc::Channel;
use agora_proto::graph::v1 as gpb;
use agora_proto::graph::v1::graph_service_client::GraphServiceClient;
use parking_lot::Mutex;

use crate::epoch::{Epoch, Epochs};

pub use crate::epoch::MAX_AGE;
/// Viewers (times tokens) with an entry, at most.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Authors remembered per entry, at most.
const MAX_RELATIONS: usize = 4_096;
/// Ids per `GetRelationships` call (the graph service accepts up to 1000).
const RELATIONSHIPS_BATCH: usize = 500;

/// The viewer's relationship to one account, as far as reading is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relation {
    pub following: bool,
    pub blocking: bool,
    pub blocked_by: bool,
    pub muting: bool,
}

/// Whom the viewer must not see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterSet {
    pub blocking: Vec<i64>,
    pub blocked_by: Vec<i64>,
    pub muting: Vec<i64>,
}

impl FilterSet {
    /// Whether the viewer whose set this is (`viewer`) must not see `account`: one they block,
    /// are blocked by or mute. Never themselves.
    pub fn hides(&self, viewer: i64, account: i64) -> bool {
        account != viewer
            && (self.blocking.contains(&account)
                || self.blocked_by.contains(&account)
                || self.muting.contains(&account))
    }
}

struct Entry {
    epoch: Epoch,
    born: Instant,
    filter: Option<Arc<FilterSet>>,
    relations: HashMap<i64, Relation>,
}

impl Entry {
    fn new(epoch: Epoch) -> Self {
        Self { epoch, born: Instant::now(), filter: None, relations: HashMap::new() }
    }

    fn good(&self, epoch: Epoch) -> bool {
        self.epoch == epoch && self.born.elapsed() < MAX_AGE
    }
}

/// The graph service's answers about viewers, cached under epochs.
pub struct GraphFacts {
    client: GraphServiceClient<Channel>,
    epochs: Option<Arc<dyn Epochs>>,
    entries: Mutex<HashMap<(i64, u64), Entry>>,
    capacity: usize,
    hasher: RandomState,
}

fn count(kind: &'static str, result: &'static str) {
    metrics::counter!("agora_graph_facts_total", "kind" => kind, "result" => result).increment(1);
}

impl GraphFacts {
    /// Facts from the graph service at `graph_url`, cached under the epochs at `epochs_url`
    /// (see [`crate::epoch::connect`]). The channel connects lazily.
    pub async fn connect(
        graph_url: &str,
        epochs_url: &str,
    ) -> Result<Arc<Self>, Box<dyn std::error::Error + Send + Sync>> {
        let client = GraphServiceClient::new(agora_kit::grpc::channel(graph_url)?);
        Ok(Arc::new(Self::new(client, crate::epoch::connect(epochs_url).await?)))
    }

    pub fn new(client: GraphServiceClient<Channel>, epochs: Option<Arc<dyn Epochs>>) -> Self {
        Self::with_capacity(client, epochs, DEFAULT_CAPACITY)
    }

    pub fn with_capacity(
        client: GraphServiceClient<Channel>,
        epochs: Option<Arc<dyn Epochs>>,
        capacity: usize,
    ) -> Self {
        Self {
            client,
            epochs,
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            hasher: RandomState::new(),
        }
    }

    /// The graph service client the facts are read with, for the caller's other graph calls
    /// (one channel to the graph service, not two).
    pub fn client(&self) -> &GraphServiceClient<Channel> {
        &self.client
    }

    fn key(&self, viewer: i64, token: &str) -> (i64, u64) {
        (viewer, self.hasher.hash_one(token))
    }

    /// The viewer's epoch, or `None` when there is nothing to cache under.
    async fn epoch(&self, viewer: i64) -> Option<Epoch> {
        crate::epoch::for_cache(self.epochs.as_ref(), &[viewer], "graph_facts").await?.first().copied()
    }

    /// Runs `f` on the viewer's entry for `epoch`, replacing an entry of another epoch.
    fn store<T>(&self, key: (i64, u64), epoch: Epoch, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, e| e.born.elapsed() < MAX_AGE);
            if entries.len() >= self.capacity {
                // Drop half, in the map's (arbitrary) order.
                let drop: Vec<_> = entries.keys().take(entries.len() / 2 + 1).copied().collect();
                for k in drop {
                    entries.remove(&k);
                }
            }
        }
        let entry = entries.entry(key).or_insert_with(|| Entry::new(epoch));
        if !entry.good(epoch) {
            *entry = Entry::new(epoch);
        }
        f(entry)
    }

    /// Whom `viewer` (holding `token`) must not see.
    pub async fn filter_set(&self, viewer: i64, token: &str) -> Result<Arc<FilterSet>, tonic::Status> {
        let key = self.key(viewer, token);
        let epoch = self.epoch(viewer).await;
        if let Some(epoch) = epoch {
            let hit = self.entries.lock().get(&key).filter(|e| e.good(epoch)).and_then(|e| e.filter.clone());
            if let Some(f) = hit {
                count("filter_set", "hit");
                return Ok(f);
            }
        }
        let resp = self
            .client
            .clone()
            .get_filter_set(agora_kit::grpc::request(gpb::GetFilterSetRequest {}, Some(token)))
            .await?
            .into_inner();
        let set = Arc::new(FilterSet { blocking: resp.blocking, blocked_by: resp.blocked_by, muting: resp.muting });
        match epoch {
            Some(epoch) => {
                count("filter_set", "miss");
                self.store(key, epoch, |e| e.filter = Some(Arc::clone(&set)));
            }
            None => count("filter_set", "uncached"),
        }
        Ok(set)
    }

    /// `viewer`'s relation to each of `ids` (absent ones have none). Asks the graph only for the
    /// ids the cache does not hold, in one call per 500.
    pub async fn relationships(
        &self,
        viewer: i64,
        token: &str,
        ids: &[i64],
    ) -> Result<HashMap<i64, Relation>, tonic::Status> {
        let key = self.key(viewer, token);
        let epoch = self.epoch(viewer).await;
        let mut out = HashMap::with_capacity(ids.len());
        let mut missing: Vec<i64> = Vec::new();
        match epoch {
            Some(epoch) => {
                let entries = self.entries.lock();
                let held = entries.get(&key).filter(|e| e.good(epoch));
                for id in ids {
                    match held.and_then(|e| e.relations.get(id)) {
                        Some(r) => {
                            out.insert(*id, *r);
                        }
                        None => missing.push(*id),
                    }
                }
            }
            None => missing.extend_from_slice(ids),
        }
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            count("relationships", "hit");
            return Ok(out);
        }
        let mut fetched = HashMap::with_capacity(missing.len());
        for chunk in missing.chunks(RELATIONSHIPS_BATCH) {
            let req = agora_kit::grpc::request(gpb::GetRelationshipsRequest { ids: chunk.to_vec() }, Some(token));
            let resp = self.client.clone().get_relationships(req).await?.into_inner();
            for id in chunk {
                fetched.insert(*id, Relation::default());
            }
            for r in resp.relationships {
                fetched.insert(
                    r.id,
                    Relation {
                        following: r.following,
                        blocking: r.blocking,
                        blocked_by: r.blocked_by,
                        muting: r.muting,
                    },
                );
            }
        }
        match epoch {
            Some(epoch) => {
                count("relationships", "miss");
                self.store(key, epoch, |e| {
                    for (id, r) in &fetched {
                        if e.relations.len() >= MAX_RELATIONS {
                            break;
                        }
                        e.relations.insert(*id, *r);
                    }
                });
            }
            None => count("relationships", "uncached"),
        }
        out.extend(fetched);
        Ok(out)
    }
}
