//! Offline generators for DeathStarBench's socialNetwork data: the follow graph, status texts and
//! the operation mix. Pure functions of a seeded RNG, so they are unit-tested without a server.

use std::collections::HashSet;

use rand::Rng;
use rand::SeedableRng;
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;

/// Length of the random part of a composed status, as in DeathStarBench's compose-post.
pub const TEXT_CHARS: usize = 256;
/// Mentions and links per composed status: 1 to this many of each.
pub const MAX_MENTIONS: usize = 5;
pub const MAX_LINKS: usize = 5;

/// Exponent of the out-degree distribution (P(k) ~ k^-ALPHA). 2.5 is in the range measured on
/// real social graphs and keeps the mean finite.
const OUT_DEGREE_ALPHA: f64 = 2.5;
/// Exponent of the popularity weights used to pick whom to follow: rank r is chosen with weight
/// (r + 1)^-POPULARITY_S, which gives the few very-followed accounts of preferential attachment.
const POPULARITY_S: f64 = 0.8;

/// A follow graph over users `0..n`: `follows[i]` are the accounts user `i` follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowGraph {
    pub follows: Vec<Vec<u32>>,
}

impl FollowGraph {
    pub fn empty(n: usize) -> Self {
        Self { follows: vec![Vec::new(); n] }
    }

    pub fn edge_count(&self) -> usize {
        self.follows.iter().map(Vec::len).sum()
    }

    /// `followers[j]` are the users that follow `j`.
    pub fn followers(&self) -> Vec<Vec<u32>> {
        let mut followers = vec![Vec::new(); self.follows.len()];
        for (i, out) in self.follows.iter().enumerate() {
            for &j in out {
                if let Some(f) = followers.get_mut(j as usize) {
                    f.push(i as u32);
                }
            }
        }
        followers
    }

    /// Synthetic power-law graph: each user's out-degree is drawn from a discrete Pareto with
    /// the given mean (truncated at n - 1), and whom it follows is drawn from Zipf popularity
    /// weights over a seeded shuffle of the users, so in-degrees are skewed too.
    pub fn power_law(n: usize, mean_follows: f64, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        if n < 2 {
            return Self::empty(n);
        }
        // Pareto with minimum x_min has mean x_min * (a - 1) / (a - 2).
        let x_min = (mean_follows * (OUT_DEGREE_ALPHA - 2.0) / (OUT_DEGREE_ALPHA - 1.0)).max(0.5);
        let mut by_rank: Vec<u32> = (0..n as u32).collect();
        by_rank.shuffle(&mut rng);
        let mut cumulative = Vec::with_capacity(n);
        let mut total = 0.0;
        for r in 0..n {
            total += ((r + 1) as f64).powf(-POPULARITY_S);
            cumulative.push(total);
        }
        let follows = (0..n as u32)
            .map(|me| {
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                let k = ((x_min * u.powf(-1.0 / (OUT_DEGREE_ALPHA - 1.0))).round() as usize).clamp(1, n - 1);
                pick_followees(&mut rng, me, k, &by_rank, &cumulative, total)
            })
            .collect();
        Self { follows }
    }

    /// Makes `celebrity` followed by `followers` other users (as many as exist), on top of the
    /// edges already there. Existing edges are kept once.
    pub fn add_celebrity(&mut self, celebrity: u32, followers: usize, seed: u64) {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0xce1e_b417);
        let mut others: Vec<u32> = (0..self.follows.len() as u32).filter(|&u| u != celebrity).collect();
        others.shuffle(&mut rng);
        for &u in others.iter().take(followers) {
            if let Some(out) = self.follows.get_mut(u as usize)
                && !out.contains(&celebrity)
            {
                out.push(celebrity);
            }
        }
    }
}

/// Draws `k` distinct accounts other than `me` by popularity. Rejection sampling gives up after a
/// bounded number of draws (only reachable when k is close to n) and fills up in rank order.
fn pick_followees(rng: &mut SmallRng, me: u32, k: usize, by_rank: &[u32], cumulative: &[f64], total: f64) -> Vec<u32> {
    let mut chosen = HashSet::with_capacity(k);
    let mut out = Vec::with_capacity(k);
    let mut attempts = 0;
    while out.len() < k && attempts < 20 * k + 100 {
        attempts += 1;
        let x = rng.random_range(0.0..total);
        let rank = cumulative.partition_point(|&c| c <= x).min(by_rank.len() - 1);
        let u = by_rank[rank];
        if u != me && chosen.insert(u) {
            out.push(u);
        }
    }
    for &u in by_rank {
        if out.len() >= k {
            break;
        }
        if u != me && chosen.insert(u) {
            out.push(u);
        }
    }
    out
}

/// A status like DeathStarBench's compose-post: 256 random characters, then 1 to 5 mentions of
/// the given usernames and 1 to 5 `http://` links. Links are short (under the 23 characters
/// Mastodon counts per link) so the whole text stays under the 500-character limit.
pub fn compose_text(rng: &mut SmallRng, usernames: &[String]) -> String {
    let mut text = String::with_capacity(TEXT_CHARS + 2 * 25 * MAX_LINKS);
    text.push_str(&Alphanumeric.sample_string(rng, TEXT_CHARS));
    if !usernames.is_empty() {
        for _ in 0..rng.random_range(1..=MAX_MENTIONS) {
            text.push_str(" @");
            text.push_str(&usernames[rng.random_range(0..usernames.len())]);
        }
    }
    for _ in 0..rng.random_range(1..=MAX_LINKS) {
        text.push_str(" http://");
        text.push_str(&Alphanumeric.sample_string(rng, 10).to_ascii_lowercase());
        text.push_str(".com");
    }
    text
}

/// One operation of the socialNetwork mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MixOp {
    ComposePost,
    ReadHomeTimeline,
    ReadUserTimeline,
}

/// DeathStarBench's mix: 10 % compose, 60 % read home timeline, 30 % read user timeline.
pub fn pick_mix_op(rng: &mut SmallRng) -> MixOp {
    match rng.random_range(0..100u32) {
        0..10 => MixOp::ComposePost,
        10..70 => MixOp::ReadHomeTimeline,
        _ => MixOp::ReadUserTimeline,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn composed_text_has_256_random_chars_then_mentions_and_links() {
        let names: Vec<String> = (0..50).map(|i| format!("bench_user{i}")).collect();
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..500 {
            let text = compose_text(&mut rng, &names);
            let (head, tail) = text.split_at(TEXT_CHARS);
            assert!(head.chars().all(|c| c.is_ascii_alphanumeric()), "{head}");
            assert!(tail.starts_with(' '), "{tail}");
            let words: Vec<&str> = tail.split_whitespace().collect();
            let mentions: Vec<&&str> = words.iter().filter(|w| w.starts_with('@')).collect();
            let links = words.iter().filter(|w| w.starts_with("http://")).count();
            assert!((1..=MAX_MENTIONS).contains(&mentions.len()), "{} mentions", mentions.len());
            assert!((1..=MAX_LINKS).contains(&links), "{links} links");
            assert_eq!(mentions.len() + links, words.len());
            for m in mentions {
                assert!(names.iter().any(|n| n == &m[1..]), "{m} is not a registered user");
            }
            // Every link counts as 23 characters on a Mastodon server; ours are shorter anyway.
            assert!(text.chars().count() <= 500, "{} chars", text.chars().count());
        }
    }

    #[test]
    fn mention_and_link_counts_cover_the_whole_range() {
        let names = vec!["alice".to_owned()];
        let mut rng = SmallRng::seed_from_u64(2);
        let mut seen = HashSet::new();
        for _ in 0..2000 {
            let text = compose_text(&mut rng, &names);
            seen.insert(text.matches(" @").count());
        }
        assert_eq!(seen, (1..=MAX_MENTIONS).collect());
    }

    #[test]
    fn power_law_graph_is_deterministic_for_a_seed() {
        let a = FollowGraph::power_law(500, 15.0, 42);
        let b = FollowGraph::power_law(500, 15.0, 42);
        let c = FollowGraph::power_law(500, 15.0, 43);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn power_law_graph_has_no_self_follows_nor_duplicates() {
        for (n, mean) in [(2, 15.0), (10, 15.0), (1000, 15.0), (300, 150.0)] {
            let g = FollowGraph::power_law(n, mean, 7);
            assert_eq!(g.follows.len(), n);
            for (i, out) in g.follows.iter().enumerate() {
                assert!(!out.is_empty(), "user {i} follows nobody");
                assert!(!out.contains(&(i as u32)), "user {i} follows itself");
                assert!(out.iter().all(|&j| (j as usize) < n));
                let distinct: HashSet<u32> = out.iter().copied().collect();
                assert_eq!(distinct.len(), out.len(), "user {i} has duplicate edges");
            }
        }
    }

    #[test]
    fn power_law_degrees_are_skewed_with_the_requested_mean() {
        let n = 10_000;
        let g = FollowGraph::power_law(n, 15.0, 3);
        let mean = g.edge_count() as f64 / n as f64;
        assert!((10.0..=20.0).contains(&mean), "mean out-degree {mean}");

        let mut out: Vec<usize> = g.follows.iter().map(Vec::len).collect();
        out.sort_unstable();
        let median = out[n / 2];
        let max_out = out[n - 1];
        assert!(median < 15, "median out-degree {median} should sit below the mean");
        assert!(max_out > 10 * median, "max out-degree {max_out} vs median {median}");

        let mut inn: Vec<usize> = g.followers().iter().map(Vec::len).collect();
        inn.sort_unstable();
        let top_percent: usize = inn[n - n / 100..].iter().sum();
        // In a uniform graph the top 1 % of accounts would hold little more than 1 % of follows.
        assert!(top_percent * 10 > g.edge_count(), "top 1 % hold {top_percent} of {} follows", g.edge_count());
    }

    #[test]
    fn celebrity_gets_the_requested_followers_once() {
        let mut g = FollowGraph::power_law(2000, 12.0, 9);
        g.add_celebrity(0, 1500, 9);
        let followers = g.followers();
        assert!(followers[0].len() >= 1500, "{} followers", followers[0].len());
        assert!(!g.follows[0].contains(&0));
        for out in &g.follows {
            let distinct: HashSet<u32> = out.iter().copied().collect();
            assert_eq!(distinct.len(), out.len());
        }
        // Asking for more followers than there are users caps at everyone else.
        let mut small = FollowGraph::empty(5);
        small.add_celebrity(2, 100, 1);
        assert_eq!(small.followers()[2].len(), 4);
    }

    #[test]
    fn mix_proportions_match_deathstarbench() {
        let mut rng = SmallRng::seed_from_u64(5);
        let n = 100_000;
        let mut counts: HashMap<MixOp, usize> = HashMap::new();
        for _ in 0..n {
            *counts.entry(pick_mix_op(&mut rng)).or_default() += 1;
        }
        let share = |op| counts.get(&op).copied().unwrap_or(0) as f64 / n as f64;
        assert!((share(MixOp::ComposePost) - 0.10).abs() < 0.01, "{}", share(MixOp::ComposePost));
        assert!((share(MixOp::ReadHomeTimeline) - 0.60).abs() < 0.01, "{}", share(MixOp::ReadHomeTimeline));
        assert!((share(MixOp::ReadUserTimeline) - 0.30).abs() < 0.01, "{}", share(MixOp::ReadUserTimeline));
    }
}
