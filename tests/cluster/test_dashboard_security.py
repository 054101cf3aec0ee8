"""The dashboard exposed: TLS handshakes that never block the accepting thread, IPv6 loopback,
the token traded for an HttpOnly cookie, and no token off loopback without TLS."""

import json
import socket
import ssl
import time
import urllib.error
import urllib.request

import pytest

from cluster.dashboard import server as board
from cluster.dashboard import transport
from tests.cluster.certs import self_signed
from tests.cluster.test_dashboard import study_dir  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for localhost and 127.0.0.1: (cert_file, key_file)."""
    return self_signed(tmp_path_factory.mktemp("tls"))


def _request(url, *, method="GET", headers=None, context=None, timeout=10.0):
    """(status, headers, JSON body) of one request."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout) as reply:
            return reply.status, reply.headers, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


def test_an_idle_connection_does_not_block_a_tls_client(study_dir, cert, monkeypatch):  # noqa: F811
    monkeypatch.setattr(transport, "HANDSHAKE_S", 1.0)
    server, port = board.serve([study_dir], tls=cert)
    idle = socket.create_connection(("127.0.0.1", port))  # connects, then says nothing
    try:
        time.sleep(0.2)  # the server has accepted it
        context = ssl.create_default_context(cafile=cert[0])
        status, _, body = _request(f"https://localhost:{port}/api/studies", context=context)
        assert status == 200 and body["studies"][0]["trials"] == 5
        idle.settimeout(5)
        assert idle.recv(1) == b""  # dropped once the handshake timeout passed
    finally:
        idle.close()
        server.shutdown()


def test_the_dashboard_serves_ipv6_loopback(study_dir):  # noqa: F811
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    server, port = board.serve([study_dir], host="::1")
    try:
        status, _, body = _request(f"http://[::1]:{port}/api/studies")
        assert status == 200 and body["studies"][0]["trials"] == 5
    finally:
        server.shutdown()


def _cookie_of(headers) -> tuple[str, set[str]]:
    """The `name=value` of a Set-Cookie header and its attributes."""
    first, *attributes = (part.strip() for part in headers["Set-Cookie"].split(";"))
    return first, set(attributes)


def test_the_token_is_traded_for_an_httponly_cookie(study_dir):  # noqa: F811
    server, port = board.serve([study_dir], token="s3cret")
    base = f"http://127.0.0.1:{port}/api"
    try:
        assert _request(f"{base}/session", method="POST")[0] == 401
        wrong = {"Authorization": "Bearer nope"}
        assert _request(f"{base}/session", method="POST", headers=wrong)[0] == 401
        bearer = {"Authorization": "Bearer s3cret"}
        status, headers, _ = _request(f"{base}/session", method="POST", headers=bearer)
        cookie, attributes = _cookie_of(headers)
        assert status == 200 and "s3cret" not in cookie
        assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= attributes
        assert "Secure" not in attributes  # plain HTTP on loopback: a Secure cookie is not sent
        assert _request(f"{base}/studies", headers={"Cookie": cookie})[0] == 200
        assert _request(f"{base}/studies", headers={"Cookie": cookie + "0"})[0] == 401
        assert _request(f"{base}/studies", headers=bearer)[0] == 200  # scripts keep the header
        assert _request(f"{base}/trials", method="POST", headers=bearer)[0] == 404
    finally:
        server.shutdown()


def test_the_cookie_is_secure_under_tls(study_dir, cert):  # noqa: F811
    server, port = board.serve([study_dir], token="s3cret", tls=cert)
    try:
        context = ssl.create_default_context(cafile=cert[0])
        url = f"https://localhost:{port}/api/session"
        bearer = {"Authorization": "Bearer s3cret"}
        _, headers, _ = _request(url, method="POST", headers=bearer, context=context)
        assert "Secure" in _cookie_of(headers)[1]
    finally:
        server.shutdown()


def test_the_page_keeps_no_token_in_its_address_or_requests():
    from importlib import resources

    script = (resources.files("cluster.dashboard") / "static" / "app.js").read_text()
    exchange = script.index('fetch("/api/session"')
    assert script.count("Authorization") == 1 and exchange < script.index("history.replaceState")


def test_a_token_off_loopback_needs_tls(study_dir, cert):  # noqa: F811
    with pytest.raises(ValueError, match="needs TLS"):
        board.serve([study_dir], host="0.0.0.0", token="t")
    with pytest.raises(ValueError, match="needs a bearer token"):
        board.serve([study_dir], host="0.0.0.0", tls=cert)
