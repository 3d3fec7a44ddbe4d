//! The post-store conformance suite. Every case runs on SQLite and on PostgreSQL
//! (`AGORA_TEST_POSTGRES_URL`); a new backend adds one line to `conformance!`.

use std::collections::HashSet;
use std::sync::Arc;

use agora_events::Envelope;
use agora_post::domain::{MentionRecord, StatusRecord, Visibility};
use agora_post::store::{self, Bounds, Inserted, NewStatus, PostStore, StatusEdit, StoreError};

static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);

/// Increasing ids, unique across the cases of one run (they share nothing but this counter).
fn id() -> i64 {
    (1 << 40) + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn account() -> i64 {
    id()
}

fn ev(kind: &str) -> impl Fn(&StatusRecord) -> Envelope + Send + Sync + '_ {
    move |s: &StatusRecord| Envelope {
        id: id(),
        r#type: kind.into(),
        aggregate_id: s.id.to_string(),
        occurred_at_ms: 1,
        ..Default::default()
    }
}

fn fav_event(status_id: i64, kind: &str) -> Envelope {
    Envelope {
        id: id(),
        r#type: kind.into(),
        aggregate_id: status_id.to_string(),
        occurred_at_ms: agora_kit::time::now_ms(),
        ..Default::default()
    }
}

fn status(account_id: i64, text: &str) -> NewStatus {
    NewStatus {
        id: id(),
        account_id,
        text: text.into(),
        content: format!("<p>{text}</p>"),
        spoiler_text: String::new(),
        sensitive: false,
        visibility: Visibility::Public,
        language: "en".into(),
        in_reply_to_id: None,
        in_reply_to_account_id: None,
        reblog_of_id: None,
        created_at_ms: agora_kit::time::now_ms(),
        application_name: String::new(),
        idempotency_key: None,
        mentions: Vec::new(),
        tags: Vec::new(),
    }
}

fn reblog_of(account_id: i64, original: i64) -> NewStatus {
    NewStatus { reblog_of_id: Some(original), text: String::new(), content: String::new(), ..status(account_id, "") }
}

async fn post(s: &Arc<dyn PostStore>, new: NewStatus) -> StatusRecord {
    match s.create_status(&new, &ev("post.created")).await.unwrap() {
        Inserted::New(r) => r,
        other => panic!("expected a new status, got {other:?}"),
    }
}

async fn one(s: &Arc<dyn PostStore>, id: i64) -> StatusRecord {
    s.statuses(&[id]).await.unwrap().pop().unwrap()
}

/// Pending outbox events about `aggregate` of type `kind`.
async fn events(s: &Arc<dyn PostStore>, aggregate: i64, kind: &str) -> usize {
    let pending = s.outbox().pending(100_000).await.unwrap();
    pending
        .iter()
        .filter(|p| p.envelope.aggregate_id == aggregate.to_string() && p.envelope.r#type == kind)
        .inspect(|p| assert_eq!(p.topic, "agora.post.v1"))
        .count()
}

async fn creating_writes_the_status_and_its_event(s: Arc<dyn PostStore>) {
    let author = account();
    let mut new = status(author, "hello @bob @carol #Rust #go");
    new.mentions = vec![
        MentionRecord { account_id: 42, username: "bob".into() },
        MentionRecord { account_id: 43, username: "carol".into() },
    ];
    new.tags = vec!["go".into(), "rust".into()];
    new.visibility = Visibility::Private;
    new.spoiler_text = "cw".into();
    let created = post(&s, new.clone()).await;
    assert_eq!(created.id, new.id);
    assert_eq!(created.text, "hello @bob @carol #Rust #go");
    assert_eq!(created.visibility, Visibility::Private);
    assert_eq!(created.mentions, new.mentions);
    assert_eq!(created.tags, vec!["go".to_owned(), "rust".to_owned()]);
    assert_eq!(created.spoiler_text, "cw");
    assert!(!created.deleted);
    assert_eq!(events(&s, created.id, "post.created").await, 1);
    assert_eq!(one(&s, created.id).await, created);
    assert!(s.statuses(&[id()]).await.unwrap().is_empty());

    // Given out of order and twice, mentions and tags come back once each, in a read's order,
    // from the write as from the next read.
    let mut messy = status(author, "@carol @bob @bob #rust #go #rust");
    messy.mentions = vec![
        MentionRecord { account_id: 43, username: "carol".into() },
        MentionRecord { account_id: 42, username: "bob".into() },
        MentionRecord { account_id: 42, username: "bob".into() },
    ];
    messy.tags = vec!["rust".into(), "go".into(), "rust".into()];
    let created = post(&s, messy).await;
    assert_eq!(created.mentions.iter().map(|m| m.account_id).collect::<Vec<_>>(), vec![42, 43]);
    assert_eq!(created.tags, vec!["go".to_owned(), "rust".to_owned()]);
    assert_eq!(one(&s, created.id).await, created);
}

async fn an_idempotency_key_returns_the_first_status(s: Arc<dyn PostStore>) {
    let author = account();
    let mut first = status(author, "once");
    first.idempotency_key = Some("key-1".into());
    let created = post(&s, first.clone()).await;
    let mut again = status(author, "twice");
    again.idempotency_key = Some("key-1".into());
    match s.create_status(&again, &ev("post.created")).await.unwrap() {
        Inserted::Existing(r) => assert_eq!(r.id, created.id),
        other => panic!("expected the first status, got {other:?}"),
    }
    assert!(s.statuses(&[again.id]).await.unwrap().is_empty(), "nothing written for the repeat");
    assert_eq!(events(&s, again.id, "post.created").await, 0);
    // Another account may use the same key.
    let mut other = status(account(), "mine");
    other.idempotency_key = Some("key-1".into());
    post(&s, other).await;
    // A key older than an hour no longer counts.
    let mut old = status(author, "old");
    old.idempotency_key = Some("key-2".into());
    old.created_at_ms -= 2 * 3600 * 1000;
    post(&s, old).await;
    let mut fresh = status(author, "fresh");
    fresh.idempotency_key = Some("key-2".into());
    post(&s, fresh).await;
}

async fn favourite_counts_stay_exact_under_concurrency(s: Arc<dyn PostStore>) {
    let target = post(&s, status(account(), "popular")).await;
    let fans: Vec<i64> = (0..50).map(|_| account()).collect();
    let mut tasks = Vec::new();
    for fan in fans.clone() {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            s.favourite(id(), fan, target.id, &fav_event(target.id, "post.favourited")).await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().unwrap());
    }
    assert_eq!(one(&s, target.id).await.favourites_count, 50);
    assert_eq!(events(&s, target.id, "post.favourited").await, 50);

    // Favouriting twice changes nothing and announces nothing.
    assert!(!s.favourite(id(), fans[0], target.id, &fav_event(target.id, "post.favourited")).await.unwrap());
    assert_eq!(one(&s, target.id).await.favourites_count, 50);
    assert_eq!(events(&s, target.id, "post.favourited").await, 50);

    assert!(s.unfavourite(fans[0], target.id, &fav_event(target.id, "post.unfavourited")).await.unwrap());
    assert!(!s.unfavourite(fans[0], target.id, &fav_event(target.id, "post.unfavourited")).await.unwrap());
    assert_eq!(one(&s, target.id).await.favourites_count, 49);
    assert_eq!(events(&s, target.id, "post.unfavourited").await, 1);

    let err = s.favourite(id(), fans[0], id(), &fav_event(0, "post.favourited")).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

async fn an_account_reblogs_a_status_once(s: Arc<dyn PostStore>) {
    let original = post(&s, status(account(), "boost me")).await;
    let booster = account();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move { s.reblog(&reblog_of(booster, original.id), &ev("post.created")).await }));
    }
    let mut new = Vec::new();
    let mut existing = HashSet::new();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Inserted::New(r) => new.push(r.id),
            Inserted::Existing(r) => {
                existing.insert(r.id);
            }
        }
    }
    assert_eq!(new.len(), 1, "exactly one reblog written");
    assert!(existing.iter().all(|e| *e == new[0]));
    assert_eq!(one(&s, original.id).await.reblogs_count, 1);
    assert_eq!(events(&s, new[0], "post.created").await, 1);

    let marks = s.viewer_marks(booster, &[original.id]).await.unwrap();
    assert!(marks.reblogged.contains(&original.id));
    let by = s.reblogged_by(original.id, Bounds { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(by.iter().map(|e| e.id).collect::<Vec<_>>(), vec![booster]);

    let undone = s.unreblog(booster, original.id, &ev("post.deleted")).await.unwrap().unwrap();
    assert_eq!(undone.id, new[0]);
    assert!(s.unreblog(booster, original.id, &ev("post.deleted")).await.unwrap().is_none());
    assert_eq!(one(&s, original.id).await.reblogs_count, 0);
    assert_eq!(events(&s, new[0], "post.deleted").await, 1);
    assert!(s.statuses(&[new[0]]).await.unwrap().is_empty());
}

async fn deleting_takes_reblogs_along_and_keeps_replies(s: Arc<dyn PostStore>) {
    let author = account();
    let original = post(&s, status(author, "doomed")).await;
    let mut reply = status(account(), "a reply");
    reply.in_reply_to_id = Some(original.id);
    reply.in_reply_to_account_id = Some(author);
    let reply = post(&s, reply).await;
    assert_eq!(one(&s, original.id).await.replies_count, 1);
    let mut reblog_ids = Vec::new();
    for _ in 0..3 {
        let r = s.reblog(&reblog_of(account(), original.id), &ev("post.created")).await.unwrap();
        reblog_ids.push(r.status().id);
    }
    s.pin(id(), author, original.id).await.unwrap();

    let deleted = s.delete_status(original.id, 7, &ev("post.deleted")).await.unwrap().unwrap();
    assert!(deleted.status.deleted);
    let mut gone: Vec<i64> = deleted.reblogs.iter().map(|r| r.id).collect();
    gone.sort_unstable();
    assert_eq!(gone, reblog_ids);
    for r in &reblog_ids {
        assert!(s.statuses(&[*r]).await.unwrap().is_empty());
        assert_eq!(events(&s, *r, "post.deleted").await, 1);
    }
    assert_eq!(events(&s, original.id, "post.deleted").await, 1);
    assert!(one(&s, original.id).await.deleted);
    assert_eq!(one(&s, reply.id).await.in_reply_to_id, Some(original.id), "replies keep their parent");
    assert!(s.pinned_of(author).await.unwrap().is_empty());
    assert!(s.delete_status(original.id, 8, &ev("post.deleted")).await.unwrap().is_none(), "once only");
    assert_eq!(events(&s, original.id, "post.deleted").await, 1);
    let err = s.reblog(&reblog_of(account(), original.id), &ev("post.created")).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");

    // Deleting a reply gives its parent's count back.
    let parent = post(&s, status(author, "parent")).await;
    let mut child = status(account(), "child");
    child.in_reply_to_id = Some(parent.id);
    let child = post(&s, child).await;
    assert_eq!(one(&s, parent.id).await.replies_count, 1);
    s.delete_status(child.id, 9, &ev("post.deleted")).await.unwrap().unwrap();
    assert_eq!(one(&s, parent.id).await.replies_count, 0);
    let replies = s.replies(&[parent.id]).await.unwrap();
    assert_eq!(replies.len(), 1);
    assert!(replies[0].deleted);
}

async fn edits_keep_their_history(s: Arc<dyn PostStore>) {
    let mut first = status(account(), "v1 @bob");
    first.mentions = vec![MentionRecord { account_id: 5, username: "bob".into() }];
    let created = post(&s, first).await;
    assert_eq!(s.history(created.id).await.unwrap().len(), 1, "one version before any edit");
    for (n, text) in ["v2 #new", "v3"].iter().enumerate() {
        let edit = StatusEdit {
            text: (*text).into(),
            content: format!("<p>{text}</p>"),
            spoiler_text: if n == 0 { "cw".into() } else { String::new() },
            sensitive: n == 0,
            language: "fr".into(),
            mentions: Vec::new(),
            tags: if n == 0 { vec!["new".into()] } else { Vec::new() },
            edited_at_ms: created.created_at_ms + 1000 * (n as i64 + 1),
            edit_ids: [id(), id()],
        };
        let edited = s.edit_status(created.id, &edit, &ev("post.updated")).await.unwrap();
        assert_eq!(edited.text, *text);
        assert_eq!(edited.edited_at_ms, Some(edit.edited_at_ms));
        assert!(edited.mentions.is_empty(), "mentions follow the new text");
        assert_eq!(edited.tags, edit.tags);
        assert_eq!(edited.language, "fr");
    }
    let history = s.history(created.id).await.unwrap();
    let contents: Vec<&str> = history.iter().map(|h| h.content.as_str()).collect();
    assert_eq!(contents, vec!["<p>v1 @bob</p>", "<p>v2 #new</p>", "<p>v3</p>"]);
    assert!(history[1].sensitive && history[1].spoiler_text == "cw");
    assert_eq!(history[0].created_at_ms, created.created_at_ms);
    assert_eq!(events(&s, created.id, "post.updated").await, 2);
    let missing = StatusEdit {
        text: "x".into(),
        content: "x".into(),
        spoiler_text: String::new(),
        sensitive: false,
        language: String::new(),
        mentions: Vec::new(),
        tags: Vec::new(),
        edited_at_ms: 1,
        edit_ids: [id(), id()],
    };
    let err = s.edit_status(id(), &missing, &ev("post.updated")).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound));
}

async fn favourites_and_bookmarks_page_newest_first(s: Arc<dyn PostStore>) {
    let me = account();
    let mut statuses = Vec::new();
    for n in 0..5 {
        statuses.push(post(&s, status(account(), &format!("s{n}"))).await.id);
    }
    for sid in &statuses {
        assert!(s.favourite(id(), me, *sid, &fav_event(*sid, "post.favourited")).await.unwrap());
        assert!(s.bookmark(id(), me, *sid).await.unwrap());
    }
    assert!(!s.bookmark(id(), me, statuses[0]).await.unwrap(), "bookmarking twice is a no-op");
    let newest_first: Vec<i64> = statuses.iter().rev().copied().collect();
    for list in ["favourites", "bookmarks"] {
        let page = |b: Bounds| {
            let s = Arc::clone(&s);
            async move {
                if list == "favourites" {
                    s.favourites_of(me, b).await.unwrap()
                } else {
                    s.bookmarks_of(me, b).await.unwrap()
                }
            }
        };
        let first = page(Bounds { limit: 2, ..Default::default() }).await;
        assert_eq!(first.iter().map(|e| e.id).collect::<Vec<_>>(), newest_first[..2], "{list}");
        let second = page(Bounds { limit: 2, max_id: Some(first[1].cursor), ..Default::default() }).await;
        assert_eq!(second.iter().map(|e| e.id).collect::<Vec<_>>(), newest_first[2..4], "{list}");
        // min_id: the entries just above it, still newest first.
        let above = page(Bounds { limit: 2, min_id: Some(second[1].cursor), ..Default::default() }).await;
        assert_eq!(above.iter().map(|e| e.id).collect::<Vec<_>>(), newest_first[1..3], "{list}");
        let since = page(Bounds { limit: 10, since_id: Some(first[1].cursor), ..Default::default() }).await;
        assert_eq!(since.iter().map(|e| e.id).collect::<Vec<_>>(), newest_first[..1], "{list}");
    }
    let by = s.favourited_by(statuses[0], Bounds { limit: 40, ..Default::default() }).await.unwrap();
    assert_eq!(by.iter().map(|e| e.id).collect::<Vec<_>>(), vec![me]);
    assert!(s.unbookmark(me, statuses[0]).await.unwrap());
    assert!(!s.unbookmark(me, statuses[0]).await.unwrap());
    let marks = s.viewer_marks(me, &statuses).await.unwrap();
    assert_eq!(marks.favourited.len(), 5);
    assert_eq!(marks.bookmarked.len(), 4);
    assert!(marks.reblogged.is_empty() && marks.pinned.is_empty());
}

async fn at_most_five_pins(s: Arc<dyn PostStore>) {
    let me = account();
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(post(&s, status(me, &format!("pin {n}"))).await.id);
    }
    for sid in &ids[..5] {
        assert!(s.pin(id(), me, *sid).await.unwrap());
    }
    assert!(!s.pin(id(), me, ids[0]).await.unwrap(), "pinning twice is a no-op");
    assert!(matches!(s.pin(id(), me, ids[5]).await.unwrap_err(), StoreError::TooManyPins));
    let pinned: Vec<i64> = s.pinned_of(me).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(pinned, ids[..5].iter().rev().copied().collect::<Vec<_>>(), "newest pin first");
    assert!(s.unpin(me, ids[0]).await.unwrap());
    assert!(!s.unpin(me, ids[0]).await.unwrap());
    assert!(s.pin(id(), me, ids[5]).await.unwrap());
    assert!(s.viewer_marks(me, &ids).await.unwrap().pinned.contains(&ids[5]));

    // Racing pins still stop at five.
    let racer = account();
    let mut candidates = Vec::new();
    for n in 0..10 {
        candidates.push(post(&s, status(racer, &format!("race {n}"))).await.id);
    }
    let mut tasks = Vec::new();
    for sid in candidates {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move { s.pin(id(), racer, sid).await }));
    }
    let mut pinned = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(true) => pinned += 1,
            Err(StoreError::TooManyPins) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pinned, 5);
    assert_eq!(s.pinned_of(racer).await.unwrap().len(), 5);
}

async fn reactions_count_per_emoji(s: Arc<dyn PostStore>) {
    let target = post(&s, status(account(), "react")).await.id;
    let (a, b) = (account(), account());
    let (reacted, unreacted) = (|| fav_event(target, "post.reacted"), || fav_event(target, "post.unreacted"));
    assert!(s.add_reaction(id(), target, a, "👍", &reacted()).await.unwrap());
    assert!(!s.add_reaction(id(), target, a, "👍", &reacted()).await.unwrap(), "the same emoji once per account");
    assert!(s.add_reaction(id(), target, b, "👍", &reacted()).await.unwrap());
    assert!(s.add_reaction(id(), target, a, "❤️", &reacted()).await.unwrap());
    assert_eq!(events(&s, target, "post.reacted").await, 3, "one event per reaction added, none for a repeat");
    let list = s.reactions(target, Some(b)).await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!((list[0].emoji.as_str(), list[0].count, list[0].me), ("👍", 2, true));
    assert_eq!((list[1].emoji.as_str(), list[1].count, list[1].me), ("❤️", 1, false));
    assert!(s.remove_reaction(target, a, "👍", &unreacted()).await.unwrap());
    assert_eq!(events(&s, target, "post.unreacted").await, 0, "a still reacts with ❤️");
    assert!(!s.remove_reaction(target, a, "👍", &unreacted()).await.unwrap());
    let anonymous = s.reactions(target, None).await.unwrap();
    assert!(anonymous.iter().all(|r| r.count == 1 && !r.me));
    assert!(s.remove_reaction(target, a, "❤️", &unreacted()).await.unwrap());
    assert_eq!(events(&s, target, "post.unreacted").await, 1, "a's last reaction is gone");
    s.delete_status(target, 1, &ev("post.deleted")).await.unwrap();
    assert!(matches!(s.add_reaction(id(), target, b, "🦀", &reacted()).await, Err(StoreError::NotFound)));
}

async fn account_reads(s: Arc<dyn PostStore>) {
    let me = account();
    let a = post(&s, status(me, "one")).await;
    let mut direct = status(me, "secret");
    direct.visibility = Visibility::Direct;
    let d = post(&s, direct).await;
    let other = post(&s, status(account(), "theirs")).await;
    let boost = s.reblog(&reblog_of(me, other.id), &ev("post.created")).await.unwrap().into_status();
    let gone = post(&s, status(me, "gone")).await;
    s.delete_status(gone.id, 1, &ev("post.deleted")).await.unwrap();

    let all: Vec<i64> = s.account_statuses(me, None, 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(all, vec![boost.id, d.id, a.id], "newest first, direct included, deleted left out");
    let older: Vec<i64> = s.account_statuses(me, Some(d.id), 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(older, vec![a.id]);

    let stats = s.account_stats(&[me, account()]).await.unwrap();
    assert_eq!(stats[0].account_id, me);
    assert_eq!(stats[0].statuses_count, 2, "public status and reblog; not direct, not deleted");
    assert!(stats[0].last_status_at_ms > 0);
    assert_eq!(stats[1].statuses_count, 0);

    let wanted = vec![other.id, id(), a.id];
    let got: Vec<i64> = s.statuses(&wanted).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(got, vec![other.id, a.id], "request order, unknown ids skipped");
}

/// (statuses, newest status time) of `account` as a profile shows them.
async fn counts(s: &Arc<dyn PostStore>, account: i64) -> (i64, i64) {
    let st = s.account_stats(&[account]).await.unwrap().pop().unwrap();
    (st.statuses_count, st.last_status_at_ms)
}

/// A profile's status count and last status time stay exact through every write that changes
/// them: posting, a direct message (not counted), reblogging and undoing it, deleting the newest
/// status (the time goes back to the one before) and deleting a status others reblogged (their
/// counts drop with it).
async fn account_counts_follow_every_write(s: Arc<dyn PostStore>) {
    let (me, fan) = (account(), account());
    assert_eq!(counts(&s, me).await, (0, 0));
    let mut first = status(me, "first");
    first.created_at_ms = 1_000;
    let first = post(&s, first).await;
    let mut second = status(me, "second");
    second.created_at_ms = 2_000;
    let second = post(&s, second).await;
    let mut direct = status(me, "psst");
    direct.visibility = Visibility::Direct;
    direct.created_at_ms = 3_000;
    post(&s, direct).await;
    assert_eq!(counts(&s, me).await, (2, 2_000), "a direct message is not counted");

    let mut boost = reblog_of(fan, first.id);
    boost.created_at_ms = 4_000;
    s.reblog(&boost, &ev("post.created")).await.unwrap();
    assert_eq!(counts(&s, fan).await, (1, 4_000));
    s.unreblog(fan, first.id, &ev("post.deleted")).await.unwrap();
    assert_eq!(counts(&s, fan).await, (0, 0), "an undone reblog is not counted");
    s.reblog(&reblog_of(fan, second.id), &ev("post.created")).await.unwrap();
    assert_eq!(counts(&s, fan).await.0, 1);

    s.delete_status(second.id, 6_000, &ev("post.deleted")).await.unwrap();
    assert_eq!(counts(&s, me).await, (1, 1_000), "the newest status gone, the one before is the last");
    assert_eq!(counts(&s, fan).await, (0, 0), "a reblog goes with its original");
    s.delete_status(first.id, 7_000, &ev("post.deleted")).await.unwrap();
    assert_eq!(counts(&s, me).await, (0, 0));
}

/// The outbox as the relay sees it: pending events oldest first, a removal takes exactly the
/// published ones, and the backlog counts what is left.
async fn the_relay_takes_events_in_order_and_removes_what_it_published(s: Arc<dyn PostStore>) {
    let author = account();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(post(&s, status(author, "queued")).await.id);
    }
    let outbox = s.outbox();
    let mine = |p: &[agora_events::outbox::PendingEvent]| -> Vec<i64> {
        p.iter().filter(|e| ids.iter().any(|id| e.envelope.aggregate_id == id.to_string())).map(|e| e.id).collect()
    };
    let pending = mine(&outbox.pending(100_000).await.unwrap());
    assert_eq!(pending.len(), 5);
    assert!(pending.windows(2).all(|w| w[0] < w[1]), "pending events out of order: {pending:?}");
    let before = outbox.backlog().await.unwrap();
    outbox.remove(&pending[..3]).await.unwrap();
    assert_eq!(mine(&outbox.pending(100_000).await.unwrap()), pending[3..].to_vec());
    assert_eq!(outbox.backlog().await.unwrap(), before - 3);
}

async fn sqlite() -> Option<Arc<dyn PostStore>> {
    let dir = agora_testkit::scratch_dir().unwrap();
    let url = format!("sqlite://{}/post.db", dir.display());
    let s = store::connect(&url).await.unwrap();
    s.migrate().await.unwrap();
    Some(s)
}

async fn postgres() -> Option<Arc<dyn PostStore>> {
    let admin = agora_testkit::test_server("AGORA_TEST_POSTGRES_URL")?;
    let url = agora_testkit::fresh_postgres_database(&admin).await.unwrap();
    let s = store::connect(&url).await.unwrap();
    s.migrate().await.unwrap();
    s.migrate().await.unwrap(); // migrations are idempotent
    Some(s)
}

async fn a_page_comes_with_originals_and_the_viewers_marks(s: Arc<dyn PostStore>) {
    let author = account();
    let (plain, boosted) = (post(&s, status(author, "plain")).await, post(&s, status(author, "boosted")).await);
    let booster = account();
    let Inserted::New(reblog) = s.reblog(&reblog_of(booster, boosted.id), &ev("post.created")).await.unwrap() else {
        panic!("a first reblog is new");
    };
    let viewer = account();
    assert!(s.favourite(id(), viewer, boosted.id, &fav_event(boosted.id, "post.favourited")).await.unwrap());
    assert!(s.bookmark(id(), viewer, plain.id).await.unwrap());
    let unknown = id();

    let page = s.page_for(Some(viewer), &[reblog.id, unknown, plain.id]).await.unwrap();
    let ids: Vec<i64> = page.records.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![reblog.id, plain.id], "request order, unknown ids skipped");
    assert_eq!(page.originals.iter().map(|r| r.id).collect::<Vec<_>>(), vec![boosted.id]);
    // A reblog's marks are its original's.
    assert!(page.marks.favourited.contains(&boosted.id));
    assert!(page.marks.bookmarked.contains(&plain.id));
    assert!(!page.marks.favourited.contains(&plain.id) && page.marks.reblogged.is_empty());

    let booster_view = s.page_for(Some(booster), &[plain.id, boosted.id]).await.unwrap();
    assert!(booster_view.originals.is_empty(), "no reblogs on the page, no originals");
    assert!(booster_view.marks.reblogged.contains(&boosted.id) && booster_view.marks.favourited.is_empty());

    let anonymous = s.page_for(None, &[reblog.id]).await.unwrap();
    assert_eq!(anonymous.originals.len(), 1);
    assert!(anonymous.marks.favourited.is_empty() && anonymous.marks.bookmarked.is_empty());
    assert!(s.page_for(Some(viewer), &[]).await.unwrap().records.is_empty());
}

async fn many_viewers_marks_on_one_status_come_in_one_read(s: Arc<dyn PostStore>) {
    let author = account();
    let st = post(&s, status(author, "for everyone")).await;
    let other = post(&s, status(author, "another")).await;
    let (fan, booster, taken_back, nobody) = (account(), account(), account(), account());
    assert!(s.favourite(id(), fan, st.id, &fav_event(st.id, "post.favourited")).await.unwrap());
    assert!(s.bookmark(id(), fan, st.id).await.unwrap());
    let Inserted::New(_) = s.reblog(&reblog_of(booster, st.id), &ev("post.created")).await.unwrap() else {
        panic!("a first reblog is new");
    };
    assert!(s.pin(id(), author, st.id).await.unwrap());
    assert!(s.favourite(id(), taken_back, st.id, &fav_event(st.id, "post.favourited")).await.unwrap());
    assert!(s.unfavourite(taken_back, st.id, &fav_event(st.id, "post.unfavourited")).await.unwrap());
    // Marks on another status are not this one's.
    assert!(s.favourite(id(), nobody, other.id, &fav_event(other.id, "post.favourited")).await.unwrap());

    let marks = s.marks_of_viewers(st.id, &[fan, booster, author, taken_back, nobody]).await.unwrap();
    let fan_marks = &marks[&fan];
    assert!(fan_marks.favourited.contains(&st.id) && fan_marks.bookmarked.contains(&st.id));
    assert!(fan_marks.reblogged.is_empty() && fan_marks.pinned.is_empty());
    assert!(marks[&booster].reblogged.contains(&st.id) && marks[&booster].favourited.is_empty());
    assert!(marks[&author].pinned.contains(&st.id));
    assert!(!marks.contains_key(&taken_back), "an unfavourite takes the mark away");
    assert!(!marks.contains_key(&nobody), "a mark on another status is not on this one");
    assert!(s.marks_of_viewers(st.id, &[]).await.unwrap().is_empty());
}

agora_testkit::conformance!(
    backends: [sqlite, postgres],
    cases: [
        many_viewers_marks_on_one_status_come_in_one_read,
        creating_writes_the_status_and_its_event,
        a_page_comes_with_originals_and_the_viewers_marks,
        an_idempotency_key_returns_the_first_status,
        favourite_counts_stay_exact_under_concurrency,
        an_account_reblogs_a_status_once,
        deleting_takes_reblogs_along_and_keeps_replies,
        edits_keep_their_history,
        favourites_and_bookmarks_page_newest_first,
        at_most_five_pins,
        reactions_count_per_emoji,
        account_reads,
        the_relay_takes_events_in_order_and_removes_what_it_published,
        account_counts_follow_every_write,
    ]
);
