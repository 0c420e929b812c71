"""The connection layer: error mapping, retries, Retry-After, TLS refusal, the failover answer handed back."""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from ftagent.connection import Connection, parse_retry_after
from ftagent.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    FailoverRequired,
    Forbidden,
    FtagentError,
    Gone,
    NotFound,
    RateLimited,
    RemoteError,
    ServerError,
    ServiceUnavailable,
    TLSError,
    Unauthorized,
)
from ftagent.requests_transport import _host_bypasses_proxy
from tests.ftagent.stubserver import Stub, free_port, start_stub
from tests.kit.ca import CertAuthority

BASE = "https://server.test:8443/candlepin"


def conn(**kw: Any) -> Connection:
    kw.setdefault("retries", 0)
    return Connection(BASE, **kw)


@responses.activate
def test_json_body_decoded_and_empty_body_is_none() -> None:
    responses.get(f"{BASE}/status", json={"result": True})
    responses.put(f"{BASE}/consumers/abc", status=204)
    with conn() as c:
        assert c.get("/status") == {"result": True}
        assert c.put("consumers/abc", json={"facts": {}}) is None
    assert responses.calls[1].request.body == b'{"facts": {}}'
    assert responses.calls[0].request.headers["User-Agent"].startswith("ftagent/")


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest),
        (422, BadRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (500, ServerError),
        (502, ServerError),
        (418, RemoteError),
    ],
)
@responses.activate
def test_error_statuses_map_to_named_errors_with_display_message(status: int, cls: type[RemoteError]) -> None:
    responses.get(f"{BASE}/consumers/x", status=status, json={"displayMessage": f"message {status}", "k": 1})
    with pytest.raises(cls) as info:
        conn().get("consumers/x")
    err = info.value
    assert type(err) is cls
    assert err.status == status
    assert err.display_message == f"message {status}"
    assert f"message {status}" in str(err)
    assert err.body == {"displayMessage": f"message {status}", "k": 1}
    assert isinstance(err, FtagentError)


@responses.activate
def test_gone_carries_deleted_id() -> None:
    responses.get(f"{BASE}/consumers/u1", status=410, json={"displayMessage": "Consumer u1 has been deleted", "deletedId": "u1"})
    with pytest.raises(Gone) as info:
        conn().get("consumers/u1")
    assert info.value.deleted_id == "u1"
    assert "has been deleted" in str(info.value)


@responses.activate
def test_error_without_json_body_has_a_default_message() -> None:
    responses.get(f"{BASE}/x", status=403, body="<html>nope</html>")
    with pytest.raises(Forbidden, match="access denied"):
        conn().get("x")


@responses.activate
def test_rate_limited_post_is_not_retried_and_reports_retry_after() -> None:
    responses.post(f"{BASE}/consumers", status=429, headers={"Retry-After": "7"}, json={"displayMessage": "slow down"})
    with pytest.raises(RateLimited) as info:
        Connection(BASE, retries=3).post("consumers", json={})
    assert info.value.retry_after == 7.0
    assert len(responses.calls) == 1


@responses.activate
def test_service_unavailable_after_retries_exhausted() -> None:
    responses.get(f"{BASE}/status", status=503, json={"displayMessage": "maintenance"})
    with pytest.raises(ServiceUnavailable, match="maintenance"):
        Connection(BASE, retries=2, backoff=0).get("status")
    assert len(responses.calls) == 3


@responses.activate
def test_redirects_are_never_followed() -> None:
    responses.get(f"{BASE}/a", status=302, headers={"Location": f"{BASE}/b"})
    responses.get(f"{BASE}/b", json={})
    with pytest.raises(RemoteError, match="redirects are not followed"):
        conn().get("a")
    assert len(responses.calls) == 1


@responses.activate
def test_308_failover_is_handed_to_the_caller_and_nothing_more_is_sent() -> None:
    body = {"displayMessage": "failed over", "failover": {"from": "old", "to": "new", "consumer": {}}}
    responses.get(f"{BASE}/consumers/old", status=308, json=body, headers={"Location": "/candlepin/consumers/new"})
    with pytest.raises(FailoverRequired) as info:
        conn().get("consumers/old")
    assert info.value.failover["to"] == "new"
    assert (info.value.from_uuid, info.value.to_uuid, info.value.status) == ("old", "new", 308)
    assert "failed over" in str(info.value)
    assert len(responses.calls) == 1


@responses.activate
def test_308_without_failover_body_is_an_error_not_followed() -> None:
    responses.get(f"{BASE}/consumers/old", status=308, headers={"Location": "/candlepin/consumers/new"})
    with pytest.raises(RemoteError, match="redirects are not followed") as info:
        conn().get("consumers/old")
    assert not isinstance(info.value, FailoverRequired)


@responses.activate
def test_alias_sends_later_requests_naming_the_old_uuid_to_the_new_one() -> None:
    responses.put(f"{BASE}/consumers/new", status=204)
    responses.get(f"{BASE}/pools", json=[])
    c = conn()
    c.alias("old", "new")
    assert c.put("consumers/old", json={"facts": {"a": "b"}}) is None
    c.get("pools", params={"consumer": "old", "unused": None})
    assert [call.request.method + " " + call.request.path_url for call in responses.calls] == [
        "PUT /candlepin/consumers/new",
        "GET /candlepin/pools?consumer=new",
    ]
    assert responses.calls[0].request.body == b'{"facts": {"a": "b"}}'


def test_password_never_logged_or_shown(caplog: pytest.LogCaptureFixture, stub: Stub) -> None:
    caplog.set_level(logging.DEBUG)
    stub.script = [(401, {}, {"displayMessage": "Invalid credentials"})]
    c = Connection(stub.url, username="admin", password="s3cr3t-pw", retries=0)
    with pytest.raises(Unauthorized, match="Invalid credentials") as info:
        c.post("consumers", json={"name": "x"})
    assert "s3cr3t-pw" not in caplog.text
    assert "s3cr3t-pw" not in repr(c)
    assert "s3cr3t-pw" not in str(info.value)
    assert stub.seen[0].headers["Authorization"].startswith("Basic ")


# -- retries against a real loopback server ----------------------------------------------------


def test_503_retry_after_seconds_is_honoured(stub: Stub) -> None:
    stub.script = [(503, {"Retry-After": "1"}, {"displayMessage": "busy"}), (200, {}, {"ok": 1})]
    time.monotonic()
    assert Connection(stub.url, retries=3, backoff=0).get("status") == {"ok": 1}
    assert len(stub.seen) == 2
    assert stub.seen[1].at - stub.seen[0].at >= 0.95


def test_429_retry_after_http_date_is_honoured(stub: Stub) -> None:
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    stub.script = [(429, {"Retry-After": when}, {"displayMessage": "slow"}), (200, {}, [1])]
    assert Connection(stub.url, retries=3, backoff=0).get("pools") == [1]
    gap = stub.seen[1].at - stub.seen[0].at
    assert 0.9 <= gap <= 3.5


def test_retry_after_is_capped(stub: Stub) -> None:
    stub.script = [(503, {"Retry-After": "3600"}, None), (200, {}, {"ok": 1})]
    started = time.monotonic()
    assert Connection(stub.url, retries=1, backoff=0, max_retry_after=1).get("status") == {"ok": 1}
    assert time.monotonic() - started < 3


def test_put_retried_but_post_not_on_503(stub: Stub) -> None:
    stub.script = [(503, {"Retry-After": "0"}, None), (204, {}, None)]
    assert Connection(stub.url, retries=2, backoff=0).put("consumers/u", json={}) is None
    assert len(stub.seen) == 2
    stub.seen.clear()
    stub.script = [(503, {"Retry-After": "5"}, {"displayMessage": "busy"}), (200, {}, {})]
    with pytest.raises(ServiceUnavailable) as info:
        Connection(stub.url, retries=2, backoff=0).post("consumers", json={})
    assert info.value.retry_after == 5.0
    assert len(stub.seen) == 1


def test_keepalive_reuses_one_connection(stub: Stub) -> None:
    stub.default = (200, {}, [])
    with Connection(stub.url) as c:
        for _ in range(3):
            c.get("status")
        assert c.connections_opened == 1
        assert c.requests_sent == 3
    assert len({s.client_port for s in stub.seen}) == 1


def test_connection_refused_is_connection_failed() -> None:
    port = free_port()
    with pytest.raises(ConnectionFailed, match="connection refused"):
        Connection(f"http://127.0.0.1:{port}/candlepin", retries=1, backoff=0).get("status")


def test_post_retried_when_connection_never_established() -> None:
    """A refused connection never reached the server, so even POST is retried (with backoff)."""
    port = free_port()
    stub = Stub(default=(200, {}, {"uuid": "u"}))
    timer = threading.Timer(0.3, lambda: start_stub(stub, port=port))
    timer.start()
    try:
        c = Connection(f"http://127.0.0.1:{port}/candlepin", retries=4, backoff=0.25)
        assert c.post("consumers", json={"name": "n"}) == {"uuid": "u"}
        assert len(stub.seen) == 1
    finally:
        timer.join()
        if stub.server is not None:
            stub.server.shutdown()
            stub.server.server_close()


def test_timeout_is_connection_failed(stub: Stub) -> None:
    stub.script = [(0, {}, None)]
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="timed out"):
        Connection(stub.url, retries=0, timeout=0.3).post("consumers", json={})
    assert time.monotonic() - started < 3


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture
def tls_stub(tmp_path: Path) -> Any:
    ca = CertAuthority()
    s = start_stub(Stub(default=(200, {}, {"ok": True})), context=ca.server_context())
    ca_path = ca.write(tmp_path / "ca.pem")
    yield s, ca_path
    assert s.server is not None
    s.server.shutdown()
    s.server.server_close()


@pytest.mark.parametrize("light", [False, True], ids=["requests", "light"])
def test_tls_trusted_ca_file_and_dir_work(tls_stub: Any, tmp_path: Path, light: bool) -> None:
    """Both transports (the commands' and the heartbeat's) trust a CA file, and a plain directory of
    CA files as rhsm.conf's /etc/rhsm/ca/ is (no c_rehash links), and only the certificates in it."""
    from ftagent.light_transport import LightTransport

    s, ca_path = tls_stub

    def connect(ca: Path) -> Connection:
        transport = LightTransport(s.url, ca_cert=ca) if light else None
        return Connection(s.url, ca_cert=ca, retries=0, transport=transport)

    assert connect(ca_path).get("status") == {"ok": True}
    cadir = tmp_path / "cas"
    cadir.mkdir()
    CertAuthority().write(cadir / "unrelated.crt")
    (cadir / "README").write_text("not a certificate")
    with pytest.raises(TLSError, match="not trusted" if not light else "CERTIFICATE_VERIFY_FAILED"):
        connect(cadir).get("status")
    (cadir / "ours.pem").write_bytes(ca_path.read_bytes())
    assert connect(cadir).get("status") == {"ok": True}


def test_missing_or_empty_ca_is_config_error(tmp_path: Path) -> None:
    from ftagent.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        Connection(BASE, ca_cert=tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match="no CA certificates"):
        Connection(BASE, ca_cert=tmp_path)


def test_untrusted_server_certificate_refused_with_clear_message(tls_stub: Any, tmp_path: Path) -> None:
    s, _ = tls_stub
    other_ca = CertAuthority().write(tmp_path / "other-ca.pem")
    with pytest.raises(TLSError, match="server certificate not trusted") as info:
        Connection(s.url, ca_cert=other_ca, retries=2).get("status")
    assert isinstance(info.value, ConnectionFailed)
    assert s.seen == []


def test_hostname_mismatch_refused(tls_stub: Any, tmp_path: Path) -> None:
    _s, _ca_path = tls_stub
    ca = CertAuthority()
    bad = start_stub(Stub(), context=ca.server_context("elsewhere.example"))
    try:
        with pytest.raises(TLSError, match=r"not trusted.*(?i:hostname|IP address mismatch)"):
            Connection(bad.url, ca_cert=ca.write(tmp_path / "ca.pem")).get("status")
    finally:
        assert bad.server is not None
        bad.server.shutdown()
        bad.server.server_close()


def test_insecure_must_be_explicit(tls_stub: Any) -> None:
    s, _ = tls_stub
    with pytest.raises(TLSError):
        Connection(s.url, retries=0).get("status")  # system trust store does not know the test CA
    assert Connection(s.url, insecure=True).get("status") == {"ok": True}


# -- small helpers --------------------------------------------------------------------------------


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    now = time.time()
    assert 9 <= (parse_retry_after(email.utils.formatdate(now + 10, usegmt=True), now=now) or 0) <= 11
    assert parse_retry_after(email.utils.formatdate(now - 100, usegmt=True), now=now) == 0.0


def test_no_proxy_matching() -> None:
    assert _host_bypasses_proxy("127.0.0.1", "localhost,127.0.0.0/8")
    assert _host_bypasses_proxy("cp.example.com", ".example.com")
    assert _host_bypasses_proxy("example.com", "example.com:443")
    assert _host_bypasses_proxy("anything", "*")
    assert not _host_bypasses_proxy("example.org", "example.com,10.0.0.0/8")


def test_proxy_is_used_unless_bypassed(stub: Stub) -> None:
    # The stub plays the proxy: a plain-HTTP proxy receives absolute-form request targets.
    c = Connection("http://server.invalid/candlepin", proxy=stub.url.rsplit("/", 1)[0], retries=0)
    c.get("status")
    assert stub.seen[0].path == "http://server.invalid/candlepin/status"
    c2 = Connection(stub.url, proxy="http://127.0.0.1:9", no_proxy="127.0.0.1", retries=0)
    assert c2.get("status") == {"ok": True}


def test_invalid_url_is_config_error() -> None:
    from ftagent.errors import ConfigError

    with pytest.raises(ConfigError):
        Connection("ftp://x/y")
    with pytest.raises(ConfigError):
        Connection("not a url")
    assert requests  # imported for type checkers
