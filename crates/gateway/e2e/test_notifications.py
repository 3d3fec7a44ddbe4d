"""Notifications through Mastodon.py: each type the notification service writes, undoing a cause,
dismiss, clear, the unread count against the read marker, paging, and privacy (another account's
notification is a 404; a blocked account notifies nobody; a status the recipient may not see
never comes along).

Notifications are written from events, so reads poll until the expected state or a deadline.
Events about different statuses or from different topics (a follow and a favourite) may be handled
in either order on a partitioned bus, so such expectations compare contents, not order.
"""

from __future__ import annotations

import time
from typing import Callable

import pytest
from mastodon import MastodonNotFoundError

from conftest import HTTP_TIMEOUT, assert_error, bearer, json_of

WITHIN = 20.0


def eventually(fetch: Callable[[], list], cond: Callable[[list], bool], within: float = WITHIN) -> list:
    deadline = time.monotonic() + within
    while True:
        got = fetch()
        if cond(got) or time.monotonic() >= deadline:
            return got
        time.sleep(0.1)


def me(u):
    return u.api.account_verify_credentials()


def kinds(api, **kw) -> list[tuple[str, str]]:
    """(type, acting account id) of the notifications, newest first."""
    return [(n["type"], str(n["account"]["id"])) for n in api.notifications(**kw)]


def wait_for(api, expected: list[tuple[str, str]], **kw) -> list[tuple[str, str]]:
    """Polls until the notifications are exactly `expected`, in any order; returns them sorted."""
    want = sorted(expected)
    return sorted(eventually(lambda: kinds(api, **kw), lambda got: sorted(got) == want))


def test_each_type_arrives_with_its_account_and_status(register):
    alice, bob = register(), register()
    a_id, b_id = str(me(alice)["id"]), str(me(bob)["id"])
    s = alice.api.status_post("a status to like")
    bob.api.account_follow(a_id)
    bob.api.status_favourite(s["id"])
    bob.api.status_reblog(s["id"])
    mention = bob.api.status_post(f"hello @{me(alice)['username']}")
    expected = [("mention", b_id), ("reblog", b_id), ("favourite", b_id), ("follow", b_id)]
    assert wait_for(alice.api, expected) == sorted(expected)
    got = alice.api.notifications()
    by_type = {n["type"]: n for n in got}
    assert str(by_type["mention"]["status"]["id"]) == str(mention["id"])
    assert str(by_type["favourite"]["status"]["id"]) == str(s["id"])
    assert str(by_type["reblog"]["status"]["id"]) == str(s["id"])
    assert by_type["follow"].get("status") is None
    assert by_type["favourite"]["group_key"] == f"favourite-{s['id']}"
    assert all(isinstance(n["created_at"].year, int) for n in got)
    # Nobody hears of their own actions.
    alice.api.status_favourite(s["id"])
    assert kinds(bob.api) == []
    # Filters by type.
    assert kinds(alice.api, types=["mention"]) == [("mention", b_id)]
    assert sorted(k for k, _ in kinds(alice.api, exclude_types=["mention", "follow"])) == ["favourite", "reblog"]


def test_undoing_the_cause_removes_the_notification(register):
    alice, bob = register(), register()
    a_id, b_id = str(me(alice)["id"]), str(me(bob)["id"])
    s = alice.api.status_post("undo me")
    bob.api.account_follow(a_id)
    bob.api.status_favourite(s["id"])
    mention = bob.api.status_post(f"@{me(alice)['username']} hi")
    expected = [("mention", b_id), ("favourite", b_id), ("follow", b_id)]
    assert wait_for(alice.api, expected) == sorted(expected)
    bob.api.status_unfavourite(s["id"])
    bob.api.account_unfollow(a_id)
    bob.api.status_delete(mention["id"])
    assert wait_for(alice.api, []) == []


def test_emoji_reactions_notify_the_author_until_the_last_is_taken_back(register, base_url, session):
    """Agora's extension type agora.reaction: one notification per account and status however many
    emoji it adds, with the status; it goes once the account takes back its last one."""
    alice, bob = register(), register()
    b_id = str(me(bob)["id"])
    s = alice.api.status_post("react to me")
    url = f"{base_url}/api/v1/agora/statuses/{s['id']}/reactions"
    thumbs, crab = "%F0%9F%91%8D", "%F0%9F%A6%80"
    for emoji in (thumbs, crab):
        r = session.put(f"{url}/{emoji}", headers=bearer(bob.token), timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
    assert wait_for(alice.api, [("agora.reaction", b_id)]) == [("agora.reaction", b_id)]
    (n,) = alice.api.notifications()
    assert str(n["status"]["id"]) == str(s["id"])
    assert kinds(alice.api, types=["agora.reaction"]) == [("agora.reaction", b_id)]
    for emoji in (thumbs, crab):
        r = session.delete(f"{url}/{emoji}", headers=bearer(bob.token), timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
    assert wait_for(alice.api, []) == []


def test_follow_requests_notify_the_locked_account(register):
    owner, fan = register(), register()
    owner.api.account_update_credentials(locked=True)
    fan_id = str(me(fan)["id"])
    fan.api.account_follow(me(owner)["id"])
    assert wait_for(owner.api, [("follow_request", fan_id)]) == [("follow_request", fan_id)]
    owner.api.follow_request_authorize(fan_id)
    assert wait_for(owner.api, []) == []


def test_dismiss_clear_and_unread_count(register):
    alice, bob = register(), register()
    b_id = str(me(bob)["id"])
    name = me(alice)["username"]
    posted = [bob.api.status_post(f"@{name} number {i}") for i in range(3)]
    assert len(wait_for(alice.api, [("mention", b_id)] * 3)) == 3
    assert alice.api.notifications_unread_count()["count"] == 3
    newest = alice.api.notifications()[0]
    alice.api.markers_set(["notifications"], [newest["id"]])
    assert alice.api.notifications_unread_count()["count"] == 0
    oldest = alice.api.notifications()[-1]
    alice.api.markers_set(["notifications"], [oldest["id"]])
    assert alice.api.notifications_unread_count()["count"] == 2
    # One notification by id; then dismissed.
    one = alice.api.notifications(id=oldest["id"])
    assert str(one["id"]) == str(oldest["id"])
    assert str(one["status"]["id"]) in {str(x["id"]) for x in posted}
    alice.api.notifications_dismiss(oldest["id"])
    assert len(alice.api.notifications()) == 2
    with pytest.raises(MastodonNotFoundError):
        alice.api.notifications(id=oldest["id"])
    alice.api.notifications_clear()
    assert alice.api.notifications() == []


def test_pages_follow_the_link_header(register, base_url, session):
    alice, bob = register(), register()
    b_id = str(me(bob)["id"])
    name = me(alice)["username"]
    for i in range(5):
        bob.api.status_post(f"@{name} page {i}")
    assert len(wait_for(alice.api, [("mention", b_id)] * 5)) == 5
    first = alice.api.notifications(limit=2)
    assert len(first) == 2
    second = alice.api.fetch_next(first)
    third = alice.api.fetch_next(second)
    seen = [n["id"] for n in first + second + third]
    assert len(seen) == 5 and len(set(seen)) == 5
    assert seen == sorted(seen, reverse=True)
    r = session.get(f"{base_url}/api/v1/notifications", params={"limit": 2, "types[]": "mention"},
                    headers=bearer(alice.token), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and "types%5B%5D=mention" in r.headers.get("Link", "")


def test_another_accounts_notification_is_not_found(register, base_url, session):
    alice, bob, eve = register(), register(), register()
    bob.api.status_post(f"@{me(alice)['username']} for alice only")
    got = eventually(lambda: alice.api.notifications(), lambda l: len(l) == 1)
    nid = got[0]["id"]
    for method, path in (("get", f"/api/v1/notifications/{nid}"), ("post", f"/api/v1/notifications/{nid}/dismiss")):
        r = session.request(method, f"{base_url}{path}", headers=bearer(eve.token), timeout=HTTP_TIMEOUT)
        assert_error(r, 404)
        assert str(nid) not in r.text
    assert len(alice.api.notifications()) == 1, "eve's dismiss changed nothing"
    r = session.get(f"{base_url}/api/v1/notifications", params={"types[]": "bogus"}, headers=bearer(eve.token),
                    timeout=HTTP_TIMEOUT)
    assert_error(r, (400, 422))
    r = session.get(f"{base_url}/api/v1/notifications", timeout=HTTP_TIMEOUT)
    assert_error(r, 401)


def test_a_blocked_account_notifies_nobody(register):
    alice, bob, carol = register(), register(), register()
    c_id = str(me(carol)["id"])
    name = me(alice)["username"]
    alice.api.account_block(me(bob)["id"])
    bob.api.status_post(f"@{name} you blocked me")
    # Carol's later mention arrives by the same path, so Bob's absence is not just lateness.
    carol.api.status_post(f"@{name} from carol")
    assert wait_for(alice.api, [("mention", c_id)]) == [("mention", c_id)]


def test_a_private_mention_reaches_a_non_follower_and_leaves_with_its_status(register):
    alice, bob, carol = register(), register(), register()
    b_id = str(me(bob)["id"])
    bob.api.account_follow(me(carol)["id"])
    s = carol.api.status_post(f"followers only, for @{me(alice)['username']} too", visibility="private")
    bob.api.status_favourite(s["id"])
    assert wait_for(carol.api, [("favourite", b_id), ("follow", b_id)]) == [("favourite", b_id), ("follow", b_id)]
    got = eventually(lambda: alice.api.notifications(), lambda l: len(l) == 1)
    assert [n["type"] for n in got] == ["mention"] and str(got[0]["status"]["id"]) == str(s["id"])
    carol.api.status_delete(s["id"])
    assert eventually(lambda: alice.api.notifications(), lambda l: l == []) == []
    assert wait_for(carol.api, [("follow", b_id)]) == [("follow", b_id)], "the favourite went with the status"


def test_new_statuses_notify_followers_who_asked_and_edits_notify_who_took_part(register):
    alice, bob, carol = register(), register(), register()
    a_id = str(me(alice)["id"])
    rel = bob.api.account_follow(a_id, notify=True)
    assert rel["notifying"] is True
    carol.api.account_follow(a_id)
    # The follows reach the notification service on the graph topic and the status on the post
    # topic; Alice's follow notifications show that it has seen the follows (and Bob's notify).
    b_id, c_id = str(me(bob)["id"]), str(me(carol)["id"])
    assert wait_for(alice.api, [("follow", b_id), ("follow", c_id)]) == sorted([("follow", b_id), ("follow", c_id)])
    s = alice.api.status_post("news for subscribers")
    got = eventually(lambda: bob.api.notifications(types=["status"]), lambda l: len(l) == 1)
    assert [(n["type"], str(n["status"]["id"])) for n in got] == [("status", str(s["id"]))]
    carol.api.status_favourite(s["id"])
    alice.api.status_update(s["id"], "news for subscribers, corrected")
    got = eventually(lambda: carol.api.notifications(types=["update"]), lambda l: len(l) == 1)
    assert [(n["type"], str(n["account"]["id"]), str(n["status"]["id"])) for n in got] == [("update", a_id, str(s["id"]))]
    assert "corrected" in got[0]["status"]["content"]
    # Carol followed without notify: no status notification for her.
    assert carol.api.notifications(types=["status"]) == []


def test_grouped_notifications_fold_favourites_and_list_accounts_and_statuses_once(register, base_url, session):
    alice = register()
    fans = [register() for _ in range(3)]
    s = alice.api.status_post("like me")
    for f in fans:
        f.api.status_favourite(s["id"])
    fans[0].api.status_post(f"@{me(alice)['username']} hello")
    assert len(eventually(lambda: alice.api.notifications(), lambda l: len(l) == 4)) == 4
    r = session.get(f"{base_url}/api/v2/notifications", headers=bearer(alice.token), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    body = json_of(r)
    groups = {g["type"]: g for g in body["notification_groups"]}
    assert sorted(groups) == ["favourite", "mention"] and len(body["notification_groups"]) == 2
    fav = groups["favourite"]
    assert fav["group_key"] == f"favourite-{s['id']}" and fav["notifications_count"] == 3
    assert fav["status_id"] == str(s["id"])
    fan_ids = [str(me(f)["id"]) for f in fans]
    assert fav["sample_account_ids"] == list(reversed(fan_ids))
    assert sorted(str(a["id"]) for a in body["accounts"]) == sorted(fan_ids)
    assert sorted(str(x["id"]) for x in body["statuses"]) == sorted([str(s["id"]), str(groups["mention"]["status_id"])])
    # Without grouping favourites, each is a group of its own.
    r = session.get(f"{base_url}/api/v2/notifications", params={"grouped_types[]": "follow"},
                    headers=bearer(alice.token), timeout=HTTP_TIMEOUT)
    assert len(json_of(r)["notification_groups"]) == 4


def test_a_user_stream_delivers_notifications_live(register):
    """Mastodon.py finds the streaming server through the instance, opens /api/v1/streaming/user
    and hands each `notification` and `update` event to its listener, decoded."""
    import threading

    from mastodon import StreamListener

    alice, bob = register(), register()
    a_id, b_id = str(me(alice)["id"]), str(me(bob)["id"])
    got: list = []
    arrived = threading.Event()

    class Listener(StreamListener):
        def on_notification(self, notification):
            got.append(notification)
            arrived.set()

        def on_update(self, status):
            updates.append(status)
            updated.set()

    updates: list = []
    updated = threading.Event()
    handle = alice.api.stream_user(Listener(), run_async=True, reconnect_async=False)
    try:
        bob.api.account_follow(a_id)
        assert arrived.wait(WITHIN), "no notification on the stream"
        assert got[0]["type"] == "follow"
        assert str(got[0]["account"]["id"]) == b_id
        # Alice's own status enters her home: it comes as an update.
        mine = alice.api.status_post("live on my stream")
        assert updated.wait(WITHIN), "no update on the stream"
        assert str(updates[0]["id"]) == str(mine["id"])
    finally:
        _close_later(handle)


def _recording_listener(name: str, into):
    """A StreamListener that puts (stream name, event, id or type) on `into`."""
    from mastodon import StreamListener

    class Recorder(StreamListener):
        def on_update(self, status):
            into.put((name, "update", str(status["id"])))

        def on_status_update(self, status):
            into.put((name, "status.update", str(status["id"])))

        def on_delete(self, status_id):
            into.put((name, "delete", str(status_id)))

        def on_notification(self, notification):
            into.put((name, "notification", notification["type"]))

        def on_websocket_error(self, error, for_stream=None):
            into.put((name, "error", None))

    return Recorder()


def _events(q, n: int) -> list:
    """The next `n` events on `q` that are not error frames."""
    out = []
    while len(out) < n:
        e = q.get(timeout=WITHIN)
        if e[1] != "error":
            out.append(e)
    return out


def _barrier(handle, q) -> list:
    """Subscribes to a stream Agora does not serve and waits for its error frame: the server
    handles a socket's messages in order, so what was asked before it is in place. Returns
    the events that arrived before the error frame."""
    import secrets

    handle.subscribe("list", list=secrets.token_hex(4))
    before = []
    while True:
        e = q.get(timeout=WITHIN)
        if e[1] == "error":
            return before
        before.append(e)


def test_a_websocket_carries_the_user_and_hashtag_streams(register):
    """Mastodon.py's multiplexed WebSocket (/api/v1/streaming, the token in the Authorization
    header): one connection carries Alice's user stream (notification, update, status.update,
    delete) and a hashtag stream, each event handed to its stream's listener; a private status
    with the hashtag never reaches the hashtag stream."""
    import queue

    alice, bob = register(), register()
    a_id = str(me(alice)["id"])
    tag = unique_tag()
    q: queue.Queue = queue.Queue()
    handle = alice.api.stream_open_websocket(_recording_listener("default", q))
    try:
        alice.api.stream_user(_recording_listener("user", q), websocket_handle=handle)
        alice.api.stream_hashtag(tag, _recording_listener("hashtag", q), websocket_handle=handle)
        assert _barrier(handle, q) == []

        bob.api.account_follow(a_id)
        assert _events(q, 1) == [("user", "notification", "follow")]
        secret = bob.api.status_post(f"#{tag} for followers only", visibility="private")
        public = bob.api.status_post(f"#{tag} for everyone")
        assert _events(q, 1) == [("hashtag", "update", str(public["id"]))], f"not the private {secret['id']}"
        # Each step waits for the last one's events: a stream renders a status when its event
        # arrives, so one deleted before then is never sent (its delete is).
        mine = alice.api.status_post(f"#{tag} my own")
        mine_id = str(mine["id"])
        for event, act in (("update", lambda: None),
                           ("status.update", lambda: alice.api.status_update(mine_id, f"#{tag} my own, edited")),
                           ("delete", lambda: alice.api.status_delete(mine_id))):
            act()
            assert sorted(_events(q, 2)) == [("hashtag", event, mine_id), ("user", event, mine_id)], event
        assert _barrier(handle, q) == [], "nothing else was sent"
    finally:
        handle.close()


def test_a_hashtag_stream_over_sse_shows_a_third_party_only_public_statuses(register):
    """Carol follows a hashtag stream (SSE, /api/v1/streaming/hashtag?tag=) and the public one:
    Bob's private and direct statuses with the hashtag, even one mentioning her, never appear
    there; his public one does, on both."""
    import queue

    bob, carol = register(), register()
    carol_name = me(carol)["username"]
    tag = unique_tag()
    q: queue.Queue = queue.Queue()
    tagged = carol.api.stream_hashtag(tag, _recording_listener("hashtag", q), run_async=True)
    public_stream = carol.api.stream_public(_recording_listener("public", q), run_async=True)
    try:
        hidden = [
            bob.api.status_post(f"#{tag} followers only", visibility="private"),
            bob.api.status_post(f"#{tag} @{carol_name} just us", visibility="direct"),
            bob.api.status_post(f"#{tag} quietly", visibility="unlisted"),
        ]
        public = bob.api.status_post(f"#{tag} for everyone")
        got = sorted(_events(q, 2))
        assert got == [("hashtag", "update", str(public["id"])), ("public", "update", str(public["id"]))], (
            f"hidden: {[str(s['id']) for s in hidden]}")
    finally:
        _close_later(tagged, public_stream)


def unique_tag() -> str:
    import secrets

    return "t" + secrets.token_hex(5)


def _close_later(*handles):
    """Closes SSE stream handles without waiting: Mastodon.py's close blocks until the stream's
    reader gets its next chunk, which for a quiet stream is the next heartbeat (15 s)."""
    import threading

    for h in handles:
        threading.Thread(target=h.close, daemon=True).start()


def _push_receiver():
    """A push service on 127.0.0.1 recording (path, headers, body) of each POST; answers 201."""
    import http.server
    import queue
    import threading

    got: queue.Queue = queue.Queue()

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            # Header names are case-insensitive (this sender's arrive lower-cased).
            got.put((self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}", got


def test_web_push_is_decrypted_by_mastodon_py_and_http_ece(register, session, base_url):
    """A Web Push subscription made with Mastodon.py gets an encrypted push per new notification
    at its endpoint (a receiver on loopback; the shapes allow private endpoints for it), which
    Mastodon.py's push_subscription_decrypt_push opens (legacy aesgcm); a `standard` one is
    aes128gcm and opens with http_ece. The payload names the notification the REST API lists."""
    import base64
    import os

    import http_ece
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    server, receiver, got = _push_receiver()
    try:
        alice, bob, carol = register(), register(), register()
        priv, pub = alice.api.push_subscription_generate_keys()
        sub = alice.api.push_subscription_set(f"{receiver}/legacy", pub, mention_events=True,
                                              follow_events=True, policy="all")
        assert sub["alerts"]["mention"] is True and sub["alerts"]["favourite"] is False
        assert sub["server_key"] == alice.api.instance_v2()["configuration"]["vapid"]["public_key"]

        bob.api.account_follow(me(alice)["id"])
        path, headers, body = got.get(timeout=WITHIN)
        assert path == "/legacy"
        push = alice.api.push_subscription_decrypt_push(body, priv, headers["encryption"], headers["crypto-key"])
        assert push["notification_type"] == "follow"
        assert str(push["notification_id"]) == str(alice.api.notifications()[0]["id"])
        assert push["access_token"] == alice.token
        assert push["title"].endswith("followed you")

        # aes128gcm: Mastodon.py 2.3.3 does not send `standard`, so this one goes by hand.
        key = ec.generate_private_key(ec.SECP256R1())
        raw = key.public_key().public_bytes(serialization.Encoding.X962,
                                            serialization.PublicFormat.UncompressedPoint)
        auth = os.urandom(16)
        r = session.post(f"{base_url}/api/v1/push/subscription", headers=bearer(carol.token), data={
            "subscription[endpoint]": f"{receiver}/standard",
            "subscription[keys][p256dh]": base64.urlsafe_b64encode(raw).decode().rstrip("="),
            "subscription[keys][auth]": base64.urlsafe_b64encode(auth).decode().rstrip("="),
            "subscription[standard]": "true",
            "data[alerts][mention]": "true",
        }, timeout=HTTP_TIMEOUT)
        assert json_of(r)["standard"] is True
        status = bob.api.status_post(f"@{me(carol)['username']} pushed to you")
        path, headers, body = got.get(timeout=WITHIN)
        assert (path, headers["content-encoding"]) == ("/standard", "aes128gcm")
        import json

        push = json.loads(http_ece.decrypt(body, private_key=key, auth_secret=auth, version="aes128gcm"))
        assert push["notification_type"] == "mention"
        assert "pushed to you" in push["body"]
        listed = carol.api.notifications(types=["mention"])
        assert str(listed[0]["status"]["id"]) == str(status["id"])
        assert push["notification_id"] == str(listed[0]["id"])
    finally:
        server.shutdown()


def test_a_push_subscription_with_malformed_keys_is_refused(register, session, base_url):
    """Keys are validated: a p256dh that is no P-256 point and a short auth secret get 422, and
    nothing is kept."""
    alice = register()
    r = session.post(f"{base_url}/api/v1/push/subscription", headers=bearer(alice.token), data={
        "subscription[endpoint]": "https://push.example.com/x",
        "subscription[keys][p256dh]": "bm90IGEga2V5",
        "subscription[keys][auth]": "c2hvcnQ",
    }, timeout=HTTP_TIMEOUT)
    assert_error(r, 422)
    r = session.get(f"{base_url}/api/v1/push/subscription", headers=bearer(alice.token), timeout=HTTP_TIMEOUT)
    assert_error(r, 404)
