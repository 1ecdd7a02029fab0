"""The shared bad-input corpus: ``tests/data/bad_inputs.json``, with its big cases generated.

The data file lists every case by name with its raw bytes (text, base64, or ``parts`` that are
repeated here, so 5,000-digit numbers, deep nesting and 1 MiB bodies stay a line each), the
error code and record name it must give, and the transports that cannot carry it and why.
This module turns it into :class:`Case` objects and knows each transport's rules, so the
tests can check that the file's ``not_on`` lists are exactly what the rules say.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from core.ids import INVALID_PREFIX
from core.records import MAX_RAW_KEPT
from tests.conftest import REPO_ROOT

DATA_FILE = REPO_ROOT / "tests" / "data" / "bad_inputs.json"

TRANSPORTS = ("local", "jsonl", "sqs", "pubsub", "servicebus")
"""run_chunks, a JSON Lines file, an SQS body, Pub/Sub data, a Service Bus body."""

SQS_MAX_BODY_BYTES = 256 * 1024
"""The limit ``adder submit aws`` enforces (SQS's classic limit; SQS now takes 1 MiB)."""
SERVICEBUS_MAX_BODY_BYTES = 256 * 1024
"""Service Bus Standard tier (the stack's ``sku``); Premium would take up to 100 MB."""
PUBSUB_MAX_DATA_BYTES = 10 * 1000 * 1000


@dataclass(frozen=True)
class Case:
    """One raw message and what every target must make of it."""

    name: str
    raw: bytes
    good: bool
    code: str | None
    """The error code (None for a good case)."""
    task_id: str | None
    """The id the record or result is named after; None: ``invalid-<sha256>``."""
    out: str | None = None
    """A good case's exact result text."""
    not_on: dict[str, str] = field(default_factory=dict)
    on_gcp: dict[str, Any] = field(default_factory=dict)
    """How Pub/Sub's delivery changes the outcome: ``code``, and ``push_status`` for a raw push."""
    kept_as: str | None = None

    @property
    def record_name(self) -> str:
        """The name of the result or error record, without the suffix."""
        if self.task_id is not None:
            return self.task_id
        return INVALID_PREFIX + hashlib.sha256(self.raw).hexdigest()

    @property
    def file_name(self) -> str:
        """``{name}.out`` for a good case, ``{name}.err`` for a bad one."""
        return self.record_name + (".out" if self.good else ".err")

    def carried_by(self, transport: str) -> bool:
        """True when ``transport`` can deliver this message as it is."""
        assert transport in TRANSPORTS, transport
        return transport not in self.not_on


@dataclass(frozen=True)
class Corpus:
    """Every bad and good case, in file order."""

    bad: tuple[Case, ...]
    good: tuple[Case, ...]

    @property
    def cases(self) -> tuple[Case, ...]:
        """Good cases first (a JSON Lines file must not start with ``[``), then the bad ones."""
        return self.good + self.bad

    def carried_by(self, transport: str) -> list[Case]:
        """The cases ``transport`` can deliver."""
        return [case for case in self.cases if case.carried_by(transport)]


def _build(spec: dict[str, Any], key: str = "parts") -> str:
    text = ""
    for part in spec[key]:
        if isinstance(part, list):
            unit, count = part
            text += unit * count
        else:
            text += part
    return text


def _raw(spec: dict[str, Any]) -> bytes:
    if "base64" in spec:
        data = base64.b64decode(spec["base64"], validate=True)
    elif "parts" in spec:
        data = _build(spec).encode("utf-8", "surrogatepass")
    else:
        data = spec["text"].encode("utf-8", "surrogatepass")
    pad_to = spec.get("pad_to")
    if pad_to is not None:
        assert len(data) <= pad_to, spec["name"]
        data += b" " * (pad_to - len(data))
    return data


@functools.cache
def load_corpus() -> Corpus:
    """The corpus of ``tests/data/bad_inputs.json`` (read once)."""
    document = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    bad = tuple(
        Case(
            name=spec["name"],
            raw=_raw(spec),
            good=False,
            code=spec["code"],
            task_id=spec["record"],
            not_on=dict(spec.get("not_on", {})),
            on_gcp=dict(spec.get("on_gcp", {})),
            kept_as=spec.get("kept_as"),
        )
        for spec in document["bad"]
    )
    good = tuple(
        Case(
            name=spec["name"],
            raw=_raw(spec),
            good=True,
            code=None,
            task_id=spec["id"] if "id" in spec else _build(spec, "id_parts"),
            out=spec["out"] if "out" in spec else _build(spec, "out_parts"),
            not_on=dict(spec.get("not_on", {})),
        )
        for spec in document["good"]
    )
    return Corpus(bad, good)


# --- each transport's rules ---------------------------------------------------------------


def _xml_char(code: int) -> bool:
    return (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def transport_refuses(transport: str, raw: bytes) -> bool:
    """True when ``transport``'s own rules cannot deliver ``raw`` as one message, unchanged."""
    if transport == "local":
        return False
    if transport == "jsonl":
        return not raw.strip() or b"\n" in raw or raw.endswith(b"\r")
    if transport == "sqs":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return True
        too_big = len(raw) > SQS_MAX_BODY_BYTES
        return not text or too_big or not all(_xml_char(ord(char)) for char in text)
    if transport == "pubsub":
        return len(raw) > PUBSUB_MAX_DATA_BYTES
    if transport == "servicebus":
        return len(raw) > SERVICEBUS_MAX_BODY_BYTES
    raise ValueError(f"unknown transport {transport}")


# --- what an error record must hold -------------------------------------------------------


def record_problems(
    case: Case, content: bytes, *, code: str | None = None, task_id: str | None = None
) -> list[str]:
    """Everything wrong with ``content`` as the error record of ``case`` (empty: all right).

    ``code`` and ``task_id`` override the case's own (a transport that delivers the message
    differently); with an override the record keeps what that transport delivered.
    """
    expected_code = code or case.code
    problems: list[str] = []
    if not content.endswith(b"\n") or content.count(b"\n") != 1:
        problems.append("not one line with a trailing newline")
    try:
        content.decode("utf-8")  # strict: json.loads would let an encoded surrogate through
    except UnicodeDecodeError as exc:
        problems.append(f"not valid UTF-8 (byte {exc.start})")
    try:
        record = json.loads(content)
    except ValueError as exc:
        return [*problems, f"not JSON: {exc}"]
    if record.get("error") != expected_code:
        problems.append(f"error {record.get('error')!r}, expected {expected_code!r}")
    expected_id = task_id if code is not None else case.task_id
    if record.get("task_id") != expected_id:
        problems.append(f"task_id {record.get('task_id')!r}, expected {expected_id!r}")
    if not isinstance(record.get("message"), str) or not record["message"]:
        problems.append("no human-readable message")
    if code is not None:  # the record holds what the transport delivered, not case.raw
        return problems
    return problems + _raw_problems(case, record)


def _raw_problems(case: Case, record: dict[str, Any]) -> list[str]:
    """What is wrong with the record's copy of the message (``raw`` or ``raw_base64``)."""
    if "raw" in record:
        kept = record["raw"].encode("utf-8", "surrogatepass")
        kind = "raw"
    elif "raw_base64" in record:
        kept = base64.b64decode(record["raw_base64"])
        kind = "raw_base64"
    else:
        return ["neither raw nor raw_base64"]
    problems = []
    if case.kept_as is not None and kind != case.kept_as:
        problems.append(f"kept as {kind}, expected {case.kept_as}")
    if kept != case.raw[:MAX_RAW_KEPT]:
        problems.append(f"{kind} does not give back the original bytes")
    if record.get("raw_bytes") != len(case.raw):
        problems.append(f"raw_bytes {record.get('raw_bytes')}, expected {len(case.raw)}")
    if record.get("raw_sha256") != hashlib.sha256(case.raw).hexdigest():
        problems.append("raw_sha256 is not the sha256 of the message")
    truncated = len(case.raw) > MAX_RAW_KEPT
    if record.get("raw_truncated", False) is not truncated:
        problems.append(f"raw_truncated should be {truncated}")
    return problems


def content_problems(case: Case, content: bytes | None) -> list[str]:
    """What is wrong with the stored object of ``case`` (result or error record)."""
    if content is None:
        return ["missing"]
    if case.good:
        expected = (case.out or "").encode()
        return [] if content == expected else [f"result {content[:60]!r}, expected {case.out!r}"]
    return record_problems(case, content)
