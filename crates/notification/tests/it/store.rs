//! The notification-store conformance suite. Every case runs on SQLite, on PostgreSQL
//! (`AGORA_TEST_POSTGRES_URL`) and on ScyllaDB's protocol (`AGORA_TEST_SCYLLA_URL`, Cassandra here);
//! a new backend adds one line to `backends!`.

use std::sync::Arc;

use agora_notification::domain::{Change, Group, Interaction, Kind, Notification, Query, Reason};
use agora_notification::push::{Policy, PushSubscription, VapidKey};
use agora_notification::store::{self, NotificationStore};

const NOW: i64 = 1_000_000;

fn n(id: i64, recipient_id: i64, kind: Kind, account_id: i64, status_id: i64) -> Notification {
    Notification { id, recipient_id, kind, account_id, status_id, created_at_ms: NOW }
}

fn newest(limit: usize) -> Query {
    Query { limit, ..Default::default() }
}

async fn ids(s: &Arc<dyn NotificationStore>, recipient: i64, q: &Query) -> Vec<i64> {
    s.page(recipient, q, NOW).await.unwrap().into_iter().map(|n| n.id).collect()
}

/// Applies changes as one event of its own.
async fn apply(s: &Arc<dyn NotificationStore>, event_id: i64, changes: Vec<Change>) {
    assert!(s.apply(event_id, NOW, &changes).await.unwrap(), "event {event_id} applied once");
}

async fn a_cause_notifies_once_and_an_event_applies_once(s: Arc<dyn NotificationStore>) {
    apply(&s, 1, vec![Change::Add(n(10, 1, Kind::Favourite, 2, 100))]).await;
    // The same cause again (a second delivery path, or a favourite after an unfavourite raced).
    apply(&s, 2, vec![Change::Add(n(11, 1, Kind::Favourite, 2, 100))]).await;
    // The same event again changes nothing.
    assert!(!s.apply(1, NOW, &[Change::Add(n(12, 1, Kind::Mention, 2, 100))]).await.unwrap());
    let got = s.page(1, &newest(10), NOW).await.unwrap();
    assert_eq!(got, vec![n(10, 1, Kind::Favourite, 2, 100)]);
}

async fn causes_and_statuses_remove_what_they_notified(s: Arc<dyn NotificationStore>) {
    apply(
        &s,
        1,
        vec![
            Change::Add(n(10, 1, Kind::Favourite, 2, 100)),
            Change::Add(n(11, 1, Kind::Reblog, 3, 100)),
            Change::Add(n(12, 4, Kind::Reblog, 3, 100)),
            Change::Add(n(13, 1, Kind::Mention, 2, 200)),
        ],
    )
    .await;
    apply(&s, 2, vec![Change::Remove { recipient_id: Some(1), kind: Kind::Favourite, account_id: 2, status_id: 100 }])
        .await;
    assert_eq!(ids(&s, 1, &newest(10)).await, vec![13, 11]);
    apply(&s, 3, vec![Change::Remove { recipient_id: None, kind: Kind::Reblog, account_id: 3, status_id: 100 }]).await;
    assert_eq!(ids(&s, 1, &newest(10)).await, vec![13]);
    assert!(ids(&s, 4, &newest(10)).await.is_empty(), "any recipient's");
    apply(&s, 4, vec![Change::RemoveAboutStatus { status_id: 200 }]).await;
    assert!(ids(&s, 1, &newest(10)).await.is_empty());
}

async fn an_accepted_request_replaces_its_notification(s: Arc<dyn NotificationStore>) {
    apply(&s, 1, vec![Change::Add(n(10, 1, Kind::FollowRequest, 2, 0))]).await;
    apply(&s, 2, vec![Change::Followed(n(11, 1, Kind::Follow, 2, 0))]).await;
    assert!(ids(&s, 1, &newest(10)).await.is_empty(), "the recipient accepted it: nothing new to tell");
    apply(&s, 3, vec![Change::Followed(n(12, 1, Kind::Follow, 3, 0))]).await;
    assert_eq!(ids(&s, 1, &newest(10)).await, vec![12]);
}

async fn suppressions_stop_writes_remove_the_past_and_expire(s: Arc<dyn NotificationStore>) {
    apply(&s, 1, vec![Change::Add(n(10, 1, Kind::Mention, 2, 100)), Change::Add(n(11, 1, Kind::Mention, 3, 101))])
        .await;
    apply(
        &s,
        2,
        vec![
            Change::Suppress { recipient_id: 1, account_id: 2, reason: Reason::Blocking, expires_at_ms: 0 },
            Change::Suppress { recipient_id: 1, account_id: 3, reason: Reason::Muting, expires_at_ms: NOW + 10 },
        ],
    )
    .await;
    assert!(ids(&s, 1, &newest(10)).await.is_empty(), "what they notified before goes");
    apply(&s, 3, vec![Change::Add(n(12, 1, Kind::Mention, 2, 102)), Change::Add(n(13, 1, Kind::Mention, 3, 103))])
        .await;
    assert!(ids(&s, 1, &newest(10)).await.is_empty(), "and nothing new is written");
    // The mute has expired by the next event.
    let later = NOW + 20;
    let at_later = |s: Arc<dyn NotificationStore>| async move {
        s.page(1, &newest(10), later).await.unwrap().into_iter().map(|n| n.id).collect::<Vec<_>>()
    };
    assert!(s.apply(4, later, &[Change::Add(n(14, 1, Kind::Mention, 3, 104))]).await.unwrap());
    assert_eq!(at_later(s.clone()).await, vec![14]);
    assert!(
        s.apply(5, later, &[Change::Unsuppress { recipient_id: 1, account_id: 2, reason: Reason::Blocking }])
            .await
            .unwrap()
    );
    assert!(s.apply(6, later, &[Change::Add(n(15, 1, Kind::Mention, 2, 105))]).await.unwrap());
    assert_eq!(at_later(s.clone()).await, vec![15, 14]);
    // A suppression of one pair leaves the other direction alone.
    let other_way = Change::Suppress { recipient_id: 2, account_id: 1, reason: Reason::BlockedBy, expires_at_ms: 0 };
    assert!(s.apply(7, later, &[other_way]).await.unwrap());
    assert_eq!(at_later(s.clone()).await, vec![15, 14]);
}

async fn a_suppression_hides_at_read_too(s: Arc<dyn NotificationStore>) {
    apply(
        &s,
        1,
        vec![Change::Suppress { recipient_id: 1, account_id: 2, reason: Reason::Muting, expires_at_ms: NOW + 10 }],
    )
    .await;
    // Written after the mute expired, read at a time the mute still covers.
    assert!(s.apply(2, NOW + 20, &[Change::Add(n(10, 1, Kind::Mention, 2, 100))]).await.unwrap());
    assert!(s.page(1, &newest(10), NOW).await.unwrap().is_empty());
    assert_eq!(s.get(1, 10, NOW).await.unwrap(), None);
    assert_eq!(s.unread_count(1, 0, &newest(100), NOW).await.unwrap(), 0);
    assert_eq!(s.page(1, &newest(10), NOW + 20).await.unwrap().len(), 1);
}

async fn pages_filter_and_walk_both_ways(s: Arc<dyn NotificationStore>) {
    let kinds = [Kind::Mention, Kind::Follow, Kind::Favourite, Kind::Mention, Kind::Reblog, Kind::Mention];
    let changes = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let id = 10 + i as i64;
            let status = if *k == Kind::Follow { 0 } else { 100 + id };
            Change::Add(n(id, 1, *k, 2 + (id % 2), status))
        })
        .collect();
    apply(&s, 1, changes).await;
    apply(&s, 2, vec![Change::Add(n(99, 7, Kind::Mention, 2, 500))]).await;
    assert_eq!(ids(&s, 1, &newest(3)).await, vec![15, 14, 13]);
    assert_eq!(ids(&s, 1, &Query { max_id: Some(13), ..newest(3) }).await, vec![12, 11, 10]);
    assert_eq!(ids(&s, 1, &Query { since_id: Some(11), ..newest(2) }).await, vec![15, 14], "the newest above");
    assert_eq!(ids(&s, 1, &Query { min_id: Some(11), ..newest(2) }).await, vec![13, 12], "the oldest above");
    let mentions = Query { types: vec![Kind::Mention], ..newest(10) };
    assert_eq!(ids(&s, 1, &mentions).await, vec![15, 13, 10]);
    let no_mentions = Query { exclude_types: vec![Kind::Mention], ..newest(10) };
    assert_eq!(ids(&s, 1, &no_mentions).await, vec![14, 12, 11]);
    let nothing = Query { types: vec![Kind::Mention], exclude_types: vec![Kind::Mention], ..newest(10) };
    assert!(ids(&s, 1, &nothing).await.is_empty());
    assert_eq!(ids(&s, 1, &Query { account_id: Some(3), ..newest(10) }).await, vec![15, 13, 11]);
}

async fn reads_and_removals_stay_with_the_recipient(s: Arc<dyn NotificationStore>) {
    apply(&s, 1, vec![Change::Add(n(10, 1, Kind::Mention, 2, 100)), Change::Add(n(11, 5, Kind::Mention, 2, 100))])
        .await;
    assert_eq!(s.get(1, 10, NOW).await.unwrap(), Some(n(10, 1, Kind::Mention, 2, 100)));
    assert_eq!(s.get(1, 11, NOW).await.unwrap(), None, "someone else's");
    assert!(!s.dismiss(1, 11).await.unwrap());
    assert_eq!(s.get(5, 11, NOW).await.unwrap().map(|n| n.id), Some(11), "still theirs");
    assert!(s.dismiss(1, 10).await.unwrap());
    assert!(!s.dismiss(1, 10).await.unwrap());
    apply(&s, 2, vec![Change::Add(n(12, 5, Kind::Favourite, 2, 100)), Change::Add(n(13, 1, Kind::Follow, 2, 0))]).await;
    assert_eq!(s.clear(5).await.unwrap(), 2);
    assert_eq!(ids(&s, 1, &newest(10)).await, vec![13]);
}

async fn unread_counts_newer_than_the_marker_up_to_a_limit(s: Arc<dyn NotificationStore>) {
    let changes = (10..20).map(|id| Change::Add(n(id, 1, Kind::Mention, 2, 100 + id))).collect();
    apply(&s, 1, changes).await;
    apply(&s, 2, vec![Change::Add(n(30, 1, Kind::Follow, 3, 0))]).await;
    assert_eq!(s.unread_count(1, 0, &newest(100), NOW).await.unwrap(), 11);
    assert_eq!(s.unread_count(1, 15, &newest(100), NOW).await.unwrap(), 5);
    assert_eq!(s.unread_count(1, 0, &newest(4), NOW).await.unwrap(), 4);
    let follows = Query { types: vec![Kind::Follow], ..newest(100) };
    assert_eq!(s.unread_count(1, 0, &follows, NOW).await.unwrap(), 1);
    assert_eq!(s.unread_count(2, 0, &newest(100), NOW).await.unwrap(), 0);
}

async fn pruning_forgets_old_events_and_expired_mutes(s: Arc<dyn NotificationStore>) {
    assert!(s.apply(1, 100, &[]).await.unwrap());
    assert!(
        s.apply(
            2,
            NOW,
            &[Change::Suppress { recipient_id: 1, account_id: 2, reason: Reason::Muting, expires_at_ms: 500 }]
        )
        .await
        .unwrap()
    );
    assert_eq!(s.prune(1_000).await.unwrap(), 2);
    assert!(s.apply(1, NOW, &[]).await.unwrap(), "forgotten");
    assert!(!s.apply(2, NOW, &[]).await.unwrap(), "kept");
}

async fn subscriptions_and_interactions_are_kept(s: Arc<dyn NotificationStore>) {
    apply(
        &s,
        1,
        vec![
            Change::Subscribe { target_id: 1, follower_id: 3 },
            Change::Subscribe { target_id: 1, follower_id: 2 },
            Change::Subscribe { target_id: 1, follower_id: 2 },
            Change::Subscribe { target_id: 9, follower_id: 4 },
            Change::Interacted { status_id: 100, account_id: 2, how: Interaction::Favourite },
            Change::Interacted { status_id: 100, account_id: 2, how: Interaction::Reply },
            Change::Interacted { status_id: 100, account_id: 5, how: Interaction::Reblog },
        ],
    )
    .await;
    assert_eq!(s.subscribers(1).await.unwrap(), vec![2, 3]);
    assert_eq!(s.interested(100).await.unwrap(), vec![2, 5]);
    apply(
        &s,
        2,
        vec![
            Change::Unsubscribe { target_id: 1, follower_id: 3 },
            Change::Uninteracted { status_id: 100, account_id: 2, how: Interaction::Favourite },
            Change::Uninteracted { status_id: 100, account_id: 5, how: Interaction::Reblog },
        ],
    )
    .await;
    assert_eq!(s.subscribers(1).await.unwrap(), vec![2]);
    assert_eq!(s.interested(100).await.unwrap(), vec![2], "the reply still counts");
    apply(&s, 3, vec![Change::RemoveAboutStatus { status_id: 100 }]).await;
    assert!(s.interested(100).await.unwrap().is_empty());
}

async fn a_renewed_notification_replaces_its_cause(s: Arc<dyn NotificationStore>) {
    apply(&s, 1, vec![Change::Add(n(10, 1, Kind::Update, 2, 100)), Change::Add(n(11, 1, Kind::Mention, 3, 101))]).await;
    apply(&s, 2, vec![Change::Renew(n(12, 1, Kind::Update, 2, 100))]).await;
    assert_eq!(ids(&s, 1, &newest(10)).await, vec![12, 11]);
}

async fn groups_count_their_whole_membership(s: Arc<dyn NotificationStore>) {
    let day = NOW / agora_notification::domain::DAY_MS;
    let mut changes: Vec<Change> = (0..10).map(|i| Change::Add(n(10 + i, 1, Kind::Favourite, 20 + i, 100))).collect();
    changes.push(Change::Add(n(30, 1, Kind::Reblog, 21, 100)));
    changes.push(Change::Add(n(31, 5, Kind::Favourite, 21, 100)));
    changes.push(Change::Add(n(32, 1, Kind::Follow, 40, 0)));
    changes.push(Change::Add(n(33, 1, Kind::Follow, 41, 0)));
    changes.push(Change::Add(Notification {
        created_at_ms: NOW + agora_notification::domain::DAY_MS,
        ..n(34, 1, Kind::Follow, 42, 0)
    }));
    apply(&s, 1, changes).await;
    let favs = s.group_stats(1, Group::OfStatus { kind: Kind::Favourite, status_id: 100 }, NOW).await.unwrap();
    assert_eq!((favs.count, favs.most_recent_id), (10, 19), "only the recipient's favourites of that status");
    assert_eq!(favs.sample_account_ids, (22..30).rev().collect::<Vec<_>>(), "the newest actors first");
    let follows = s.group_stats(1, Group::OfDay { kind: Kind::Follow, day }, NOW).await.unwrap();
    assert_eq!((follows.count, follows.most_recent_id, follows.sample_account_ids), (2, 33, vec![41, 40]));
    let single = s.group_stats(1, Group::Single(30), NOW).await.unwrap();
    assert_eq!((single.count, single.sample_account_ids), (1, vec![21]));
    apply(
        &s,
        2,
        vec![Change::Suppress { recipient_id: 1, account_id: 29, reason: Reason::Muting, expires_at_ms: NOW + 10 }],
    )
    .await;
    let favs = s.group_stats(1, Group::OfStatus { kind: Kind::Favourite, status_id: 100 }, NOW).await.unwrap();
    assert_eq!((favs.count, favs.most_recent_id), (9, 18), "an actor the recipient stopped hearing drops out");
}

fn push_sub(account_id: i64, session_id: i64, endpoint: &str) -> PushSubscription {
    PushSubscription {
        id: session_id * 10,
        account_id,
        session_id,
        endpoint: endpoint.to_owned(),
        p256dh: "BPub".to_owned(),
        auth: "auth".to_owned(),
        standard: false,
        alerts: vec!["favourite".to_owned(), "mention".to_owned()],
        policy: Policy::Followed,
        access_token: "token".to_owned(),
        server_key: "server".to_owned(),
        created_at_ms: NOW,
    }
}

async fn push_subscriptions_are_one_per_session(s: Arc<dyn NotificationStore>) {
    assert_eq!(s.push_subscription(1, 7).await.unwrap(), None);
    assert!(s.push_subscriptions(1).await.unwrap().is_empty());
    let first = push_sub(1, 7, "https://push.example/a");
    s.put_push_subscription(&first).await.unwrap();
    assert_eq!(s.push_subscription(1, 7).await.unwrap(), Some(first.clone()), "read back whole");
    // The same session subscribing again replaces it; another session adds one.
    let again = PushSubscription {
        id: 71,
        standard: true,
        policy: Policy::All,
        alerts: vec![],
        ..push_sub(1, 7, "https://push.example/b")
    };
    s.put_push_subscription(&again).await.unwrap();
    s.put_push_subscription(&push_sub(1, 8, "https://push.example/c")).await.unwrap();
    s.put_push_subscription(&push_sub(2, 9, "https://push.example/d")).await.unwrap();
    let mine: Vec<(i64, String)> =
        s.push_subscriptions(1).await.unwrap().into_iter().map(|p| (p.session_id, p.endpoint)).collect();
    assert_eq!(mine, [(7, "https://push.example/b".to_owned()), (8, "https://push.example/c".to_owned())]);
    assert_eq!(s.push_subscription(1, 7).await.unwrap(), Some(again));
    assert!(s.delete_push_subscription(1, 7).await.unwrap());
    assert!(!s.delete_push_subscription(1, 7).await.unwrap(), "gone already");
    assert!(!s.delete_push_subscription(2, 8).await.unwrap(), "another account's session is not touched");
    assert_eq!(s.push_subscriptions(1).await.unwrap().len(), 1);
    assert_eq!(s.push_subscriptions(2).await.unwrap().len(), 1);
}

async fn the_first_vapid_key_wins_until_replaced(s: Arc<dyn NotificationStore>) {
    assert_eq!(s.vapid_key().await.unwrap(), None);
    let a = VapidKey { private_key: "a-private".into(), public_key: "a-public".into(), created_at_ms: 1 };
    let b = VapidKey { private_key: "b-private".into(), public_key: "b-public".into(), created_at_ms: 2 };
    assert_eq!(s.put_vapid_key(&a, false).await.unwrap(), a);
    assert_eq!(s.put_vapid_key(&b, false).await.unwrap(), a, "a second first writer gets the key that won");
    assert_eq!(s.put_vapid_key(&b, true).await.unwrap(), b, "a rotation replaces it");
    assert_eq!(s.vapid_key().await.unwrap(), Some(b));
}

async fn sqlite() -> Option<Arc<dyn NotificationStore>> {
    let dir = agora_testkit::scratch_dir().unwrap();
    let url = format!("sqlite://{}/notification.db", dir.display());
    let s = store::connect(&url, false).await.unwrap();
    s.migrate().await.unwrap();
    Some(s)
}

async fn postgres() -> Option<Arc<dyn NotificationStore>> {
    let admin = agora_testkit::test_server("AGORA_TEST_POSTGRES_URL")?;
    let url = agora_testkit::fresh_postgres_database(&admin).await.unwrap();
    let s = store::connect(&url, false).await.unwrap();
    s.migrate().await.unwrap();
    s.migrate().await.unwrap(); // migrations are idempotent
    Some(s)
}

async fn scylla() -> Option<Arc<dyn NotificationStore>> {
    let base = agora_testkit::test_server("AGORA_TEST_SCYLLA_URL")?;
    let s = store::connect(&agora_testkit::fresh_scylla_keyspace(&base), true).await.unwrap();
    agora_testkit::wait_until_ready(|| s.ping()).await.unwrap();
    s.migrate().await.unwrap(); // migrations are idempotent
    Some(s)
}

agora_testkit::conformance!(
    backends: [sqlite, postgres, scylla],
    cases: [
        a_cause_notifies_once_and_an_event_applies_once,
        causes_and_statuses_remove_what_they_notified,
        an_accepted_request_replaces_its_notification,
        suppressions_stop_writes_remove_the_past_and_expire,
        a_suppression_hides_at_read_too,
        pages_filter_and_walk_both_ways,
        reads_and_removals_stay_with_the_recipient,
        unread_counts_newer_than_the_marker_up_to_a_limit,
        pruning_forgets_old_events_and_expired_mutes,
        subscriptions_and_interactions_are_kept,
        a_renewed_notification_replaces_its_cause,
        groups_count_their_whole_membership,
        push_subscriptions_are_one_per_session,
        the_first_vapid_key_wins_until_replaced,
    ]
);
