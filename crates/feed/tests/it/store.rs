//! The timeline-store conformance suite. Every case runs on SQLite, on PostgreSQL
//! (`AGORA_TEST_POSTGRES_URL`) and on ScyllaDB's protocol (`AGORA_TEST_SCYLLA_URL`, Cassandra here);
//! a new backend adds one line to `backends!`.

use std::sync::Arc;

use agora_feed::domain::{Entry, EntryFilter, StatusFacts, TimelineKey, Visibility, Window};
use agora_feed::store::{self, AuthorScope, Recorded, TimelineStore};

fn facts(id: i64, author: i64) -> StatusFacts {
    StatusFacts {
        id,
        account_id: author,
        created_at_ms: 1_000,
        visibility: Visibility::Public,
        in_reply_to_id: 0,
        in_reply_to_account_id: 0,
        reblog_of_id: 0,
        reblog_of_account_id: 0,
        mention_ids: vec![7, 8],
        tags: vec!["a".into(), "b".into()],
        has_media: false,
        sensitive: false,
    }
}

fn entry(id: i64, author: i64) -> Entry {
    facts(id, author).entry()
}

fn reblog(id: i64, by: i64, of: i64, of_author: i64) -> Entry {
    Entry { reblog_of_id: of, reblog_of_author_id: of_author, ..entry(id, by) }
}

async fn ids(s: &Arc<dyn TimelineStore>, timeline: &str, w: Window) -> Vec<i64> {
    s.page(timeline, &w, &EntryFilter::default()).await.unwrap().into_iter().map(|e| e.status_id).collect()
}

async fn statuses_are_recorded_and_tombstoned(s: Arc<dyn TimelineStore>) {
    let f = facts(10, 1);
    assert_eq!(s.record_status(&f).await.unwrap(), Recorded::New);
    assert_eq!(s.status(10).await.unwrap(), Some(f.clone()));
    let mut edited = f.clone();
    edited.has_media = true;
    assert_eq!(s.record_status(&edited).await.unwrap(), Recorded::Known(f));
    assert!(s.status(10).await.unwrap().unwrap().has_media);
    s.delete_status(10, 1).await.unwrap();
    assert_eq!(s.status(10).await.unwrap(), None);
    assert_eq!(s.record_status(&edited).await.unwrap(), Recorded::Deleted);
    // Deleting a status never seen leaves a tombstone too.
    s.delete_status(11, 1).await.unwrap();
    assert_eq!(s.record_status(&facts(11, 1)).await.unwrap(), Recorded::Deleted);
}

async fn pages_walk_both_ways_with_bounds(s: Arc<dyn TimelineStore>) {
    for id in 1..=9 {
        s.insert(&["public".to_owned()], &entry(id, 1)).await.unwrap();
    }
    s.insert(&["public".to_owned()], &entry(5, 1)).await.unwrap(); // no-op
    assert_eq!(ids(&s, "public", Window::newest(3)).await, vec![9, 8, 7]);
    let w = Window { upper: Some(7), lower: Some(2), ascending: false, limit: 10 };
    assert_eq!(ids(&s, "public", w).await, vec![6, 5, 4, 3]);
    let w = Window { upper: None, lower: Some(2), ascending: true, limit: 3 };
    assert_eq!(ids(&s, "public", w).await, vec![3, 4, 5]);
    assert!(ids(&s, "other", Window::newest(3)).await.is_empty());
    assert!(s.has_entries("public").await.unwrap());
    assert!(!s.has_entries("other").await.unwrap());
}

async fn filters_apply_in_the_store(s: Arc<dyn TimelineStore>) {
    let t = vec![TimelineKey::account(1)];
    let plain = entry(1, 1);
    let media = Entry { has_media: true, ..entry(2, 1) };
    let reply = Entry { in_reply_to_account_id: 2, ..entry(3, 1) };
    let self_reply = Entry { in_reply_to_account_id: 1, ..entry(4, 1) };
    let boosted = reblog(5, 1, 99, 2);
    let private = Entry { visibility: Visibility::Private, ..entry(6, 1) };
    for e in [&plain, &media, &reply, &self_reply, &boosted, &private] {
        s.insert(&t, e).await.unwrap();
    }
    let read = |f: EntryFilter| {
        let s = Arc::clone(&s);
        let tl = t[0].clone();
        async move {
            s.page(&tl, &Window::newest(20), &f).await.unwrap().into_iter().map(|e| e.status_id).collect::<Vec<_>>()
        }
    };
    assert_eq!(read(EntryFilter { only_media: true, ..Default::default() }).await, vec![2]);
    assert_eq!(read(EntryFilter { exclude_replies: true, ..Default::default() }).await, vec![6, 5, 4, 2, 1]);
    assert_eq!(read(EntryFilter { exclude_reblogs: true, ..Default::default() }).await, vec![6, 4, 3, 2, 1]);
    let public_only =
        EntryFilter { visibilities: vec![Visibility::Public, Visibility::Unlisted], ..Default::default() };
    assert_eq!(read(public_only).await, vec![5, 4, 3, 2, 1]);
    let got = s.page(&t[0], &Window::newest(1), &EntryFilter::default()).await.unwrap();
    assert_eq!(got, vec![private]);
}

async fn homes_take_a_reblog_once(s: Arc<dyn TimelineStore>) {
    let original = entry(100, 1);
    assert_eq!(s.insert_home(&[10], &original).await.unwrap(), vec![10]);
    // 10 holds the original, 11 nothing: only 11 takes the first reblog.
    assert_eq!(s.insert_home(&[10, 11], &reblog(101, 2, 100, 1)).await.unwrap(), vec![11]);
    // A second reblog of the same status reaches nobody who has one already.
    assert!(s.insert_home(&[10, 11], &reblog(102, 3, 100, 1)).await.unwrap().is_empty());
    // A redelivery still reports the holders (so their hot sets can be written again).
    assert_eq!(s.insert_home(&[10, 11], &reblog(101, 2, 100, 1)).await.unwrap(), vec![11]);
    assert_eq!(ids(&s, &TimelineKey::home(11), Window::newest(10)).await, vec![101]);
}

async fn deletes_find_every_copy_and_reblog(s: Arc<dyn TimelineStore>) {
    let e = entry(200, 1);
    s.record_status(&facts(200, 1)).await.unwrap();
    s.insert(&["public".into(), TimelineKey::account(1), TimelineKey::tag("a")], &e).await.unwrap();
    s.insert_home(&[20, 21], &e).await.unwrap();
    s.insert_home(&[22], &reblog(201, 2, 200, 1)).await.unwrap();
    s.insert_home(&[22], &entry(202, 2)).await.unwrap();
    let mut removed: Vec<(String, i64)> =
        s.delete_status(200, 1).await.unwrap().into_iter().map(|r| (r.timeline, r.status_id)).collect();
    removed.sort();
    assert_eq!(
        removed,
        vec![
            ("account:1".into(), 200),
            ("home:20".into(), 200),
            ("home:21".into(), 200),
            ("home:22".into(), 201),
            ("public".into(), 200),
            ("tag:a".into(), 200),
        ]
    );
    assert_eq!(ids(&s, &TimelineKey::home(22), Window::newest(10)).await, vec![202]);
}

async fn authors_leave_homes_by_scope(s: Arc<dyn TimelineStore>) {
    let home = TimelineKey::home(30);
    s.insert_home(&[30], &entry(300, 1)).await.unwrap();
    s.insert_home(&[30], &Entry { visibility: Visibility::Direct, ..entry(301, 1) }).await.unwrap();
    s.insert_home(&[30], &reblog(302, 2, 999, 1)).await.unwrap();
    s.insert_home(&[30], &entry(303, 2)).await.unwrap();
    let mut gone = s.remove_author(&home, 1, AuthorScope::Authored).await.unwrap();
    gone.sort();
    assert_eq!(gone, vec![300], "an unfollow keeps direct messages and others' reblogs");
    let mut gone = s.remove_author(&home, 1, AuthorScope::Everything).await.unwrap();
    gone.sort();
    assert_eq!(gone, vec![301, 302]);
    assert_eq!(ids(&s, &home, Window::newest(10)).await, vec![303]);
}

async fn retag_and_media_edits(s: Arc<dyn TimelineStore>) {
    let e = entry(400, 1);
    s.insert(&[TimelineKey::tag("old")], &e).await.unwrap();
    s.retag(&e, &["new".into()]).await.unwrap();
    assert!(ids(&s, "tag:old", Window::newest(5)).await.is_empty());
    assert_eq!(ids(&s, "tag:new", Window::newest(5)).await, vec![400]);
    s.set_media(400, true).await.unwrap();
    let media = EntryFilter { only_media: true, ..Default::default() };
    assert_eq!(s.page("tag:new", &Window::newest(5), &media).await.unwrap().len(), 1);
}

async fn accounts_activity_and_reblog_preferences(s: Arc<dyn TimelineStore>) {
    assert!(s.activity(1).await.unwrap().is_none());
    s.touch(1, 1_000).await.unwrap();
    s.touch(2, 5_000).await.unwrap();
    let mut idle = s.inactive_among(&[1, 2, 3], 2_000).await.unwrap();
    idle.sort();
    assert_eq!(idle, vec![1], "never-seen accounts count as active");
    s.mark_needs_rebuild(&[1]).await.unwrap();
    assert!(s.activity(1).await.unwrap().unwrap().needs_rebuild);
    s.touch(1, 6_000).await.unwrap();
    assert_eq!(s.activity(1).await.unwrap().unwrap(), store::Activity { last_active_ms: 6_000, needs_rebuild: false });

    s.set_large_account(9, Some(50_000)).await.unwrap();
    s.set_large_account(9, Some(60_000)).await.unwrap();
    assert_eq!(s.large_accounts().await.unwrap(), vec![9]);
    s.set_large_account(9, None).await.unwrap();
    assert!(s.large_accounts().await.unwrap().is_empty());

    s.set_hides_reblogs(5, 6, true).await.unwrap();
    assert_eq!(s.hiding_reblogs(6, &[4, 5]).await.unwrap(), vec![5]);
    s.set_hides_reblogs(5, 6, false).await.unwrap();
    assert!(s.hiding_reblogs(6, &[4, 5]).await.unwrap().is_empty());

    s.record_status(&facts(500, 7)).await.unwrap();
    let known = s.known_accounts().await.unwrap();
    assert!(known.contains(&1) && known.contains(&2) && known.contains(&7));
}

async fn events_are_remembered(s: Arc<dyn TimelineStore>) {
    assert!(!s.processed("feed", 42).await.unwrap());
    s.mark_processed("feed", 42).await.unwrap();
    s.mark_processed("feed", 42).await.unwrap();
    assert!(s.processed("feed", 42).await.unwrap());
    assert!(!s.processed("other", 42).await.unwrap());
}

async fn trends_inputs(s: Arc<dyn TimelineStore>) {
    s.record_tag_uses(600, 1, &["x".into(), "y".into()], 1_000).await.unwrap();
    s.record_tag_uses(600, 1, &["x".into()], 1_000).await.unwrap(); // an edit dropped #y
    s.record_tag_uses(601, 2, &["x".into()], 50).await.unwrap();
    let uses = s.tag_uses_since(500).await.unwrap();
    assert_eq!(uses.len(), 1);
    assert_eq!((uses[0].tag.as_str(), uses[0].account_id), ("x", 1));

    s.record_status(&facts(700, 1)).await.unwrap();
    s.record_status(&StatusFacts { sensitive: true, ..facts(701, 1) }).await.unwrap();
    s.set_engagement(700, 2, "favourite", 2_000, true).await.unwrap();
    s.set_engagement(700, 2, "favourite", 2_000, true).await.unwrap();
    s.set_engagement(700, 3, "reblog", 2_000, true).await.unwrap();
    s.set_engagement(701, 3, "favourite", 2_000, true).await.unwrap();
    s.set_engagement(702, 3, "favourite", 2_000, true).await.unwrap(); // unknown status
    assert_eq!(s.engagements_since(0).await.unwrap().len(), 2);
    s.set_engagement(700, 3, "reblog", 0, false).await.unwrap();
    assert_eq!(s.engagements_since(0).await.unwrap(), vec![(700, 2_000)]);
}

async fn pruning_forgets_only_old_bookkeeping(s: Arc<dyn TimelineStore>) {
    s.record_tag_uses(800, 1, &["old".into()], 1_000).await.unwrap();
    s.record_tag_uses(801, 1, &["new".into()], 9_000).await.unwrap();
    s.mark_processed("feed", 77).await.unwrap();
    s.prune(5_000).await.unwrap();
    let uses = s.tag_uses_since(0).await.unwrap();
    assert_eq!(uses.iter().map(|u| u.tag.as_str()).collect::<Vec<_>>(), vec!["new"]);
    assert!(s.processed("feed", 77).await.unwrap(), "recent event records stay");
    s.prune(agora_kit::time::now_ms() + 1).await.unwrap();
    assert!(!s.processed("feed", 77).await.unwrap());
}

async fn markers_bump_versions(s: Arc<dyn TimelineStore>) {
    let m = s.save_marker(1, "home", 10, 100).await.unwrap();
    assert_eq!((m.last_read_id, m.version, m.updated_at_ms), (10, 1, 100));
    let m = s.save_marker(1, "home", 12, 200).await.unwrap();
    assert_eq!((m.last_read_id, m.version), (12, 2));
    s.save_marker(1, "notifications", 3, 200).await.unwrap();
    s.save_marker(2, "home", 1, 200).await.unwrap();
    let mine = s.markers(1).await.unwrap();
    assert_eq!(mine.iter().map(|m| m.timeline.as_str()).collect::<Vec<_>>(), vec!["home", "notifications"]);
}

async fn conversations_group_by_thread_and_participants(s: Arc<dyn TimelineStore>) {
    let all = Window::newest(20);
    // Account 1 writes to 2 (status 10), 2 answers in the thread (11), 1 writes to 2 and 3 (12).
    let c = s.add_to_conversation(1, 10, &[2], 10, 1, false).await.unwrap().unwrap();
    assert_eq!((c.id, c.participant_ids.clone(), c.last_status_id, c.unread), (10, vec![2], 10, false));
    assert_eq!(s.add_to_conversation(1, 10, &[2], 10, 1, false).await.unwrap(), None, "a redelivery changes nothing");
    s.add_to_conversation(2, 10, &[1], 10, 1, true).await.unwrap().unwrap();
    let c = s.add_to_conversation(1, 10, &[2], 11, 2, true).await.unwrap().unwrap();
    assert_eq!((c.id, c.last_status_id, c.last_author_id, c.unread), (10, 11, 2, true));
    s.add_to_conversation(2, 10, &[1], 11, 2, false).await.unwrap().unwrap();
    let other = s.add_to_conversation(1, 10, &[2, 3], 12, 1, false).await.unwrap().unwrap();
    assert_eq!(other.id, 12, "another set of participants is another conversation");
    assert_eq!(s.thread_of(11).await.unwrap(), Some(10));
    assert_eq!(s.thread_of(99).await.unwrap(), None);
    // An older status arriving late does not become the last one.
    let late = s.add_to_conversation(1, 10, &[2], 9, 2, true).await.unwrap().unwrap();
    assert_eq!((late.last_status_id, late.last_author_id), (11, 2));

    let mine = s.conversations(1, &all).await.unwrap();
    assert_eq!(mine.iter().map(|c| (c.id, c.last_status_id)).collect::<Vec<_>>(), vec![(12, 12), (10, 11)]);
    let w = Window { upper: Some(12), lower: None, ascending: false, limit: 20 };
    assert_eq!(s.conversations(1, &w).await.unwrap().iter().map(|c| c.id).collect::<Vec<_>>(), vec![10]);
    let w = Window { upper: None, lower: Some(11), ascending: true, limit: 20 };
    assert_eq!(s.conversations(1, &w).await.unwrap().iter().map(|c| c.id).collect::<Vec<_>>(), vec![12]);
    assert_eq!(s.conversations(1, &Window::newest(1)).await.unwrap().len(), 1);
    assert!(s.conversations(3, &all).await.unwrap().is_empty());

    // Reading is per account; another account's id is not found.
    assert!(!s.read_conversation(1, 10).await.unwrap().unwrap().unread);
    assert!(s.conversation(2, 10).await.unwrap().is_some());
    assert_eq!(s.read_conversation(3, 10).await.unwrap(), None);
    assert_eq!(s.conversation(3, 10).await.unwrap(), None);

    // Deleting the last status moves the conversation back to the one before it; deleting its
    // only status removes it.
    let changes = s.remove_from_conversations(11).await.unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0].account_id, 1);
    let now = changes[0].now.clone().unwrap();
    assert_eq!((now.id, now.last_status_id, now.last_author_id), (10, 10, 1));
    assert_eq!(s.conversation(1, 10).await.unwrap().unwrap().last_status_id, 10);
    let changes = s.remove_from_conversations(12).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].now, None);
    assert_eq!(s.conversation(1, 12).await.unwrap(), None);
    assert!(s.remove_from_conversations(12).await.unwrap().is_empty());
    let mine = s.conversations(1, &all).await.unwrap();
    assert_eq!(mine.iter().map(|c| (c.id, c.last_status_id)).collect::<Vec<_>>(), vec![(10, 10)]);

    // Removing a conversation is for that account alone; the thread's next status begins anew.
    assert!(s.delete_conversation(1, 10).await.unwrap());
    assert!(!s.delete_conversation(1, 10).await.unwrap());
    assert!(s.conversations(1, &all).await.unwrap().is_empty());
    assert!(s.conversation(2, 10).await.unwrap().is_some());
    let again = s.add_to_conversation(1, 10, &[2], 13, 2, true).await.unwrap().unwrap();
    assert_eq!((again.id, again.last_status_id, again.unread), (13, 13, true));
    // A conversation with oneself has no other participants.
    let alone = s.add_to_conversation(4, 20, &[], 20, 4, false).await.unwrap().unwrap();
    assert!(alone.participant_ids.is_empty());
    assert_eq!(s.conversation(4, 20).await.unwrap(), Some(alone));
}

async fn sqlite() -> Option<Arc<dyn TimelineStore>> {
    let dir = agora_testkit::scratch_dir().unwrap();
    let url = format!("sqlite://{}/feed.db", dir.display());
    let s = store::connect(&url, false).await.unwrap();
    s.migrate().await.unwrap();
    Some(s)
}

async fn postgres() -> Option<Arc<dyn TimelineStore>> {
    let admin = agora_testkit::test_server("AGORA_TEST_POSTGRES_URL")?;
    let url = agora_testkit::fresh_postgres_database(&admin).await.unwrap();
    let s = store::connect(&url, false).await.unwrap();
    s.migrate().await.unwrap();
    s.migrate().await.unwrap(); // migrations are idempotent
    Some(s)
}

async fn scylla() -> Option<Arc<dyn TimelineStore>> {
    let base = agora_testkit::test_server("AGORA_TEST_SCYLLA_URL")?;
    let s = store::connect(&agora_testkit::fresh_scylla_keyspace(&base), true).await.unwrap();
    agora_testkit::wait_until_ready(|| s.ping()).await.unwrap();
    s.migrate().await.unwrap(); // migrations are idempotent
    Some(s)
}

agora_testkit::conformance!(
    backends: [sqlite, postgres, scylla],
    cases: [
        statuses_are_recorded_and_tombstoned,
        pages_walk_both_ways_with_bounds,
        filters_apply_in_the_store,
        homes_take_a_reblog_once,
        deletes_find_every_copy_and_reblog,
        authors_leave_homes_by_scope,
        retag_and_media_edits,
        accounts_activity_and_reblog_preferences,
        events_are_remembered,
        trends_inputs,
        markers_bump_versions,
        pruning_forgets_only_old_bookkeeping,
        conversations_group_by_thread_and_participants,
    ]
);
