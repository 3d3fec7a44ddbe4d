"""Fixtures for the Agora end-to-end suite.

The suite drives a running gateway through the real Mastodon.py client library (plus plain
`requests` where a test needs status codes or headers). Point it at a gateway with

    AGORA_E2E_URL=http://127.0.0.1:PORT AGORA_E2E_SHAPE=dev python3 -m pytest -q crates/gateway/e2e

Without AGORA_E2E_URL every test is skipped. The gateway must trust X-Forwarded-For from
127.0.0.1: each test speaks from its own fake client address (documentation ranges
198.51.100.0/24 and 203.0.113.0/24) so per-address rate limits never leak between tests.
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest
import requests
from mastodon import Mastodon

E2E_URL = os.environ.get("AGORA_E2E_URL", "").strip().rstrip("/")
E2E_SHAPE = os.environ.get("AGORA_E2E_SHAPE", "unspecified")
SKIP_REASON = (
    "AGORA_E2E_URL is not set: the end-to-end suite needs a running gateway "
    "(scripts/test.sh starts one; or set AGORA_E2E_URL=http://HOST:PORT)"
)
HERE = Path(__file__).resolve().parent

# Every request gets an answer well within this; a hung gateway fails the test instead of the run.
HTTP_TIMEOUT = 30
DEFAULT_SCOPES = "read write follow push"


def pytest_report_header(config):
    return f"agora e2e: url={E2E_URL or '(unset: suite skipped)'} shape={E2E_SHAPE}"


def pytest_collection_modifyitems(config, items):
    if E2E_URL:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


# ---------------------------------------------------------------------------------------------
# Fake client addresses: one per session object, never reused within a run.


def _address_pool() -> list[str]:
    nets = ("198.51.100.0/24", "203.0.113.0/24")
    addrs = [str(a) for net in nets for a in ipaddress.ip_network(net).hosts()]
    random.SystemRandom().shuffle(addrs)
    return addrs


_POOL = _address_pool()
_POOL_LOCK = threading.Lock()


def fresh_ip() -> str:
    with _POOL_LOCK:
        if not _POOL:
            raise RuntimeError("the fake client address pool is exhausted")
        return _POOL.pop()


def make_session(ip: Optional[str] = None) -> requests.Session:
    """A requests.Session that presents itself as a distinct client address."""
    s = requests.Session()
    s.trust_env = False  # never route loopback traffic through an environment proxy
    s.headers["X-Forwarded-For"] = ip or fresh_ip()
    return s


def unique(prefix: str = "e2e") -> str:
    """A fresh, valid username (letters, digits, underscore; 15 characters)."""
    return f"{prefix}_{secrets.token_hex(5)}"


def password() -> str:
    return "pw-" + secrets.token_urlsafe(18)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def json_of(resp: requests.Response):
    """The JSON body of a response; fails the test (with the body) if it is not JSON."""
    ctype = resp.headers.get("Content-Type", "")
    assert "json" in ctype, f"{resp.request.method} {resp.url}: expected JSON, got {ctype!r}: {resp.text[:300]!r}"
    try:
        return resp.json()
    except ValueError as e:  # pragma: no cover - reported as a failure
        pytest.fail(f"{resp.request.method} {resp.url}: body is not JSON ({e}): {resp.text[:300]!r}")


def assert_error(resp: requests.Response, status, error: Optional[str] = None) -> dict:
    """The response has one of the given statuses and a Mastodon error body {"error": "..."}."""
    statuses = (status,) if isinstance(status, int) else tuple(status)
    assert resp.status_code in statuses, (
        f"{resp.request.method} {resp.url}: expected {statuses}, got {resp.status_code}: {resp.text[:300]!r}"
    )
    body = json_of(resp)
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    if error is not None:
        assert body["error"] == error, body
    return body


def poll_status(fetch: Callable[[], requests.Response], want: int, within: float = 5.0) -> requests.Response:
    """Calls fetch until it answers `want` or `within` seconds pass; returns the last response."""
    deadline = time.monotonic() + within
    while True:
        resp = fetch()
        if resp.status_code == want or time.monotonic() >= deadline:
            return resp
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# Fixtures


@dataclass
class App:
    name: str
    client_id: str
    client_secret: str
    session: requests.Session


@dataclass
class User:
    username: str
    email: str
    password: str
    token: str
    app: App
    api: Mastodon


@pytest.fixture(scope="session")
def base_url() -> str:
    if not E2E_URL:
        pytest.skip(SKIP_REASON)
    return E2E_URL


@pytest.fixture
def new_session():
    """Factory: each call returns a Session speaking from a new fake client address."""
    made: list[requests.Session] = []

    def factory(ip: Optional[str] = None) -> requests.Session:
        s = make_session(ip)
        made.append(s)
        return s

    yield factory
    for s in made:
        s.close()


@pytest.fixture
def session(new_session) -> requests.Session:
    return new_session()


@pytest.fixture
def make_api(base_url):
    """Factory for Mastodon.py clients against the gateway (no version check, rate limits raise)."""

    def factory(session: requests.Session, **kwargs) -> Mastodon:
        kwargs.setdefault("version_check_mode", "none")
        kwargs.setdefault("ratelimit_method", "throw")
        kwargs.setdefault("request_timeout", HTTP_TIMEOUT)
        return Mastodon(api_base_url=base_url, session=session, **kwargs)

    return factory


@pytest.fixture
def create_app(base_url):
    """Factory: registers an OAuth app through Mastodon.create_app on the given session."""

    def factory(session: requests.Session, name: Optional[str] = None) -> App:
        name = name or f"agora-e2e-{secrets.token_hex(4)}"
        client_id, client_secret = Mastodon.create_app(
            name, api_base_url=base_url, session=session, request_timeout=HTTP_TIMEOUT
        )
        return App(name, client_id, client_secret, session)

    return factory


@pytest.fixture
def app(create_app, session) -> App:
    return create_app(session)


@pytest.fixture
def app_token(base_url):
    """Factory: a client_credentials token for an app (what POST /api/v1/accounts needs)."""

    def factory(app: App, scope: str = DEFAULT_SCOPES) -> str:
        resp = app.session.post(
            f"{base_url}/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "scope": scope,
            },
            timeout=HTTP_TIMEOUT,
        )
        assert resp.status_code == 200, resp.text
        body = json_of(resp)
        assert body.get("access_token"), body
        return body["access_token"]

    return factory


@pytest.fixture
def register_raw(base_url):
    """Factory: POST /api/v1/accounts as Mastodon.py sends it, returning the raw response."""

    def factory(session: requests.Session, token: str, username: str, email: Optional[str] = None,
                pw: Optional[str] = None) -> requests.Response:
        return session.post(
            f"{base_url}/api/v1/accounts",
            data={
                "username": username,
                "email": email if email is not None else f"{username.lower() or 'x'}@example.com",
                "password": pw or password(),
                "agreement": "1",
                "locale": "en",
            },
            headers=bearer(token),
            timeout=HTTP_TIMEOUT,
        )

    return factory


@pytest.fixture
def register(create_app, make_api, new_session):
    """Factory: a new account made with Mastodon.create_account, from a fresh client address."""

    def factory(username: Optional[str] = None) -> User:
        s = new_session()
        a = create_app(s)
        api = make_api(s, client_id=a.client_id, client_secret=a.client_secret)
        username = username or unique()
        email = f"{username.lower()}@example.com"
        pw = password()
        token = api.create_account(username, pw, email, agreement=True)
        assert isinstance(token, str) and token
        return User(username, email, pw, token, a, api)

    return factory


@pytest.fixture
def user(register) -> User:
    return register()
