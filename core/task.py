"""Task parsing and validation: raw queue bytes, JSON text or a mapping in; a ``Task`` out.

Accepted shapes (the id key and the place of the numbers combine freely)::

    {"id": "t1", "data": {"num1": 42, "num2": 58}}
    {"task_id": "t1", "num1": 42, "num2": 58}
    {"task_id": "t1", "data": {"num1": 42, "num2": 58}}

Anything else raises :class:`~core.errors.InvalidTaskError` with a stable ``code``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from core.errors import InvalidTaskError
from core.ids import INVALID_PREFIX
from core.numbers import (
    IntegerText,
    NonFiniteToken,
    Number,
    add_exact,
    canonical_text,
    check_number,
)
from core.records import OversizedMessage

MAX_TASK_BYTES = 16 * 1024
"""Largest task message accepted. A valid task is far smaller; the bound keeps parsing cheap."""

MAX_ID_BYTES = 200
"""Longest task id in UTF-8 bytes; with ``.out`` and a temporary suffix it fits a file name."""

_ID_KEYS = ("id", "task_id")
_NUMBER_KEYS = frozenset({"num1", "num2"})
_FORBIDDEN_IN_ID = r"[\x00-\x1f\x7f-\x9f/\\\ud800-\udfff]"

RawTask = bytes | bytearray | memoryview | str | Mapping[str, Any] | OversizedMessage
_BOM = "\ufeff"


class Task(NamedTuple):
    """A valid task: an id that is safe as a file or object name, and two exact numbers."""

    task_id: str
    num1: Number
    num2: Number

    def result_text(self) -> str:
        """The canonical text of ``num1 + num2`` (what goes into ``{id}.out``)."""
        return canonical_text(add_exact(self.num1, self.num2))


def loads_exact(text: str | bytes | bytearray) -> Any:
    """``json.loads`` that keeps every digit: fractions become ``Decimal``.

    ``NaN``/``Infinity`` tokens become :class:`NonFiniteToken`, which the number check rejects.
    """
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8")
    return _DECODER.decode(text)


# One decoder for the process: json.loads with keyword arguments builds a new one per call.
def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, refusing a repeated name (parsers disagree on which one wins)."""
    fields = dict(pairs)
    if len(fields) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise InvalidTaskError("duplicate_field", f"field {name!r} appears more than once")
            seen.add(name)
    return fields


_DECODER = json.JSONDecoder(
    parse_float=Decimal, parse_constant=NonFiniteToken, object_pairs_hook=_unique_fields
)
_LONG_INT_DECODER = json.JSONDecoder(
    parse_float=Decimal,
    parse_constant=NonFiniteToken,
    parse_int=IntegerText,
    object_pairs_hook=_unique_fields,
)


def decode_json(raw: bytes | bytearray | memoryview | str | OversizedMessage) -> Any:
    """Parse one raw task message, mapping every failure to a specific ``InvalidTaskError``.

    A leading UTF-8 byte order mark is ignored (RFC 8259 allows a parser to).
    """
    if isinstance(raw, OversizedMessage):
        raise InvalidTaskError(
            "too_large", f"task message is {raw.size} bytes; at most {MAX_TASK_BYTES} are allowed"
        )
    if isinstance(raw, memoryview):
        raw = raw.tobytes()
    size = len(raw)
    if isinstance(raw, str) and size * 4 > MAX_TASK_BYTES:
        size = len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_TASK_BYTES:
        raise InvalidTaskError(
            "too_large", f"task message is {size} bytes; at most {MAX_TASK_BYTES} are allowed"
        )
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidTaskError(
                "invalid_encoding", f"task message is not valid UTF-8 (byte {exc.start})"
            ) from None
    if raw.startswith(_BOM):
        raw = raw[1:]
    if not raw or raw.isspace():
        raise InvalidTaskError("empty", "task message is empty")
    try:
        return _DECODER.decode(raw)
    except RecursionError:
        raise InvalidTaskError("too_deep", "task JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidTaskError(
            "invalid_json",
            f"task message is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    except ValueError:
        # CPython refuses to convert integers longer than sys.get_int_max_str_digits(). Parse
        # again keeping such integers as text, so the field check can name the field and the
        # error record can still be named after the task.
        return _LONG_INT_DECODER.decode(raw)


def _is_record_name(text: str) -> bool:
    """True for ``invalid-<64 hex digits>`` in any mix of cases: a case-insensitive store (a
    Windows or macOS disk, some blob mounts) would map such an id onto an error record."""
    prefix, digits = text[: len(INVALID_PREFIX)], text[len(INVALID_PREFIX) :]
    if len(digits) != 64 or prefix.lower() != INVALID_PREFIX:
        return False
    return all(char in "0123456789abcdefABCDEF" for char in digits)


def check_task_id(value: object) -> str:
    """Return ``value`` if it is safe as a file and object name, else raise ``InvalidTaskError``."""
    if not isinstance(value, str):
        raise InvalidTaskError("invalid_id", "task id must be a string")
    if not value:
        raise InvalidTaskError("invalid_id", "task id is empty")
    if value in (".", ".."):
        raise InvalidTaskError("invalid_id", f"task id may not be {value!r}")
    if _is_record_name(value):
        raise InvalidTaskError(
            "invalid_id", "task id may not have the form invalid-<sha256>, kept for error records"
        )
    # Common case first: short printable ASCII without separators needs no pattern search.
    if (
        len(value) <= MAX_ID_BYTES
        and value.isascii()
        and value.isprintable()
        and "/" not in value
        and "\\" not in value
    ):
        return value
    bad = re.search(_FORBIDDEN_IN_ID, value)  # compiled once, on first use, by re's cache
    if bad is not None:
        char = bad.group()
        what = {"/": "'/'", "\\": "'\\'"}.get(char) or (
            "a lone surrogate" if "\ud800" <= char <= "\udfff" else f"control character {char!r}"
        )
        raise InvalidTaskError("invalid_id", f"task id contains {what}")
    if len(value) * 4 > MAX_ID_BYTES:  # only long ids need the exact byte count
        size = len(value.encode("utf-8"))
        if size > MAX_ID_BYTES:
            raise InvalidTaskError(
                "invalid_id", f"task id is {size} bytes; at most {MAX_ID_BYTES} are allowed"
            )
    return value


def _usable_id(body: Mapping[str, Any]) -> str | None:
    """The message's id if it has exactly one valid one, for naming its error record."""
    present = [key for key in _ID_KEYS if key in body]
    if len(present) != 1:
        return None
    try:
        return check_task_id(body[present[0]])
    except InvalidTaskError:
        return None


_ID_DATA = frozenset({"id", "data"})
_TASK_ID_FLAT = frozenset({"task_id", "num1", "num2"})


def task_from_mapping(body: object) -> Task:
    """Validate an already-decoded task object."""
    # Fast path for the two common well-formed shapes; anything unusual takes the careful
    # path below, which finds the specific error.
    if type(body) is dict:
        keys = body.keys()
        if keys == _ID_DATA:
            data = body["data"]
            if type(data) is dict and data.keys() == _NUMBER_KEYS:
                task_id = check_task_id(body["id"])
                return _checked(task_id, data["num1"], data["num2"], "data.")
        elif keys == _TASK_ID_FLAT:
            task_id = check_task_id(body["task_id"])
            return _checked(task_id, body["num1"], body["num2"], "")
    return _task_from_any_mapping(body)


def _checked(task_id: str, num1: object, num2: object, where: str) -> Task:
    try:
        return Task(task_id, check_number(num1, where + "num1"), check_number(num2, where + "num2"))
    except InvalidTaskError as exc:
        exc.task_id = task_id
        raise


def _task_from_any_mapping(body: object) -> Task:
    if not isinstance(body, Mapping):
        raise InvalidTaskError("not_an_object", "task must be a JSON object")
    id_keys = [key for key in _ID_KEYS if key in body]
    if not id_keys:
        raise InvalidTaskError("missing_field", "task has no 'id' (or 'task_id') field")
    if len(id_keys) > 1:
        raise InvalidTaskError("ambiguous_id", "task has both 'id' and 'task_id'")
    id_key = id_keys[0]
    task_id = check_task_id(body[id_key])

    if "data" in body:
        expected = {id_key, "data"}
        numbers = body["data"]
        where = "data."
        if not isinstance(numbers, Mapping):
            raise InvalidTaskError("invalid_field", "'data' must be a JSON object", task_id)
        extra = sorted(set(numbers) - _NUMBER_KEYS)
        if extra:
            raise InvalidTaskError(
                "unexpected_field", f"unexpected field 'data.{extra[0]}'", task_id
            )
    else:
        expected = {id_key, *_NUMBER_KEYS}
        numbers = body
        where = ""
    extra = sorted(set(body) - expected)
    if extra:
        raise InvalidTaskError("unexpected_field", f"unexpected field '{extra[0]}'", task_id)
    try:
        num1, num2 = numbers["num1"], numbers["num2"]
    except KeyError as exc:
        raise InvalidTaskError(
            "missing_field", f"missing field '{where}{exc.args[0]}'", task_id
        ) from None
    return _checked(task_id, num1, num2, where)


def parse_task(raw: RawTask) -> Task:
    """Parse and validate one task from raw bytes, JSON text, or a mapping.

    Raises :class:`~core.errors.InvalidTaskError`; its ``task_id`` is set whenever the message
    carried a usable id, so the error record can be named after the task.

    >>> parse_task(b'{"id": "t1", "data": {"num1": 42, "num2": 58}}').result_text()
    '100'
    """
    if isinstance(raw, Mapping):
        body: Any = raw
    else:
        try:
            body = decode_json(raw)
        except InvalidTaskError as exc:
            if exc.code == "duplicate_field":
                exc.task_id = _id_despite_duplicates(raw)
            raise
    try:
        return task_from_mapping(body)
    except InvalidTaskError as exc:
        if exc.task_id is None and isinstance(body, Mapping):
            exc.task_id = _usable_id(body)
        raise


class _Pairs(list[tuple[str, Any]]):
    """A JSON object kept as its (name, value) pairs, repeats and all."""


_PAIRS_DECODER = json.JSONDecoder(
    parse_float=str, parse_int=str, parse_constant=str, object_pairs_hook=_Pairs
)


def _id_despite_duplicates(raw: RawTask) -> str | None:
    """The task's id when it is unambiguous although some other name repeats.

    ``{"id": "t", "data": {"num1": 1, "num1": 2, ...}}`` names its record ``t.err``; an id
    key that itself repeats (or both ``id`` and ``task_id``) leaves no usable id.
    """
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw).decode("utf-8")  # decode_json got this far: it is valid UTF-8
    if not isinstance(raw, str):
        return None
    try:
        body = _PAIRS_DECODER.decode(raw.removeprefix(_BOM))
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, _Pairs):
        return None
    ids = [value for name, value in body if name in _ID_KEYS]
    if len(ids) != 1:
        return None
    try:
        return check_task_id(ids[0])
    except InvalidTaskError:
        return None
