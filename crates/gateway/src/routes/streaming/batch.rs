//! Home renders of one status for many accounts at once. A status that enters a thousand homes
//! reaches this gateway as a thousand backplane events in a burst; each account's render would
//! be its own post-service call and read. Instead the accounts that want one status (for one
//! event) queue for it: the first starts a call at once, those that arrive while it is out go
//! together in the next, up to [`BATCH_MAX`] per call. Nothing waits for a timer, so a lone
//! viewer pays no more than before, and a burst costs a handful of calls. The post service
//! still decides what each viewer sees, from each viewer's own token.

use std::collections::HashMap;

use agora_kit::grpc::request;
use agora_proto::post::v1 as ppb;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::{Render, Rendered, to_json};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Viewers per post-service call (its own bound is 500).
const BATCH_MAX: usize = 256;

type Key = (&'static str, i64);

struct Waiter {
    token: String,
    tx: oneshot::Sender<Render>,
}

/// The queues, one per status and event while a call for it is out.
#[derive(Default)]
pub(super) struct HomeBatches {
    pending: Mutex<HashMap<Key, Vec<Waiter>>>,
}

impl HomeBatches {
    /// Status `id` as `c` sees it in their home, rendered for `event`, or None when the post
    /// service hides it from them.
    pub(super) async fn render(&self, st: &AppState, event: &'static str, id: i64, c: &Caller) -> Render {
        let (tx, rx) = oneshot::channel();
        let key = (event, id);
        let waiter = Waiter { token: c.token.clone(), tx };
        let lead = {
            let mut pending = self.pending.lock();
            match pending.get_mut(&key) {
                Some(queue) => {
                    queue.push(waiter);
                    false
                }
                None => {
                    pending.insert(key, vec![waiter]);
                    true
                }
            }
        };
        if lead {
            let st = st.clone();
            let span = tracing::info_span!("stream_home_batches", status_id = id, event);
            tokio::spawn(drive(st, key).instrument(span));
        }
        rx.await.unwrap_or_else(|_| Err(ApiError::internal()))
    }
}

/// Removes the queue if its driver ends early (a panic), so later viewers start a new one
/// rather than wait on a queue nobody takes; their waiters' senders drop, and they get an error.
struct Driving<'a> {
    homes: &'a HomeBatches,
    key: Key,
    done: bool,
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.homes.pending.lock().remove(&self.key);
        }
    }
}

/// Takes the queue of `key` a batch at a time until it is empty, then removes it (under the
/// lock, so a viewer arriving then starts a new one).
async fn drive(st: AppState, key: Key) {
    let homes = &st.streams.homes;
    let mut guard = Driving { homes, key, done: false };
    loop {
        let batch: Vec<Waiter> = {
            let mut pending = homes.pending.lock();
            let Some(queue) = pending.get_mut(&key) else { break };
            if queue.is_empty() {
                pending.remove(&key);
                break;
            }
            let n = queue.len().min(BATCH_MAX);
            queue.drain(..n).collect()
        };
        metrics::histogram!("agora_gateway_stream_batch_viewers").record(batch.len() as f64);
        let (tokens, senders): (Vec<String>, Vec<oneshot::Sender<Render>>) =
            batch.into_iter().map(|w| (w.token, w.tx)).unzip();
        match fetch(&st, key.1, tokens).await {
            Ok(renders) => {
                for (tx, r) in senders.into_iter().zip(renders) {
                    let _ = tx.send(Ok(r));
                }
            }
            Err(e) => {
                for tx in senders {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
    }
    guard.done = true;
}

/// One post-service call for `tokens`' viewers, and one render per distinct set of marks (most
/// viewers have none, so most share one JSON text). Aligned with `tokens`.
async fn fetch(st: &AppState, id: i64, tokens: Vec<String>) -> Result<Vec<Option<Rendered>>, ApiError> {
    let n = tokens.len();
    let got = st
        .post
        .clone()
        .get_status_for_viewers(request(ppb::GetStatusForViewersRequest { id, tokens }, None))
        .await?
        .into_inner();
    let Some(base) = got.status else { return Ok(vec![None; n]) };
    let authors = super::authors_of(&base);
    let marks = |v: &ppb::ViewerView| (v.favourited, v.reblogged, v.bookmarked, v.pinned);
    let mut distinct: Vec<Marks> = got.views.iter().filter(|v| v.visible).map(marks).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let variants: Vec<ppb::Status> = distinct.iter().map(|m| marked(&base, *m)).collect();
    let stats = got.author_stats.into_iter().map(|a| (a.id, a)).collect();
    let entities = crate::render::render_statuses(st, &variants, Some(stats)).await?;
    if entities.len() != variants.len() {
        // The author is gone (a deleted account): nobody sees it.
        return Ok(vec![None; n]);
    }
    let mut rendered: Vec<(Marks, Rendered)> = Vec::with_capacity(distinct.len());
    for (m, e) in distinct.into_iter().zip(entities) {
        rendered.push((m, Rendered { json: to_json(&e)?, authors: authors.clone() }));
    }
    let view = |v: &ppb::ViewerView| {
        let m = marks(v);
        v.visible.then(|| rendered.iter().find(|(k, _)| *k == m).map(|(_, r)| r.clone())).flatten()
    };
    let out: Vec<Option<Rendered>> = got.views.iter().map(view).collect();
    Ok(if out.len() == n { out } else { vec![None; n] })
}

/// A viewer's marks: favourited, reblogged, bookmarked, pinned.
type Marks = (bool, bool, bool, bool);

/// `base` with one viewer's marks, on a reblog's original too (as the post service marks it).
fn marked(base: &ppb::Status, (favourited, reblogged, bookmarked, pinned): Marks) -> ppb::Status {
    let mark = |s: &mut ppb::Status| {
        s.favourited = favourited;
        s.reblogged = reblogged;
        s.bookmarked = bookmarked;
        s.pinned = pinned;
    };
    let mut s = base.clone();
    mark(&mut s);
    if let Some(r) = s.reblog.as_deref_mut() {
        mark(r);
    }
    s
}
