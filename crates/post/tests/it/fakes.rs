//! In-memory stand-ins for the user directory and the social graph, shared by the tests.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use agora_client::Caller;
use agora_kit::Error;
use agora_post::domain::Relation;
use agora_post::{Directory, DirectoryEntry, Relations};
use async_trait::async_trait;
use parking_lot::Mutex;

/// Accounts by lower-case username.
pub struct FakeDirectory(pub HashMap<String, DirectoryEntry>);

#[async_trait]
impl Directory for FakeDirectory {
    async fn lookup(&self, usernames: &[String]) -> Result<Vec<DirectoryEntry>, Error> {
        Ok(usernames.iter().filter_map(|u| self.0.get(u).cloned()).collect())
    }
}

#[derive(Default)]
pub struct FakeGraph {
    /// (follower, followed)
    pub follows: Mutex<HashSet<(i64, i64)>>,
    /// (blocker, blocked)
    pub blocks: Mutex<HashSet<(i64, i64)>>,
    pub calls: AtomicUsize,
}

#[async_trait]
impl Relations for FakeGraph {
    async fn relations(&self, viewer: &Caller, ids: &[i64]) -> Result<HashMap<i64, Relation>, Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let me = viewer.claims.account_id().unwrap();
        let follows = self.follows.lock();
        let blocks = self.blocks.lock();
        Ok(ids
            .iter()
            .map(|id| {
                (
                    *id,
                    Relation {
                        following: follows.contains(&(me, *id)),
                        blocking: blocks.contains(&(me, *id)),
                        blocked_by: blocks.contains(&(*id, me)),
                    },
                )
            })
            .collect())
    }
}

pub const ISS: &str = "https://social.example";

// The cast of every test.
pub const AUTHOR: i64 = 1;
pub const STRANGER: i64 = 2;
pub const MENTIONED: i64 = 3;
pub const FOLLOWER: i64 = 4;
pub const BLOCKED: i64 = 5;

/// The cast by username (`@Author`, `@stranger`, `@Mentioned`, `@follower`, `@blocked`).
pub fn directory() -> FakeDirectory {
    FakeDirectory(
        [
            (AUTHOR, "Author"),
            (STRANGER, "stranger"),
            (MENTIONED, "Mentioned"),
            (FOLLOWER, "follower"),
            (BLOCKED, "blocked"),
        ]
        .into_iter()
        .map(|(id, name)| (name.to_lowercase(), DirectoryEntry { account_id: id, username: name.into() }))
        .collect(),
    )
}

/// FOLLOWER follows AUTHOR; AUTHOR blocks BLOCKED.
pub fn graph() -> FakeGraph {
    let graph = FakeGraph::default();
    graph.follows.lock().insert((FOLLOWER, AUTHOR));
    graph.blocks.lock().insert((AUTHOR, BLOCKED));
    graph
}

/// A token for `account` (None: an application-only token) signed by `key`.
pub fn mint(key: &agora_kit::jwt::SigningKey, account: Option<i64>, scope: &str) -> String {
    let now = agora_kit::time::now_ms() / 1000;
    key.sign(&agora_kit::jwt::Claims {
        iss: ISS.into(),
        aud: ISS.into(),
        sub: account.map(|a| a.to_string()),
        exp: now + 600,
        iat: now,
        jti: rand::random::<u32>().to_string(),
        sid: rand::random::<u32>().to_string(),
        cid: "test-app".into(),
        scope: scope.into(),
        role: account.map(|_| "user".into()),
    })
    .unwrap()
}
