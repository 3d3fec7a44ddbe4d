"""The social core through Mastodon.py: follows, posts, replies, favourites, reblogs, bookmarks,
edits, deletes, timelines, blocks, mutes, visibility and suggestions.

Timelines are filled by events (fan-out on write), so anything read from a timeline is polled
until it appears or a deadline passes; a status that must never appear is checked after a
later status by the same path has arrived, so the absence is not just lateness.
"""

from __future__ import annotations

import time
from typing import Callable

import pytest
from mastodon import MastodonAPIError, MastodonNotFoundError

from conftest import HTTP_TIMEOUT, assert_error, bearer, json_of

FANOUT_WITHIN = 20.0


def eventually(fetch: Callable[[], list], cond: Callable[[list], bool], within: float = FANOUT_WITHIN) -> list:
    deadline = time.monotonic() + within
    while True:
        got = fetch()
        if cond(got) or time.monotonic() >= deadline:
            return got
        time.sleep(0.1)


def ids(statuses) -> list[str]:
    return [str(s["id"]) for s in statuses]


def home_has(api, status_id, within: float = FANOUT_WITHIN) -> bool:
    got = eventually(lambda: api.timeline_home(limit=40), lambda l: str(status_id) in ids(l), within)
    return str(status_id) in ids(got)


def me(u):
    return u.api.account_verify_credentials()


# ---------------------------------------------------------------------------------------------


def test_follow_unfollow_and_relationships(register):
    a, b = register(), register()
    b_id = me(b)["id"]
    rel = a.api.account_follow(b_id)
    assert rel["following"] is True and rel["requested"] is False
    rels = a.api.account_relationships([b_id])
    assert rels[0]["id"] == str(b_id) and rels[0]["following"] is True and rels[0]["followed_by"] is False
    back = b.api.account_relationships([me(a)["id"]])[0]
    assert back["followed_by"] is True
    assert [str(x["id"]) for x in b.api.account_followers(b_id)] == [str(me(a)["id"])]
    assert str(b_id) in [str(x["id"]) for x in a.api.account_following(me(a)["id"])]
    assert b.api.account(b_id)["followers_count"] == 1

    # Posts by b reach a's home; after unfollowing they leave it.
    s = b.api.status_post("hello followers")
    assert home_has(a.api, s["id"])
    rel = a.api.account_unfollow(b_id)
    assert rel["following"] is False
    gone = eventually(lambda: a.api.timeline_home(limit=40), lambda l: str(s["id"]) not in ids(l))
    assert str(s["id"]) not in ids(gone)
    assert b.api.account(b_id)["followers_count"] == 0


def test_following_yourself_and_unknown_accounts_is_refused(base_url, user, session):
    my_id = me(user)["id"]
    r = session.post(f"{base_url}/api/v1/accounts/{my_id}/follow", headers=bearer(user.token), timeout=HTTP_TIMEOUT)
    assert_error(r, (403, 422))
    r = session.post(f"{base_url}/api/v1/accounts/999999999999/follow", headers=bearer(user.token), timeout=HTTP_TIMEOUT)
    assert_error(r, 404)
    r = session.post(f"{base_url}/api/v1/accounts/not-an-id/follow", headers=bearer(user.token), timeout=HTTP_TIMEOUT)
    assert_error(r, 404)


def test_locked_account_turns_follows_into_requests(register):
    owner, fan, other = register(), register(), register()
    owner.api.account_update_credentials(locked=True)
    owner_id = me(owner)["id"]
    rel = fan.api.account_follow(owner_id)
    assert rel["following"] is False and rel["requested"] is True
    rel2 = other.api.account_follow(owner_id)
    assert rel2["requested"] is True
    pending = [str(a["id"]) for a in owner.api.follow_requests()]
    assert set(pending) == {str(me(fan)["id"]), str(me(other)["id"])}

    rel = owner.api.follow_request_authorize(me(fan)["id"])
    assert rel["followed_by"] is True
    owner.api.follow_request_reject(me(other)["id"])
    assert owner.api.follow_requests() == []
    assert fan.api.account_relationships([owner_id])[0]["following"] is True
    r = other.api.account_relationships([owner_id])[0]
    assert r["following"] is False and r["requested"] is False

    # A private post reaches the accepted follower only.
    s = owner.api.status_post("followers only", visibility="private")
    assert home_has(fan.api, s["id"])
    with pytest.raises(MastodonNotFoundError):
        other.api.status(s["id"])


def test_post_reply_and_context(register):
    a, b = register(), register()
    root = a.api.status_post("root of a thread #Agora")
    assert root["visibility"] == "public" and root["tags"][0]["name"] == "agora"
    reply = b.api.status_post(f"@{a.username} a reply", in_reply_to_id=root["id"])
    assert str(reply["in_reply_to_id"]) == str(root["id"])
    assert reply["mentions"][0]["username"] == a.username
    assert f"/@{a.username}" in reply["content"]
    deeper = a.api.status_post(f"@{b.username} deeper", in_reply_to_id=reply["id"])
    ctx = b.api.status_context(reply["id"])
    assert ids(ctx["ancestors"]) == [str(root["id"])]
    assert ids(ctx["descendants"]) == [str(deeper["id"])]
    assert a.api.status(root["id"])["replies_count"] == 1


def test_favourite_reblog_bookmark_and_their_lists(register):
    author, fan = register(), register()
    s = author.api.status_post("worth keeping")
    fav = fan.api.status_favourite(s["id"])
    assert fav["favourited"] is True and fav["favourites_count"] == 1
    again = fan.api.status_favourite(s["id"])
    assert again["favourites_count"] == 1, "favouriting twice counts once"
    boost = fan.api.status_reblog(s["id"])
    assert str(boost["reblog"]["id"]) == str(s["id"]) and boost["reblog"]["reblogged"] is True
    assert fan.api.status_reblog(s["id"])["reblog"]["reblogs_count"] == 1, "reblogging twice counts once"
    fan.api.status_bookmark(s["id"])
    assert ids(fan.api.favourites()) == [str(s["id"])]
    assert ids(fan.api.bookmarks()) == [str(s["id"])]
    assert [str(a["id"]) for a in author.api.status_favourited_by(s["id"])] == [str(me(fan)["id"])]
    assert [str(a["id"]) for a in author.api.status_reblogged_by(s["id"])] == [str(me(fan)["id"])]
    seen = author.api.status(s["id"])
    assert seen["favourites_count"] == 1 and seen["reblogs_count"] == 1 and seen["favourited"] is False

    fan.api.status_unfavourite(s["id"])
    fan.api.status_unreblog(s["id"])
    fan.api.status_unbookmark(s["id"])
    seen = author.api.status(s["id"])
    assert seen["favourites_count"] == 0 and seen["reblogs_count"] == 0
    assert fan.api.favourites() == [] and fan.api.bookmarks() == []


def test_edit_history_source_and_delete(register):
    a = register()
    s = a.api.status_post("first version")
    edited = a.api.status_update(s["id"], "second version")
    assert "second version" in edited["content"] and edited["edited_at"] is not None
    history = a.api.status_history(s["id"])
    assert len(history) == 2 and "first version" in history[0]["content"] and "second version" in history[1]["content"]
    assert a.api.status_source(s["id"])["text"] == "second version"
    deleted = a.api.status_delete(s["id"])
    assert deleted["text"] == "second version", "delete returns the source for redraft"
    with pytest.raises(MastodonNotFoundError):
        a.api.status(s["id"])


def test_only_the_author_edits_and_deletes(base_url, register, session):
    a, b = register(), register()
    s = a.api.status_post("mine")
    r = session.delete(f"{base_url}/api/v1/statuses/{s['id']}", headers=bearer(b.token), timeout=HTTP_TIMEOUT)
    assert_error(r, (403, 404))
    r = session.put(f"{base_url}/api/v1/statuses/{s['id']}", data={"status": "hijacked"}, headers=bearer(b.token),
                    timeout=HTTP_TIMEOUT)
    assert_error(r, (403, 404))
    assert "mine" in a.api.status(s["id"])["content"]


def test_markup_is_escaped(register):
    a = register()
    s = a.api.status_post('<script>alert(1)</script> <b onmouseover="x">hi</b> javascript:alert(2) http://ok.example/a?b=1&c=2')
    c = s["content"]
    assert "<script" not in c and "<b " not in c and "onmouseover=\"" not in c
    assert "&lt;script&gt;" in c
    assert 'href="http://ok.example/a?b=1&amp;c=2"' in c
    assert 'href="javascript' not in c


def test_home_timeline_pagination(register):
    author, reader = register(), register()
    reader.api.account_follow(me(author)["id"])
    posted = [author.api.status_post(f"post {i}") for i in range(7)]
    newest = str(posted[-1]["id"])
    assert home_has(reader.api, newest)
    page1 = reader.api.timeline_home(limit=3)
    assert ids(page1) == [str(p["id"]) for p in reversed(posted)][:3]
    page2 = reader.api.fetch_next(page1)
    assert ids(page2) == [str(p["id"]) for p in reversed(posted)][3:6]
    since = reader.api.timeline_home(since_id=posted[4]["id"])
    assert ids(since) == [str(posted[6]["id"]), str(posted[5]["id"])]
    min_page = reader.api.timeline_home(min_id=posted[0]["id"], limit=2)
    assert ids(min_page) == [str(posted[2]["id"]), str(posted[1]["id"])]


def test_public_and_hashtag_timelines(register, base_url, session):
    a = register()
    tag = f"t{int(time.time() * 1000) % 10**9}"
    posts = [a.api.status_post(f"tagged #{tag} number {i}") for i in range(3)]
    unlisted = a.api.status_post(f"quiet #{tag}", visibility="unlisted")
    got = eventually(lambda: a.api.timeline_hashtag(tag), lambda l: len(l) >= 3)
    assert ids(got) == [str(p["id"]) for p in reversed(posts)]
    assert str(unlisted["id"]) not in ids(got)
    page = a.api.timeline_hashtag(tag, limit=2)
    assert len(page) == 2
    rest = a.api.fetch_next(page)
    assert ids(rest) == [str(posts[0]["id"])]
    pub = eventually(lambda: a.api.timeline_public(limit=40), lambda l: str(posts[-1]["id"]) in ids(l))
    assert str(posts[-1]["id"]) in ids(pub) and str(unlisted["id"]) not in ids(pub)
    # Anonymous readers see the public timeline too.
    r = session.get(f"{base_url}/api/v1/timelines/tag/{tag}", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and len(json_of(r)) == 3


def test_block_hides_both_ways(register, base_url, session):
    a, b = register(), register()
    a_id, b_id = me(a)["id"], me(b)["id"]
    a.api.account_follow(b_id)
    b.api.account_follow(a_id)
    before = b.api.status_post("before the block")
    assert home_has(a.api, before["id"])
    rel = a.api.account_block(b_id)
    assert rel["blocking"] is True and rel["following"] is False and rel["followed_by"] is False
    assert b.api.account_relationships([a_id])[0]["blocked_by"] is True
    gone = eventually(lambda: a.api.timeline_home(limit=40), lambda l: str(before["id"]) not in ids(l))
    assert str(before["id"]) not in ids(gone)
    # b can no longer see a's posts, nor follow a.
    s = a.api.status_post("after the block")
    r = session.get(f"{base_url}/api/v1/statuses/{s['id']}", headers=bearer(b.token), timeout=HTTP_TIMEOUT)
    assert_error(r, 404)
    r = session.post(f"{base_url}/api/v1/accounts/{a_id}/follow", headers=bearer(b.token), timeout=HTTP_TIMEOUT)
    assert_error(r, (403, 422))
    # b's public posts are gone from a's view of public timelines.
    tag = f"blk{int(time.time() * 1000) % 10**9}"
    hidden = b.api.status_post(f"#{tag} from the blocked side")
    visible = a.api.status_post(f"#{tag} from the blocker")
    got = eventually(lambda: a.api.timeline_hashtag(tag), lambda l: str(visible["id"]) in ids(l))
    assert str(visible["id"]) in ids(got) and str(hidden["id"]) not in ids(got)
    assert [str(x["id"]) for x in a.api.blocks()] == [str(b_id)]
    a.api.account_unblock(b_id)
    assert a.api.account_relationships([b_id])[0]["blocking"] is False


def test_mute_hides_from_home(register):
    a, b, c = register(), register(), register()
    a.api.account_follow(me(b)["id"])
    a.api.account_follow(me(c)["id"])
    old = b.api.status_post("said before the mute")
    assert home_has(a.api, old["id"])
    rel = a.api.account_mute(me(b)["id"], notifications=False)
    assert rel["muting"] is True and rel["muting_notifications"] is False
    muted_post = b.api.status_post("said during the mute")
    marker = c.api.status_post("from someone not muted")
    got = eventually(lambda: a.api.timeline_home(limit=40), lambda l: str(marker["id"]) in ids(l) and str(old["id"]) not in ids(l))
    assert str(marker["id"]) in ids(got)
    assert str(muted_post["id"]) not in ids(got) and str(old["id"]) not in ids(got)
    assert [str(x["id"]) for x in a.api.mutes()] == [str(me(b)["id"])]
    a.api.account_unmute(me(b)["id"])
    assert a.api.account_relationships([me(b)["id"]])[0]["muting"] is False


def test_private_and_direct_visibility(register, base_url, session):
    author, follower, mentioned, stranger = register(), register(), register(), register()
    follower.api.account_follow(me(author)["id"])
    private = author.api.status_post("for followers", visibility="private")
    direct = author.api.status_post(f"@{mentioned.username} just you", visibility="direct")
    public = author.api.status_post("for everyone")
    assert home_has(follower.api, public["id"])
    home = follower.api.timeline_home(limit=40)
    assert str(private["id"]) in ids(home) and str(direct["id"]) not in ids(home)
    assert home_has(mentioned.api, direct["id"])
    for who, sid in ((stranger, private["id"]), (stranger, direct["id"]), (follower, direct["id"])):
        r = session.get(f"{base_url}/api/v1/statuses/{sid}", headers=bearer(who.token), timeout=HTTP_TIMEOUT)
        assert_error(r, 404)
    r = session.get(f"{base_url}/api/v1/statuses/{private['id']}", timeout=HTTP_TIMEOUT)
    assert_error(r, 404)
    # Neither can be reblogged, and replying to an invisible status looks like a missing one.
    with pytest.raises((MastodonNotFoundError, MastodonAPIError)):
        follower.api.status_reblog(private["id"])
    r1 = session.post(f"{base_url}/api/v1/statuses", data={"status": "hi", "in_reply_to_id": str(private["id"])},
                      headers=bearer(stranger.token), timeout=HTTP_TIMEOUT)
    r2 = session.post(f"{base_url}/api/v1/statuses", data={"status": "hi", "in_reply_to_id": "999999999999999"},
                      headers=bearer(stranger.token), timeout=HTTP_TIMEOUT)
    assert r1.status_code == r2.status_code and r1.status_code in (404, 422)
    assert json_of(r1) == json_of(r2)
    public_tl = eventually(lambda: stranger.api.account_statuses(me(author)["id"]), lambda l: len(l) >= 1)
    assert ids(public_tl) == [str(public["id"])]


def test_suggestions_are_friends_of_friends(register):
    me_, friend, fof1, fof2 = register(), register(), register(), register()
    me_.api.account_follow(me(friend)["id"])
    friend.api.account_follow(me(fof1)["id"])
    friend.api.account_follow(me(fof2)["id"])
    suggested = [str(a["id"]) for a in me_.api.suggestions()]
    assert set(suggested) == {str(me(fof1)["id"]), str(me(fof2)["id"])}
    me_.api.suggestion_delete(me(fof1)["id"])
    me_.api.account_follow(me(fof2)["id"])
    assert [str(a["id"]) for a in me_.api.suggestions()] == []
    familiar = me_.api.account_familiar_followers(me(fof1)["id"])
    assert [str(a["id"]) for a in familiar[0]["accounts"]] == [str(me(friend)["id"])]


def test_reblogs_appear_once_in_home(register):
    reader, b1, b2, author = register(), register(), register(), register()
    reader.api.account_follow(me(b1)["id"])
    reader.api.account_follow(me(b2)["id"])
    s = author.api.status_post("boost me")
    r1 = b1.api.status_reblog(s["id"])
    r2 = b2.api.status_reblog(s["id"])
    marker = b2.api.status_post("after the boosts")
    home = eventually(lambda: reader.api.timeline_home(limit=40), lambda l: str(marker["id"]) in ids(l))
    originals = [str(x["reblog"]["id"]) for x in home if x.get("reblog")]
    assert originals.count(str(s["id"])) == 1, home
    # Whichever boost the feed saw first is the one shown (on Kafka the two may arrive on
    # different partitions, in either order).
    assert len({str(r1["id"]), str(r2["id"])} & set(ids(home))) == 1


def test_bad_input_gets_clear_errors(base_url, user, session):
    h = bearer(user.token)
    r = session.post(f"{base_url}/api/v1/statuses", data={"status": ""}, headers=h, timeout=HTTP_TIMEOUT)
    assert_error(r, 422)
    r = session.post(f"{base_url}/api/v1/statuses", data={"status": "x" * 501}, headers=h, timeout=HTTP_TIMEOUT)
    assert_error(r, 422)
    r = session.post(f"{base_url}/api/v1/statuses", data={"status": "x", "visibility": "secret"}, headers=h,
                     timeout=HTTP_TIMEOUT)
    assert_error(r, 422)
    for path in ("/api/v1/statuses/123456789012345", "/api/v1/statuses/abc", "/api/v1/statuses/-4/context"):
        assert_error(session.get(f"{base_url}{path}", headers=h, timeout=HTTP_TIMEOUT), 404)
    r = session.post(f"{base_url}/api/v1/statuses/99999999999/favourite", headers=h, timeout=HTTP_TIMEOUT)
    assert_error(r, 404)
    r = session.get(f"{base_url}/api/v1/timelines/home?limit=-5", headers=h, timeout=HTTP_TIMEOUT)
    assert_error(r, 422)
    r = session.get(f"{base_url}/api/v1/timelines/home?max_id=abc", headers=h, timeout=HTTP_TIMEOUT)
    assert_error(r, 422)
    r = session.get(f"{base_url}/api/v1/timelines/home?limit=1000&since_id=9223372036854775000", headers=h,
                    timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and json_of(r) == []
    r = session.get(f"{base_url}/api/v1/timelines/home", timeout=HTTP_TIMEOUT)
    assert_error(r, 401)


def test_idempotency_key_returns_the_first_status(base_url, user, session):
    h = {**bearer(user.token), "Idempotency-Key": "same-key-1"}
    a = json_of(session.post(f"{base_url}/api/v1/statuses", data={"status": "once"}, headers=h, timeout=HTTP_TIMEOUT))
    b = json_of(session.post(f"{base_url}/api/v1/statuses", data={"status": "once"}, headers=h, timeout=HTTP_TIMEOUT))
    assert a["id"] == b["id"]


def test_account_statuses_filters_and_pins(register):
    a, b = register(), register()
    first = a.api.status_post("first")
    reply = a.api.status_post("a reply to b", in_reply_to_id=b.api.status_post("b says")["id"])
    boost = a.api.status_reblog(first["id"])
    a.api.status_pin(first["id"])
    all_ = eventually(lambda: b.api.account_statuses(me(a)["id"]), lambda l: len(l) >= 3)
    assert set(ids(all_)) == {str(first["id"]), str(reply["id"]), str(boost["id"])}
    no_replies = b.api.account_statuses(me(a)["id"], exclude_replies=True)
    assert str(reply["id"]) not in ids(no_replies)
    no_boosts = b.api.account_statuses(me(a)["id"], exclude_reblogs=True)
    assert str(boost["id"]) not in ids(no_boosts)
    pinned = b.api.account_statuses(me(a)["id"], pinned=True)
    assert ids(pinned) == [str(first["id"])] and pinned[0]["pinned"] is False
    assert a.api.account_statuses(me(a)["id"], pinned=True)[0]["pinned"] is True


def test_markers(user):
    s = user.api.status_post("read up to here")
    user.api.markers_set(["home"], [s["id"]])
    got = user.api.markers_get(["home"])
    assert str(got["home"]["last_read_id"]) == str(s["id"]) and got["home"]["version"] >= 1


def test_emoji_reactions_extension(base_url, register, session):
    a, b = register(), register()
    s = a.api.status_post("react to me")
    url = f"{base_url}/api/v1/agora/statuses/{s['id']}/reactions"
    r = session.put(f"{url}/%F0%9F%91%8D", headers=bearer(b.token), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    session.put(f"{url}/%F0%9F%91%8D", headers=bearer(b.token), timeout=HTTP_TIMEOUT)
    got = json_of(session.get(url, headers=bearer(a.token), timeout=HTTP_TIMEOUT))
    assert got == [{"name": "\U0001F44D", "count": 1, "me": False}]
    r = session.put(f"{url}/notanemoji", headers=bearer(b.token), timeout=HTTP_TIMEOUT)
    assert_error(r, 422)
    session.delete(f"{url}/%F0%9F%91%8D", headers=bearer(b.token), timeout=HTTP_TIMEOUT)
    assert json_of(session.get(url, headers=bearer(a.token), timeout=HTTP_TIMEOUT)) == []
