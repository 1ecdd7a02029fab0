"""The fault proxy (tools/fault_proxy.py) against a tiny local HTTP server.

Forwarding must be byte-exact in both directions (target, headers, bodies in every framing),
keep-alive must work on both sides, and rules must fire exactly as specified, with exact counts:
the reliability tests trust these counts as their "faults injected" figures.
"""

from __future__ import annotations

import hashlib
import http.client
import random
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import pytest

from tools.fault_proxy import FaultProxy, FaultRule
from tools.servers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator


def payload(size: int) -> bytes:
    """Deterministic binary bytes (every byte value occurs)."""
    return random.Random(size).randbytes(size)


@dataclass(frozen=True)
class Received:
    """One request as the upstream server saw it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    peer: tuple[str, int]


class _UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _UpstreamServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            data = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_any(self) -> None:
        body = self._read_body()
        peer = (str(self.client_address[0]), int(self.client_address[1]))
        self.server.received.append(
            Received(self.command, self.path, list(self.headers.items()), body, peer)
        )
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        data = payload(int(query.get("size", "0")))
        if url.path.startswith("/chunked"):
            self.send_response_only(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(data), 7000):
                piece = data[start : start + 7000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        if url.path.startswith("/close"):  # no length: the body ends when the connection does
            self.send_response_only(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True
            return
        self.send_response_only(int(query.get("status", "200")), query.get("reason", "OK"))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Set-Cookie", "a=1")
        self.send_header("Set-Cookie", "b=2")
        self.send_header("X-Body-Sha256", hashlib.sha256(body).hexdigest())
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        if "hangup" in query:  # close the kept-alive connection without saying so
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_any


class _UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True
    received: list[Received]


@pytest.fixture
def upstream() -> Iterator[_UpstreamServer]:
    """The tiny HTTP/1.1 server the proxy forwards to."""
    server = _UpstreamServer(("127.0.0.1", 0), _UpstreamHandler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def upstream_url(server: _UpstreamServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def connect(proxy: FaultProxy) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)


def call(
    connection: http.client.HTTPConnection,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    connection.request(method, target, body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, response.read()


def test_forwards_target_headers_and_bodies_byte_for_byte(upstream: _UpstreamServer) -> None:
    # GIVEN a proxy with no rules, and a PUT with an odd target, signed-looking headers and
    # 1 MiB of binary body
    body = payload(1024 * 1024)
    target = "/echo/a%2Fb/%C3%A9%20x?size=300000&status=201&reason=Made+It&q=%2F%3D&empty="
    headers = {
        "X-Custom": "Value  with  two  spaces",
        "Authorization": "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/s3/aws4_request",
        "x-amz-content-sha256": hashlib.sha256(body).hexdigest(),
        "Content-Type": "application/octet-stream",
    }
    with FaultProxy(upstream_url(upstream)) as proxy:
        connection = connect(proxy)
        # WHEN it goes through the proxy
        connection.request("PUT", target, body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        # THEN the upstream got exactly what was sent: method, raw target, body, headers in
        # order, the client's own Host (what a signature covers)
        (seen,) = upstream.received
        assert (seen.method, seen.target, seen.body) == ("PUT", target, body)
        assert seen.headers == [
            ("Host", f"127.0.0.1:{proxy.port}"),
            ("Accept-Encoding", "identity"),
            ("Content-Length", str(len(body))),
            *headers.items(),
        ]
        # AND the client got exactly what the upstream answered: status, reason, headers
        # (repeated ones too) and the body
        assert (response.status, response.reason) == (201, "Made It")
        assert response.headers.get_all("Set-Cookie") == ["a=1", "b=2"]
        assert response.headers["X-Body-Sha256"] == hashlib.sha256(body).hexdigest()
        assert answer == payload(300_000)
        assert (proxy.forwarded, proxy.injected) == (1, 0)
        assert [(r.method, r.status, r.fault, r.rule) for r in proxy.requests] == [
            ("PUT", 201, False, None)
        ]


def test_chunked_bodies_both_ways(upstream: _UpstreamServer) -> None:
    # GIVEN a client that sends its body chunked, and an upstream that answers chunked
    pieces = [payload(10), payload(70_000), b"", payload(3)]
    with FaultProxy(upstream_url(upstream)) as proxy:
        connection = connect(proxy)
        # WHEN both go through the proxy
        connection.request("POST", "/echo", body=iter(pieces), encode_chunked=True)
        response = connection.getresponse()
        response.read()
        status, streamed = call(connection, "GET", "/chunked?size=100000")
        # THEN the bytes arrive unchanged on each side, over the same client connection
        assert upstream.received[0].body == b"".join(pieces)
        assert ("Transfer-Encoding", "chunked") in upstream.received[0].headers
        assert (status, streamed) == (200, payload(100_000))
        assert proxy.forwarded == 2


def test_a_response_delimited_by_close_is_passed_on_and_closes(
    upstream: _UpstreamServer,
) -> None:
    # GIVEN an upstream response without a length (its end is the connection's end)
    with FaultProxy(upstream_url(upstream)) as proxy:
        connection = connect(proxy)
        # WHEN it is fetched through the proxy
        connection.request("GET", "/close?size=50000")
        response = connection.getresponse()
        # THEN the client gets every byte and is told the connection closes
        assert response.read() == payload(50_000)
        assert response.headers["Connection"] == "close"
        # AND the next request (on a new connection) works
        assert call(connect(proxy), "GET", "/echo?size=5") == (200, payload(5))


def test_keep_alive_on_both_sides(upstream: _UpstreamServer) -> None:
    # GIVEN one client connection
    with FaultProxy(upstream_url(upstream)) as proxy:
        connection = connect(proxy)
        # WHEN five requests are sent on it, one of them a HEAD
        results = [call(connection, "GET", f"/echo?size={n}") for n in range(4)]
        connection.request("HEAD", "/echo?size=1234")
        head = connection.getresponse()
        # THEN each got its own answer (a HEAD: the length, no body; framing intact after it)
        assert results == [(200, payload(n)) for n in range(4)]
        assert (head.headers["Content-Length"], head.read()) == ("1234", b"")
        assert call(connection, "GET", "/echo?size=9") == (200, payload(9))
        # AND the upstream saw all six on one connection
        assert len(upstream.received) == 6
        assert len({r.peer for r in upstream.received}) == 1
        assert proxy.forwarded == 6


def test_first_n_per_key_fails_each_keys_first_attempts(upstream: _UpstreamServer) -> None:
    # GIVEN a rule: the first 2 PUTs of each /store/<key> get 503
    rule = FaultRule(
        method="PUT", path_regex=r"^/store/([^?]+)", mode="first_n_per_key", n=2, name="flaky"
    )
    with FaultProxy(upstream_url(upstream), [rule]) as proxy:
        connection = connect(proxy)
        # WHEN keys a and b are each written 3 times (interleaved), and a is read once
        statuses = []
        for _ in range(3):
            for key in ("a", "b"):
                statuses.append(call(connection, "PUT", f"/store/{key}", b"x")[0])
        got = call(connection, "GET", "/store/a")
        # THEN each key failed twice and then went through; the GET is not the rule's
        assert statuses == [503, 503, 503, 503, 200, 200]
        assert got[0] == 200
        # AND the counts say so, and faulted requests never reached the upstream
        assert (rule.matched, rule.injected) == (6, 4)
        assert rule.attempts == {"a": 3, "b": 3}
        assert rule.faults == {"a": 2, "b": 2}
        assert (proxy.forwarded, proxy.injected) == (3, 4)
        assert [(r.method, r.target) for r in upstream.received] == [
            ("PUT", "/store/a"),
            ("PUT", "/store/b"),
            ("GET", "/store/a"),
        ]
        assert proxy.count(key="a") == 3
        assert proxy.count(method="GET") == 1


def test_a_fault_answer_carries_the_rules_body_and_headers(upstream: _UpstreamServer) -> None:
    # GIVEN an always-failing rule with a service-shaped error body
    rule = FaultRule(
        path_regex="^/x",
        status=503,
        body=b"<Error><Code>ServerBusy</Code></Error>",
        headers=(("Content-Type", "application/xml"), ("x-ms-error-code", "ServerBusy")),
    )
    with FaultProxy(upstream_url(upstream), [rule]) as proxy:
        connection = connect(proxy)
        # WHEN a request matches
        connection.request("PUT", "/x/1", body=b"data")
        response = connection.getresponse()
        # THEN that is the answer, with a length, and the connection stays usable
        assert response.status == 503
        assert response.read() == b"<Error><Code>ServerBusy</Code></Error>"
        assert response.headers["x-ms-error-code"] == "ServerBusy"
        assert call(connection, "GET", "/echo?size=3") == (200, payload(3))
        assert upstream.received[0].target == "/echo?size=3"


def test_always_with_a_method_filter(upstream: _UpstreamServer) -> None:
    # GIVEN every POST fails with 500
    rule = FaultRule(method="POST", status=500)
    with FaultProxy(upstream_url(upstream), [rule]) as proxy:
        connection = connect(proxy)
        # WHEN POSTs and GETs are sent
        posts = [call(connection, "POST", f"/echo/{i}", b"b")[0] for i in range(3)]
        gets = [call(connection, "GET", f"/echo/{i}")[0] for i in range(3)]
        # THEN only the POSTs failed
        assert posts == [500, 500, 500]
        assert gets == [200, 200, 200]
        assert (rule.matched, rule.injected, proxy.forwarded) == (3, 3, 3)


def test_probability_is_seeded_per_key_and_independent_of_order(
    upstream: _UpstreamServer,
) -> None:
    # GIVEN two proxies with the same 25% rule (seed 7)
    keys = [f"k{i}" for i in range(400)]
    failed: list[set[str]] = []
    for order in (keys, list(reversed(keys))):
        rule = FaultRule(path_regex=r"^/p/(\w+)", mode="probability", p=0.25, seed=7)
        with FaultProxy(upstream_url(upstream), [rule]) as proxy:
            connection = connect(proxy)
            # WHEN the keys are written once each, in opposite orders
            for key in order:
                call(connection, "PUT", f"/p/{key}", b"v")
            failed.append(set(rule.faults))
            assert rule.injected == len(rule.faults) == 400 - proxy.forwarded
    # THEN the same keys failed both times: the ones the rule's decision function names
    same = FaultRule(mode="probability", p=0.25, seed=7)
    expected = {key for key in keys if same.decides(key, 1)}
    assert failed[0] == failed[1] == expected
    assert 60 <= len(expected) <= 140  # binomial(400, 0.25): mean 100, sd 8.7
    # AND another seed picks other keys; p=0 and p=1 are never and always
    other = {key for key in keys if FaultRule(mode="probability", p=0.25, seed=8).decides(key, 1)}
    assert other != expected
    assert not any(FaultRule(mode="probability", p=0.0).decides(key, 1) for key in keys)
    assert all(FaultRule(mode="probability", p=1.0).decides(key, 1) for key in keys)


def test_a_body_pattern_selects_and_names_the_key(upstream: _UpstreamServer) -> None:
    # GIVEN uploads that name their object in the body (as GCS multipart uploads do)
    rule = FaultRule(
        method="POST",
        path_regex=r"^/upload/",
        body_regex=rb'"name": "([^"]+)"',
        mode="first_n_per_key",
        n=1,
    )

    def upload(name: str) -> bytes:
        return b'--b\r\n{"name": "%s"}\r\n--b\r\n' % name.encode() + payload(2000) + b"\r\n--b--"

    with FaultProxy(upstream_url(upstream), [rule]) as proxy:
        connection = connect(proxy)
        # WHEN x, y and x again are uploaded, and a body without a name
        statuses = [call(connection, "POST", "/upload/o", upload(n))[0] for n in ("x", "y", "x")]
        plain = call(connection, "POST", "/upload/o", b"no name here")[0]
        # THEN the first upload of each name failed; the nameless one is not the rule's
        assert (statuses, plain) == ([503, 503, 200], 200)
        assert rule.attempts == {"x": 2, "y": 1}
        # AND the bodies that went through are unchanged (matching buffered them, no more)
        assert [r.body for r in upstream.received] == [upload("x"), b"no name here"]


def test_a_dropped_connection_is_a_fault_without_an_answer(upstream: _UpstreamServer) -> None:
    # GIVEN a rule that drops the connection instead of answering
    rule = FaultRule(path_regex="^/drop", status=None)
    with FaultProxy(upstream_url(upstream), [rule]) as proxy:
        connection = connect(proxy)
        # WHEN a request matches / THEN the client sees the connection closed, no response
        connection.request("PUT", "/drop/1", body=b"data")
        with pytest.raises(http.client.RemoteDisconnected):
            connection.getresponse()
        # AND nothing reached the upstream; the fault is counted
        assert upstream.received == []
        assert (rule.injected, proxy.forwarded) == (1, 0)
        assert proxy.requests[0].status is None


def test_an_after_fault_reaches_the_upstream_but_the_client_sees_the_error(
    upstream: _UpstreamServer,
) -> None:
    # GIVEN a rule that fails a request after forwarding it (the write happened, the answer
    # was lost)
    rule = FaultRule(path_regex="^/echo", status=502, when="after", mode="first_n_per_key")
    with FaultProxy(upstream_url(upstream), [rule]) as proxy:
        connection = connect(proxy)
        # WHEN the same request is sent twice
        first = call(connection, "PUT", "/echo?size=10", b"v1")
        second = call(connection, "PUT", "/echo?size=10", b"v1")
        # THEN the upstream got both; the client saw 502, then the real answer
        assert [r.body for r in upstream.received] == [b"v1", b"v1"]
        assert first[0] == 502
        assert second == (200, payload(10))
        assert (proxy.forwarded, proxy.injected) == (2, 1)


def test_expect_100_continue_is_handled_by_the_proxy(upstream: _UpstreamServer) -> None:
    # GIVEN a client that asks for 100-continue (botocore does for large S3 uploads)
    body = payload(4096)
    with FaultProxy(upstream_url(upstream)) as proxy:
        connection = connect(proxy)
        # WHEN it sends its request
        status, _ = call(connection, "PUT", "/echo", body, {"Expect": "100-continue"})
        # THEN the body arrived whole, and the upstream was not asked to continue again
        assert status == 200
        (seen,) = upstream.received
        assert seen.body == body
        assert "Expect" not in dict(seen.headers)


def test_a_kept_alive_upstream_connection_closed_by_the_server_is_reopened(
    upstream: _UpstreamServer,
) -> None:
    # GIVEN an upstream that closes its side right after an answer, without announcing it
    with FaultProxy(upstream_url(upstream)) as proxy:
        connection = connect(proxy)
        # WHEN the client sends a second request on its (still open) connection
        first = call(connection, "PUT", "/echo?size=4&hangup=1", b"one")
        second = call(connection, "PUT", "/echo?size=5", b"two")
        # THEN the proxy sent it again on a new upstream connection; the client saw no error
        assert (first, second) == ((200, payload(4)), (200, payload(5)))
        assert [r.body for r in upstream.received] == [b"one", b"two"]
        assert len({r.peer for r in upstream.received}) == 2


def test_an_unreachable_upstream_is_a_502() -> None:
    # GIVEN a proxy to a port nothing listens on
    with FaultProxy(f"http://127.0.0.1:{free_port()}") as proxy:
        # WHEN a request is sent / THEN the proxy answers 502 and says why
        status, text = call(connect(proxy), "GET", "/x")
        assert status == 502
        assert b"upstream failed" in text
        assert proxy.forwarded == 0


def test_the_upstream_must_be_a_plain_http_address() -> None:
    with pytest.raises(ValueError, match="http://host:port"):
        FaultProxy("https://example.com")
