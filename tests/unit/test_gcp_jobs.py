"""The Google Cloud operator modules without a network: error translation (``job_errors``),
names (``jobs``), and the backend's (``job_backend``) answers to what its clients (small
stand-ins with the SDK's method shapes) return."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud.pubsub_v1.publisher import (  # type: ignore[import-untyped]
    exceptions as publisher_exceptions,
)

from core.cli import main
from core.errors import CloudUnavailableError, ConfigError
from core.ops.backend import DeadLetter, RecordInfo
from core.ops.target import Target
from gcp_function.job_backend import MAX_REQUEST_BYTES, GcpJobBackend
from gcp_function.job_errors import LOGIN, bucket_resource, topic_resource, translate_error
from gcp_function.jobs import full_name, open_backend

if TYPE_CHECKING:
    from pathlib import Path

# The SDK's exception classes are untyped: made through Any, as the SDK makes them.
exceptions: Any = api_exceptions
auth: Any = auth_exceptions
MessageTooLargeError: Any = publisher_exceptions.MessageTooLargeError

TOPIC = "projects/p/topics/adder-tasks"
DEAD = "projects/p/subscriptions/adder-dead"
TOPIC_RESOURCE = topic_resource(TOPIC, None)
BUCKET_RESOURCE = bucket_resource("b", "http://h:2")  # on a storage emulator
TOPIC_FIX = (
    "check --topic, --stack DIR (terraform output topic_id) or --config FILE (queue_name)"
    " (and the project)"
)
NO_CREDENTIALS = f"no usable credentials for Pub/Sub topic {TOPIC}: {LOGIN}"


# ----------------------------------------------------------------------------- translate_error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (auth.DefaultCredentialsError("File /x/key.json was not found."), NO_CREDENTIALS),
        (
            auth.RefreshError(
                "invalid_grant: token SECRET-abc expired", {"access_token": "SECRET"}
            ),
            NO_CREDENTIALS,
        ),
        (exceptions.Unauthenticated("bad token SECRET"), NO_CREDENTIALS),
        (
            exceptions.NotFound("Topic not found"),
            f"Pub/Sub topic {TOPIC} does not exist (NotFound: 404 Topic not found): {TOPIC_FIX}",
        ),
        (
            exceptions.PermissionDenied("User not authorized"),
            f"access denied to Pub/Sub topic {TOPIC} (PermissionDenied: 403 User not "
            "authorized): the caller needs roles/pubsub.publisher on it",
        ),
        (
            exceptions.InvalidArgument("Invalid [topics] name"),
            f"Pub/Sub topic {TOPIC} refused the request (InvalidArgument: 400 Invalid [topics] "
            "name)",
        ),
    ],
    ids=["no-credentials", "refresh", "unauthenticated", "not-found", "denied", "bad-name"],
)
def test_errors_no_retry_can_fix_are_one_line_config_errors(
    error: Exception, expected: str
) -> None:
    problem = translate_error(error, TOPIC_RESOURCE)
    assert isinstance(problem, ConfigError)
    assert str(problem) == expected
    assert "SECRET" not in str(problem)


def test_an_emulator_address_is_named_with_its_variable() -> None:
    on_emulator = topic_resource(TOPIC, "127.0.0.1:8085")
    problem = translate_error(exceptions.NotFound("Topic not found"), on_emulator)
    assert str(problem).startswith(f"Pub/Sub topic {TOPIC} at 127.0.0.1:8085 does not exist (")
    assert str(problem).endswith(
        "check --topic, --stack DIR (terraform output topic_id) or --config FILE (queue_name) "
        "(and the project and $PUBSUB_EMULATOR_HOST)"
    )


@pytest.mark.parametrize(
    "error",
    [
        exceptions.ServiceUnavailable("failed to connect to all addresses"),
        exceptions.DeadlineExceeded("Deadline Exceeded"),
        requests.ConnectionError("Connection refused"),
        auth.TransportError("cannot fetch a token"),
        exceptions.RetryError("Timeout of 20.0s exceeded", exceptions.ServiceUnavailable("x")),
    ],
    ids=["unavailable", "deadline", "connection", "token-transport", "retry-error"],
)
def test_an_endpoint_never_reached_is_a_config_error_and_later_a_transient_one(
    error: Exception,
) -> None:
    # WHEN the service never answered yet / THEN no retry fixes it: a wrong address
    first = translate_error(error, BUCKET_RESOURCE, reached=False)
    assert isinstance(first, ConfigError)
    assert str(first).startswith("cannot reach bucket gs://b at http://h:2 (")
    assert str(first).endswith(
        "check --bucket, --stack DIR (terraform output results_bucket) or --config FILE"
        " (result_bucket) "
        "(and $STORAGE_EMULATOR_HOST), and the network"
    )
    assert "\n" not in str(first)
    # WHEN it answered before / THEN another try may work
    later = translate_error(error, BUCKET_RESOURCE, reached=True)
    assert isinstance(later, CloudUnavailableError)
    assert str(later).startswith("bucket gs://b at http://h:2: try again later (")


@pytest.mark.parametrize(
    "error",
    [
        exceptions.InternalServerError("boom"),
        exceptions.TooManyRequests("slow down"),
        exceptions.Aborted("aborted"),
    ],
)
def test_server_errors_and_throttling_are_transient(error: Exception) -> None:
    problem = translate_error(error, TOPIC_RESOURCE, reached=False)
    assert isinstance(problem, CloudUnavailableError)
    assert str(problem).startswith(f"Pub/Sub topic {TOPIC}: try again later (")


def test_a_bug_is_not_disguised_as_a_cloud_error() -> None:
    bug = KeyError("no such key")
    with pytest.raises(KeyError) as raised:
        translate_error(bug, TOPIC_RESOURCE)
    assert raised.value is bug


# ----------------------------------------------------------------------------- names


def test_names_are_full_paths_or_bare_names_with_the_project() -> None:
    assert full_name("topics", TOPIC, None, "topic") == TOPIC
    assert full_name("topics", "adder-tasks", "p", "topic") == TOPIC
    assert full_name("subscriptions", "adder-dead", "p", "dead_letter_subscription") == DEAD


@pytest.mark.parametrize(
    ("value", "project", "expected"),
    [
        (
            "adder-tasks",
            None,
            "the bare topic name 'adder-tasks' needs the project: give --project",
        ),
        (DEAD, "p", f"--topic {DEAD!r} is not a topic path"),
        ("projects/p/adder", "p", "--topic 'projects/p/adder': give projects/PROJECT/topics/NAME"),
        ("ab", "p", "--topic 'ab': give projects/PROJECT/topics/NAME"),
    ],
    ids=["no-project", "wrong-kind", "half-path", "too-short"],
)
def test_unusable_names_are_config_errors(value: str, project: str | None, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        full_name("topics", value, project, "topic")
    assert str(raised.value).startswith(expected)


# ----------------------------------------------------------------------------- publish


@dataclass
class Future:
    error: Exception | None = None

    def result(self, timeout: float | None = None) -> str:
        if self.error is not None:
            raise self.error
        return "1"


@dataclass
class Publisher:
    """``publish`` answers from ``outcomes`` by body: an exception raised at once (``raise``)
    or a future that fails with it; anything else succeeds."""

    outcomes: dict[bytes, tuple[str, Exception | None]] = field(default_factory=dict)
    published: list[tuple[str, bytes]] = field(default_factory=list)

    def publish(self, topic: str, data: bytes, **_: Any) -> Future:
        how, error = self.outcomes.get(data, ("", None))
        if how == "raise" and error is not None:
            raise error
        self.published.append((topic, data))
        return Future(error if how == "fail" else None)


def test_failed_publishes_are_refused_with_retry_only_when_another_try_may_work() -> None:
    # GIVEN one body too large, one the server calls invalid, one that hit an outage
    publisher = Publisher(
        {
            b"big": ("raise", MessageTooLargeError("too large")),
            b"bad": ("fail", exceptions.InvalidArgument("bad message")),
            b"later": ("fail", exceptions.ServiceUnavailable("try again")),
        }
    )
    backend = GcpJobBackend(topic=TOPIC, publisher=publisher, retry=object())
    backend._reached.add("pubsub")  # as after open_backend's topic check
    # WHEN a batch with them is sent
    refused = backend.send_batch([b"ok", b"big", b"bad", b"later", b"ok2"])
    # THEN the others were published, and each failure is refused by its index and kind
    assert [body for _, body in publisher.published] == [b"ok", b"bad", b"later", b"ok2"]
    assert [(r.index, r.retry) for r in refused] == [(1, False), (2, False), (3, True)]
    assert refused[0].reason.startswith("MessageTooLargeError: too large")


@pytest.mark.parametrize(
    "error", [exceptions.NotFound("Topic not found"), exceptions.PermissionDenied("no")]
)
def test_a_missing_or_forbidden_topic_stops_the_batch(error: Exception) -> None:
    backend = GcpJobBackend(topic=TOPIC, publisher=Publisher({b"a": ("fail", error)}))
    with pytest.raises(ConfigError):
        backend.send_batch([b"a"])


def test_only_a_body_over_the_request_limit_is_unsendable() -> None:
    backend = GcpJobBackend(topic=TOPIC)
    assert backend.unsendable(b"x" * 10_000) is None
    reason = backend.unsendable(b"x" * MAX_REQUEST_BYTES)
    assert reason is not None and "10,000,000-byte request limit" in reason


# ----------------------------------------------------------------------------- storage


def blob(name: str, data: bytes) -> Any:
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    return SimpleNamespace(name=name, size=str(len(data)), md5_hash=md5)


@dataclass
class Storage:
    pages: list[list[Any]]
    calls: list[dict[str, Any]] = field(default_factory=list)

    def list_blobs(self, bucket: str, **options: Any) -> Any:
        self.calls.append({"bucket": bucket, **options})
        return SimpleNamespace(pages=iter(self.pages))


def test_listing_reads_name_size_and_md5_as_hex_page_by_page() -> None:
    # GIVEN two pages with records and other objects
    storage = Storage(
        [
            [blob("run/a.out", b"100"), blob("run/notes.txt", b"x")],
            [blob("run/b.err", b"{}\n"), blob("run/deeper/c.out", b"1")],
        ]
    )
    backend = GcpJobBackend(bucket="b", prefix="/run/", storage=storage)
    # WHEN listed / THEN only the records, MD5 in hex, one list call with the narrow fields
    records = list(backend.list_records())
    assert [(r.file_name, r.size, r.md5) for r in records] == [
        ("a.out", 3, hashlib.md5(b"100").hexdigest()),
        ("b.err", 3, hashlib.md5(b"{}\n").hexdigest()),
    ]
    [call] = storage.calls
    assert call["prefix"] == "run/"
    assert call["fields"] == "items(name,size,md5Hash),nextPageToken"
    assert backend.results_label == "gs://b/run/"


def test_a_page_that_fails_is_a_project_error() -> None:
    def pages() -> Any:
        yield [blob("a.out", b"1")]
        raise exceptions.ServiceUnavailable("blip")

    storage = SimpleNamespace(list_blobs=lambda *_, **__: SimpleNamespace(pages=pages()))
    backend = GcpJobBackend(bucket="b", storage=storage)
    with pytest.raises(CloudUnavailableError) as raised:
        list(backend.list_records())  # the first page reached the service
    assert "bucket gs://b" in str(raised.value)
    assert "try again later (ServiceUnavailable: 503 blip)" in str(raised.value)


def test_a_bug_while_listing_is_not_swallowed() -> None:
    def pages() -> Any:
        yield [SimpleNamespace(name="a.out")]  # no size: the code reading it is wrong

    storage = SimpleNamespace(list_blobs=lambda *_, **__: SimpleNamespace(pages=pages()))
    with pytest.raises(AttributeError):
        list(GcpJobBackend(bucket="b", storage=storage).list_records())


def test_a_record_deleted_since_it_was_listed_is_transient_and_named() -> None:
    def download_as_bytes(**_: Any) -> bytes:
        raise exceptions.NotFound("No such object")

    gone = SimpleNamespace(download_as_bytes=download_as_bytes)
    storage = SimpleNamespace(
        bucket=lambda _: SimpleNamespace(blob=lambda _: gone), close=lambda: None
    )
    backend = GcpJobBackend(bucket="b", prefix="run", storage=storage)
    with pytest.raises(CloudUnavailableError) as raised:
        backend.read_record(RecordInfo("a", ".out", "run/a.out", 3))
    assert "bucket gs://b" in str(raised.value)
    assert "run/a.out is gone, deleted since it was listed?" in str(raised.value)


# ----------------------------------------------------------------------------- dead letters


@dataclass
class Subscriber:
    """Pulls answer from ``pulls`` in turn (an exception is raised); acks are recorded."""

    pulls: list[Any]
    acked: list[list[str]] = field(default_factory=list)
    released: list[list[str]] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)

    def pull(self, request: dict[str, Any], timeout: float, retry: Any) -> Any:
        self.timeouts.append(timeout)
        answer = self.pulls.pop(0) if self.pulls else []
        if isinstance(answer, Exception):
            raise answer
        messages = [
            SimpleNamespace(ack_id=f"ack-{body.decode()}", message=SimpleNamespace(data=body))
            for body in answer
        ]
        return SimpleNamespace(received_messages=messages)

    def acknowledge(self, request: dict[str, Any], **_: Any) -> None:
        self.acked.append(request["ack_ids"])

    def modify_ack_deadline(self, request: dict[str, Any], **_: Any) -> None:
        assert request["ack_deadline_seconds"] == 0
        self.released.append(request["ack_ids"])


def test_an_empty_pull_that_times_out_is_no_dead_letters() -> None:
    subscriber = Subscriber([exceptions.DeadlineExceeded("deadline")])
    backend = GcpJobBackend(dead_letter_subscription=DEAD, subscriber=subscriber, on_emulator=False)
    assert backend.receive_dead_letters(10) == []
    assert subscriber.timeouts == [3.0]


def test_dead_letters_are_acknowledged_and_released_in_chunks() -> None:
    subscriber = Subscriber([[b"a", b"b"]])
    backend = GcpJobBackend(dead_letter_subscription=DEAD, subscriber=subscriber)
    letters = backend.receive_dead_letters(10)
    assert letters == [DeadLetter(b"a", "ack-a"), DeadLetter(b"b", "ack-b")]
    many = [DeadLetter(b"x", f"id-{n}") for n in range(1200)]
    backend.delete_dead_letters(many)
    backend.release_dead_letters(letters)
    assert [len(chunk) for chunk in subscriber.acked] == [500, 500, 200]
    assert subscriber.released == [["ack-a", "ack-b"]]


def test_on_the_emulator_dead_letters_are_counted_by_pulling_and_releasing_them_all() -> None:
    subscriber = Subscriber([[b"a", b"b"], [b"c"], []])
    backend = GcpJobBackend(dead_letter_subscription=DEAD, subscriber=subscriber, on_emulator=True)
    assert backend.dead_letter_count() == 3
    assert subscriber.released == [["ack-a", "ack-b", "ack-c"]]
    assert subscriber.acked == []
    assert subscriber.timeouts == [1.0, 1.0, 1.0]


def test_off_the_emulator_without_monitoring_credentials_the_count_is_unknown() -> None:
    def no_credentials() -> Any:
        raise auth.DefaultCredentialsError("none")

    backend = GcpJobBackend(
        dead_letter_subscription=DEAD, on_emulator=False, monitoring_session=no_credentials
    )
    assert backend.dead_letter_count() is None
    assert GcpJobBackend(on_emulator=True).dead_letter_count() is None  # no subscription


# ----------------------------------------------------------------------------- open_backend


@pytest.fixture
def no_google(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No emulator, and application-default credentials that do not exist: nothing is sent."""
    for name in ("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))


@pytest.mark.parametrize(
    ("command", "values", "expected"),
    [
        ("submit", {}, "adder submit gcp needs topic: give --topic"),
        ("redrive", {"topic": TOPIC}, "adder redrive gcp needs dead letter subscription"),
        ("fetch", {}, "adder fetch gcp needs bucket: give --bucket"),
        ("submit", {"topic": "adder-tasks"}, "the bare topic name 'adder-tasks' needs the project"),
        ("fetch", {"bucket": "b"}, f"no usable credentials for Google Cloud: {LOGIN}"),
        ("submit", {"topic": TOPIC}, f"no usable credentials for Google Cloud: {LOGIN}"),
    ],
)
def test_open_backend_says_what_is_missing_before_any_call(
    no_google: None, command: str, values: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        open_backend(Target("gcp", values), command)
    assert str(raised.value).startswith(expected)


def test_without_credentials_adder_fetch_is_one_line_exit_2(
    no_google: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["fetch", "gcp", "--bucket", "b", "--into", str(tmp_path / "r")])
    assert code == 2
    assert capsys.readouterr().err == f"error: no usable credentials for Google Cloud: {LOGIN}\n"


def test_importing_the_modules_imports_no_google_sdk() -> None:
    # (the bare ``google`` and ``google.cloud`` namespaces come with the interpreter's .pth files)
    code = (
        "import sys; before = set(sys.modules); import gcp_function.jobs, "
        "gcp_function.job_backend, gcp_function.job_errors, gcp_function.job_backlog; "
        "print(sorted(m for m in set(sys.modules) - before if m.startswith(('google', 'grpc'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
