//! The notification rules, driven by post and graph events as the bus delivers them.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use agora_events::Envelope;
use agora_kit::IdGenerator;
use agora_notification::Notifications;
use agora_notification::domain::{Kind, Query};
use agora_proto::events::v1::{GraphChanged, StatusDeleted, StatusFavourited, StatusPosted, StatusReacted};
use prost::Message;

const ALICE: i64 = 1;
const BOB: i64 = 2;
const CAROL: i64 = 3;

struct World {
    notifications: Notifications,
    events: AtomicI64,
    live: Arc<agora_client::live::MemoryLive>,
}

impl World {
    async fn new() -> Self {
        let dir = agora_testkit::scratch_dir().unwrap();
        let store =
            agora_notification::store::connect(&format!("sqlite://{}/n.db", dir.display()), true).await.unwrap();
        let live = Arc::new(agora_client::live::MemoryLive::default());
        let announced: Arc<dyn agora_client::live::Live> = live.clone();
        let notifications = Notifications::new(store, Arc::new(IdGenerator::new(1)), Some(announced));
        Self { notifications, events: AtomicI64::new(1), live }
    }

    fn envelope(&self, kind: &str, payload: Vec<u8>) -> Envelope {
        Envelope {
            id: self.events.fetch_add(1, Ordering::Relaxed),
            r#type: kind.into(),
            occurred_at_ms: agora_kit::time::now_ms(),
            payload,
            ..Default::default()
        }
    }

    async fn send(&self, kind: &str, payload: Vec<u8>) -> Envelope {
        let env = self.envelope(kind, payload);
        self.notifications.handle(&env).await.unwrap();
        env
    }

    async fn post(&self, s: StatusPosted) -> Envelope {
        self.send("post.created", s.encode_to_vec()).await
    }

    async fn graph(&self, kind: &str, account_id: i64, target_id: i64) {
        self.send(kind, GraphChanged { account_id, target_id, ..Default::default() }.encode_to_vec()).await;
    }

    async fn favourite(&self, kind: &str, by: i64, status_id: i64, author: i64) {
        let f = StatusFavourited { status_id, status_account_id: author, account_id: by, occurred_at_ms: 0 };
        self.send(kind, f.encode_to_vec()).await;
    }

    async fn react(&self, kind: &str, by: i64, status_id: i64, author: i64, emoji: &str) {
        let r = StatusReacted {
            status_id,
            status_account_id: author,
            account_id: by,
            emoji: emoji.into(),
            occurred_at_ms: 0,
        };
        self.send(kind, r.encode_to_vec()).await;
    }

    /// (type, actor, status) of the account's notifications, newest first.
    async fn of(&self, account: i64) -> Vec<(Kind, i64, i64)> {
        let q = Query { limit: 40, ..Default::default() };
        self.notifications
            .list(account, &q)
            .await
            .unwrap()
            .into_iter()
            .map(|n| (n.kind, n.account_id, n.status_id))
            .collect()
    }
}

fn status(id: i64, author: i64, visibility: &str, mentions: &[i64]) -> StatusPosted {
    StatusPosted {
        id,
        account_id: author,
        visibility: visibility.into(),
        mention_ids: mentions.to_vec(),
        ..Default::default()
    }
}

#[tokio::test]
async fn mentions_notify_each_account_once_and_never_the_author() {
    let w = World::new().await;
    w.post(status(100, ALICE, "public", &[BOB, BOB, ALICE])).await;
    // A private mention of someone who does not follow the author still reaches them.
    w.post(status(101, ALICE, "private", &[CAROL])).await;
    w.post(status(102, ALICE, "direct", &[CAROL])).await;
    assert_eq!(w.of(BOB).await, vec![(Kind::Mention, ALICE, 100)]);
    assert_eq!(w.of(CAROL).await, vec![(Kind::Mention, ALICE, 102), (Kind::Mention, ALICE, 101)]);
    assert!(w.of(ALICE).await.is_empty());
}

#[tokio::test]
async fn a_redelivered_event_notifies_once() {
    let w = World::new().await;
    let env = w.post(status(100, ALICE, "public", &[BOB])).await;
    w.notifications.handle(&env).await.unwrap();
    w.notifications.handle(&env).await.unwrap();
    assert_eq!(w.of(BOB).await.len(), 1);
}

#[tokio::test]
async fn reblogs_and_favourites_notify_the_author_until_undone() {
    let w = World::new().await;
    let reblog = StatusPosted {
        id: 200,
        account_id: BOB,
        visibility: "public".into(),
        reblog_of_id: 100,
        reblog_of_account_id: ALICE,
        ..Default::default()
    };
    w.post(reblog).await;
    w.favourite("post.favourited", CAROL, 100, ALICE).await;
    w.favourite("post.favourited", ALICE, 100, ALICE).await; // one's own: nothing
    assert_eq!(w.of(ALICE).await, vec![(Kind::Favourite, CAROL, 100), (Kind::Reblog, BOB, 100)]);
    w.favourite("post.unfavourited", CAROL, 100, ALICE).await;
    let unreblog = StatusDeleted { id: 200, account_id: BOB, reblog_of_id: 100, deleted_at_ms: 0 };
    w.send("post.deleted", unreblog.encode_to_vec()).await;
    assert!(w.of(ALICE).await.is_empty());
}

#[tokio::test]
async fn reactions_notify_the_author_once_per_account_until_the_last_is_taken_back() {
    let w = World::new().await;
    w.react("post.reacted", CAROL, 100, ALICE, "👍").await;
    w.react("post.reacted", CAROL, 100, ALICE, "🦀").await; // a second emoji: still one
    w.react("post.reacted", ALICE, 100, ALICE, "👍").await; // one's own: nothing
    w.react("post.reacted", BOB, 100, ALICE, "👍").await;
    assert_eq!(w.of(ALICE).await, vec![(Kind::Reaction, BOB, 100), (Kind::Reaction, CAROL, 100)]);
    w.react("post.unreacted", CAROL, 100, ALICE, "🦀").await;
    assert_eq!(w.of(ALICE).await, vec![(Kind::Reaction, BOB, 100)]);
    w.graph("graph.blocked", ALICE, BOB).await;
    w.react("post.reacted", BOB, 101, ALICE, "👍").await;
    assert!(w.of(ALICE).await.is_empty(), "a blocked account's reactions notify nobody");
}

#[tokio::test]
async fn a_deleted_status_takes_its_notifications_along() {
    let w = World::new().await;
    w.post(status(100, ALICE, "public", &[BOB])).await;
    w.favourite("post.favourited", CAROL, 100, ALICE).await;
    w.send("post.deleted", StatusDeleted { id: 100, account_id: ALICE, ..Default::default() }.encode_to_vec()).await;
    assert!(w.of(BOB).await.is_empty());
    assert!(w.of(ALICE).await.is_empty());
}

#[tokio::test]
async fn follows_and_requests_notify_the_followed_until_undone() {
    let w = World::new().await;
    w.graph("graph.followed", BOB, ALICE).await;
    w.graph("graph.follow_requested", CAROL, ALICE).await;
    assert_eq!(w.of(ALICE).await, vec![(Kind::FollowRequest, CAROL, 0), (Kind::Follow, BOB, 0)]);
    // Alice accepts Carol: the request's notification goes, and no follow one replaces it.
    w.graph("graph.followed", CAROL, ALICE).await;
    assert_eq!(w.of(ALICE).await, vec![(Kind::Follow, BOB, 0)]);
    w.graph("graph.unfollowed", BOB, ALICE).await;
    assert!(w.of(ALICE).await.is_empty());
}

#[tokio::test]
async fn a_blocked_account_notifies_nobody_either_way_until_unblocked() {
    let w = World::new().await;
    w.post(status(100, BOB, "public", &[ALICE])).await;
    w.graph("graph.blocked", ALICE, BOB).await;
    assert!(w.of(ALICE).await.is_empty(), "the block removes what Bob notified");
    w.post(status(101, BOB, "public", &[ALICE])).await;
    w.favourite("post.favourited", BOB, 50, ALICE).await;
    w.post(status(102, ALICE, "public", &[BOB])).await;
    assert!(w.of(ALICE).await.is_empty());
    assert!(w.of(BOB).await.is_empty(), "the blocked side hears nothing from the blocker either");
    w.graph("graph.unblocked", ALICE, BOB).await;
    w.post(status(103, BOB, "public", &[ALICE])).await;
    assert_eq!(w.of(ALICE).await, vec![(Kind::Mention, BOB, 103)]);
}

#[tokio::test]
async fn only_a_mute_that_covers_notifications_silences() {
    let w = World::new().await;
    let mute = |notifications: bool, expires: i64| GraphChanged {
        account_id: ALICE,
        target_id: BOB,
        mute_notifications: notifications,
        mute_expires_at_ms: expires,
        ..Default::default()
    };
    w.send("graph.muted", mute(false, 0).encode_to_vec()).await;
    w.post(status(100, BOB, "public", &[ALICE])).await;
    assert_eq!(w.of(ALICE).await.len(), 1, "a mute of posts only");
    w.send("graph.muted", mute(true, 0).encode_to_vec()).await;
    w.post(status(101, BOB, "public", &[ALICE])).await;
    assert!(w.of(ALICE).await.is_empty());
    w.graph("graph.unmuted", ALICE, BOB).await;
    w.post(status(102, BOB, "public", &[ALICE])).await;
    assert_eq!(w.of(ALICE).await, vec![(Kind::Mention, BOB, 102)]);
    // A timed mute that has already run out silences nothing.
    w.send("graph.muted", mute(true, agora_kit::time::now_ms() - 1).encode_to_vec()).await;
    w.post(status(103, BOB, "public", &[ALICE])).await;
    assert_eq!(w.of(ALICE).await, vec![(Kind::Mention, BOB, 103)]);
}

#[tokio::test]
async fn another_accounts_notification_is_not_found() {
    let w = World::new().await;
    w.post(status(100, ALICE, "public", &[BOB])).await;
    let q = Query { limit: 40, ..Default::default() };
    let id = w.notifications.list(BOB, &q).await.unwrap()[0].id;
    assert!(matches!(w.notifications.get(CAROL, id).await, Err(agora_notification::NotificationError::NotFound)));
    assert!(matches!(w.notifications.dismiss(CAROL, id).await, Err(agora_notification::NotificationError::NotFound)));
    assert_eq!(w.notifications.get(BOB, id).await.unwrap().id, id);
    w.notifications.dismiss(BOB, id).await.unwrap();
    assert!(w.of(BOB).await.is_empty());
}

async fn follow(w: &World, follower: i64, target: i64, notify: bool) {
    let g = GraphChanged { account_id: follower, target_id: target, notify, show_reblogs: true, ..Default::default() };
    w.send("graph.followed", g.encode_to_vec()).await;
}

#[tokio::test]
async fn followers_who_asked_hear_of_new_statuses_that_reach_them() {
    let w = World::new().await;
    follow(&w, BOB, ALICE, true).await;
    follow(&w, CAROL, ALICE, false).await;
    w.post(status(100, ALICE, "public", &[])).await;
    w.post(status(101, ALICE, "private", &[])).await;
    w.post(status(102, ALICE, "direct", &[])).await; // a direct message is not news to followers
    let reply = StatusPosted { in_reply_to_id: 50, in_reply_to_account_id: CAROL, ..status(103, ALICE, "public", &[]) };
    w.post(reply).await; // nor is a reply to someone else
    w.post(status(104, ALICE, "public", &[BOB])).await; // the mention already tells him
    let statuses: Vec<_> = w.of(BOB).await.into_iter().filter(|(k, _, _)| *k != Kind::Follow).collect();
    assert_eq!(statuses, vec![(Kind::Mention, ALICE, 104), (Kind::Status, ALICE, 101), (Kind::Status, ALICE, 100)]);
    assert!(w.of(CAROL).await.iter().all(|(k, _, _)| *k != Kind::Status), "Carol did not ask");
    // Turning it off (a follow re-announced with notify off), then unfollowing, stop it.
    follow(&w, BOB, ALICE, false).await;
    w.post(status(105, ALICE, "public", &[])).await;
    follow(&w, CAROL, ALICE, true).await;
    w.graph("graph.unfollowed", CAROL, ALICE).await;
    w.post(status(106, ALICE, "public", &[])).await;
    assert!(!w.of(BOB).await.iter().any(|(_, _, s)| *s == 105 || *s == 106));
    assert!(!w.of(CAROL).await.iter().any(|(_, _, s)| *s == 106));
}

#[tokio::test]
async fn an_edit_notifies_those_who_took_part_once_per_status() {
    let w = World::new().await;
    w.post(status(100, ALICE, "public", &[])).await;
    w.favourite("post.favourited", BOB, 100, ALICE).await;
    let reblog = StatusPosted { reblog_of_id: 100, reblog_of_account_id: ALICE, ..status(200, CAROL, "public", &[]) };
    w.post(reblog).await;
    let reply = StatusPosted { in_reply_to_id: 100, in_reply_to_account_id: ALICE, ..status(201, 4, "public", &[]) };
    w.post(reply).await;
    w.favourite("post.favourited", ALICE, 100, ALICE).await; // her own favourite: not for her
    let edit = status(100, ALICE, "public", &[]);
    w.send("post.updated", edit.encode_to_vec()).await;
    w.send("post.updated", edit.encode_to_vec()).await;
    for who in [BOB, CAROL, 4] {
        let updates: Vec<_> = w.of(who).await.into_iter().filter(|(k, _, _)| *k == Kind::Update).collect();
        assert_eq!(updates, vec![(Kind::Update, ALICE, 100)], "account {who}: one update, for the latest edit");
    }
    assert!(w.of(ALICE).await.iter().all(|(k, _, _)| *k != Kind::Update));
    // Taking part no longer (an unfavourite) means no further updates.
    w.favourite("post.unfavourited", BOB, 100, ALICE).await;
    w.notifications.clear(BOB).await.unwrap();
    w.send("post.updated", edit.encode_to_vec()).await;
    assert!(w.of(BOB).await.is_empty());
}

#[tokio::test]
async fn favourites_of_a_status_and_a_days_follows_fold_into_groups_with_their_totals() {
    let w = World::new().await;
    for fan in 10..20 {
        w.favourite("post.favourited", fan, 100, ALICE).await;
    }
    w.post(status(300, BOB, "public", &[ALICE])).await;
    w.graph("graph.followed", BOB, ALICE).await;
    w.graph("graph.followed", CAROL, ALICE).await;
    // A page of 5 notifications: two follows, the mention, two of the ten favourites.
    let q = Query { limit: 5, ..Default::default() };
    let (groups, page) = w.notifications.groups(ALICE, &q, &agora_notification::domain::DEFAULT_GROUPED).await.unwrap();
    assert_eq!(page.len(), 5);
    let shape: Vec<(Kind, i64, usize)> =
        groups.iter().map(|(g, s)| (g.kind, s.count, s.sample_account_ids.len())).collect();
    assert_eq!(shape, vec![(Kind::Follow, 2, 2), (Kind::Mention, 1, 1), (Kind::Favourite, 10, 8)]);
    let (fav, stats) = &groups[2];
    assert_eq!(fav.key, "favourite-100");
    assert_eq!(stats.sample_account_ids[0], 19, "the newest actor first");
    assert_eq!(stats.most_recent_id, fav.page_max_id);
    // Blocking one of the fans takes them out of the total at once.
    w.graph("graph.blocked", ALICE, 19).await;
    let (groups, _) = w.notifications.groups(ALICE, &q, &[Kind::Favourite]).await.unwrap();
    let fav = groups.iter().find(|(g, _)| g.kind == Kind::Favourite).unwrap();
    assert_eq!(fav.1.count, 9);
    assert!(!fav.1.sample_account_ids.contains(&19));
}

#[tokio::test]
async fn a_new_notification_is_announced_to_its_recipient_once() {
    use agora_client::live::{Live as _, LiveEvent, Topic};
    let w = World::new().await;
    let mut alice = w.live.subscribe(&Topic::Account(ALICE)).await.unwrap();
    let mut carol = w.live.subscribe(&Topic::Account(CAROL)).await.unwrap();
    let mention = w.post(status(100, BOB, "public", &[ALICE])).await;
    let id = w.notifications.list(ALICE, &Query { limit: 1, ..Default::default() }).await.unwrap()[0].id;
    assert_eq!(alice.next().await, Some(LiveEvent::Notification(id)), "the mention is announced to Alice");
    // A redelivery of the same event is not announced again; the next event is.
    w.notifications.handle(&mention).await.unwrap();
    w.favourite("post.favourited", CAROL, 100, BOB).await;
    w.graph("graph.followed", BOB, CAROL).await;
    let follow = w.notifications.list(CAROL, &Query { limit: 1, ..Default::default() }).await.unwrap()[0].id;
    assert_eq!(carol.next().await, Some(LiveEvent::Notification(follow)), "only Carol's own, not Bob's favourite");
    let mut bob = w.live.subscribe(&Topic::Account(BOB)).await.unwrap();
    w.post(status(101, CAROL, "public", &[ALICE])).await;
    let next = w.notifications.list(ALICE, &Query { limit: 1, ..Default::default() }).await.unwrap()[0].id;
    assert_eq!(alice.next().await, Some(LiveEvent::Notification(next)), "nothing from the redelivery came first");
    w.favourite("post.favourited", ALICE, 101, CAROL).await;
    w.favourite("post.favourited", ALICE, 100, BOB).await;
    let fav = w.notifications.list(BOB, &Query { limit: 1, ..Default::default() }).await.unwrap()[0].id;
    assert_eq!(bob.next().await, Some(LiveEvent::Notification(fav)));
}
