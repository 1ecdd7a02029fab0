"""Reading tasks files: JSON Lines as lists or as line blocks, the same items either way."""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING

import pytest

from core.task_source import LineBlock, iter_task_chunks

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
