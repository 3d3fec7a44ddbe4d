//! The graph-store conformance suite. Every case runs on SQLite, on PostgreSQL
//! (`AGORA_TEST_POSTGRES_URL`) and on ScyllaDB's protocol (`AGORA_TEST_SCYLLA_URL`, Cassandra here);
//! a new backend adds one line to `backends!`.

use std::sync::Arc;

use agora_events::Envelope;
use agora_graph::domain::{ChangeKind, Entry, GraphChange, NewFollow, NewMute, Suggestion};
use agora_graph::store::{self, GraphStore, Refusal, StoreError};
use agora_kit::IdGenerator;
use agora_kit::pagination::Page;
use agora_proto::events::v1::GraphChanged;
use prost::Message as _;

static IDS: std::sync::LazyLock<IdGenerator> = std::sync::LazyLock::new(IdGenerator::random_worker);

fn id() -> i64 {
    IDS.next_id()
}

fn now() -> i64 {
    agora_kit::time::now_ms()
}

/// The event a service would write: real type and payload, so the outbox can be read back.
fn ev(c: &GraphChange) -> Envelope {
    let payload = GraphChanged {
        account_id: c.account_id,
        target_id: c.target_id,
        occurred_at_ms: now(),
        show_reblogs: c.show_reblogs,
        notify: c.notify,
        mute_notifications: c.mute_notifications,
        mute_expires_at_ms: c.mute_expires_at_ms,
    };
    Envelope {
        id: id(),
        r#type: c.kind.event_type().into(),
        aggregate_id: c.account_id.to_string(),
        occurred_at_ms: now(),
        payload: payload.encode_to_vec(),
        ..Default::default()
    }
}

fn follow_of(account_id: i64, target_id: i64) -> NewFollow {
    NewFollow {
        id: id(),
        account_id,
        target_id,
        show_reblogs: true,
        notify: false,
        languages: vec![],
        created_at_ms: now(),
    }
}

fn change(kind: ChangeKind, account_id: i64, target_id: i64) -> (ChangeKind, i64, i64) {
    (kind, account_id, target_id)
}

fn kinds(changes: &[GraphChange]) -> Vec<(ChangeKind, i64, i64)> {
    changes.iter().map(|c| (c.kind, c.account_id, c.target_id)).collect()
}

/// Pending outbox events as (type, account, target), oldest first.
async fn events(s: &Arc<dyn GraphStore>) -> Vec<(String, i64, i64)> {
    s.outbox()
        .pending(100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|p| {
            assert_eq!(p.topic, "agora.graph.v1");
            let g = GraphChanged::decode(p.envelope.payload.as_slice()).unwrap();
            assert_eq!(p.envelope.aggregate_id, g.account_id.to_string());
            (p.envelope.r#type, g.account_id, g.target_id)
        })
        .collect()
}

fn ev_of(kind: &str, a: i64, b: i64) -> (String, i64, i64) {
    (kind.to_owned(), a, b)
}

fn page(limit: usize) -> Page {
    Page { max_id: None, since_id: None, min_id: None, limit }
}

fn accounts(entries: &[Entry]) -> Vec<i64> {
    entries.iter().map(|e| e.account_id).collect()
}

async fn follow(s: &Arc<dyn GraphStore>, a: i64, b: i64) {
    s.follow(&follow_of(a, b), false, &ev).await.unwrap();
}

async fn following_twice_writes_one_row_and_one_event(s: Arc<dyn GraphStore>) {
    let (a, b) = (id(), id());
    let first = s.follow(&follow_of(a, b), false, &ev).await.unwrap();
    assert_eq!(kinds(&first), vec![change(ChangeKind::Followed, a, b)]);
    assert!(first[0].show_reblogs);
    let again = s.follow(&follow_of(a, b), false, &ev).await.unwrap();
    assert!(again.is_empty(), "a repeated follow changes nothing");
    assert_eq!(events(&s).await, vec![ev_of("graph.followed", a, b)]);
    let counts = s.counts(&[a, b]).await.unwrap();
    assert_eq!((counts[0].following_count, counts[0].followers_count), (1, 0));
    assert_eq!((counts[1].following_count, counts[1].followers_count), (0, 1));

    let rel = &s.relationships(a, &[b], now()).await.unwrap()[0];
    assert!(rel.following && rel.showing_reblogs && !rel.followed_by && !rel.requested);
    assert!(s.relationships(b, &[a], now()).await.unwrap()[0].followed_by);

    // New options update the follow; hiding reblogs is announced, since timelines depend on it.
    let quieter = NewFollow { show_reblogs: false, notify: true, languages: vec!["en".into()], ..follow_of(a, b) };
    let changed = s.follow(&quieter, false, &ev).await.unwrap();
    assert_eq!(kinds(&changed), vec![change(ChangeKind::Followed, a, b)]);
    assert!(!changed[0].show_reblogs);
    let rel = &s.relationships(a, &[b], now()).await.unwrap()[0];
    assert!(rel.following && !rel.showing_reblogs && rel.notifying);
    assert_eq!(rel.languages, vec!["en".to_owned()]);
    assert_eq!(s.followers(b, &page(40)).await.unwrap().len(), 1, "still one follow");
    assert!(changed[0].notify, "the announcement carries notify");
    // Turning notifications off is announced too: the notification service depends on it.
    let silent = NewFollow { notify: false, ..quieter.clone() };
    let changed = s.follow(&silent, false, &ev).await.unwrap();
    assert_eq!(kinds(&changed), vec![change(ChangeKind::Followed, a, b)]);
    assert!(!changed[0].notify && !changed[0].show_reblogs);
    assert!(!s.relationships(a, &[b], now()).await.unwrap()[0].notifying);

    let gone = s.unfollow(a, b, &ev).await.unwrap();
    assert_eq!(kinds(&gone), vec![change(ChangeKind::Unfollowed, a, b)]);
    assert!(s.unfollow(a, b, &ev).await.unwrap().is_empty(), "unfollowing twice changes nothing");
    assert!(!s.relationships(a, &[b], now()).await.unwrap()[0].following);
}

async fn a_locked_account_gets_requests_it_can_authorize_or_reject(s: Arc<dyn GraphStore>) {
    let (owner, fan, pest) = (id(), id(), id());
    let asked = s.follow(&follow_of(fan, owner), true, &ev).await.unwrap();
    assert_eq!(kinds(&asked), vec![change(ChangeKind::FollowRequested, fan, owner)]);
    assert!(s.follow(&follow_of(fan, owner), true, &ev).await.unwrap().is_empty(), "asking twice is one request");
    s.follow(&follow_of(pest, owner), true, &ev).await.unwrap();

    let rel = &s.relationships(fan, &[owner], now()).await.unwrap()[0];
    assert!(rel.requested && !rel.following);
    assert!(s.relationships(owner, &[fan], now()).await.unwrap()[0].requested_by);
    assert_eq!(accounts(&s.follow_requests(owner, &page(40)).await.unwrap()), vec![pest, fan]);
    assert!(s.followers(owner, &page(40)).await.unwrap().is_empty(), "a request is not a follow");
    assert_eq!(s.counts(&[owner]).await.unwrap()[0].followers_count, 0);

    let accepted = s.authorize_request(owner, fan, id(), now(), &ev).await.unwrap();
    assert_eq!(kinds(&accepted), vec![change(ChangeKind::Followed, fan, owner)]);
    let rel = &s.relationships(fan, &[owner], now()).await.unwrap()[0];
    assert!(rel.following && !rel.requested);
    assert_eq!(accounts(&s.followers(owner, &page(40)).await.unwrap()), vec![fan]);
    assert!(matches!(s.authorize_request(owner, fan, id(), now(), &ev).await, Err(StoreError::NotFound)));

    let rejected = s.reject_request(owner, pest, &ev).await.unwrap();
    assert_eq!(kinds(&rejected), vec![change(ChangeKind::Unfollowed, pest, owner)]);
    assert!(matches!(s.reject_request(owner, pest, &ev).await, Err(StoreError::NotFound)));
    assert!(s.follow_requests(owner, &page(40)).await.unwrap().is_empty());
    assert!(!s.relationships(pest, &[owner], now()).await.unwrap()[0].requested);

    assert_eq!(
        events(&s).await,
        vec![
            ev_of("graph.follow_requested", fan, owner),
            ev_of("graph.follow_requested", pest, owner),
            ev_of("graph.followed", fan, owner),
            ev_of("graph.unfollowed", pest, owner),
        ]
    );
}

async fn withdrawing_a_request_and_removing_a_follower(s: Arc<dyn GraphStore>) {
    let (owner, fan, other) = (id(), id(), id());
    s.follow(&follow_of(fan, owner), true, &ev).await.unwrap();
    let withdrawn = s.unfollow(fan, owner, &ev).await.unwrap();
    assert_eq!(kinds(&withdrawn), vec![change(ChangeKind::Unfollowed, fan, owner)]);
    assert!(s.follow_requests(owner, &page(40)).await.unwrap().is_empty());

    follow(&s, other, owner).await;
    let removed = s.remove_follower(owner, other, &ev).await.unwrap();
    assert_eq!(kinds(&removed), vec![change(ChangeKind::Unfollowed, other, owner)]);
    assert!(s.remove_follower(owner, other, &ev).await.unwrap().is_empty());
    assert!(!s.relationships(other, &[owner], now()).await.unwrap()[0].following);
}

async fn blocking_removes_follows_and_requests_both_ways(s: Arc<dyn GraphStore>) {
    let (a, b, c) = (id(), id(), id());
    follow(&s, a, b).await;
    follow(&s, b, a).await;
    s.follow(&follow_of(c, a), true, &ev).await.unwrap();
    s.follow(&follow_of(a, c), true, &ev).await.unwrap();
    let before = events(&s).await.len();

    let blocked = s.block(id(), a, b, now(), &ev).await.unwrap();
    assert_eq!(
        kinds(&blocked),
        vec![
            change(ChangeKind::Unfollowed, a, b),
            change(ChangeKind::Unfollowed, b, a),
            change(ChangeKind::Blocked, a, b)
        ]
    );
    let blocked_c = s.block(id(), c, a, now(), &ev).await.unwrap();
    assert_eq!(
        kinds(&blocked_c),
        vec![
            change(ChangeKind::Unfollowed, c, a),
            change(ChangeKind::Unfollowed, a, c),
            change(ChangeKind::Blocked, c, a)
        ]
    );
    assert_eq!(
        events(&s).await[before..],
        [
            ev_of("graph.unfollowed", a, b),
            ev_of("graph.unfollowed", b, a),
            ev_of("graph.blocked", a, b),
            ev_of("graph.unfollowed", c, a),
            ev_of("graph.unfollowed", a, c),
            ev_of("graph.blocked", c, a),
        ]
    );
    assert!(s.block(id(), a, b, now(), &ev).await.unwrap().is_empty(), "blocking twice changes nothing");

    let rel = &s.relationships(a, &[b, c], now()).await.unwrap();
    assert!(rel[0].blocking && !rel[0].following && !rel[0].followed_by && !rel[0].blocked_by);
    assert!(rel[1].blocked_by && !rel[1].requested && !rel[1].requested_by);
    assert_eq!(s.counts(&[a]).await.unwrap()[0].followers_count, 0);
    assert!(s.follow_requests(a, &page(40)).await.unwrap().is_empty());

    // Neither side can follow the other while the block stands.
    let backlog = s.outbox().backlog().await.unwrap();
    assert!(matches!(s.follow(&follow_of(b, a), false, &ev).await, Err(StoreError::Refused(Refusal::BlockedBy))));
    assert!(matches!(s.follow(&follow_of(a, b), true, &ev).await, Err(StoreError::Refused(Refusal::Blocking))));
    assert_eq!(s.outbox().backlog().await.unwrap(), backlog, "a refused follow writes no event");
    assert_eq!(s.counts(&[a, b]).await.unwrap()[0].followers_count, 0);

    let fs = s.filter_set(a, now()).await.unwrap();
    assert_eq!(fs.blocking, vec![b]);
    assert_eq!(fs.blocked_by, vec![c]);
    assert_eq!(accounts(&s.blocks(a, &page(40)).await.unwrap()), vec![b]);

    let unblocked = s.unblock(a, b, &ev).await.unwrap();
    assert_eq!(kinds(&unblocked), vec![change(ChangeKind::Unblocked, a, b)]);
    assert!(s.unblock(a, b, &ev).await.unwrap().is_empty());
    assert_eq!(kinds(&s.follow(&follow_of(b, a), false, &ev).await.unwrap()), vec![change(ChangeKind::Followed, b, a)]);
}

async fn expired_mutes_count_as_none(s: Arc<dyn GraphStore>) {
    let (me, loud, old) = (id(), id(), id());
    let t = now();
    let live = NewMute {
        id: id(),
        account_id: me,
        target_id: loud,
        notifications: false,
        expires_at_ms: t + 3_600_000,
        created_at_ms: t,
    };
    let muted = s.mute(&live, &ev).await.unwrap();
    assert_eq!(kinds(&muted), vec![change(ChangeKind::Muted, me, loud)]);
    assert!(!muted[0].mute_notifications);
    assert_eq!(muted[0].mute_expires_at_ms, t + 3_600_000);
    assert!(
        s.mute(&NewMute { id: id(), ..live.clone() }, &ev).await.unwrap().is_empty(),
        "the same mute again is no news"
    );
    let rel = &s.relationships(me, &[loud], now()).await.unwrap()[0];
    assert!(rel.muting && !rel.muting_notifications);

    // A mute that ran out behaves as if it were never there.
    let expired = NewMute {
        id: id(),
        account_id: me,
        target_id: old,
        notifications: true,
        expires_at_ms: t - 1_000,
        created_at_ms: t - 60_000,
    };
    s.mute(&expired, &ev).await.unwrap();
    let rel = &s.relationships(me, &[old], now()).await.unwrap()[0];
    assert!(!rel.muting && !rel.muting_notifications);
    assert_eq!(accounts(&s.mutes(me, &page(40), now()).await.unwrap()), vec![loud]);
    assert_eq!(s.filter_set(me, now()).await.unwrap().muting, vec![loud]);
    assert!(s.unmute(me, old, now(), &ev).await.unwrap().is_empty(), "ending an expired mute is no news");

    let forever = NewMute {
        id: id(),
        account_id: me,
        target_id: old,
        notifications: true,
        expires_at_ms: 0,
        created_at_ms: now(),
    };
    assert_eq!(kinds(&s.mute(&forever, &ev).await.unwrap()), vec![change(ChangeKind::Muted, me, old)]);
    let rel = &s.relationships(me, &[old], now()).await.unwrap()[0];
    assert!(rel.muting && rel.muting_notifications);
    assert_eq!(accounts(&s.mutes(me, &page(40), now()).await.unwrap()), vec![old, loud]);

    assert_eq!(kinds(&s.unmute(me, loud, now(), &ev).await.unwrap()), vec![change(ChangeKind::Unmuted, me, loud)]);
    assert!(s.unmute(me, loud, now(), &ev).await.unwrap().is_empty());
    assert!(!s.relationships(me, &[loud], now()).await.unwrap()[0].muting);
}

async fn pages_run_newest_first_with_mastodon_cursors(s: Arc<dyn GraphStore>) {
    let star = id();
    let fans: Vec<i64> = (0..5).map(|_| id()).collect();
    for f in &fans {
        follow(&s, *f, star).await;
    }
    let all = s.followers(star, &page(40)).await.unwrap();
    let newest_first: Vec<i64> = fans.iter().rev().copied().collect();
    assert_eq!(accounts(&all), newest_first);
    let cursors: Vec<i64> = all.iter().map(|e| e.cursor_id).collect();
    assert!(cursors.windows(2).all(|w| w[0] > w[1]), "cursors descend");

    let first = s.followers(star, &page(2)).await.unwrap();
    assert_eq!(first, all[..2]);
    let next = s.followers(star, &Page { max_id: Some(first[1].cursor_id), ..page(2) }).await.unwrap();
    assert_eq!(next, all[2..4]);
    let last = s.followers(star, &Page { max_id: Some(next[1].cursor_id), ..page(2) }).await.unwrap();
    assert_eq!(last, all[4..]);

    // min_id: the entries just above it, still newest first.
    let oldest = all[4].cursor_id;
    let above = s.followers(star, &Page { min_id: Some(oldest), ..page(2) }).await.unwrap();
    assert_eq!(above, vec![all[2], all[3]]);
    // since_id: the newest entries above it.
    let since = s.followers(star, &Page { since_id: Some(oldest), ..page(2) }).await.unwrap();
    assert_eq!(since, all[..2]);
    let between = s
        .followers(star, &Page { max_id: Some(all[0].cursor_id), since_id: Some(all[3].cursor_id), ..page(40) })
        .await
        .unwrap();
    assert_eq!(between, all[1..3]);

    for f in &fans {
        assert_eq!(accounts(&s.following(*f, &page(40)).await.unwrap()), vec![star]);
    }
}

async fn fan_out_pages_follower_ids_ascending(s: Arc<dyn GraphStore>) {
    let star = id();
    let fans: Vec<i64> = (0..5).map(|_| id()).collect();
    for f in &fans {
        follow(&s, *f, star).await;
    }
    s.follow(&follow_of(id(), star), true, &ev).await.unwrap(); // a request is not a follower
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = s.follower_ids(star, after, 2).await.unwrap();
        assert_eq!(page.total, 5);
        seen.extend(page.follower_ids);
        if page.next_after_id == 0 {
            break;
        }
        after = page.next_after_id;
    }
    assert_eq!(seen, fans);
    let stranger = id();
    let got = s.filter_followers(star, &[fans[3], stranger, fans[0], fans[3]]).await.unwrap();
    assert_eq!(got, vec![fans[3], fans[0]]);
    assert!(s.filter_followers(star, &[]).await.unwrap().is_empty());
}

async fn suggestions_rank_friends_of_friends_and_exclude(s: Arc<dyn GraphStore>) {
    let me = id();
    let (a, b, c) = (id(), id(), id());
    let (x, y, z, requested, blocker, muted, dismissed, tie) = (id(), id(), id(), id(), id(), id(), id(), id());
    for friend in [a, b, c] {
        follow(&s, me, friend).await;
    }
    for (who, whom) in [
        (a, x),
        (b, x),
        (c, x),
        (a, y),
        (b, y),
        (b, z),
        (a, me),
        (a, b),
        (a, requested),
        (b, requested),
        (a, blocker),
        (b, blocker),
        (a, muted),
        (b, muted),
        (a, dismissed),
        (b, dismissed),
        (c, tie),
        (b, tie),
    ] {
        follow(&s, who, whom).await;
    }
    s.follow(&follow_of(me, requested), true, &ev).await.unwrap();
    s.block(id(), blocker, me, now(), &ev).await.unwrap();
    let m = NewMute {
        id: id(),
        account_id: me,
        target_id: muted,
        notifications: true,
        expires_at_ms: 0,
        created_at_ms: now(),
    };
    s.mute(&m, &ev).await.unwrap();
    s.dismiss_suggestion(me, dismissed, now()).await.unwrap();
    s.dismiss_suggestion(me, dismissed, now()).await.unwrap();

    let got = s.suggestions(me, 40, now()).await.unwrap();
    let mut twos = [y, tie];
    twos.sort();
    let want = vec![
        Suggestion { account_id: x, mutuals: 3 },
        Suggestion { account_id: twos[0], mutuals: 2 },
        Suggestion { account_id: twos[1], mutuals: 2 },
        Suggestion { account_id: z, mutuals: 1 },
    ];
    assert_eq!(got, want);
    assert_eq!(s.suggestions(me, 2, now()).await.unwrap(), want[..2]);
    // An expired mute no longer hides anyone.
    let lapsed = NewMute { expires_at_ms: now() - 1, created_at_ms: now() - 10, id: id(), ..m };
    s.unmute(me, muted, now(), &ev).await.unwrap();
    s.mute(&lapsed, &ev).await.unwrap();
    assert!(s.suggestions(me, 40, now()).await.unwrap().iter().any(|g| g.account_id == muted));
}

async fn familiar_followers_are_the_callers_follows(s: Arc<dyn GraphStore>) {
    let (me, a, b, stranger, t, lonely) = (id(), id(), id(), id(), id(), id());
    follow(&s, me, a).await;
    follow(&s, me, b).await;
    follow(&s, a, t).await;
    follow(&s, stranger, t).await;
    follow(&s, b, t).await;
    let got = s.familiar_followers(me, &[t, lonely]).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].id, got[0].account_ids.clone()), (t, vec![b, a]));
    assert_eq!((got[1].id, got[1].account_ids.clone()), (lonely, vec![]));
}

async fn counts_stay_right_under_concurrent_follows(s: Arc<dyn GraphStore>) {
    let star = id();
    let fans: Vec<i64> = (0..50).map(|_| id()).collect();
    let mut tasks = Vec::new();
    for f in fans.clone() {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move { s.follow(&follow_of(f, star), false, &ev).await }));
    }
    // The same pair racing itself still yields one follow and one event.
    let (dup, target) = (id(), id());
    for _ in 0..10 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move { s.follow(&follow_of(dup, target), false, &ev).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let counts = s.counts(&[star, fans[7], dup, target]).await.unwrap();
    assert_eq!(counts[0].followers_count, 50);
    assert_eq!(counts[1].following_count, 1);
    assert_eq!((counts[2].following_count, counts[3].followers_count), (1, 1));
    let evs = events(&s).await;
    assert_eq!(evs.iter().filter(|e| e.2 == star).count(), 50);
    assert_eq!(evs.iter().filter(|e| e.1 == dup).count(), 1);
}

async fn a_failed_write_leaves_nothing_behind(s: Arc<dyn GraphStore>) {
    let (a, b) = (id(), id());
    follow(&s, a, b).await;
    follow(&s, b, a).await;
    let backlog = s.outbox().backlog().await.unwrap();
    // Every event of this block gets the same id, so the second outbox row is refused: the
    // whole block, follow removals included, must roll back.
    let clash = id();
    let same_id = |c: &GraphChange| Envelope { id: clash, ..ev(c) };
    let err = s.block(id(), a, b, now(), &same_id).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let rel = &s.relationships(a, &[b], now()).await.unwrap()[0];
    assert!(rel.following && rel.followed_by && !rel.blocking);
    assert_eq!(s.outbox().backlog().await.unwrap(), backlog);
    assert!(s.blocks(a, &page(40)).await.unwrap().is_empty());
    // And the store still works afterwards.
    assert_eq!(s.block(id(), a, b, now(), &ev).await.unwrap().len(), 3);
}

async fn sqlite() -> Option<Arc<dyn GraphStore>> {
    let dir = agora_testkit::scratch_dir().unwrap();
    let url = format!("sqlite://{}/graph.db", dir.display());
    let s = store::connect(&url, false).await.unwrap();
    s.migrate().await.unwrap();
    Some(s)
}

async fn postgres() -> Option<Arc<dyn GraphStore>> {
    let admin = agora_testkit::test_server("AGORA_TEST_POSTGRES_URL")?;
    let url = agora_testkit::fresh_postgres_database(&admin).await.unwrap();
    let s = store::connect(&url, false).await.unwrap();
    s.migrate().await.unwrap();
    s.migrate().await.unwrap(); // migrations are idempotent
    Some(s)
}

async fn scylla() -> Option<Arc<dyn GraphStore>> {
    let base = agora_testkit::test_server("AGORA_TEST_SCYLLA_URL")?;
    let s = store::connect(&agora_testkit::fresh_scylla_keyspace(&base), true).await.unwrap();
    agora_testkit::wait_until_ready(|| s.ping()).await.unwrap();
    agora_testkit::wait_until_ready(|| async { s.outbox().backlog().await.map(|_| ()) }).await.unwrap();
    s.migrate().await.unwrap(); // migrations are idempotent
    Some(s)
}

agora_testkit::conformance!(
    backends: [sqlite, postgres, scylla],
    cases: [
        following_twice_writes_one_row_and_one_event,
        a_locked_account_gets_requests_it_can_authorize_or_reject,
        withdrawing_a_request_and_removing_a_follower,
        blocking_removes_follows_and_requests_both_ways,
        expired_mutes_count_as_none,
        pages_run_newest_first_with_mastodon_cursors,
        fan_out_pages_follower_ids_ascending,
        suggestions_rank_friends_of_friends_and_exclude,
        familiar_followers_are_the_callers_follows,
        counts_stay_right_under_concurrent_follows,
        a_failed_write_leaves_nothing_behind,
    ]
);
