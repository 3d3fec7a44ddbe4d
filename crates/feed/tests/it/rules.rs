//! The timeline rules, driven by events fed straight to the handler, with fake graph and post
//! services. Accounts are small numbers; status ids come from the world.

use std::time::Duration;

use agora_feed::FeedSettings;
use agora_feed::domain::{EntryFilter, TimelineKey, Window};
use agora_feed::feed::Viewer;
use agora_proto::events::v1::StatusPosted;

use crate::fakes::{World, token};

const ALICE: i64 = 1;
const BOB: i64 = 2;
const CAROL: i64 = 3;
const DAVE: i64 = 4;
const ERIN: i64 = 5;

fn anyone() -> Viewer {
    Viewer::default()
}

fn viewer(account: i64) -> Viewer {
    Viewer { account_id: Some(account), token: Some(token(account)) }
}

fn window(limit: usize) -> Window {
    Window::newest(limit)
}

async fn public(w: &World) -> Vec<i64> {
    w.feed.public(&anyone(), window(40), false).await.unwrap()
}

async fn account_tl(w: &World, of: i64, who: Viewer) -> Vec<i64> {
    w.feed.account(&who, of, window(40), EntryFilter::default()).await.unwrap()
}

#[tokio::test]
async fn a_status_reaches_followers_and_its_author_but_not_strangers() {
    let w = World::start().await;
    w.follow(BOB, ALICE).await;
    let s = w.post(ALICE).await;
    assert_eq!(w.home(BOB).await, vec![s]);
    assert_eq!(w.home(ALICE).await, vec![s]);
    assert!(w.home(CAROL).await.is_empty());
    assert_eq!(public(&w).await, vec![s]);
    assert_eq!(account_tl(&w, ALICE, anyone()).await, vec![s]);
}

#[tokio::test]
async fn private_statuses_reach_only_followers_and_stay_off_public_timelines() {
    let w = World::start().await;
    w.follow(BOB, ALICE).await;
    let s = w
        .post_with(StatusPosted {
            account_id: ALICE,
            visibility: "private".into(),
            tags: vec!["secret".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(w.home(BOB).await, vec![s]);
    assert!(w.home(CAROL).await.is_empty());
    assert!(public(&w).await.is_empty());
    assert!(w.feed.tag(&anyone(), "secret", window(20), false).await.unwrap().is_empty());
    // The account timeline shows it to followers and the author only.
    assert_eq!(account_tl(&w, ALICE, viewer(BOB)).await, vec![s]);
    assert_eq!(account_tl(&w, ALICE, viewer(ALICE)).await, vec![s]);
    assert!(account_tl(&w, ALICE, viewer(CAROL)).await.is_empty());
    assert!(account_tl(&w, ALICE, anyone()).await.is_empty());
}

#[tokio::test]
async fn unlisted_statuses_reach_followers_but_not_public_or_tag_timelines() {
    let w = World::start().await;
    w.follow(BOB, ALICE).await;
    let s = w
        .post_with(StatusPosted {
            account_id: ALICE,
            visibility: "unlisted".into(),
            tags: vec!["quiet".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(w.home(BOB).await, vec![s]);
    assert!(public(&w).await.is_empty());
    assert!(w.feed.tag(&anyone(), "quiet", window(20), false).await.unwrap().is_empty());
    assert_eq!(account_tl(&w, ALICE, anyone()).await, vec![s]);
}

#[tokio::test]
async fn direct_statuses_reach_only_mentioned_accounts() {
    let w = World::start().await;
    w.follow(BOB, ALICE).await;
    w.follow(CAROL, ALICE).await;
    let s = w
        .post_with(StatusPosted {
            account_id: ALICE,
            visibility: "direct".into(),
            mention_ids: vec![CAROL, DAVE],
            ..Default::default()
        })
        .await;
    assert_eq!(w.home(ALICE).await, vec![s]);
    assert_eq!(w.home(CAROL).await, vec![s]);
    assert_eq!(w.home(DAVE).await, vec![s]);
    assert!(w.home(BOB).await.is_empty(), "a follower who is not mentioned never sees a direct message");
    assert!(public(&w).await.is_empty());
    assert!(account_tl(&w, ALICE, viewer(ALICE)).await.is_empty());
}

#[tokio::test]
async fn a_reply_reaches_only_followers_of_both_and_the_replied_to_account_if_it_follows() {
    let w = World::start().await;
    // Bob follows Alice and Carol; Dave follows only Alice; Carol follows Alice.
    w.follow(BOB, ALICE).await;
    w.follow(BOB, CAROL).await;
    w.follow(DAVE, ALICE).await;
    w.follow(CAROL, ALICE).await;
    let original = w.post(CAROL).await;
    let reply = w
        .post_with(StatusPosted {
            account_id: ALICE,
            visibility: "public".into(),
            in_reply_to_id: original,
            in_reply_to_account_id: CAROL,
            ..Default::default()
        })
        .await;
    assert!(w.home(BOB).await.contains(&reply));
    assert!(w.home(CAROL).await.contains(&reply));
    assert!(!w.home(DAVE).await.contains(&reply), "Dave does not follow Carol");
    assert!(w.home(ALICE).await.contains(&reply));
    // A self-reply (a thread) fans out normally.
    let thread = w
        .post_with(StatusPosted {
            account_id: ALICE,
            visibility: "public".into(),
            in_reply_to_id: reply,
            in_reply_to_account_id: ALICE,
            ..Default::default()
        })
        .await;
    assert!(w.home(DAVE).await.contains(&thread));
}

#[tokio::test]
async fn a_reblog_appears_once_and_never_reblogs_your_own_status_back_to_you() {
    let w = World::start().await;
    w.follow(BOB, ALICE).await;
    w.follow(BOB, CAROL).await;
    w.follow(BOB, DAVE).await;
    w.follow(ALICE, CAROL).await;
    let original = w.post(ALICE).await;
    let by_carol = w.reblog(CAROL, original, ALICE).await;
    let by_dave = w.reblog(DAVE, original, ALICE).await;
    assert_eq!(w.home(BOB).await, vec![original], "Bob already has the original");
    assert!(!w.home(ALICE).await.contains(&by_carol), "Alice's own status is not reblogged back to her");

    // Erin follows Carol and Dave but not Alice: she sees the first reblog only.
    let w2 = World::start().await;
    w2.follow(ERIN, CAROL).await;
    w2.follow(ERIN, DAVE).await;
    let original = w2.post(ALICE).await;
    let first = w2.reblog(CAROL, original, ALICE).await;
    w2.reblog(DAVE, original, ALICE).await;
    assert_eq!(w2.home(ERIN).await, vec![first]);
    // Reblogs stay off the public timeline but show on the reblogger's account timeline.
    assert_eq!(public(&w2).await, vec![original]);
    assert_eq!(account_tl(&w2, CAROL, anyone()).await, vec![first]);
    let _ = by_dave;
}

#[tokio::test]
async fn a_follow_without_reblogs_keeps_that_accounts_reblogs_out() {
    let w = World::start().await;
    w.graph.follow(BOB, CAROL);
    w.emit("graph.followed", &crate::fakes::graph_event(BOB, CAROL, false)).await;
    let original = w.post(ALICE).await;
    w.reblog(CAROL, original, ALICE).await;
    let own = w.post(CAROL).await;
    assert_eq!(w.home(BOB).await, vec![own]);
}

#[tokio::test]
async fn unfollow_removes_the_accounts_statuses_and_reblogs_from_home() {
    let w = World::start().await;
    w.follow(BOB, ALICE).await;
    w.follow(BOB, CAROL).await;
    let a = w.post(ALICE).await;
    let c = w.post(CAROL).await;
    let original = w.post(DAVE).await;
    let reblog = w.reblog(ALICE, original, DAVE).await;
    assert_eq!(w.home(BOB).await, vec![reblog, c, a]);
    w.unfollow(BOB, ALICE).await;
    assert_eq!(w.home(BOB).await, vec![c]);
    // New statuses no longer arrive.
    w.post(ALICE).await;
    assert_eq!(w.home(BOB).await, vec![c]);
}

#[tokio::test]
async fn block_removes_both_ways_and_mute_removes_for_the_muter() {
    let w = World::start().await;
    w.follow(BOB, ALICE).await;
    w.follow(ALICE, BOB).await;
    w.follow(BOB, CAROL).await;
    let a = w.post(ALICE).await;
    let b = w.post(BOB).await;
    let c = w.post(CAROL).await;
    let reblog_of_alice = w.reblog(CAROL, a, ALICE).await;
    assert!(w.home(ALICE).await.contains(&b));
    w.block(BOB, ALICE).await;
    let bob = w.stored_home(BOB).await;
    assert!(!bob.contains(&a) && !bob.contains(&reblog_of_alice));
    assert!(bob.contains(&c));
    assert!(!w.stored_home(ALICE).await.contains(&b), "the blocked side loses the blocker's statuses too");

    w.mute(BOB, CAROL).await;
    assert!(!w.stored_home(BOB).await.contains(&c));
    assert_eq!(w.home(BOB).await, vec![b]);
}

#[tokio::test]
async fn a_deleted_status_and_its_reblogs_vanish_everywhere_and_do_not_come_back() {
    let w = World::start().await;
    w.follow(BOB, ALICE).await;
    w.follow(CAROL, DAVE).await;
    assert!(w.home(BOB).await.is_empty()); // warms Bob's hot set
    let s = w
        .post_with(StatusPosted {
            account_id: ALICE,
            visibility: "public".into(),
            tags: vec!["news".into()],
            ..Default::default()
        })
        .await;
    let reblog = w.reblog(DAVE, s, ALICE).await;
    assert_eq!(w.home(BOB).await, vec![s]);
    assert_eq!(w.home(CAROL).await, vec![reblog]);
    w.delete(s, ALICE).await;
    assert!(w.home(BOB).await.is_empty());
    assert!(w.home(CAROL).await.is_empty());
    assert!(w.home(ALICE).await.is_empty());
    assert!(public(&w).await.is_empty());
    assert!(w.feed.tag(&anyone(), "news", window(20), false).await.unwrap().is_empty());
    assert!(account_tl(&w, ALICE, anyone()).await.is_empty());
    assert!(account_tl(&w, DAVE, anyone()).await.is_empty());
    // A late redelivery of post.created (new event id) must not revive it.
    w.emit(
        "post.created",
        &StatusPosted { id: s, account_id: ALICE, visibility: "public".into(), ..Default::default() },
    )
    .await;
    assert!(w.home(BOB).await.is_empty());
    assert!(public(&w).await.is_empty());
}

#[tokio::test]
async fn a_large_accounts_statuses_are_merged_into_home_at_read_time() {
    let w = World::new(FeedSettings { large_account_followers: 2, ..Default::default() }).await;
    for f in [BOB, CAROL, DAVE] {
        w.follow(f, ALICE).await;
    }
    w.follow(BOB, ERIN).await;
    let e1 = w.post(ERIN).await;
    let a1 = w.post(ALICE).await;
    let e2 = w.post(ERIN).await;
    assert!(!w.stored_home(BOB).await.contains(&a1), "not fanned out");
    assert_eq!(w.home(BOB).await, vec![e2, a1, e1]);
    assert_eq!(w.home(ALICE).await, vec![a1]);
    assert!(w.home(ERIN).await == vec![e2, e1], "a non-follower gets no merge");
    // Paging through the merged home keeps order.
    let first = w.feed.home(BOB, &token(BOB), window(2)).await.unwrap();
    assert_eq!(first, vec![e2, a1]);
    let next = w.feed.home(BOB, &token(BOB), Window { upper: Some(a1), ..window(2) }).await.unwrap();
    assert_eq!(next, vec![e1]);
}

#[tokio::test]
async fn an_inactive_follower_is_skipped_by_fan_out_and_rebuilt_on_return() {
    let w = World::new(FeedSettings { inactive_after: Duration::from_secs(3600), ..Default::default() }).await;
    w.follow(BOB, ALICE).await;
    w.follow(BOB, CAROL).await;
    // Bob last read his home two hours ago.
    w.feed.store().touch(BOB, agora_kit::time::now_ms() - 2 * 3600 * 1000).await.unwrap();
    let a = w.post(ALICE).await;
    let c = w.post(CAROL).await;
    assert!(w.stored_home(BOB).await.is_empty(), "fan-out skipped the idle follower");
    assert!(w.feed.store().activity(BOB).await.unwrap().unwrap().needs_rebuild);
    assert_eq!(w.home(BOB).await, vec![c, a], "rebuilt before answering");
    assert!(!w.feed.store().activity(BOB).await.unwrap().unwrap().needs_rebuild);
    // Active again: fan-out reaches him directly.
    let a2 = w.post(ALICE).await;
    assert_eq!(w.stored_home(BOB).await, vec![a2, c, a]);
}

#[tokio::test]
async fn reading_rewrites_activity_only_once_it_is_a_day_old() {
    let w = World::new(FeedSettings::default()).await;
    let now = agora_kit::time::now_ms();
    let hours = |h: i64| now - h * 3600 * 1000;
    w.feed.store().touch(BOB, hours(2)).await.unwrap();
    w.feed.store().touch(CAROL, hours(30)).await.unwrap();
    w.home(BOB).await;
    w.home(CAROL).await;
    let bob = w.feed.store().activity(BOB).await.unwrap().unwrap();
    assert_eq!(bob.last_active_ms, hours(2), "two hours old is precise enough against 14 days: no write");
    let carol = w.feed.store().activity(CAROL).await.unwrap().unwrap();
    assert!(carol.last_active_ms >= now, "a day old: the read records her as active now");
}

#[tokio::test]
async fn a_new_follow_backfills_recent_statuses() {
    let w = World::new(FeedSettings { backfill: 3, ..Default::default() }).await;
    let mut posted = Vec::new();
    for _ in 0..5 {
        posted.push(w.post(ALICE).await);
    }
    let private =
        w.post_with(StatusPosted { account_id: ALICE, visibility: "private".into(), ..Default::default() }).await;
    let direct = w
        .post_with(StatusPosted {
            account_id: ALICE,
            visibility: "direct".into(),
            mention_ids: vec![CAROL],
            ..Default::default()
        })
        .await;
    assert!(w.home(BOB).await.is_empty());
    w.follow(BOB, ALICE).await;
    let home = w.home(BOB).await;
    assert_eq!(home, vec![private, posted[4], posted[3]]);
    assert!(!home.contains(&direct));

    // Replies come along only where Bob follows the other side of the conversation.
    let reply = |to: i64| StatusPosted {
        account_id: CAROL,
        visibility: "public".into(),
        in_reply_to_id: 1,
        in_reply_to_account_id: to,
        ..Default::default()
    };
    let to_dave = w.post_with(reply(DAVE)).await;
    let to_erin = w.post_with(reply(ERIN)).await;
    let to_bob = w.post_with(reply(BOB)).await;
    w.graph.follow(BOB, DAVE);
    w.follow(BOB, CAROL).await;
    let home = w.stored_home(BOB).await;
    assert!(home.contains(&to_dave) && home.contains(&to_bob));
    assert!(!home.contains(&to_erin));
}

#[tokio::test]
async fn the_filter_set_hides_blocked_and_muted_authors_on_every_read() {
    let w = World::start().await;
    let a = w
        .post_with(StatusPosted {
            account_id: ALICE,
            visibility: "public".into(),
            tags: vec!["rust".into()],
            ..Default::default()
        })
        .await;
    let c = w
        .post_with(StatusPosted {
            account_id: CAROL,
            visibility: "public".into(),
            tags: vec!["rust".into()],
            ..Default::default()
        })
        .await;
    let reblog = w.reblog(DAVE, a, ALICE).await;
    // Only the graph knows (no event yet): reads must still hide Alice from Bob.
    w.graph.block(BOB, ALICE);
    assert_eq!(w.feed.public(&viewer(BOB), window(20), false).await.unwrap(), vec![c]);
    assert_eq!(w.feed.tag(&viewer(BOB), "#Rust", window(20), false).await.unwrap(), vec![c]);
    assert!(w.feed.account(&viewer(BOB), ALICE, window(20), EntryFilter::default()).await.unwrap().is_empty());
    assert!(w.feed.account(&viewer(BOB), DAVE, window(20), EntryFilter::default()).await.unwrap().is_empty());
    // Alice is blocked *by* Bob: she does not see him either, and strangers see everything.
    assert_eq!(w.feed.public(&anyone(), window(20), false).await.unwrap(), vec![c, a]);
    w.graph.mute(CAROL, ALICE);
    assert_eq!(w.feed.tag(&viewer(CAROL), "rust", window(20), false).await.unwrap(), vec![c]);
    let _ = reblog;
}

#[tokio::test]
async fn home_stays_right_through_the_hot_set() {
    let w = World::start().await;
    w.follow(BOB, ALICE).await;
    let a1 = w.post(ALICE).await;
    assert_eq!(w.home(BOB).await, vec![a1]); // warms
    let a2 = w.post(ALICE).await;
    assert_eq!(w.home(BOB).await, vec![a2, a1]);
    w.delete(a1, ALICE).await;
    assert_eq!(w.home(BOB).await, vec![a2]);
    w.mute(BOB, ALICE).await;
    assert!(w.home(BOB).await.is_empty());
}

/// A cold home is warmed with its newest few pages only: walking deeper reads the store, and
/// statuses fanned out after the warming come first, each exactly once.
#[tokio::test]
async fn a_home_deeper_than_its_warm_part_walks_to_the_end() {
    let w = World::start().await;
    w.follow(BOB, ALICE).await;
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(w.post(ALICE).await);
    }
    assert_eq!(w.home(BOB).await.len(), 40); // warms
    for _ in 0..5 {
        ids.push(w.post(ALICE).await);
    }
    let mut walked = Vec::new();
    let mut max = 0;
    loop {
        let page = w.feed.home(BOB, &token(BOB), Window::from_page(max, 0, 0, 40).unwrap()).await.unwrap();
        let Some(last) = page.last() else { break };
        max = *last;
        walked.extend(page);
    }
    ids.reverse();
    assert_eq!(walked, ids);
}

#[tokio::test]
async fn pages_follow_max_since_and_min_id() {
    let w = World::start().await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(w.post(ALICE).await);
    }
    let newest_first: Vec<i64> = ids.iter().rev().copied().collect();
    let page = |max: i64, since: i64, min: i64, limit: i32| Window::from_page(max, since, min, limit).unwrap();
    let p = &w.feed;
    assert_eq!(p.public(&anyone(), page(0, 0, 0, 2), false).await.unwrap(), newest_first[..2]);
    assert_eq!(p.public(&anyone(), page(ids[3], 0, 0, 2), false).await.unwrap(), vec![ids[2], ids[1]]);
    assert_eq!(p.public(&anyone(), page(0, ids[3], 0, 10), false).await.unwrap(), vec![ids[5], ids[4]]);
    assert_eq!(p.public(&anyone(), page(0, 0, ids[1], 2), false).await.unwrap(), vec![ids[3], ids[2]]);
    assert_eq!(p.public(&anyone(), page(0, ids[1], 0, 2), false).await.unwrap(), vec![ids[5], ids[4]]);
    assert!(p.public(&anyone(), page(0, i64::MAX - 1, 0, 2), false).await.unwrap().is_empty());
    // The same on a home, through the hot set and the store.
    let wr = &w;
    let home = |win: Window| async move { wr.feed.home(ALICE, &token(ALICE), win).await.unwrap() };
    assert_eq!(home(page(0, 0, 0, 2)).await, newest_first[..2]);
    assert_eq!(home(page(ids[3], 0, 0, 2)).await, vec![ids[2], ids[1]]);
    assert_eq!(home(page(0, 0, ids[1], 2)).await, vec![ids[3], ids[2]]);
    assert_eq!(home(page(0, ids[3], 0, 10)).await, vec![ids[5], ids[4]]);
    assert!(Window::from_page(0, 0, 0, -1).is_err());
    assert!(Window::from_page(-5, 0, 0, 10).is_err());
}

#[tokio::test]
async fn account_timeline_flags_filter_replies_media_and_reblogs() {
    let w = World::start().await;
    let plain = w.post(ALICE).await;
    let media = w
        .post_with(StatusPosted {
            account_id: ALICE,
            visibility: "public".into(),
            has_media: true,
            ..Default::default()
        })
        .await;
    let other = w.post(BOB).await;
    let reply = w
        .post_with(StatusPosted {
            account_id: ALICE,
            visibility: "public".into(),
            in_reply_to_id: other,
            in_reply_to_account_id: BOB,
            ..Default::default()
        })
        .await;
    let reblog = w.reblog(ALICE, other, BOB).await;
    let f = |exclude_replies, only_media, exclude_reblogs| EntryFilter {
        exclude_replies,
        only_media,
        exclude_reblogs,
        visibilities: Vec::new(),
    };
    let wr = &w;
    let read = |flt: EntryFilter| async move { wr.feed.account(&anyone(), ALICE, window(20), flt).await.unwrap() };
    assert_eq!(read(f(false, false, false)).await, vec![reblog, reply, media, plain]);
    assert_eq!(read(f(true, false, false)).await, vec![reblog, media, plain]);
    assert_eq!(read(f(false, true, false)).await, vec![media]);
    assert_eq!(read(f(false, false, true)).await, vec![reply, media, plain]);
    assert_eq!(w.feed.public(&anyone(), window(20), true).await.unwrap(), vec![media]);
}

/// Every timeline this world's accounts can see, as stored.
async fn snapshot(w: &World) -> Vec<Vec<i64>> {
    let mut out = Vec::new();
    for a in [ALICE, BOB, CAROL, DAVE, ERIN] {
        out.push(w.stored_home(a).await);
        out.push(account_tl(w, a, viewer(a)).await);
    }
    out.push(public(w).await);
    out.push(w.feed.tag(&anyone(), "replay", window(40), false).await.unwrap());
    out
}

#[tokio::test]
async fn replaying_every_event_twice_changes_nothing() {
    let w = World::start().await;
    w.follow(BOB, ALICE).await;
    w.follow(CAROL, ALICE).await;
    w.follow(CAROL, BOB).await;
    let a = w
        .post_with(StatusPosted {
            account_id: ALICE,
            visibility: "public".into(),
            tags: vec!["replay".into()],
            ..Default::default()
        })
        .await;
    w.reblog(BOB, a, ALICE).await;
    let gone = w.post(BOB).await;
    w.post_with(StatusPosted { account_id: ALICE, visibility: "private".into(), ..Default::default() }).await;
    w.post_with(StatusPosted {
        account_id: ALICE,
        visibility: "direct".into(),
        mention_ids: vec![DAVE],
        ..Default::default()
    })
    .await;
    w.delete(gone, BOB).await;
    w.block(CAROL, BOB).await;
    w.favourite(a, CAROL).await;
    let before = snapshot(&w).await;
    assert!(!before.iter().all(Vec::is_empty));

    let log = w.log.lock().clone();
    // Redelivery with the same ids: remembered and skipped.
    for env in &log {
        w.feed.handle(env).await.unwrap();
    }
    assert_eq!(snapshot(&w).await, before);
    // Twice more with fresh ids, as if the dedupe record were lost: the handlers themselves
    // are idempotent.
    for round in 1..=2 {
        for env in &log {
            let mut again = env.clone();
            again.id += 1_000_000 * round;
            w.feed.handle(&again).await.unwrap();
        }
        assert_eq!(snapshot(&w).await, before, "round {round}");
    }
}

#[tokio::test]
async fn trends_rank_tags_by_accounts_and_statuses_by_engagement() {
    let w = World::start().await;
    let tagged = |author: i64, tag: &str| StatusPosted {
        account_id: author,
        visibility: "public".into(),
        tags: vec![tag.into()],
        ..Default::default()
    };
    for author in [ALICE, BOB, CAROL] {
        w.post_with(tagged(author, "rust")).await;
    }
    for _ in 0..5 {
        w.post_with(tagged(DAVE, "spam")).await;
    }
    w.post_with(StatusPosted {
        account_id: ERIN,
        visibility: "private".into(),
        tags: vec!["hidden".into()],
        ..Default::default()
    })
    .await;
    let tags = w.feed.trending_tags(0, 0).await.unwrap();
    let names: Vec<&str> = tags.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["rust", "spam"]);
    assert_eq!(tags[0].history[0].accounts, 3);
    assert_eq!(tags[1].history[0].uses, 5);

    let popular = w.post(ALICE).await;
    let quiet = w.post(BOB).await;
    let sensitive = w
        .post_with(StatusPosted {
            account_id: CAROL,
            visibility: "public".into(),
            sensitive: true,
            ..Default::default()
        })
        .await;
    for by in [BOB, CAROL, DAVE] {
        w.favourite(popular, by).await;
    }
    w.reblog(ERIN, popular, ALICE).await;
    w.favourite(quiet, ALICE).await;
    w.favourite(sensitive, ALICE).await;
    assert_eq!(w.feed.trending_statuses(0, 0).await.unwrap(), vec![popular, quiet]);
    assert_eq!(w.feed.trending_statuses(1, 1).await.unwrap(), vec![quiet]);
    assert!(w.feed.trending_statuses(-1, 0).await.is_err());
}

#[tokio::test]
async fn markers_save_with_increasing_versions() {
    let w = World::start().await;
    assert!(w.feed.markers(ALICE, &[]).await.unwrap().is_empty());
    let saved = w.feed.save_markers(ALICE, &[("home".into(), 10), ("notifications".into(), 5)]).await.unwrap();
    assert_eq!(saved.iter().map(|m| m.version).collect::<Vec<_>>(), vec![1, 1]);
    let again = w.feed.save_markers(ALICE, &[("home".into(), 12)]).await.unwrap();
    assert_eq!((again[0].last_read_id, again[0].version), (12, 2));
    let only_home = w.feed.markers(ALICE, &["home".into()]).await.unwrap();
    assert_eq!(only_home.len(), 1);
    assert_eq!(only_home[0].last_read_id, 12);
    assert!(w.feed.markers(BOB, &[]).await.unwrap().is_empty());
    assert!(w.feed.save_markers(ALICE, &[("public".into(), 1)]).await.is_err());
}

#[tokio::test]
async fn rebuild_recomputes_timelines_from_the_post_and_graph_services() {
    let source = World::start().await;
    source.graph.follow(BOB, ALICE);
    let a = source.post(ALICE).await;
    let p =
        source.post_with(StatusPosted { account_id: ALICE, visibility: "private".into(), ..Default::default() }).await;
    let d = source
        .post_with(StatusPosted {
            account_id: ALICE,
            visibility: "direct".into(),
            mention_ids: vec![CAROL],
            ..Default::default()
        })
        .await;

    // A fresh feed that never saw an event, over the same services.
    let fresh = World::start().await;
    *fresh.posts.statuses.lock() = source.posts.statuses.lock().clone();
    fresh.graph.follow(BOB, ALICE);
    let report = fresh.feed.rebuild(Some(vec![ALICE, BOB, CAROL])).await.unwrap();
    assert_eq!(report.accounts, 3);
    assert_eq!(report.statuses, 3);
    assert_eq!(fresh.stored_home(BOB).await, vec![p, a]);
    assert_eq!(fresh.stored_home(CAROL).await, vec![d]);
    assert_eq!(public(&fresh).await, vec![a]);
    // The direct status's conversation is back for both, and a rebuild makes nothing unread.
    for (account, other) in [(CAROL, ALICE), (ALICE, CAROL)] {
        let convs = fresh.feed.store().conversations(account, &Window::newest(20)).await.unwrap();
        let got: Vec<_> = convs.iter().map(|c| (c.participant_ids.clone(), c.last_status_id, c.unread)).collect();
        assert_eq!(got, vec![(vec![other], d, false)], "account {account}");
    }
    let _ = TimelineKey::PUBLIC;
}
