"""Reading tasks files: JSON Lines as lists or as line blocks, the same items either way."""

from __future__ import annotations

import hashlib
import pickle
from typing import TYPE_CHECKING

import pytest

from core.errors import ConfigError
from core.records import MAX_RAW_KEPT, OversizedMessage
from core.task_source import LineBlock, count_tasks, iter_task_chunks

if TYPE_CHECKING:
    from pathlib import Path

TRICKY = (
    b'{"id": "a", "data": {"num1": 1, "num2": 2}}\r\n'
    b"\n"
    b"   \n"
    b"not json\n"
    b'{"id": "long", "data": {"num1": ' + b"9" * 5000 + b', "num2": 1}}\n'
    b"\r\n"
    b'{"id": "last", "data": {"num1": 3, "num2": 4}}'  # no final newline
)


def items(chunks: object) -> list[tuple[object, object]]:
    return [item for chunk in chunks for item in chunk]  # type: ignore[attr-defined]


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 4096, 1 << 20])
def test_line_blocks_give_the_same_items_as_lists(tmp_path: Path, block_bytes: int) -> None:
    # GIVEN a JSON Lines file with CRLF, blank and whitespace lines, a line longer than the
    # block, and no final newline
    source = tmp_path / "tasks.jsonl"
    source.write_bytes(TRICKY)
    # WHEN it is read as lists and as blocks of block_bytes
    as_lists = items(iter_task_chunks(str(source), chunk_size=2))
    blocks = list(iter_task_chunks(str(source), block_bytes=block_bytes))
    # THEN the same (line number, line) items come out, every block of whole lines
    assert as_lists == items(blocks)
    assert [number for number, _ in as_lists] == [1, 4, 5, 7]
    assert all(isinstance(block, LineBlock) for block in blocks)
    assert all(block.data.endswith(b"\n") for block in blocks[:-1] if isinstance(block, LineBlock))


def test_a_line_block_survives_pickling_for_a_worker_process() -> None:
    block = LineBlock(41, b"x\n\ny\n")
    copy = pickle.loads(pickle.dumps(block))
    assert list(copy) == [(41, b"x"), (43, b"y")]


def test_a_json_array_is_read_as_list_chunks_even_when_blocks_are_asked_for(
    tmp_path: Path,
) -> None:
    source = tmp_path / "tasks.json"
    source.write_text('[{"id": "a", "data": {"num1": 1, "num2": 2}}, 7]', encoding="utf-8")
    chunks = list(iter_task_chunks(str(source), block_bytes=4096))
    assert [type(chunk) for chunk in chunks] == [list]
    assert items(chunks) == [(1, '{"id": "a", "data": {"num1": 1, "num2": 2}}'), (2, "7")]


def digest_items(items_: list[tuple[object, object]]) -> list[tuple[object, bytes, int, str]]:
    """Each item as (line number, first MAX_RAW_KEPT bytes, size, sha256): what its error
    record keeps, the same whether the reader held the line whole or streamed it."""
    out = []
    for number, raw in items_:
        if isinstance(raw, OversizedMessage):
            out.append((number, raw.head, raw.size, raw.sha256))
        else:
            assert isinstance(raw, bytes)
            out.append((number, raw[:MAX_RAW_KEPT], len(raw), hashlib.sha256(raw).hexdigest()))
    return out


def expected_items(content: bytes) -> list[tuple[object, object]]:
    """Each non-blank line (CR stripped) with its line number."""
    return [
        (number, line.removesuffix(b"\r"))
        for number, line in enumerate(content.split(b"\n"), start=1)
        if line.strip()
    ]


LONG = (
    b'{"id": "a", "data": {"num1": 1, "num2": 2}}\n'
    + b"x" * 100_000
    + b"\r\n\n"
    + b"y" * 70_000
    + b"\r"
    + b"z" * 5
    + b"\r\n"
    + b'{"id": "b", "data": {"num1": 3, "num2": 4}}\r\n'
    + b"w" * 90_000  # no final newline
)


@pytest.mark.parametrize("block_bytes", [1, 7, 4096, 32 * 1024, 1 << 20])
@pytest.mark.parametrize("limit", [MAX_RAW_KEPT, 80_000])
def test_long_lines_come_as_oversized_messages_with_their_hash(
    tmp_path: Path, block_bytes: int, limit: int
) -> None:
    # GIVEN lines longer than the limit (CRLF, a CR inside, the last without a newline)
    source = tmp_path / "tasks.jsonl"
    source.write_bytes(LONG)
    # WHEN read in blocks and in lists
    blocks = list(iter_task_chunks(str(source), block_bytes=block_bytes, max_line_bytes=limit))
    lists = list(iter_task_chunks(str(source), chunk_size=3, max_line_bytes=limit))
    # THEN both give every line; the long ones as head + size + hash of the whole line
    assert digest_items(items(blocks)) == digest_items(items(lists))
    assert digest_items(items(blocks)) == digest_items(expected_items(LONG))
    # AND no line over the limit plus a block was held whole
    whole = [raw for _, raw in items(blocks) if isinstance(raw, bytes)]
    assert max(map(len, whole)) <= limit + block_bytes
    assert any(isinstance(raw, OversizedMessage) for _, raw in items(blocks))


@pytest.mark.parametrize(
    ("prefix", "first_line"),
    [(b"", 1), (b"\xef\xbb\xbf", 1), (b"\n\n", 3), (b"\xef\xbb\xbf \r\n\t\n  ", 3)],
)
def test_line_numbers_count_the_blank_lines_before_the_first_task(
    tmp_path: Path, prefix: bytes, first_line: int
) -> None:
    source = tmp_path / "tasks.jsonl"
    source.write_bytes(prefix + b"{}\n\n{}\n")
    got = items(iter_task_chunks(str(source)))
    assert got == [
        (first_line, b"{}" if not prefix.endswith(b"  ") else b"  {}"),
        (first_line + 2, b"{}"),
    ]


def test_a_broken_array_after_blank_lines_names_the_right_line(tmp_path: Path) -> None:
    source = tmp_path / "tasks.json"
    source.write_bytes(b"\n\n\n[1,\n2,,\n3]")
    with pytest.raises(ConfigError, match=r"\(line 5\)"):
        list(iter_task_chunks(str(source)))


@pytest.mark.parametrize(
    ("content", "count"),
    [
        (b"\xef\xbb\xbf{}\n\n{}\n", 2),
        (b" " * 40_000 + b"{}\n{}", 2),
        (b"\n" * 50_000, 0),
        (b"{}\r\n" + b"x" * 200_000 + b"\n \n{}", 3),
    ],
)
def test_count_tasks_counts_what_the_reader_yields(
    tmp_path: Path, content: bytes, count: int
) -> None:
    source = tmp_path / "tasks.jsonl"
    source.write_bytes(content)
    assert count_tasks(str(source)) == count == len(items(iter_task_chunks(str(source))))
