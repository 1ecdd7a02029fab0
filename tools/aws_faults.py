"""Faults injected at botocore's own transport seam (the ``before-send`` event).

A hook that returns a response stops botocore from sending the request: the client then
handles that response exactly as if the service had sent it (parsing, retries, errors).
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from typing import TYPE_CHECKING, Any

from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


class _Body:
    """The raw-stream shape AWSResponse reads a body from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def canned_response(
    request: AWSPreparedRequest, status: int, body: bytes, content_type: str
) -> AWSResponse:
    """A response botocore will parse as if the service had sent it."""
    headers = HTTPHeaders()
    headers["Content-Type"] = content_type
    headers["x-amzn-RequestId"] = "canned"
    headers["ETag"] = '"d41d8cd98f00b204e9800998ecf8427e"'
    return AWSResponse(request.url, status, headers, _Body(body))


class S3PutFaults:
    """Makes chosen PutObject calls fail with a real-looking S3 500 InternalError.

    ``decide(key, attempt)`` is asked before each attempt to write ``key`` (attempt counts from
    1 across the client's own retries and across later calls) and answers True to fail it.
    """

    def __init__(self, client: Any, decide: Callable[[str, int], bool]) -> None:
        self.decide = decide
        self.attempts: dict[str, int] = {}
        self.injected = 0
        self._lock = threading.Lock()
        client.meta.events.register("before-send.s3.PutObject", self._before_send)

    def _before_send(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        path = urllib.parse.urlsplit(request.url).path
        key = urllib.parse.unquote(path.lstrip("/").partition("/")[2])
        with self._lock:
            attempt = self.attempts[key] = self.attempts.get(key, 0) + 1
        if not self.decide(key, attempt):
            return None
        with self._lock:
            self.injected += 1
        body = b"<Error><Code>InternalError</Code><Message>injected fault</Message></Error>"
        return canned_response(request, 500, body, "application/xml")


class SqsBatchSendFaults:
    """Makes the first ``failing_calls`` SendMessageBatch calls report every entry as failed
    (not the sender's fault), without reaching the queue: the caller must re-send them."""

    def __init__(self, client: Any, failing_calls: int) -> None:
        self.remaining = failing_calls
        self.injected_entries = 0
        self._lock = threading.Lock()
        client.meta.events.register("before-send.sqs.SendMessageBatch", self._before_send)

    def _before_send(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        with self._lock:
            if self.remaining <= 0:
                return None
            self.remaining -= 1
        body = request.body if isinstance(request.body, (bytes, str)) else b"{}"
        entries = json.loads(body)["Entries"]
        failed = [
            {
                "Id": entry["Id"],
                "SenderFault": False,
                "Code": "InternalError",
                "Message": "injected",
            }
            for entry in entries
        ]
        with self._lock:
            self.injected_entries += len(failed)
        answer = json.dumps({"Successful": [], "Failed": failed}).encode()
        return canned_response(request, 200, answer, "application/x-amz-json-1.0")
