"""Accounts, OAuth and instance discovery through the Mastodon client API, as Mastodon.py uses it.

Every test makes its own apps and accounts (random names) and speaks from its own fake client
address, so tests are independent of each other and of their order.
"""

from __future__ import annotations

import concurrent.futures
import email.utils
import json
import secrets
import threading
import warnings

import dateutil.parser
import pytest
from mastodon import (
    MastodonIllegalArgumentError,
    MastodonNotFoundError,
    MastodonRatelimitError,
    MastodonUnauthorizedError,
)
from mastodon.versions import parse_version_string

from conftest import (
    DEFAULT_SCOPES,
    HTTP_TIMEOUT,
    assert_error,
    bearer,
    json_of,
    make_session,
    password,
    poll_status,
    unique,
)

NODEINFO_20 = "http://nodeinfo.diaspora.software/ns/schema/2.0"


# --- apps -------------------------------------------------------------------------------------


def test_create_app_and_verify_app_credentials(base_url, session, create_app, app_token, make_api):
    app = create_app(session, name=f"agora-e2e-app-{secrets.token_hex(3)}")
    assert isinstance(app.client_id, str) and app.client_id
    assert isinstance(app.client_secret, str) and app.client_secret
    assert app.client_id != app.client_secret

    token = app_token(app)
    api = make_api(session, access_token=token)
    info = api.app_verify_credentials()
    assert info.name == app.name

    raw = session.get(f"{base_url}/api/v1/apps/verify_credentials", headers=bearer(token), timeout=HTTP_TIMEOUT)
    body = json_of(raw)
    assert raw.status_code == 200 and body["name"] == app.name
    assert "client_secret" not in body, "verify_credentials must not echo the app's secret"

    # A wrong secret gets no token.
    bad = session.post(
        f"{base_url}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app.client_id,
            "client_secret": app.client_secret + "x",
            "scope": "read",
        },
        timeout=HTTP_TIMEOUT,
    )
    body = assert_error(bad, (400, 401), "invalid_client")
    assert "access_token" not in body

    # Without a token, app credentials cannot be verified.
    anon = session.get(f"{base_url}/api/v1/apps/verify_credentials", timeout=HTTP_TIMEOUT)
    assert_error(anon, 401)


# --- registration and login -------------------------------------------------------------------


def test_register_then_verify_credentials(base_url, user):
    me = user.api.account_verify_credentials()
    assert me.username == user.username
    assert me.acct == user.username
    assert isinstance(me.display_name, str)
    assert me.source is not None

    raw = user.app.session.get(
        f"{base_url}/api/v1/accounts/verify_credentials", headers=bearer(user.token), timeout=HTTP_TIMEOUT
    )
    assert raw.status_code == 200, raw.text
    body = json_of(raw)
    assert isinstance(body["id"], str) and body["id"], "account ids are JSON strings"
    assert body["username"] == user.username and body["acct"] == user.username
    assert isinstance(body["display_name"], str)
    assert isinstance(body.get("source"), dict), "verify_credentials returns the CredentialAccount with source"
    assert body.get("created_at"), body
    dateutil.parser.parse(body["created_at"])


def test_login_with_password_by_username_and_by_email(user, make_api):
    for who in (user.username, user.email):
        api = make_api(user.app.session, client_id=user.app.client_id, client_secret=user.app.client_secret)
        token = api.log_in(who, user.password, allow_http=True)
        assert isinstance(token, str) and token
        assert token != user.token
        me = api.account_verify_credentials()
        assert me.username == user.username


def test_wrong_password_is_refused(base_url, user, make_api):
    api = make_api(user.app.session, client_id=user.app.client_id, client_secret=user.app.client_secret)
    with pytest.raises(MastodonIllegalArgumentError):
        api.log_in(user.username, user.password + "-wrong", allow_http=True)
    assert api.access_token is None

    for who, pw in ((user.username, "definitely-wrong-1"), (unique("nobody"), user.password)):
        resp = user.app.session.post(
            f"{base_url}/oauth/token",
            data={
                "grant_type": "password",
                "username": who,
                "password": pw,
                "client_id": user.app.client_id,
                "client_secret": user.app.client_secret,
                "scope": DEFAULT_SCOPES,
            },
            timeout=HTTP_TIMEOUT,
        )
        body = assert_error(resp, (400, 401), "invalid_grant")
        assert "access_token" not in body


def test_update_credentials_is_visible_everywhere(user, make_api, new_session):
    name = f"Agora E2E {secrets.token_hex(3)}"
    note = f"hello from the e2e suite {secrets.token_hex(3)}"
    updated = user.api.account_update_credentials(display_name=name, note=note)
    assert updated.display_name == name

    me = user.api.account_verify_credentials()
    assert me.display_name == name
    assert me.source.note == note, "source.note holds the plain-text bio"

    by_id = user.api.account(me.id)
    assert by_id.display_name == name
    assert note in by_id.note

    by_acct = user.api.account_lookup(user.username)
    assert str(by_acct.id) == str(me.id)
    assert by_acct.display_name == name

    # Public profiles are readable without a token.
    anon = make_api(new_session())
    assert anon.account(me.id).display_name == name
    assert anon.account_lookup(user.username).display_name == name


def test_revoked_token_stops_working(base_url, user, make_api):
    api = make_api(user.app.session, client_id=user.app.client_id, client_secret=user.app.client_secret)
    token = api.log_in(user.username, user.password, allow_http=True)
    assert api.account_verify_credentials().username == user.username

    api.revoke_access_token(allow_http=True)
    assert api.access_token is None

    url = f"{base_url}/api/v1/accounts/verify_credentials"
    s = user.app.session
    resp = poll_status(lambda: s.get(url, headers=bearer(token), timeout=HTTP_TIMEOUT), 401, within=5.0)
    assert_error(resp, 401)

    # Other tokens of the same account are unaffected.
    other = s.get(url, headers=bearer(user.token), timeout=HTTP_TIMEOUT)
    assert other.status_code == 200, other.text


# --- validation -------------------------------------------------------------------------------


def test_duplicate_username_is_refused_case_insensitively(register, create_app, app_token, register_raw,
                                                          new_session, make_api):
    stem = secrets.token_hex(5)
    first = register(f"Dup_{stem}")
    assert first.api.account_verify_credentials().username == f"Dup_{stem}"

    s = new_session()
    app = create_app(s)
    resp = register_raw(s, app_token(app), f"dup_{stem}", email=f"other_{stem}@example.com")
    assert_error(resp, 422)

    s2 = new_session()
    app2 = create_app(s2)
    api = make_api(s2, client_id=app2.client_id, client_secret=app2.client_secret)
    with pytest.raises(MastodonIllegalArgumentError):
        api.create_account(f"DUP_{stem}", password(), f"third_{stem}@example.com", agreement=True)


@pytest.mark.parametrize(
    "username",
    ["bad name!", "x" * 31, "", "dash-end-"],
    ids=["space-and-bang", "too-long", "empty", "bad-last-char"],
)
def test_invalid_username_is_refused(username, session, create_app, app_token, register_raw):
    app = create_app(session)
    resp = register_raw(session, app_token(app), username, email=f"{unique()}@example.com")
    assert_error(resp, 422)


def test_longest_valid_username_is_accepted(session, create_app, app_token, register_raw):
    app = create_app(session)
    username = ("u" + secrets.token_hex(15))[:30]
    resp = register_raw(session, app_token(app), username)
    assert resp.status_code == 200, resp.text
    assert json_of(resp)["access_token"]


@pytest.mark.parametrize("bad_email", ["not-an-email", "two@@example.com", "spaces in@example.com"])
def test_bad_email_is_refused(bad_email, session, create_app, app_token, register_raw):
    app = create_app(session)
    resp = register_raw(session, app_token(app), unique(), email=bad_email)
    assert_error(resp, 422)


def test_registration_needs_an_app_token(base_url, session):
    resp = session.post(
        f"{base_url}/api/v1/accounts",
        data={"username": unique(), "email": "a@example.com", "password": password(), "agreement": "1"},
        timeout=HTTP_TIMEOUT,
    )
    assert_error(resp, 401)


# --- rate limiting ----------------------------------------------------------------------------


def test_signup_burst_from_one_address_is_rate_limited(base_url, session, create_app, app_token, register,
                                                       make_api):
    app = create_app(session)
    token = app_token(app)
    url = f"{base_url}/api/v1/accounts"
    ip = session.headers["X-Forwarded-For"]
    local = threading.local()

    def attempt(i: int):
        # One Session per thread (requests.Session is not thread-safe), all from the same address.
        if not hasattr(local, "session"):
            local.session = make_session(ip)
        name = unique("burst")
        resp = local.session.post(
            url,
            data={
                "username": name,
                "email": f"{name}@example.com",
                "password": password(),
                "agreement": "1",
                "locale": "en",
            },
            headers=bearer(token),
            timeout=HTTP_TIMEOUT,
        )
        return resp.status_code, dict(resp.headers), resp.text

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, range(200)))

    codes = [code for code, _, _ in results]
    successes = codes.count(200)
    limited = [(h, text) for code, h, text in results if code == 429]
    others = sorted({c for c in codes if c not in (200, 429)})
    assert not others, f"unexpected statuses in the burst: {others}"
    assert successes <= 5, f"{successes} signups from one address got through (limit is 5 per 30 min)"
    assert limited, "200 rapid signups from one address never met HTTP 429"

    headers, text = limited[-1]
    h = {k.lower(): v for k, v in headers.items()}
    assert "retry-after" in h, f"429 without Retry-After: {headers}"
    retry_after = h["retry-after"].strip()
    if retry_after.isdigit():
        assert 0 < int(retry_after) <= 30 * 60 + 60, retry_after
    else:
        assert email.utils.parsedate_to_datetime(retry_after), retry_after
    if "x-ratelimit-reset" in h:
        # Mastodon.py parses this with dateutil (ISO 8601 like Mastodon) on every response.
        dateutil.parser.parse(h["x-ratelimit-reset"])
    if "x-ratelimit-remaining" in h:
        assert int(h["x-ratelimit-remaining"]) == 0
    if "x-ratelimit-limit" in h:
        assert int(h["x-ratelimit-limit"]) >= 1
    assert "json" in h.get("content-type", ""), h
    assert json.loads(text).get("error"), text

    # Mastodon.py sees the same limit as MastodonRatelimitError.
    api = make_api(session, client_id=app.client_id, client_secret=app.client_secret)
    with pytest.raises(MastodonRatelimitError):
        api.create_account(unique("burst"), password(), f"{unique()}@example.com", agreement=True)

    # The limit is per client address: another address still signs up.
    other = register()
    assert other.api.account_verify_credentials().username == other.username


# --- instance discovery -----------------------------------------------------------------------


def test_instance_v1_and_v2(base_url, session, make_api):
    api = make_api(session, version_check_mode="created")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "version >= 4.3.0 but no API version found"
        version = api.retrieve_mastodon_version(fail_hard=True)
    assert parse_version_string(version) >= (4, 3, 0), version
    assert api.verify_minimum_version("4.3.0", cached=True)

    v1 = api.instance_v1()
    assert v1.uri and v1.title and v1.version
    assert isinstance(v1.registrations, bool)

    v2 = api.instance_v2()
    assert v2.domain and v2.title and v2.version
    assert isinstance(v2.configuration, dict)
    assert isinstance(v2.registrations, dict) and isinstance(v2.registrations["enabled"], bool)
    assert int(v2.api_versions["mastodon"]) >= 1

    for path in ("/api/v1/instance", "/api/v2/instance"):
        raw = session.get(base_url + path, timeout=HTTP_TIMEOUT)
        assert raw.status_code == 200, f"{path}: {raw.status_code}"
        json_of(raw)


def test_nodeinfo_discovery(base_url, session, make_api):
    raw = session.get(f"{base_url}/.well-known/nodeinfo", timeout=HTTP_TIMEOUT)
    assert raw.status_code == 200, raw.text
    links = json_of(raw)["links"]
    assert any(link.get("rel") == NODEINFO_20 and link.get("href", "").startswith("http") for link in links), links

    info = make_api(session).instance_nodeinfo()
    assert str(info.version) == "2.0"
    assert info.software["name"] and info.software["version"]
    assert isinstance(info.protocols, list)
    assert isinstance(info.openRegistrations, bool)
    assert "users" in info.usage


def test_oauth_authorization_server_metadata(base_url, session, make_api):
    raw = session.get(f"{base_url}/.well-known/oauth-authorization-server", timeout=HTTP_TIMEOUT)
    assert raw.status_code == 200, raw.text
    meta = json_of(raw)
    for key in ("issuer", "token_endpoint", "authorization_endpoint", "scopes_supported"):
        assert meta.get(key), f"{key} missing from {meta}"
    assert meta["token_endpoint"].rstrip("/") == f"{base_url}/oauth/token"
    if "revocation_endpoint" in meta:
        assert meta["revocation_endpoint"].rstrip("/") == f"{base_url}/oauth/revoke"
    for scope in ("read", "write", "follow", "push"):
        assert scope in meta["scopes_supported"], meta["scopes_supported"]
    grants = meta.get("grant_types_supported", [])
    for grant in ("password", "client_credentials", "refresh_token"):
        assert grant in grants, f"{grant} not in grant_types_supported {grants}"

    info = make_api(session).oauth_authorization_server_info()
    assert info["token_endpoint"] == meta["token_endpoint"]


def test_openapi_and_health(base_url, session):
    spec = session.get(f"{base_url}/api/openapi.json", timeout=HTTP_TIMEOUT)
    assert spec.status_code == 200
    doc = json_of(spec)
    assert str(doc.get("openapi", "")).startswith("3."), doc.get("openapi")
    assert "/api/v1/accounts" in doc.get("paths", {}), sorted(doc.get("paths", {}))[:20]
    assert session.get(f"{base_url}/healthz", timeout=HTTP_TIMEOUT).status_code == 200
    assert session.get(f"{base_url}/readyz", timeout=HTTP_TIMEOUT).status_code == 200


# --- error shapes -----------------------------------------------------------------------------


def test_errors_are_json(base_url, session, create_app, app_token, make_api):
    url = f"{base_url}/api/v1/accounts/verify_credentials"
    assert_error(session.get(url, timeout=HTTP_TIMEOUT), 401)
    assert_error(session.get(url, headers=bearer("not-a-real-token"), timeout=HTTP_TIMEOUT), 401)
    with pytest.raises(MastodonUnauthorizedError):
        make_api(session, access_token="not-a-real-token").account_verify_credentials()

    app = create_app(session)
    token = app_token(app)
    for body in ('{"username": "x", ', "[1, 2", "\x00\x01garbage"):
        resp = session.post(
            f"{base_url}/api/v1/accounts",
            data=body.encode(),
            headers={**bearer(token), "Content-Type": "application/json"},
            timeout=HTTP_TIMEOUT,
        )
        assert 400 <= resp.status_code < 500, f"malformed JSON got {resp.status_code}: {resp.text[:200]!r}"
        assert_error(resp, resp.status_code)

    missing = session.get(f"{base_url}/api/v1/accounts/lookup", params={"acct": unique("ghost")},
                          timeout=HTTP_TIMEOUT)
    assert_error(missing, 404)
    with pytest.raises(MastodonNotFoundError):
        make_api(session).account_lookup(unique("ghost"))


# --- refresh tokens ---------------------------------------------------------------------------


def test_refresh_token_rotation_and_reuse_revokes_the_session(base_url, user):
    s = user.app.session
    creds = {"client_id": user.app.client_id, "client_secret": user.app.client_secret}
    token_url = f"{base_url}/oauth/token"
    me_url = f"{base_url}/api/v1/accounts/verify_credentials"

    first = s.post(token_url, data={**creds, "grant_type": "password", "username": user.username,
                                    "password": user.password, "scope": DEFAULT_SCOPES}, timeout=HTTP_TIMEOUT)
    assert first.status_code == 200, first.text
    first = json_of(first)
    assert first["access_token"] and first.get("refresh_token"), first
    assert str(first.get("token_type", "")).lower() == "bearer"
    if "expires_in" in first:
        assert int(first["expires_in"]) > 0

    second = s.post(token_url, data={**creds, "grant_type": "refresh_token",
                                     "refresh_token": first["refresh_token"]}, timeout=HTTP_TIMEOUT)
    assert second.status_code == 200, second.text
    second = json_of(second)
    assert second["access_token"] and second.get("refresh_token"), second
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert s.get(me_url, headers=bearer(second["access_token"]), timeout=HTTP_TIMEOUT).status_code == 200

    # Replaying the rotated-out refresh token is treated as theft: it fails and the whole session dies.
    replay = s.post(token_url, data={**creds, "grant_type": "refresh_token",
                                     "refresh_token": first["refresh_token"]}, timeout=HTTP_TIMEOUT)
    body = assert_error(replay, 400, "invalid_grant")
    assert "access_token" not in body

    resp = poll_status(lambda: s.get(me_url, headers=bearer(second["access_token"]), timeout=HTTP_TIMEOUT),
                       401, within=5.0)
    assert_error(resp, 401)
    again = s.post(token_url, data={**creds, "grant_type": "refresh_token",
                                    "refresh_token": second["refresh_token"]}, timeout=HTTP_TIMEOUT)
    assert_error(again, 400, "invalid_grant")

    # The account itself is fine: a fresh login works.
    fresh = s.post(token_url, data={**creds, "grant_type": "password", "username": user.username,
                                    "password": user.password, "scope": DEFAULT_SCOPES}, timeout=HTTP_TIMEOUT)
    assert fresh.status_code == 200, fresh.text
