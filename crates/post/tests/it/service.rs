//! The post service's rules through its domain API ([`Posts`]), on the embedded store, with
//! tokens signed here and in-memory fakes of the user directory and the social graph.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use agora_kit::jwt::{SigningKey, StaticKeys, Verifier};
use agora_kit::{Error, ErrorKind, IdGenerator};
use agora_post::{PostRules, Posts, Relations};
use agora_proto::post::v1 as pb;

use crate::fakes::{self, AUTHOR, BLOCKED, FOLLOWER, FakeGraph, ISS, MENTIONED, STRANGER};

struct World {
    posts: Posts,
    graph: Arc<FakeGraph>,
    key: SigningKey,
}

impl World {
    async fn new() -> Self {
        let dir = agora_testkit::scratch_dir().unwrap();
        let url = format!("sqlite://{}/post.db", dir.display());
        let store = agora_post::store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let key = SigningKey::generate().unwrap();
        let verifier = Verifier::new(ISS, ISS, StaticKeys::new(vec![key.public_key()]));
        verifier.prime().await.unwrap();
        let graph = Arc::new(fakes::graph());
        let posts = Posts::new(
            store,
            Arc::new(IdGenerator::new(1)),
            verifier,
            Arc::new(fakes::directory()),
            Arc::clone(&graph) as Arc<dyn Relations>,
            PostRules { public_url: ISS.into(), max_chars: 500 },
            Arc::new(tokio::sync::Notify::new()),
        );
        Self { posts, graph, key }
    }

    fn token_with(&self, account: Option<i64>, scope: &str) -> String {
        fakes::mint(&self.key, account, scope)
    }

    fn token(&self, account: i64) -> String {
        self.token_with(Some(account), "read write")
    }

    async fn post(&self, author: i64, text: &str, visibility: pb::Visibility) -> pb::Status {
        self.posts
            .create_status(
                Some(&self.token(author)),
                pb::CreateStatusRequest { text: text.into(), visibility: visibility as i32, ..Default::default() },
            )
            .await
            .unwrap()
    }

    /// Whether `viewer` (None = anonymous) sees status `id`.
    async fn sees(&self, viewer: Option<i64>, id: i64) -> bool {
        let token = viewer.map(|v| self.token(v));
        let listed = self.posts.get_statuses(token.as_deref(), &[id]).await.unwrap();
        let context = self.posts.get_context(token.as_deref(), id).await;
        assert_eq!(listed.len() == 1, context.is_ok(), "GetStatuses and GetContext agree");
        if let Err(e) = context {
            assert_eq!(e, not_found());
        }
        listed.len() == 1
    }
}

fn not_found() -> Error {
    Error::new(ErrorKind::NotFound, "Record not found")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_matrix() {
    let w = World::new().await;
    use pb::Visibility::*;
    // (visibility, anonymous, stranger, follower, mentioned, author, blocked)
    let expected = [
        (Public, true, true, true, true, true, false),
        (Unlisted, true, true, true, true, true, false),
        (Private, false, false, true, true, true, false),
        (Direct, false, false, false, true, true, false),
    ];
    for (visibility, anon, stranger, follower, mentioned, author, blocked) in expected {
        let s = w.post(AUTHOR, "hi @mentioned", visibility).await;
        assert_eq!(s.mentions.iter().map(|m| m.account_id).collect::<Vec<_>>(), vec![MENTIONED]);
        assert_eq!(w.sees(None, s.id).await, anon, "{visibility:?} anonymous");
        assert_eq!(w.sees(Some(STRANGER), s.id).await, stranger, "{visibility:?} stranger");
        assert_eq!(w.sees(Some(FOLLOWER), s.id).await, follower, "{visibility:?} follower");
        assert_eq!(w.sees(Some(MENTIONED), s.id).await, mentioned, "{visibility:?} mentioned");
        assert_eq!(w.sees(Some(AUTHOR), s.id).await, author, "{visibility:?} author");
        assert_eq!(w.sees(Some(BLOCKED), s.id).await, blocked, "{visibility:?} blocked");
    }
    // A block the other way round hides too.
    let s = w.post(BLOCKED, "from the blocked side", Public).await;
    assert!(!w.sees(Some(AUTHOR), s.id).await);
    assert!(w.sees(Some(STRANGER), s.id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_statuses_answer_like_missing_ones() {
    let w = World::new().await;
    let direct = w.post(AUTHOR, "just us, @mentioned", pb::Visibility::Direct).await;
    let deleted = w.post(AUTHOR, "soon gone", pb::Visibility::Public).await;
    w.posts.delete_status(Some(&w.token(AUTHOR)), deleted.id).await.unwrap();
    let stranger = w.token(STRANGER);
    let missing = 987_654_321;
    for target in [direct.id, deleted.id, missing] {
        let reply = w
            .posts
            .create_status(
                Some(&stranger),
                pb::CreateStatusRequest { text: "replying".into(), in_reply_to_id: target, ..Default::default() },
            )
            .await
            .unwrap_err();
        assert_eq!(reply, not_found(), "reply to {target}");
        assert_eq!(w.posts.favourite(Some(&stranger), target).await.unwrap_err(), not_found());
        assert_eq!(
            w.posts.reblog(Some(&stranger), pb::ReblogRequest { id: target, visibility: 0 }).await.unwrap_err(),
            not_found()
        );
        assert_eq!(w.posts.bookmark(Some(&stranger), target).await.unwrap_err(), not_found());
        assert_eq!(w.posts.get_history(Some(&stranger), target).await.unwrap_err(), not_found());
        assert_eq!(w.posts.delete_status(Some(&stranger), target).await.unwrap_err(), not_found());
        let edit = pb::EditStatusRequest { id: target, text: "mine now".into(), ..Default::default() };
        assert_eq!(w.posts.edit_status(Some(&stranger), edit).await.unwrap_err(), not_found());
    }
    // Someone else's status that one can see: not yours to change.
    let public = w.post(AUTHOR, "look but don't touch", pb::Visibility::Public).await;
    for err in [
        w.posts.delete_status(Some(&stranger), public.id).await.unwrap_err(),
        w.posts.pin(Some(&stranger), public.id).await.unwrap_err(),
        w.posts
            .edit_status(
                Some(&stranger),
                pb::EditStatusRequest { id: public.id, text: "x".into(), ..Default::default() },
            )
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
    }
    assert!(w.sees(Some(STRANGER), public.id).await, "still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reblogs_of_private_statuses_are_refused() {
    let w = World::new().await;
    let private = w.post(AUTHOR, "followers only", pb::Visibility::Private).await;
    let err = w
        .posts
        .reblog(Some(&w.token(FOLLOWER)), pb::ReblogRequest { id: private.id, visibility: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    let err = w.posts.reblog(Some(&w.token(STRANGER)), pb::ReblogRequest { id: private.id, visibility: 0 }).await;
    assert_eq!(err.unwrap_err(), not_found(), "a stranger cannot even tell it exists");

    let public = w.post(AUTHOR, "share me", pb::Visibility::Public).await;
    let fan = w.token(FOLLOWER);
    let first = w.posts.reblog(Some(&fan), pb::ReblogRequest { id: public.id, visibility: 0 }).await.unwrap();
    let again = w.posts.reblog(Some(&fan), pb::ReblogRequest { id: public.id, visibility: 0 }).await.unwrap();
    assert_eq!(first.id, again.id, "reblogging twice returns the existing reblog");
    let original = first.reblog.as_ref().unwrap();
    assert_eq!(original.id, public.id);
    assert_eq!(original.reblogs_count, 1);
    assert!(original.reblogged && first.reblogged);
    assert!(first.content.is_empty());
    // Reblogging the reblog reblogs the original.
    let via =
        w.posts.reblog(Some(&w.token(STRANGER)), pb::ReblogRequest { id: first.id, visibility: 0 }).await.unwrap();
    assert_eq!(via.reblog.unwrap().id, public.id);

    let undone = w.posts.unreblog(Some(&fan), public.id).await.unwrap();
    assert_eq!(undone.id, public.id);
    assert_eq!(undone.reblogs_count, 1);
    assert!(!undone.reblogged);
    assert!(w.posts.get_statuses(Some(&fan), &[first.id]).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_the_author_types_becomes_markup() {
    let w = World::new().await;
    let attempts = [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "https://evil.example/\"onmouseover=\"alert(1)",
        "javascript:alert(document.cookie)",
        "<a href=\"javascript:alert(1)\">click</a>",
        "@mentioned<script>x</script> #tag<b>bold</b>",
        "&lt;already escaped&gt; ' \"",
    ];
    for text in attempts {
        let s = w.post(AUTHOR, text, pb::Visibility::Public).await;
        let html = &s.content;
        for banned in ["<script", "<img", "<b>", "href=\"javascript", "onmouseover=\"", "onerror=alert(1)>"] {
            assert!(!html.contains(banned), "{text:?} rendered {html:?}");
        }
        // Only our own tags remain.
        let tags: HashSet<&str> =
            html.split('<').skip(1).map(|t| t.split([' ', '>']).next().unwrap().trim_start_matches('/')).collect();
        assert!(tags.is_subset(&HashSet::from(["p", "br", "a", "span"])), "{html}");
    }
    let s = w.post(AUTHOR, "hey @Mentioned, see #Rust and https://example.com/a?b=1&c=2", pb::Visibility::Public).await;
    assert!(s.content.contains("href=\"https://social.example/@Mentioned\""), "{}", s.content);
    assert!(s.content.contains("href=\"https://social.example/tags/rust\""), "{}", s.content);
    assert!(s.content.contains("href=\"https://example.com/a?b=1&amp;c=2\""), "{}", s.content);
    assert_eq!(s.tags, vec!["rust".to_owned()]);
    assert_eq!(s.mentions, vec![pb::Mention { account_id: MENTIONED, username: "Mentioned".into() }]);
    // An unknown username is not linked and not mentioned.
    let s = w.post(AUTHOR, "hello @nobody", pb::Visibility::Public).await;
    assert!(s.mentions.is_empty());
    assert_eq!(s.content, "<p>hello @nobody</p>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_must_be_present_and_not_too_long() {
    let w = World::new().await;
    let t = w.token(AUTHOR);
    let create = |text: String| pb::CreateStatusRequest { text, ..Default::default() };
    let blank = w.posts.create_status(Some(&t), create("  \n ".into())).await.unwrap_err();
    assert_eq!(blank.kind, ErrorKind::InvalidArgument);
    assert_eq!(blank.message, "Text can't be blank");
    let long = w.posts.create_status(Some(&t), create("é".repeat(501))).await.unwrap_err();
    assert_eq!(long.kind, ErrorKind::InvalidArgument);
    assert_eq!(long.message, "Text is too long (maximum is 500 characters)");
    w.posts.create_status(Some(&t), create("é".repeat(500))).await.unwrap();
    // A long link counts as 23 characters.
    let with_link = format!("{} https://example.com/{}", "a".repeat(400), "x".repeat(300));
    w.posts.create_status(Some(&t), create(with_link)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_a_user_token_with_the_right_scope() {
    let w = World::new().await;
    let req = || pb::CreateStatusRequest { text: "hello".into(), ..Default::default() };
    let app_only = w.token_with(None, "read write");
    assert_eq!(w.posts.create_status(Some(&app_only), req()).await.unwrap_err().kind, ErrorKind::PermissionDenied);
    assert_eq!(w.posts.create_status(None, req()).await.unwrap_err().kind, ErrorKind::Unauthenticated);
    assert_eq!(w.posts.create_status(Some("garbage"), req()).await.unwrap_err().kind, ErrorKind::Unauthenticated);
    let read_only = w.token_with(Some(AUTHOR), "read");
    assert_eq!(w.posts.create_status(Some(&read_only), req()).await.unwrap_err().kind, ErrorKind::PermissionDenied);
    let s = w.post(AUTHOR, "hello", pb::Visibility::Public).await;
    assert_eq!(w.posts.favourite(Some(&app_only), s.id).await.unwrap_err().kind, ErrorKind::PermissionDenied);
    let statuses_only = w.token_with(Some(STRANGER), "write:statuses read:statuses");
    assert_eq!(w.posts.favourite(Some(&statuses_only), s.id).await.unwrap_err().kind, ErrorKind::PermissionDenied);
    let favs = w.token_with(Some(STRANGER), "write:favourites read:statuses");
    assert!(w.posts.favourite(Some(&favs), s.id).await.unwrap().favourited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_relationship_call_for_a_page_of_statuses() {
    let w = World::new().await;
    let mut ids = Vec::new();
    for author in 100..120 {
        ids.push(w.post(author, "hi", pb::Visibility::Public).await.id);
    }
    let viewer = w.token(STRANGER);
    let before = w.graph.calls.load(Ordering::SeqCst);
    let got = w.posts.get_statuses(Some(&viewer), &ids).await.unwrap();
    assert_eq!(got.len(), 20);
    assert_eq!(w.graph.calls.load(Ordering::SeqCst) - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn favourites_bookmarks_and_pins_show_on_the_status() {
    let w = World::new().await;
    let s = w.post(AUTHOR, "mark me", pb::Visibility::Public).await;
    let fan = w.token(FOLLOWER);
    w.posts.favourite(Some(&fan), s.id).await.unwrap();
    let twice = w.posts.favourite(Some(&fan), s.id).await.unwrap();
    assert!(twice.favourited);
    assert_eq!(twice.favourites_count, 1);
    assert!(w.posts.bookmark(Some(&fan), s.id).await.unwrap().bookmarked);
    let mine = w.posts.pin(Some(&w.token(AUTHOR)), s.id).await.unwrap();
    assert!(mine.pinned);
    let seen = w.posts.get_statuses(Some(&fan), &[s.id]).await.unwrap().pop().unwrap();
    assert!(seen.favourited && seen.bookmarked && !seen.pinned && !seen.reblogged);
    let anonymous = w.posts.get_statuses(None, &[s.id]).await.unwrap().pop().unwrap();
    assert!(!anonymous.favourited && !anonymous.bookmarked);

    let favs = w.posts.list_favourites(Some(&fan), None).await.unwrap();
    assert_eq!(favs.statuses.iter().map(|s| s.id).collect::<Vec<_>>(), vec![s.id]);
    assert_eq!(favs.cursor_ids.len(), 1);
    let by = w.posts.favourited_by(None, pb::ListByStatusRequest { id: s.id, page: None }).await.unwrap();
    assert_eq!(by.account_ids, vec![FOLLOWER]);
    let pinned = w.posts.list_pinned(None, AUTHOR).await.unwrap();
    assert_eq!(pinned.statuses.len(), 1);

    let direct = w.post(AUTHOR, "@mentioned psst", pb::Visibility::Direct).await;
    let err = w.posts.pin(Some(&w.token(AUTHOR)), direct.id).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);

    let reactions =
        w.posts.add_reaction(Some(&fan), pb::ReactionRequest { id: s.id, emoji: "🦀".into() }).await.unwrap();
    assert_eq!(reactions, vec![pb::Reaction { name: "🦀".into(), count: 1, me: true }]);
    let err = w.posts.add_reaction(Some(&fan), pb::ReactionRequest { id: s.id, emoji: "<b>".into() }).await;
    assert_eq!(err.unwrap_err().kind, ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_status_for_many_viewers_is_what_each_would_get_alone() {
    let w = World::new().await;
    let private = w.post(AUTHOR, "followers only, @mentioned", pb::Visibility::Private).await;
    w.posts.favourite(Some(&w.token(FOLLOWER)), private.id).await.unwrap();
    let tokens = vec![
        w.token(FOLLOWER),
        w.token(STRANGER),
        w.token(MENTIONED),
        w.token(BLOCKED),
        w.token(AUTHOR),
        "not a token".to_owned(),
        w.token_with(Some(FOLLOWER), "write"),
    ];
    let got = w.posts.status_for_viewers(private.id, &tokens).await.unwrap();
    let status = got.status.expect("the status is there");
    assert_eq!(status.id, private.id);
    assert!(!status.favourited, "the shared status carries nobody's marks");
    let visible: Vec<bool> = got.views.iter().map(|v| v.visible).collect();
    // Each as get_statuses decides it alone: the follower, the mentioned and the author see a
    // private status; a stranger, a blocked account, a bad token and one without
    // read:statuses do not.
    assert_eq!(visible, vec![true, false, true, false, true, false, false]);
    for (token, view) in tokens.iter().zip(&got.views) {
        let alone = w.posts.get_statuses(Some(token), &[private.id]).await.map(|mut v| v.pop());
        let alone = alone.ok().flatten();
        assert_eq!(view.visible, alone.is_some());
        if let Some(alone) = alone {
            assert_eq!(
                (view.favourited, view.reblogged, view.bookmarked, view.pinned),
                (alone.favourited, alone.reblogged, alone.bookmarked, alone.pinned)
            );
        }
    }
    assert!(got.views[0].favourited && !got.views[2].favourited);
    assert_eq!(got.author_stats.iter().map(|a| a.id).collect::<Vec<_>>(), vec![AUTHOR]);

    // A reblog's marks are its original's; a deleted status is nobody's.
    let public = w.post(AUTHOR, "boost me", pb::Visibility::Public).await;
    let stranger = w.token(STRANGER);
    let reblog = w.posts.reblog(Some(&stranger), pb::ReblogRequest { id: public.id, ..Default::default() });
    let reblog = reblog.await.unwrap();
    let got = w.posts.status_for_viewers(reblog.id, &[w.token(STRANGER), w.token(FOLLOWER)]).await.unwrap();
    assert_eq!(got.status.unwrap().reblog.unwrap().id, public.id);
    assert!(got.views[0].reblogged && !got.views[1].reblogged);
    w.posts.delete_status(Some(&w.token(AUTHOR)), public.id).await.unwrap();
    let gone = w.posts.status_for_viewers(public.id, &[w.token(AUTHOR)]).await.unwrap();
    assert!(gone.status.is_none() && !gone.views[0].visible);
    let too_many = vec![w.token(FOLLOWER); agora_post::service::MAX_VIEWERS + 1];
    let err = w.posts.status_for_viewers(private.id, &too_many).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_reads_in_order_without_what_the_viewer_may_not_see() {
    let w = World::new().await;
    let reply = |author: i64, to: i64, text: &'static str, visibility: pb::Visibility| {
        let token = w.token(author);
        let posts = &w.posts;
        async move {
            posts
                .create_status(
                    Some(&token),
                    pb::CreateStatusRequest {
                        text: text.into(),
                        in_reply_to_id: to,
                        visibility: visibility as i32,
                        ..Default::default()
                    },
                )
                .await
                .unwrap()
        }
    };
    use pb::Visibility::*;
    let root = w.post(AUTHOR, "root", Public).await;
    let a = reply(STRANGER, root.id, "a", Public).await;
    let a1 = reply(AUTHOR, a.id, "a1", Public).await;
    let b = reply(FOLLOWER, root.id, "b", Public).await;
    let secret = reply(AUTHOR, root.id, "@mentioned secret", Direct).await;
    let a2 = reply(STRANGER, a.id, "a2", Public).await;
    let a1x = reply(FOLLOWER, a1.id, "a1x", Public).await;
    assert_eq!(secret.in_reply_to_account_id, AUTHOR);

    let ids = |v: &[pb::Status]| v.iter().map(|s| s.id).collect::<Vec<_>>();
    let ctx = w.posts.get_context(Some(&w.token(STRANGER)), root.id).await.unwrap();
    assert!(ctx.ancestors.is_empty());
    assert_eq!(ids(&ctx.descendants), vec![a.id, a1.id, a1x.id, a2.id, b.id], "depth first; no direct reply");
    let ctx = w.posts.get_context(Some(&w.token(MENTIONED)), root.id).await.unwrap();
    assert_eq!(ids(&ctx.descendants), vec![a.id, a1.id, a1x.id, a2.id, b.id, secret.id]);

    let ctx = w.posts.get_context(None, a1x.id).await.unwrap();
    assert_eq!(ids(&ctx.ancestors), vec![root.id, a.id, a1.id], "oldest first");
    w.posts.delete_status(Some(&w.token(STRANGER)), a.id).await.unwrap();
    let ctx = w.posts.get_context(None, a1x.id).await.unwrap();
    assert_eq!(ids(&ctx.ancestors), vec![root.id, a1.id], "deleted ancestors are skipped");
    let root_now = w.posts.get_statuses(None, &[root.id]).await.unwrap().pop().unwrap();
    assert_eq!(root_now.replies_count, 2, "b and the direct reply remain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_deletes_and_the_same_key_twice() {
    let w = World::new().await;
    let t = w.token(AUTHOR);
    let req =
        || pb::CreateStatusRequest { text: "first draft".into(), idempotency_key: "abc".into(), ..Default::default() };
    let s = w.posts.create_status(Some(&t), req()).await.unwrap();
    let again = w.posts.create_status(Some(&t), req()).await.unwrap();
    assert_eq!(s.id, again.id);

    let edited = w
        .posts
        .edit_status(
            Some(&t),
            pb::EditStatusRequest {
                id: s.id,
                text: "second <draft>".into(),
                spoiler_text: "cw".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(edited.content, "<p>second &lt;draft&gt;</p>");
    assert!(edited.edited_at_ms > 0 && edited.sensitive);
    let history = w.posts.get_history(None, s.id).await.unwrap();
    assert_eq!(
        history.iter().map(|h| h.content.as_str()).collect::<Vec<_>>(),
        vec!["<p>first draft</p>", "<p>second &lt;draft&gt;</p>"]
    );
    assert_eq!(w.posts.get_source(Some(&t), s.id).await.unwrap().text, "second <draft>");

    let gone = w.posts.delete_status(Some(&t), s.id).await.unwrap();
    assert_eq!(gone.text, "second <draft>", "the source comes back for redraft");
    assert!(w.posts.get_statuses(Some(&t), &[s.id]).await.unwrap().is_empty());
    assert_eq!(w.posts.delete_status(Some(&t), s.id).await.unwrap_err(), not_found());
    let stats = w.posts.account_stats(None, &[AUTHOR]).await.unwrap();
    assert_eq!(stats[0].statuses_count, 0);

    let events = w
        .posts
        .account_status_events(pb::ListAccountStatusEventsRequest { account_id: AUTHOR, max_id: 0, limit: 0 })
        .await
        .unwrap();
    assert!(events.is_empty());
}
