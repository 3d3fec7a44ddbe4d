"""Mastodon conversations through Mastodon.py: direct statuses grouped per thread and set of
participants, unread for the recipients, marked read, paged by the Link header, removed for one
account alone, live on the direct stream, and never someone else's.

Conversations are derived from events, so reads poll until the expected state or a deadline.
"""

from __future__ import annotations

import queue

from conftest import HTTP_TIMEOUT, assert_error, bearer
from test_notifications import WITHIN, _close_later, eventually, me


def _convs(u) -> list:
    return u.api.conversations()


def _summary(c) -> tuple:
    """(unread, participant usernames, last status id) of a Conversation."""
    return (c["unread"], sorted(a["username"] for a in c["accounts"]), str(c["last_status"]["id"]))


def test_a_direct_thread_is_one_conversation_for_each_participant(register, base_url, session):
    alice, bob, carol = register(), register(), register()
    first = alice.api.status_post(f"@{bob.username} just us", visibility="direct")
    got = eventually(lambda: _convs(bob), lambda c: len(c) == 1)
    assert [_summary(c) for c in got] == [(True, [alice.username], str(first["id"]))]
    # The author has it too, read.
    mine = eventually(lambda: _convs(alice), lambda c: len(c) == 1)
    assert [_summary(c) for c in mine] == [(False, [bob.username], str(first["id"]))]
    assert got[0]["last_status"]["visibility"] == "direct"

    # Bob's answer joins the same conversation, unread for Alice.
    reply = bob.api.status_post(f"@{alice.username} sure", visibility="direct", in_reply_to_id=first["id"])
    mine = eventually(lambda: _convs(alice), lambda c: c and str(c[0]["last_status"]["id"]) == str(reply["id"]))
    assert len(mine) == 1 and mine[0]["id"] == got[0]["id"]
    assert _summary(mine[0]) == (True, [bob.username], str(reply["id"]))
    read = alice.api.conversations_read(mine[0]["id"])
    assert read["unread"] is False and str(read["id"]) == str(mine[0]["id"])
    assert _convs(alice)[0]["unread"] is False

    # A third party has none, and Alice's id answers them 404 whatever they try.
    assert _convs(carol) == []
    cid = mine[0]["id"]
    for method, path in (("post", f"/api/v1/conversations/{cid}/read"), ("delete", f"/api/v1/conversations/{cid}")):
        r = session.request(method, f"{base_url}{path}", headers=bearer(carol.token), timeout=HTTP_TIMEOUT)
        assert_error(r, 404)
    r = session.get(f"{base_url}/api/v1/conversations", timeout=HTTP_TIMEOUT)
    assert_error(r, 401)

    # Removing it is for Alice alone; Bob keeps his.
    r = session.delete(f"{base_url}/api/v1/conversations/{cid}", headers=bearer(alice.token), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json() == {}
    assert _convs(alice) == []
    assert len(_convs(bob)) == 1


def test_conversations_page_by_last_status_and_leave_with_their_statuses(register):
    alice, bob, carol = register(), register(), register()
    to_bob = alice.api.status_post(f"@{bob.username} one", visibility="direct")
    to_carol = alice.api.status_post(f"@{carol.username} two", visibility="direct")
    both = alice.api.status_post(f"@{bob.username} @{carol.username} three", visibility="direct")
    got = eventually(lambda: _convs(alice), lambda c: len(c) == 3)
    assert [str(c["last_status"]["id"]) for c in got] == [str(both["id"]), str(to_carol["id"]), str(to_bob["id"])]
    assert sorted(a["username"] for a in got[0]["accounts"]) == sorted([bob.username, carol.username])
    page = alice.api.conversations(limit=2)
    assert len(page) == 2
    rest = alice.api.fetch_next(page)
    assert [str(c["last_status"]["id"]) for c in rest] == [str(to_bob["id"])]

    # Deleting a conversation's only status removes it.
    alice.api.status_delete(to_carol["id"])
    left = eventually(lambda: _convs(alice), lambda c: len(c) == 2)
    assert [str(c["last_status"]["id"]) for c in left] == [str(both["id"]), str(to_bob["id"])]
    assert len(eventually(lambda: _convs(carol), lambda c: len(c) == 1)) == 1


def test_a_blocked_accounts_direct_statuses_make_no_conversation_for_the_blocker(register):
    carol, dave = register(), register()
    carol.api.account_block(me(dave)["id"])
    dave.api.status_post(f"@{carol.username} hello?", visibility="direct")
    # Dave's own conversation shows the status was handled; Carol's never shows it.
    eventually(lambda: _convs(dave), lambda c: len(c) == 1)
    assert _convs(carol) == []


def test_the_direct_stream_carries_conversations_live(register):
    """Mastodon.py's stream_direct (SSE, /api/v1/streaming/direct) hands each `conversation`
    event to on_conversation, decoded; a status entering Bob's home never comes on it."""
    from mastodon import StreamListener

    alice, bob = register(), register()
    bob.api.account_follow(me(alice)["id"])
    q: queue.Queue = queue.Queue()

    class Listener(StreamListener):
        def on_conversation(self, conversation):
            q.put(("conversation", conversation))

        def on_update(self, status):
            q.put(("update", status))

    handle = bob.api.stream_direct(Listener(), run_async=True, reconnect_async=False)
    try:
        # Mastodon.py returns once the stream is open. The public status enters Bob's home (an
        # update on his account's topic), before the direct one.
        alice.api.status_post("for everyone")
        dm = alice.api.status_post(f"@{bob.username} live", visibility="direct")
        kind, c = q.get(timeout=WITHIN)
        assert kind == "conversation"
        assert _summary(c) == (True, [alice.username], str(dm["id"]))
        assert q.empty()
    finally:
        _close_later(handle)
