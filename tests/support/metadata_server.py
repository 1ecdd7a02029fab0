"""A loopback stand-in for the three instance metadata services (AWS IMDSv2, GCP's metadata
server, Azure's Scheduled Events), shared by the notice tests (tests/unit/test_notices.py) and
the worker tests of every cloud.

:class:`MetadataServer` (``http.server`` in a thread) serves AWS IMDSv2 (token, Spot
``instance-action``, Auto Scaling ``target-lifecycle-state``, ``instance-id`` and instance
tags under ``tags/instance/``), GCP's ``instance/preempted``
(with hanging GETs) and Azure's Scheduled Events (with StartRequests), and switches to "a
notice is out" when a test says so.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tools.servers import free_port

WAIT = 30.0
"""The longest any event wait may take before the test fails (never reached when it works)."""
NOW = dt.datetime(2030, 5, 1, 12, 0, 0, tzinfo=dt.UTC)


def fixed_clock() -> dt.datetime:
    return NOW


class MetadataServer:
    """A loopback stand-in for the three instance metadata services.

    ``notice(kind)`` puts a notice out (``spot``, ``autoscaling``, ``gcp``, ``azure``);
    ``served_quiet`` is set once ``quiet_before_event`` answers without a notice were given,
    so a test can switch mid-run; ``started`` holds the Azure events approved with
    StartRequests; ``expire_token()`` makes the next IMDS call with the old token a 401.
    ``instance_id`` is IMDS's ``instance-id``; ``instance_tags`` are served under
    ``tags/instance/<key>`` (none: a 404, as when instance metadata tags are off).
    """

    def __init__(
        self, *, spot_time: dt.datetime | None = None, not_before: dt.datetime | None = None
    ) -> None:
        self.spot_time = spot_time or NOW + dt.timedelta(minutes=2)
        self.not_before = not_before or NOW + dt.timedelta(seconds=30)
        self.kinds: set[str] = set()
        self.azure_event_type = "Preempt"
        self.azure_resources: list[str] = []
        self.vm_name = "this-vm"
        self.lifecycle_state = "InService"
        self.instance_id = "i-0123456789abcdef0"
        self.instance_tags: dict[str, str] = {}
        self.tokens_issued = 0
        self.valid_token = ""
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.started: list[dict[str, Any]] = []
        self.start_requests = threading.Event()
        self.quiet_answers = 0
        self.quiet_before_event = 2
        self.served_quiet = threading.Event()
        self.served_notice = threading.Event()
        self._changed = threading.Condition()
        self._etag = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> MetadataServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        with self._changed:
            self._etag += 1  # lets hanging GETs go
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def notice(self, kind: str) -> None:
        """Put a notice out (from now on every poll of that format sees it)."""
        with self._changed:
            self.kinds.add(kind)
            if kind == "autoscaling":
                self.lifecycle_state = "Terminated"
            self._etag += 1
            self._changed.notify_all()

    def expire_token(self) -> None:
        self.valid_token = "expired-" + self.valid_token

    def _quiet(self) -> None:
        self.quiet_answers += 1
        if self.quiet_answers >= self.quiet_before_event:
            self.served_quiet.set()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _send(
                self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                server.requests.append(("PUT", self.path, _lower(self.headers)))
                if self.path != "/latest/api/token":
                    return self._send(404)
                if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self._send(400)
                server.tokens_issued += 1
                server.valid_token = f"token-{server.tokens_issued}"
                return self._send(200, server.valid_token.encode())

            def do_POST(self) -> None:
                server.requests.append(("POST", self.path, _lower(self.headers)))
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.startswith("/metadata/scheduledevents"):
                    return self._send(404)
                if self.headers.get("Metadata") != "true":
                    return self._send(400)
                server.started.append(body)
                server.start_requests.set()
                return self._send(200)

            def do_GET(self) -> None:  # noqa: PLR0911, PLR0912 - one answer per metadata path
                server.requests.append(("GET", self.path, _lower(self.headers)))
                path, _, query = self.path.partition("?")
                params = urllib.parse.parse_qs(query)
                if path.startswith("/latest/"):
                    if self.headers.get("X-aws-ec2-metadata-token") != server.valid_token:
                        return self._send(401)
                    if path == "/latest/meta-data/spot/instance-action":
                        if "spot" not in server.kinds:
                            server._quiet()
                            return self._send(404)
                        server.served_notice.set()
                        document = {
                            "action": "terminate",
                            "time": server.spot_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        }
                        return self._send(200, json.dumps(document).encode())
                    if path == "/latest/meta-data/autoscaling/target-lifecycle-state":
                        if server.lifecycle_state == "Terminated":
                            server.served_notice.set()
                        return self._send(200, server.lifecycle_state.encode())
                    if path == "/latest/meta-data/instance-id":
                        return self._send(200, server.instance_id.encode())
                    tag = urllib.parse.unquote(
                        path.removeprefix("/latest/meta-data/tags/instance/")
                    )
                    if tag != path and tag in server.instance_tags:
                        return self._send(200, server.instance_tags[tag].encode())
                    return self._send(404)
                if path == "/computeMetadata/v1/instance/preempted":
                    if self.headers.get("Metadata-Flavor") != "Google":
                        return self._send(403)
                    with server._changed:
                        last = params.get("last_etag", [""])[0]
                        if "gcp" not in server.kinds:
                            server._quiet()
                        if params.get("wait_for_change") == ["true"] and last == str(server._etag):
                            server._changed.wait_for(
                                lambda: str(server._etag) != last, timeout=WAIT
                            )
                        value = b"TRUE" if "gcp" in server.kinds else b"FALSE"
                        etag = str(server._etag)
                    if value == b"TRUE":
                        server.served_notice.set()
                    return self._send(200, value, {"ETag": etag})
                if path == "/metadata/instance/compute/name":
                    return self._send(200, server.vm_name.encode())
                if path == "/metadata/scheduledevents":
                    if self.headers.get("Metadata") != "true":
                        return self._send(400)
                    if params.get("api-version") != ["2020-07-01"]:
                        return self._send(400)
                    events = []
                    if "azure" in server.kinds:
                        server.served_notice.set()
                        events.append(
                            {
                                "EventId": "602d9444-d2cd-49c7-8624-8643e7171297",
                                "EventType": server.azure_event_type,
                                "ResourceType": "VirtualMachine",
                                "Resources": server.azure_resources,
                                "EventStatus": "Scheduled",
                                "NotBefore": email.utils.format_datetime(
                                    server.not_before, usegmt=True
                                ),
                                "Description": "",
                                "EventSource": "Platform",
                                "DurationInSeconds": -1,
                            }
                        )
                    else:
                        server._quiet()
                    scheduled = {"DocumentIncarnation": len(events), "Events": events}
                    return self._send(200, json.dumps(scheduled).encode())
                return self._send(404)

        return Handler


def _lower(headers: Any) -> dict[str, str]:
    """Header names in lower case (HTTP's are case-insensitive; urllib recapitalizes them)."""
    return {str(name).lower(): str(value) for name, value in headers.items()}
