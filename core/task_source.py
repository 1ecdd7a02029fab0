"""Reading many tasks: JSON Lines, a JSON array, or standard input, in numbered chunks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from core.errors import ConfigError
from core.task import RawTask

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

Item = tuple[int | str, RawTask]
"""``(position, raw task)``: the line number (JSON Lines), the 1-based index (array) or a label."""

_SPAN_DECODER = json.JSONDecoder(parse_int=str, parse_float=str, parse_constant=str)
_WHITESPACE = " \t\r\n"


def _open_binary(source: str) -> BinaryIO:
    if source == "-":
        return sys.stdin.buffer
    try:
        return Path(source).open("rb")
    except FileNotFoundError:
        raise ConfigError(f"tasks file not found: {source}") from None
    except IsADirectoryError:
        raise ConfigError(f"tasks file is a directory: {source}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read tasks file {source}: {exc.strerror}") from None


def _first_byte(stream: BinaryIO) -> bytes:
    """The first non-whitespace byte, without consuming anything (peek or a small read-ahead)."""
    peek = getattr(stream, "peek", None)
    if peek is not None:
        head: bytes = peek(4096)
        return head.lstrip()[:1]
    return b""


class LineBlock:
    """Whole lines of a JSON Lines input, as one bytes object, and the first one's number.

    The runner hands these to its worker processes instead of lists of lines: one bytes
    object pickles and splits in C, where a list costs the reading process a Python step per
    line (measured: about a tenth of a 2-worker run's CPU). Iterating gives the same
    ``(line number, line)`` items, blank lines left out, as a list chunk would hold.
    """

    __slots__ = ("data", "first_line")

    def __init__(self, first_line: int, data: bytes) -> None:
        self.first_line = first_line
        self.data = data

    def __iter__(self) -> Iterator[Item]:
        for number, raw_line in enumerate(self.data.split(b"\n"), start=self.first_line):
            line = raw_line.rstrip(b"\r")
            if line.strip():
                yield number, line

    def __reduce__(self) -> tuple[type[LineBlock], tuple[int, bytes]]:
        return LineBlock, (self.first_line, self.data)


def iter_task_chunks(
    source: str, chunk_size: int = 256, *, block_bytes: int | None = None
) -> Iterator[Iterable[Item]]:
    """Yield the tasks of ``source`` (a path or ``-``) in chunks of at most ``chunk_size``.

    A file whose first non-blank character is ``[`` is one JSON array (checked whole before
    any task is yielded; a broken array is a :class:`ConfigError`). Anything else is JSON
    Lines: one task per line; blank lines are ignored; a line that is not valid JSON is a bad
    task like any other, not a file error. With ``block_bytes``, JSON Lines come as
    :class:`LineBlock` chunks of about that many bytes (whole lines) instead of lists.
    """
    stream = _open_binary(source)
    try:
        if _first_byte(stream) == b"[":
            yield from _chunks(_array_items(stream.read(), source), chunk_size)
        elif block_bytes is not None:
            yield from _line_blocks(stream, block_bytes)
        else:
            yield from _chunks(_line_items(stream), chunk_size)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _chunks(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _line_blocks(stream: BinaryIO, block_bytes: int) -> Iterator[LineBlock]:
    # read1: what a pipe has now, so a slow producer's tasks are not held back for a full block
    read = getattr(stream, "read1", stream.read)
    first_line = 1
    parts: list[bytes] = []  # the start of a line not yet ended (a list: no quadratic copies)
    while data := read(block_bytes):
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            parts.append(data)
            continue
        parts.append(data[:cut])
        block = b"".join(parts)
        parts = [data[cut:]] if cut < len(data) else []
        yield LineBlock(first_line, block)
        first_line += block.count(b"\n")
    if parts:
        yield LineBlock(first_line, b"".join(parts))


def _line_items(stream: BinaryIO) -> Iterator[Item]:
    for number, raw_line in enumerate(stream, start=1):
        line = raw_line.rstrip(b"\r\n")
        if line.strip():
            yield number, line


def _array_items(data: bytes, source: str) -> Iterator[Item]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"tasks file {source} is not valid UTF-8 (byte {exc.start})") from None
    spans = list(_array_spans(text, source))
    for index, (start, end) in enumerate(spans, start=1):
        yield index, text[start:end]


def _array_spans(text: str, source: str) -> Iterator[tuple[int, int]]:
    """Source spans of a JSON array's elements, so each task keeps its exact text."""

    def fail(message: str, pos: int) -> ConfigError:
        line = text.count("\n", 0, pos) + 1
        return ConfigError(
            f"tasks file {source} is not a valid JSON array: {message} (line {line})"
        )

    spans: list[tuple[int, int]] = []
    pos = len(text) - len(text.lstrip(_WHITESPACE)) + 1  # just after '['
    expect_value = True
    while True:
        while pos < len(text) and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= len(text):
            raise fail("unterminated array", pos)
        char = text[pos]
        if char == "]" and (not spans or not expect_value):
            pos += 1
            break
        if not expect_value:
            if char != ",":
                raise fail(f"expected ',' or ']' but found {char!r}", pos)
            pos += 1
            expect_value = True
            continue
        try:
            _, end = _SPAN_DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise fail(exc.msg, exc.pos) from None
        except RecursionError:
            raise fail("an element is nested too deeply", pos) from None
        spans.append((pos, end))
        pos = end
        expect_value = False
    if text[pos:].strip(_WHITESPACE):
        raise fail("extra data after the array", pos)
    return iter(spans)


def count_tasks(source: str) -> int | None:
    """How many tasks a regular file holds (for the progress bar); None when unknown."""
    if source == "-":
        return None
    path = Path(source)
    try:
        if not path.is_file() or path.stat().st_size > 512 * 1024 * 1024:
            return None
        with path.open("rb") as stream:
            if _first_byte(stream) == b"[":
                return None  # counted when the array is split
            return sum(1 for line in stream if line.strip())
    except OSError:
        return None
