"""A fault-injecting HTTP/1.1 reverse proxy on loopback, placed between an SDK and its emulator.

Point the SDK at :attr:`FaultProxy.url` instead of the emulator (``STORAGE_EMULATOR_HOST`` for
google-cloud-storage, the ``BlobEndpoint`` of an Azure connection string, ...): every request
is forwarded as received (method, raw target, headers in their order and case, ``Host``
included, body), and the emulator's response comes back the same way, so the SDK's own
transport, retry and error handling run unchanged. Keep-alive works on both sides; bodies are
streamed (``Content-Length`` or chunked), never re-encoded beyond the chunk framing.

:class:`FaultRule` objects choose requests to fail: the first rule whose method, target pattern
and (optional) body pattern match a request owns it, counts it under the request's *key*, and
decides from the key's attempt number whether to answer with an error status (or drop the
connection) instead of forwarding it (``when="before"``), or after forwarding it
(``when="after"``: the write happened, the client is told it failed).

Signatures: the proxy rewrites nothing that AWS SigV4 or Azure SharedKey sign (the target is
sent byte for byte, ``Host`` is the client's, bodies are unchanged); only hop-by-hop headers
(``Connection``, ``Transfer-Encoding``, ``Expect``, ...) are dropped and re-created.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from types import TracebackType

Mode = Literal["always", "first_n_per_key", "probability"]
When = Literal["before", "after"]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
"""Headers that describe one connection, not the message: never passed through."""
PIECE = 64 * 1024
"""Bytes read and written at a time when streaming a body."""
MAX_MATCH_BODY = 16 * 1024 * 1024
"""Largest request body a ``body_regex`` is applied to (larger ones never match)."""
REPLAY_LIMIT = 1024 * 1024
"""Request bodies up to this size are kept while streaming, so that a request can be sent
again on a fresh upstream connection when a kept-alive one turns out to be closed."""
IDLE_RECONNECT_SECONDS = 1.0
"""An upstream connection idle for longer is replaced before use (servers close idle ones)."""


def _default_body(status: int) -> bytes:
    return b'{"error": {"code": %d, "message": "injected fault"}}' % status


@dataclass
class FaultRule:
    """Which requests fail, how, and how often; counts what it saw.

    ``method`` (``None``: any) and ``path_regex`` (searched in the raw request target, path and
    query) select requests; ``body_regex`` (bytes, optional) must also be found in the body.
    A request's *key* is the first capture group of ``body_regex`` when it has one, else of
    ``path_regex`` (percent-decoded), else the request's decoded path. Attempts are counted
    per key, from 1, over the proxy's whole life.

    ``mode``: ``always``; ``first_n_per_key`` (attempts 1..``n`` of each key fail);
    ``probability`` (each attempt fails with probability ``p``, decided by a hash of ``seed``,
    key and attempt: the same keys fail on every run, whatever the order of requests).
    ``status`` is the answer (``None``: close the connection without answering).
    """

    method: str | None = None
    path_regex: str = ""
    body_regex: bytes | None = None
    status: int | None = 503
    mode: Mode = "always"
    n: int = 1
    p: float = 0.0
    seed: int = 0
    when: When = "before"
    body: bytes | None = None
    """The error response's body (default: a small JSON error)."""
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    name: str = ""
    matched: int = field(default=0, init=False)
    """Requests this rule owned."""
    injected: int = field(default=0, init=False)
    """Faults it injected."""
    attempts: dict[str, int] = field(default_factory=dict, init=False)
    """Requests owned, per key."""
    faults: dict[str, int] = field(default_factory=dict, init=False)
    """Faults injected, per key."""

    def __post_init__(self) -> None:
        self._path = re.compile(self.path_regex)
        self._body = re.compile(self.body_regex, re.DOTALL) if self.body_regex else None

    def decides(self, key: str, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (from 1) of ``key`` fails (a pure function)."""
        if self.mode == "always":
            return True
        if self.mode == "first_n_per_key":
            return attempt <= self.n
        digest = hashlib.blake2b(f"{self.seed}\0{key}\0{attempt}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big") / 2**64 < self.p

    def response_body(self) -> bytes:
        """What a faulted request is answered with."""
        return self.body if self.body is not None else _default_body(self.status or 0)

    def wants_body(self, method: str, target: str) -> bool:
        """True when this rule needs the request body to decide whether it matches."""
        return self._body is not None and self._head_matches(method, target)

    def match(self, method: str, target: str, body: bytes | None) -> str | None:
        """The request's key when this rule matches it, else None."""
        if not self._head_matches(method, target):
            return None
        path_match = self._path.search(target)
        if path_match is None:
            return None
        if self._body is not None:
            found = self._body.search(body) if body is not None else None
            if found is None:
                return None
            if found.re.groups:
                return found.group(1).decode("utf-8", "replace")
        if self._path.groups and path_match.group(1) is not None:
            return urllib.parse.unquote(path_match.group(1))
        return urllib.parse.unquote(urllib.parse.urlsplit(target).path)

    def _head_matches(self, method: str, target: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self._path.search(target) is not None


@dataclass(frozen=True)
class ProxiedRequest:
    """One request as the proxy handled it."""

    method: str
    target: str
    key: str | None
    """The key under the rule that owned it (None: no rule matched)."""
    rule: str | None
    fault: bool
    status: int | None
    """The status the client got (None: the connection was dropped)."""


class _Body:
    """A request body read from the client: buffered, or streamed (and kept for a replay)."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self.chunked = "chunked" in handler.headers.get("Transfer-Encoding", "").lower()
        length = handler.headers.get("Content-Length")
        self.length = int(length) if length is not None and not self.chunked else None
        self._rfile = handler.rfile
        self._remaining = self.length or 0
        self._finished = not self.chunked and not self._remaining
        self.kept: list[bytes] = []
        """A prefix of the pieces read so far (all of them while ``replayable``)."""
        self._kept_bytes = 0
        self._cap = REPLAY_LIMIT
        self.replayable = True

    @property
    def present(self) -> bool:
        return self.chunked or self.length is not None

    def _next_piece(self) -> bytes | None:
        if self._finished:
            return None
        if not self.chunked:
            data = self._rfile.read(min(PIECE, self._remaining))
            if not data:
                raise ConnectionError("client closed the connection inside a request body")
            self._remaining -= len(data)
            self._finished = self._remaining == 0
            return data
        size_line = self._rfile.readline(1024)
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while self._rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers: dropped
            self._finished = True
            return None
        data = self._rfile.read(size)
        self._rfile.readline(3)
        return data

    def pieces(self) -> Iterator[bytes]:
        """The kept pieces, then the rest of the body from the client (kept while it fits)."""
        yield from self.kept
        while (piece := self._next_piece()) is not None:
            if self.replayable and self._kept_bytes + len(piece) <= self._cap:
                self.kept.append(piece)
                self._kept_bytes += len(piece)
            else:
                self.replayable = False
            yield piece

    def read_all(self, limit: int) -> bytes | None:
        """The whole body, buffered from now on; None (nothing read) when its declared
        length is over ``limit``. A chunked body is read whole, whatever its size."""
        if self.length is not None and self.length > limit:
            return None
        self._cap = max(self.length or 0, REPLAY_LIMIT) if not self.chunked else 2**62
        for _ in self.pieces():
            pass
        return b"".join(self.kept)

    def discard(self) -> None:
        """Read and drop whatever the client still has to send."""
        for _ in self.pieces():
            pass


def _no_delay(sock: socket.socket) -> None:
    """Send small writes at once: headers and body go out in separate writes, and Nagle's
    algorithm would hold the second one for the peer's delayed ACK (tens of ms)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _UpstreamConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _no_delay(self.sock)


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # an idle client connection is closed after this
    server: _ProxyServer
    _upstream: http.client.HTTPConnection | None = None
    _upstream_used_at = 0.0

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the proxy keeps its own record of requests."""

    def setup(self) -> None:
        super().setup()
        _no_delay(self.connection)
        self.server.proxy._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self._close_upstream()
        self.server.proxy._track(self.connection, add=False)

    def do_request(self) -> None:
        """Every method: match the rules, then fault or forward."""
        proxy = self.server.proxy
        body = _Body(self)
        buffered: bytes | None = None
        if any(rule.wants_body(self.command, self.path) for rule in proxy.rules):
            buffered = body.read_all(MAX_MATCH_BODY) if body.present else b""
        verdict = proxy._decide(self.command, self.path, buffered)
        if verdict.rule is not None and verdict.fault and verdict.rule.when == "before":
            body.discard()
            self._answer_fault(verdict)
            return
        try:
            response = self._send_upstream(body)
        except (OSError, http.client.HTTPException) as exc:
            self._close_upstream()
            proxy._note(verdict, self.command, self.path, 502)
            message = f"fault proxy: upstream failed: {type(exc).__name__}: {exc}".encode()
            self._reply(502, "Bad Gateway", (("Content-Type", "text/plain"),), message)
            self.close_connection = True
            return
        if verdict.rule is not None and verdict.fault:  # "after": the upstream saw it
            response.read()
            self._after_response(response)
            self._answer_fault(verdict)
            return
        proxy._note(verdict, self.command, self.path, response.status)
        self._relay(response)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_request

    def _upstream_connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """The upstream connection and whether it served a request before."""
        stale = time.monotonic() - self._upstream_used_at > IDLE_RECONNECT_SECONDS
        if self._upstream is not None and (self._upstream.sock is None or stale):
            self._close_upstream()
        if self._upstream is None:
            host, port = self.server.proxy.upstream
            self._upstream = _UpstreamConnection(host, port, timeout=60)
            return self._upstream, False
        return self._upstream, True

    def _close_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def _send_upstream(self, body: _Body) -> http.client.HTTPResponse:
        connection, reused = self._upstream_connection()
        try:
            return self._send_on(connection, body)
        except (OSError, http.client.HTTPException):
            if not (reused and body.replayable):
                raise
        self._close_upstream()  # a kept-alive connection the server had closed: once more
        connection, _ = self._upstream_connection()
        return self._send_on(connection, body)

    def _send_on(
        self, connection: http.client.HTTPConnection, body: _Body
    ) -> http.client.HTTPResponse:
        connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() not in HOP_BY_HOP:
                connection.putheader(name, value)
        if body.chunked:
            connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        for piece in body.pieces():
            if body.chunked:
                connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                connection.send(piece)
        if body.chunked:
            connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        self._upstream_used_at = time.monotonic()
        self.server.proxy._count_forwarded()
        return response

    def _after_response(self, response: http.client.HTTPResponse) -> None:
        if response.will_close:
            self._close_upstream()
        self._upstream_used_at = time.monotonic()

    def _relay(self, response: http.client.HTTPResponse) -> None:
        """Send the upstream response to the client, streaming its body."""
        no_body = self.command == "HEAD" or response.status in (204, 304)
        headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
        has_length = any(k.lower() == "content-length" for k, _ in headers)
        self.send_response_only(response.status, response.reason)
        for name, value in headers:
            self.send_header(name, value)
        rechunk = not no_body and not has_length and response.chunked
        if rechunk:
            self.send_header("Transfer-Encoding", "chunked")
        elif not no_body and not has_length:  # delimited by the upstream closing: do the same
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            if no_body:
                response.read()
            else:
                while piece := response.read(PIECE):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if rechunk else piece)
                if rechunk:
                    self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self._close_upstream()  # the client went away mid-body: the upstream one is unusable
            self.close_connection = True
            return
        self._after_response(response)

    def _answer_fault(self, verdict: _Verdict) -> None:
        rule = verdict.rule
        assert rule is not None
        self.server.proxy._note(verdict, self.command, self.path, rule.status)
        if rule.status is None:  # drop: the client sees the connection close, no answer
            self.close_connection = True
            return
        reason = http.client.responses.get(rule.status, "Injected Fault")
        self._reply(rule.status, reason, rule.headers, rule.response_body())

    def _reply(
        self, status: int, reason: str, headers: Sequence[tuple[str, str]], payload: bytes
    ) -> None:
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()


@dataclass(frozen=True)
class _Verdict:
    rule: FaultRule | None
    key: str | None
    fault: bool


class FaultProxy:
    """A running proxy to ``upstream`` (``http://host:port``) applying ``rules`` in order.

    Use as a context manager (or :meth:`start`/:meth:`stop`). Counters: :attr:`forwarded`
    (requests sent upstream), :attr:`injected` (faults, all rules), each rule's own counts, and
    :attr:`requests` (one :class:`ProxiedRequest` per request, in the order they ended).
    """

    def __init__(self, upstream: str, rules: Sequence[FaultRule] = ()) -> None:
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"upstream must be http://host:port, not {upstream!r}")
        self.upstream = (parts.hostname, parts.port)
        self.rules = list(rules)
        self.forwarded = 0
        self.requests: list[ProxiedRequest] = []
        self._lock = threading.Lock()
        self._clients: set[socket.socket] = set()
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The loopback port the proxy listens on."""
        assert self._server is not None, "the proxy is not running"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: give this to the SDK instead of the emulator."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def injected(self) -> int:
        """Faults injected by every rule."""
        with self._lock:
            return sum(rule.injected for rule in self.rules)

    def start(self) -> FaultProxy:
        """Listen on a free loopback port and serve in a background thread."""
        self._server = _ProxyServer(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fault-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every client connection."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def count(self, *, method: str | None = None, key: str | None = None) -> int:
        """Requests handled so far, optionally only those with this method and/or key."""
        with self._lock:
            return sum(
                1
                for request in self.requests
                if (method is None or request.method == method)
                and (key is None or request.key == key)
            )

    def _decide(self, method: str, target: str, body: bytes | None) -> _Verdict:
        for rule in self.rules:
            key = rule.match(method, target, body)
            if key is None:
                continue
            with self._lock:
                rule.matched += 1
                attempt = rule.attempts[key] = rule.attempts.get(key, 0) + 1
                fault = rule.decides(key, attempt)
                if fault:
                    rule.injected += 1
                    rule.faults[key] = rule.faults.get(key, 0) + 1
            return _Verdict(rule, key, fault)
        return _Verdict(None, None, False)

    def _note(self, verdict: _Verdict, method: str, target: str, status: int | None) -> None:
        rule = verdict.rule
        name = None
        if rule is not None:
            index = next(i for i, candidate in enumerate(self.rules) if candidate is rule)
            name = rule.name or f"rule-{index}"
        record = ProxiedRequest(method, target, verdict.key, name, verdict.fault, status)
        with self._lock:
            self.requests.append(record)

    def _count_forwarded(self) -> None:
        with self._lock:
            self.forwarded += 1

    def _track(self, client: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._clients.add(client)
            else:
                self._clients.discard(client)
