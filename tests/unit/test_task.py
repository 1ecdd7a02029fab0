"""Task shapes, validation errors and the task-id rules."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from core.errors import InvalidTaskError
from core.task import MAX_ID_BYTES, MAX_TASK_BYTES, check_task_id, parse_task


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id": "test-task", "data": {"num1": 42, "num2": 58}}',
        '{"task_id": "test-task", "num1": 42, "num2": 58}',
        '{"task_id": "test-task", "data": {"num1": 42, "num2": 58}}',
        {"id": "test-task", "data": {"num1": 42, "num2": 58}},
        bytearray(b'{"id": "test-task", "data": {"num1": 42, "num2": 58}}'),
        memoryview(b'{"id": "test-task", "data": {"num1": 42, "num2": 58}}'),
    ],
)
def test_every_accepted_shape_gives_the_same_task(raw: object) -> None:
    task = parse_task(raw)  # type: ignore[arg-type]
    assert (task.task_id, task.num1, task.num2) == ("test-task", 42, 58)
    assert task.result_text() == "100"


def test_fractions_are_parsed_as_exact_decimals() -> None:
    task = parse_task('{"id": "t", "data": {"num1": 0.1, "num2": 2.50}}')
    assert task.num1 == Decimal("0.1") and type(task.num1) is Decimal
    assert task.num2 == Decimal("2.50")


def _code_of(raw: object) -> tuple[str, str | None, str]:
    with pytest.raises(InvalidTaskError) as caught:
        parse_task(raw)  # type: ignore[arg-type]
    return caught.value.code, caught.value.task_id, caught.value.message


@pytest.mark.parametrize(
    ("raw", "code", "task_id", "words"),
    [
        (b"", "empty", None, "empty"),
        (b"   \n", "empty", None, "empty"),
        (b"not json", "invalid_json", None, "not valid JSON"),
        (b'{"id": "t", "data": {"num1": 1, "num2": 2}', "invalid_json", None, "not valid JSON"),
        (b"\xff\xfe{}", "invalid_encoding", None, "UTF-8"),
        (b"[1, 2]", "not_an_object", None, "JSON object"),
        (b'"a string"', "not_an_object", None, "JSON object"),
        (b"[" * 5000 + b"]" * 5000, "too_deep", None, "nested too deeply"),
        (b'{"data": {"num1": 1, "num2": 2}}', "missing_field", None, "no 'id'"),
        (b'{"id": "a", "task_id": "b", "num1": 1, "num2": 2}', "ambiguous_id", None, "both"),
        (b'{"id": "t", "data": {"num1": 1}}', "missing_field", "t", "'data.num2'"),
        (b'{"task_id": "t", "num2": 1}', "missing_field", "t", "'num1'"),
        (b'{"id": "t", "data": [1, 2]}', "invalid_field", "t", "'data' must be"),
        (b'{"id": "t", "data": {"num1": 1, "num2": 2}, "x": 1}', "unexpected_field", "t", "'x'"),
        (
            b'{"id": "t", "data": {"num1": 1, "num2": 2, "n3": 3}}',
            "unexpected_field",
            "t",
            "data.n3",
        ),
        (b'{"id": "t", "num1": 1, "num2": 2, "data": {}}', "unexpected_field", "t", "'num1'"),
        (b'{"id": 7, "data": {"num1": 1, "num2": 2}}', "invalid_id", None, "string"),
        (
            b'{"id": "a", "id": "b", "data": {"num1": 1, "num2": 2}}',
            "duplicate_field",
            None,
            "'id'",
        ),
        (
            b'{"id": "t", "data": {"num1": 1, "num1": 2, "num2": 3}}',
            "duplicate_field",
            "t",  # the id itself is unambiguous: the record is t.err
            "'num1'",
        ),
        (
            b'{"id": "invalid-' + b"0" * 64 + b'", "data": {"num1": 1, "num2": 2}}',
            "invalid_id",
            None,
            "invalid-<sha256>",
        ),
        (b'{"id": null, "data": {"num1": 1, "num2": 2}}', "invalid_id", None, "string"),
        (b'{"id": "t", "data": {"num1": NaN, "num2": 2}}', "invalid_number", "t", "NaN"),
        (b'{"id": "t", "data": {"num1": "1", "num2": 2}}', "invalid_number", "t", "string"),
    ],
)
def test_bad_tasks_get_specific_errors(
    raw: bytes, code: str, task_id: str | None, words: str
) -> None:
    got_code, got_id, message = _code_of(raw)
    assert (got_code, got_id) == (code, task_id)
    assert words in message


def test_oversized_message_is_rejected_before_parsing() -> None:
    padding = " " * MAX_TASK_BYTES
    code, _, message = _code_of(f'{{"id": "t", "data": {{"num1": 1, "num2": 2}}}}{padding}')
    assert code == "too_large"
    assert str(MAX_TASK_BYTES) in message


@pytest.mark.parametrize(
    ("task_id", "words"),
    [
        ("", "empty"),
        (".", "'.'"),
        ("..", "'..'"),
        ("a/b", "'/'"),
        ("../escape", "'/'"),
        ("a\\b", "'\\'"),
        ("nul\x00", "control character"),
        ("tab\t", "control character"),
        ("new\nline", "control character"),
        ("del\x7f", "control character"),
        ("c1\x85", "control character"),
        ("x" * (MAX_ID_BYTES + 1), f"at most {MAX_ID_BYTES}"),
        ("é" * (MAX_ID_BYTES // 2 + 1), f"at most {MAX_ID_BYTES}"),
        ("\ud800", "surrogate"),
    ],
)
def test_unsafe_ids_are_rejected(task_id: str, words: str) -> None:
    with pytest.raises(InvalidTaskError) as caught:
        check_task_id(task_id)
    assert caught.value.code == "invalid_id"
    assert words in caught.value.message


@pytest.mark.parametrize(
    "task_id",
    [
        "test-task",
        "tâche",
        "数据-7",
        "emoji-🙂",
        ".hidden",
        "a..b",
        "invalid-input",
        "x" * MAX_ID_BYTES,
    ],
)
def test_valid_unicode_ids_are_accepted(task_id: str) -> None:
    assert check_task_id(task_id) == task_id


safe_ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\\"),
    min_size=1,
    max_size=50,
).filter(lambda s: s not in (".", ".."))


@given(safe_ids)
def test_any_safe_id_is_accepted_and_round_trips_through_json(task_id: str) -> None:
    assume(len(task_id.encode()) <= MAX_ID_BYTES)
    raw = json.dumps({"id": task_id, "data": {"num1": 1, "num2": 2}})
    assert parse_task(raw).task_id == task_id


@given(
    st.text(min_size=0, max_size=20),
    st.sampled_from(["/", "\\", "\x00", "\x1f", "\x9f"]),
    st.text(max_size=20),
)
def test_any_id_with_a_separator_or_control_character_is_rejected(
    head: str, bad: str, tail: str
) -> None:
    with pytest.raises(InvalidTaskError):
        check_task_id(head + bad + tail)


def test_rejected_number_keeps_the_task_id_for_the_error_record() -> None:
    _, task_id, message = _code_of(b'{"task_id": "keep-me", "num1": true, "num2": 1}')
    assert task_id == "keep-me"
    assert message == "num1 must be a JSON number, not a boolean (true)"
