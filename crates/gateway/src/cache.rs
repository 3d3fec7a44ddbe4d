//! Account entities with their follower counts, cached under the accounts' epochs
//! (`agora_client::epoch`): the user service gives an account a new epoch when its profile
//! changes, the graph service when a follow changes its counts, both before they answer. So a
//! page reads the accounts it shows from here, and the read after a change misses. The status
//! counts are not cached: the post service answers them with the statuses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use agora_client::epoch::{Epoch, Epochs, MAX_AGE};
use agora_kit::grpc::request;
use agora_proto::graph::v1 as gpb;
use agora_proto::user::v1 as upb;
use parking_lot::Mutex;

use crate::entities;
use crate::error::ApiResult;
use crate::state::AppState;

/// Accounts held at most.
const CAPACITY: usize = 20_000;

struct Held {
    epoch: Epoch,
    born: Instant,
    account: Arc<entities::Account>,
}

pub struct AccountCache {
    epochs: Option<Arc<dyn Epochs>>,
    held: Mutex<HashMap<i64, Held>>,
}

fn count(result: &'static str, n: usize) {
    metrics::counter!("agora_gateway_account_cache_total", "result" => result).increment(n as u64);
}

impl AccountCache {
    pub fn new(epochs: Option<Arc<dyn Epochs>>) -> Self {
        Self { epochs, held: Mutex::new(HashMap::new()) }
    }

    /// The entities of `ids` (unique) with follower counts and without status counts; unknown
    /// ids are absent.
    pub async fn get(&self, st: &AppState, ids: &[i64]) -> ApiResult<HashMap<i64, Arc<entities::Account>>> {
        let epochs = agora_client::epoch::for_cache(self.epochs.as_ref(), ids, "gateway_accounts").await;
        let mut out = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        match &epochs {
            Some(epochs) => {
                let held = self.held.lock();
                for (id, epoch) in ids.iter().zip(epochs) {
                    match held.get(id).filter(|h| h.epoch == *epoch && h.born.elapsed() < MAX_AGE) {
                        Some(h) => {
                            out.insert(*id, Arc::clone(&h.account));
                        }
                        None => missing.push(*id),
                    }
                }
            }
            None => missing.extend_from_slice(ids),
        }
        count("hit", out.len());
        if missing.is_empty() {
            return Ok(out);
        }
        count(if epochs.is_some() { "miss" } else { "uncached" }, missing.len());
        let (mut user, mut graph) = (st.user.clone(), st.graph.clone());
        let (accounts, counts) = tokio::join!(
            user.batch_get_accounts(request(upb::BatchGetAccountsRequest { ids: missing.clone() }, None)),
            graph.get_counts(request(gpb::GetCountsRequest { ids: missing.clone() }, None)),
        );
        let accounts = accounts?.into_inner().accounts;
        // Follower counts are decoration: without the graph they read as zero, and such an
        // entity is not kept.
        let counts: Option<HashMap<i64, gpb::Counts>> = match counts {
            Ok(c) => Some(c.into_inner().counts.into_iter().map(|c| (c.id, c)).collect()),
            Err(e) => {
                tracing::warn!(error = %e, "follower counts unavailable");
                None
            }
        };
        let base = &st.config.public_url;
        let fresh: Vec<(i64, Arc<entities::Account>)> = accounts
            .iter()
            .map(|a| {
                let mut e = entities::account_entity(base, a);
                if let Some(c) = counts.as_ref().and_then(|m| m.get(&a.id)) {
                    e.followers_count = c.followers_count;
                    e.following_count = c.following_count;
                }
                (a.id, Arc::new(e))
            })
            .collect();
        if let (Some(epochs), Some(_)) = (&epochs, &counts) {
            let by_id: HashMap<i64, Epoch> = ids.iter().copied().zip(epochs.iter().copied()).collect();
            let mut held = self.held.lock();
            if held.len() + fresh.len() > CAPACITY {
                held.retain(|_, h| h.born.elapsed() < MAX_AGE);
                if held.len() + fresh.len() > CAPACITY {
                    held.clear();
                }
            }
            let now = Instant::now();
            for (id, account) in &fresh {
                if let Some(epoch) = by_id.get(id) {
                    held.insert(*id, Held { epoch: *epoch, born: now, account: Arc::clone(account) });
                }
            }
        }
        out.extend(fresh);
        Ok(out)
    }
}
