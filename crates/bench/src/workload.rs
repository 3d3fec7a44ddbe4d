//! Workloads: a setup phase (not measured) that prepares state through the public API, then a
//! stream of operations, one HTTP request each.
//!
//! The socialNetwork workloads follow DeathStarBench: compose-post, read-home-timeline,
//! read-user-timeline and their 10/60/30 mix, over registered users joined by a follow graph
//! (`social::FollowGraph`) with a few seeded statuses each.
//!
//! To add a workload: add a `WorkloadKind` variant, a struct implementing `Workload`, and a
//! `prepare` arm that builds the state it needs (users, follows, posts) with the helpers in
//! `setup`.

use std::sync::Arc;

use anyhow::Context as _;
use clap::ValueEnum;
use rand::Rng;
use rand::rngs::SmallRng;
use reqwest::{Method, StatusCode};

use crate::cli::GraphKind;
use crate::setup::{Setup, User};
use crate::social::{FollowGraph, MixOp, compose_text, pick_mix_op};

/// One operation, ready to be sent. The runner owns the client and the base URL.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: String,
    pub bearer: Option<Arc<str>>,
    /// Form body (`application/x-www-form-urlencoded`); empty means no body.
    pub form: Vec<(&'static str, String)>,
}

impl Operation {
    pub fn get(path: impl Into<String>) -> Self {
        Self { method: Method::GET, path: path.into(), bearer: None, form: Vec::new() }
    }

    pub fn post_form(path: impl Into<String>, form: Vec<(&'static str, String)>) -> Self {
        Self { method: Method::POST, path: path.into(), bearer: None, form }
    }

    pub fn bearer(mut self, token: &Arc<str>) -> Self {
        self.bearer = Some(Arc::clone(token));
        self
    }
}

/// A prepared workload. `request` is called once per operation on the hot path: keep it cheap
/// and free of I/O.
pub trait Workload: Send + Sync + 'static {
    fn request(&self, rng: &mut SmallRng) -> Operation;

    /// Whether a response status counts as success for this workload.
    fn is_success(&self, status: StatusCode) -> bool {
        status == StatusCode::OK
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadKind {
    /// `GET /api/v1/accounts/verify_credentials` as a random registered user.
    VerifyCredentials,
    /// `POST /api/v1/statuses`: 256 random characters, 1-5 @mentions of registered users and
    /// 1-5 http:// links, as a random user.
    ComposePost,
    /// `GET /api/v1/timelines/home?limit=10` as a random user, from the top or from a random
    /// seeded status (`max_id`) of someone they follow.
    ReadHomeTimeline,
    /// `GET /api/v1/accounts/:id/statuses?limit=10` of a random user, from the top or from a
    /// random one of their seeded statuses (`max_id`).
    ReadUserTimeline,
    /// DeathStarBench's mix: 10 % compose-post, 60 % read-home-timeline, 30 % read-user-timeline.
    Mix,
    /// `GET /floor` on `agora-bench --serve-floor` (20 ids from Redis): the machine's floor.
    Floor,
}

/// How the socialNetwork state is built (from the command line).
#[derive(Debug, Clone)]
pub struct SocialOptions {
    pub graph: GraphKind,
    pub mean_follows: f64,
    pub celebrity_followers: u32,
    pub posts_per_user: u32,
    pub seed: u64,
    pub state: Option<std::path::PathBuf>,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::VerifyCredentials => "verify-credentials",
            WorkloadKind::ComposePost => "compose-post",
            WorkloadKind::ReadHomeTimeline => "read-home-timeline",
            WorkloadKind::ReadUserTimeline => "read-user-timeline",
            WorkloadKind::Mix => "mix",
            WorkloadKind::Floor => "floor",
        }
    }

    /// Setup phase: builds whatever server-side state the workload needs.
    pub async fn prepare(self, setup: &Setup, opts: &SocialOptions) -> anyhow::Result<Arc<dyn Workload>> {
        if self == WorkloadKind::Floor {
            return Ok(Arc::new(Floor));
        }
        if self == WorkloadKind::VerifyCredentials {
            let users = setup.register_users().await?;
            let w = VerifyCredentials { users };
            setup.smoke_test(&w).await?;
            return Ok(Arc::new(w));
        }
        let social = Arc::new(Social::load_or_prepare(setup, opts).await?);
        self.over(social, setup).await
    }

    /// The workload over already-built social state (checked with one request).
    pub async fn over(self, social: Arc<Social>, setup: &Setup) -> anyhow::Result<Arc<dyn Workload>> {
        let w: Arc<dyn Workload> = match self {
            WorkloadKind::VerifyCredentials => Arc::new(VerifyCredentials { users: social.users.clone() }),
            WorkloadKind::Floor => Arc::new(Floor),
            WorkloadKind::ComposePost => Arc::new(ComposePost(social)),
            WorkloadKind::ReadHomeTimeline => Arc::new(ReadHomeTimeline(social)),
            WorkloadKind::ReadUserTimeline => Arc::new(ReadUserTimeline(social)),
            WorkloadKind::Mix => {
                // Each kind is smoke-tested on its own so a broken endpoint is named.
                for part in [WorkloadKind::ComposePost, WorkloadKind::ReadHomeTimeline, WorkloadKind::ReadUserTimeline]
                {
                    Box::pin(part.over(Arc::clone(&social), setup)).await?;
                }
                Arc::new(Mix(social))
            }
        };
        setup.smoke_test(&*w).await?;
        Ok(w)
    }
}

/// Server-side state of the socialNetwork workloads, as built during setup: users (index 0 is
/// the celebrity when there is one), who follows whom, and the seeded statuses of each user.
pub struct Social {
    pub users: Vec<User>,
    pub usernames: Vec<String>,
    pub graph: FollowGraph,
    /// Seeded status ids per user, oldest first.
    pub statuses: Vec<Vec<String>>,
    /// Every seeded status id, for timelines whose owner has none in reach.
    pub all_statuses: Vec<String>,
    pub celebrity: Option<usize>,
}

impl Social {
    /// The state in `opts.state` when that file exists; otherwise a fresh setup, saved there.
    pub async fn load_or_prepare(setup: &Setup, opts: &SocialOptions) -> anyhow::Result<Self> {
        if let Some(path) = &opts.state
            && path.exists()
        {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let social = Self::from_json(&serde_json::from_str(&text)?)
                .with_context(|| format!("{} is not an agora-bench state file", path.display()))?;
            eprintln!("setup: reusing {} accounts from {}", social.users.len(), path.display());
            return Ok(social);
        }
        let social = Self::prepare(setup, opts).await?;
        if let Some(path) = &opts.state {
            std::fs::write(path, social.to_json().to_string())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(social)
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "users": self.users.iter().map(|u| serde_json::json!([u.username, u.id, &*u.token])).collect::<Vec<_>>(),
            "follows": self.graph.follows,
            "statuses": self.statuses,
            "celebrity": self.celebrity,
        })
    }

    fn from_json(v: &serde_json::Value) -> anyhow::Result<Self> {
        let field = |k: &str| v.get(k).cloned().ok_or_else(|| anyhow::anyhow!("missing {k}"));
        let users: Vec<(String, String, String)> = serde_json::from_value(field("users")?)?;
        let follows: Vec<Vec<u32>> = serde_json::from_value(field("follows")?)?;
        let statuses: Vec<Vec<String>> = serde_json::from_value(field("statuses")?)?;
        let celebrity: Option<usize> = serde_json::from_value(field("celebrity")?)?;
        anyhow::ensure!(follows.len() == users.len() && statuses.len() == users.len(), "inconsistent lengths");
        let users = users.into_iter().map(|(username, id, token)| User { username, id, token: token.into() }).collect();
        Ok(Self::new(users, FollowGraph { follows }, statuses, celebrity))
    }

    pub async fn prepare(setup: &Setup, opts: &SocialOptions) -> anyhow::Result<Self> {
        let users = setup.register_users().await?;
        let n = users.len();
        let mut graph = match opts.graph {
            GraphKind::None => FollowGraph::empty(n),
            GraphKind::PowerLaw => FollowGraph::power_law(n, opts.mean_follows, opts.seed),
        };
        let celebrity = (opts.celebrity_followers > 0 && n > 1).then_some(0);
        if let Some(c) = celebrity {
            graph.add_celebrity(c as u32, opts.celebrity_followers as usize, opts.seed);
            if (opts.celebrity_followers as usize) >= n {
                eprintln!(
                    "setup: --celebrity-followers {} needs more --users; the celebrity gets {} followers",
                    opts.celebrity_followers,
                    n - 1
                );
            }
        }
        eprintln!(
            "setup: follow graph {:?}: {} follows, {:.1} per user on average{}",
            opts.graph,
            graph.edge_count(),
            graph.edge_count() as f64 / n.max(1) as f64,
            celebrity.map(|_| format!(", celebrity @{}", users[0].username)).unwrap_or_default()
        );
        setup.follow_graph(&users, &graph).await?;
        let statuses = setup.seed_posts(&users, opts.posts_per_user).await?;
        // Each author's newest seed status and one of its followers.
        let mut first_follower = vec![None; n];
        for (reader, follows) in graph.follows.iter().enumerate() {
            for f in follows {
                if let Some(slot) = first_follower.get_mut(*f as usize) {
                    slot.get_or_insert(reader);
                }
            }
        }
        let pairs: Vec<(User, String)> = statuses
            .iter()
            .enumerate()
            .filter_map(|(author, ids)| {
                let reader = first_follower.get(author).copied().flatten()?;
                let newest = ids.iter().max_by_key(|id| id.parse::<i64>().unwrap_or(0))?;
                Some((users[reader].clone(), newest.clone()))
            })
            .collect();
        setup.settle(pairs, std::time::Duration::from_secs(300)).await?;
        // The follows' events (a new follow copies the author's recent statuses into the home)
        // are another topic, consumed on their own: probe it too. A few readers each follow one
        // more author; once every one of those homes holds the author's newest status, the
        // follows before them are done too. The probes stay in the graph.
        let mut probes = Vec::new();
        let step = (n / PROBE_FOLLOWS).max(1);
        for reader in (0..n).step_by(step).take(PROBE_FOLLOWS) {
            let author = (1..n)
                .map(|k| (reader + k * 7919) % n)
                .find(|a| *a != reader && !graph.follows[reader].contains(&(*a as u32)) && !statuses[*a].is_empty());
            if let Some(author) = author {
                probes.push((reader, author));
            }
        }
        let mut pairs = Vec::new();
        for (reader, author) in probes {
            setup.follow(&users[reader], &users[author]).await?;
            graph.follows[reader].push(author as u32);
            if let Some(newest) = statuses[author].iter().max_by_key(|id| id.parse::<i64>().unwrap_or(0)) {
                pairs.push((users[reader].clone(), newest.clone()));
            }
        }
        setup.settle(pairs, std::time::Duration::from_secs(300)).await?;
        Ok(Self::new(users, graph, statuses, celebrity))
    }

    pub fn new(users: Vec<User>, graph: FollowGraph, statuses: Vec<Vec<String>>, celebrity: Option<usize>) -> Self {
        let usernames = users.iter().map(|u| u.username.clone()).collect();
        let all_statuses = statuses.iter().flatten().cloned().collect();
        Self { users, usernames, graph, statuses, all_statuses, celebrity }
    }

    fn random_user(&self, rng: &mut SmallRng) -> usize {
        rng.random_range(0..self.users.len())
    }

    fn compose(&self, rng: &mut SmallRng) -> Operation {
        let author = &self.users[self.random_user(rng)];
        let form = vec![("status", compose_text(rng, &self.usernames)), ("visibility", "public".to_owned())];
        Operation::post_form("/api/v1/statuses", form).bearer(&author.token)
    }

    /// Half the reads start at the top of the timeline (what an app opening does), half at a
    /// random older status (scrolling), like DeathStarBench's random start offset.
    fn read_home(&self, rng: &mut SmallRng) -> Operation {
        let reader = self.random_user(rng);
        let mut path = "/api/v1/timelines/home?limit=10".to_owned();
        if rng.random_bool(0.5) {
            let followees = self.graph.follows.get(reader).map(Vec::as_slice).unwrap_or_default();
            let from_followee = (!followees.is_empty())
                .then(|| followees[rng.random_range(0..followees.len())] as usize)
                .and_then(|f| self.statuses.get(f))
                .filter(|s| !s.is_empty());
            let pool = from_followee.unwrap_or(&self.all_statuses);
            if !pool.is_empty() {
                path.push_str("&max_id=");
                path.push_str(&pool[rng.random_range(0..pool.len())]);
            }
        }
        Operation::get(path).bearer(&self.users[reader].token)
    }

    fn read_user(&self, rng: &mut SmallRng) -> Operation {
        let reader = self.random_user(rng);
        let owner = self.random_user(rng);
        let mut path = format!("/api/v1/accounts/{}/statuses?limit=10", self.users[owner].id);
        let own = self.statuses.get(owner).map(Vec::as_slice).unwrap_or_default();
        if !own.is_empty() && rng.random_bool(0.5) {
            path.push_str("&max_id=");
            path.push_str(&own[rng.random_range(0..own.len())]);
        }
        Operation::get(path).bearer(&self.users[reader].token)
    }
}

pub struct ComposePost(Arc<Social>);

impl Workload for ComposePost {
    fn request(&self, rng: &mut SmallRng) -> Operation {
        self.0.compose(rng)
    }
}

/// Readers who follow one more author after setup, to see when the follows' backfill is done
/// (more than the bus has partitions, so every partition is probed).
const PROBE_FOLLOWS: usize = 24;

pub struct ReadHomeTimeline(Arc<Social>);

impl Workload for ReadHomeTimeline {
    fn request(&self, rng: &mut SmallRng) -> Operation {
        self.0.read_home(rng)
    }
}

pub struct ReadUserTimeline(Arc<Social>);

impl Workload for ReadUserTimeline {
    fn request(&self, rng: &mut SmallRng) -> Operation {
        self.0.read_user(rng)
    }
}

pub struct Mix(Arc<Social>);

impl Workload for Mix {
    fn request(&self, rng: &mut SmallRng) -> Operation {
        match pick_mix_op(rng) {
            MixOp::ComposePost => self.0.compose(rng),
            MixOp::ReadHomeTimeline => self.0.read_home(rng),
            MixOp::ReadUserTimeline => self.0.read_user(rng),
        }
    }
}

/// Reads the caller's own account: the cheapest authenticated round trip through the gateway
/// and the user service.
pub struct VerifyCredentials {
    users: Vec<User>,
}

impl Workload for VerifyCredentials {
    fn request(&self, rng: &mut SmallRng) -> Operation {
        let user = &self.users[rng.random_range(0..self.users.len())];
        Operation::get("/api/v1/accounts/verify_credentials").bearer(&user.token)
    }
}

/// The floor server's one request.
pub struct Floor;

impl Workload for Floor {
    fn request(&self, _: &mut SmallRng) -> Operation {
        Operation::get("/floor")
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn verify_credentials_uses_every_user() {
        let users: Vec<User> = (0..4)
            .map(|i| User { username: format!("u{i}"), id: i.to_string(), token: Arc::from(format!("t{i}").as_str()) })
            .collect();
        let w = VerifyCredentials { users };
        let mut rng = SmallRng::seed_from_u64(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let op = w.request(&mut rng);
            assert_eq!(op.method, Method::GET);
            assert_eq!(op.path, "/api/v1/accounts/verify_credentials");
            assert!(op.form.is_empty());
            seen.insert(op.bearer.map(|t| t.to_string()).unwrap_or_default());
        }
        assert_eq!(seen.len(), 4);
        assert!(w.is_success(StatusCode::OK));
        assert!(!w.is_success(StatusCode::UNAUTHORIZED));
    }

    fn social(n: usize) -> Social {
        let users: Vec<User> = (0..n)
            .map(|i| User {
                username: format!("u{i}"),
                id: format!("{}", 1000 + i),
                token: Arc::from(format!("t{i}").as_str()),
            })
            .collect();
        let graph = FollowGraph::power_law(n, 3.0, 1);
        let statuses = (0..n).map(|i| (0..3).map(|k| format!("{}", 10 * i + k)).collect()).collect();
        Social::new(users, graph, statuses, None)
    }

    #[test]
    fn compose_post_sends_a_public_status_form() {
        let w = ComposePost(Arc::new(social(10)));
        let mut rng = SmallRng::seed_from_u64(1);
        let op = w.request(&mut rng);
        assert_eq!(op.method, Method::POST);
        assert_eq!(op.path, "/api/v1/statuses");
        assert!(op.bearer.is_some());
        let text = op.form.iter().find(|(k, _)| *k == "status").map(|(_, v)| v.clone()).unwrap_or_default();
        assert!(text.len() > 256 && text.contains(" @u") && text.contains(" http://"), "{text}");
        assert!(op.form.contains(&("visibility", "public".to_owned())));
        assert!(w.is_success(StatusCode::OK));
    }

    #[test]
    fn timeline_reads_use_known_ids_as_offsets() {
        let s = Arc::new(social(20));
        let mut rng = SmallRng::seed_from_u64(2);
        let (mut top, mut offset) = (0, 0);
        for _ in 0..400 {
            let op = ReadHomeTimeline(Arc::clone(&s)).request(&mut rng);
            assert!(op.path.starts_with("/api/v1/timelines/home?limit=10"), "{}", op.path);
            match op.path.split_once("&max_id=") {
                Some((_, id)) => {
                    assert!(s.all_statuses.iter().any(|k| k == id), "{id}");
                    offset += 1;
                }
                None => top += 1,
            }
            let op = ReadUserTimeline(Arc::clone(&s)).request(&mut rng);
            let rest = op.path.strip_prefix("/api/v1/accounts/").unwrap_or_default();
            let (id, query) = rest.split_once("/statuses?limit=10").unwrap_or_default();
            let owner = s.users.iter().position(|u| u.id == id);
            assert!(owner.is_some(), "{}", op.path);
            if let (Some(o), Some(max)) = (owner, query.strip_prefix("&max_id=")) {
                assert!(s.statuses[o].iter().any(|k| k == max), "{} is not one of the owner's statuses", op.path);
            }
        }
        assert!(top > 100 && offset > 100, "top {top}, offset {offset}");
    }

    #[test]
    fn mix_issues_all_three_operations_in_proportion() {
        let w = Mix(Arc::new(social(10)));
        let mut rng = SmallRng::seed_from_u64(3);
        let n = 20_000;
        let (mut compose, mut home, mut user) = (0, 0, 0);
        for _ in 0..n {
            let op = w.request(&mut rng);
            if op.method == Method::POST {
                compose += 1;
            } else if op.path.starts_with("/api/v1/timelines/home") {
                home += 1;
            } else {
                user += 1;
            }
        }
        let share = |c: i32| f64::from(c) / f64::from(n);
        assert!((share(compose) - 0.1).abs() < 0.015, "compose {}", share(compose));
        assert!((share(home) - 0.6).abs() < 0.015, "home {}", share(home));
        assert!((share(user) - 0.3).abs() < 0.015, "user {}", share(user));
    }
}
