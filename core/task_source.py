"""Reading many tasks: JSON Lines, a JSON array, or standard input, in numbered chunks."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from core.errors import ConfigError
from core.records import MAX_RAW_KEPT, OversizedMessage
from core.task import RawTask

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

Item = tuple[int | str, RawTask]
"""``(position, raw task)``: the line number (JSON Lines), the 1-based index (array) or a label."""

_SPAN_DECODER = json.JSONDecoder(parse_int=str, parse_float=str, parse_constant=str)
_WHITESPACE = " \t\r\n"
_WHITESPACE_BYTES = b" \t\r\n"
_SNIFF_BYTES = 32 * 1024
_UTF8_BOM = b"\xef\xbb\xbf"
_LONGEST_BOM = 4
_OTHER_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
    (b"\xff\xfe", "UTF-16 (little-endian)"),
    (b"\xfe\xff", "UTF-16 (big-endian)"),
)


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


class _Start(NamedTuple):
    """What was read before the first task: the format, and the bytes from its line on."""

    is_array: bool
    data: bytes
    """The input from the start of the first non-blank line (from ``[`` for an array)."""
    first_line: int


def _sniff(read: Callable[[int], bytes], source: str) -> _Start:
    """Read up to the first character that is not blank (and not a UTF-8 BOM): ``[`` means
    a JSON array, anything else JSON Lines. However the input arrives (a pipe's first write
    may be blank, a file may start with pages of blank lines), blank lines are counted and
    dropped as they are read, so memory stays at a block.
    """
    data = b""
    skipped_lines = 0
    at_start = True
    while True:
        block = read(_SNIFF_BYTES)
        data += block
        if at_start and (len(data) >= _LONGEST_BOM or not block):
            at_start = False
            _refuse_other_encodings(data, source)
            data = data.removeprefix(_UTF8_BOM)
        content = data.lstrip(_WHITESPACE_BYTES)
        if content and not at_start:
            if content.startswith(b"["):
                skipped_lines += data.count(b"\n", 0, len(data) - len(content))
                return _Start(True, content, skipped_lines + 1)
            line_start = data.rfind(b"\n", 0, len(data) - len(content)) + 1
            skipped_lines += data.count(b"\n", 0, line_start)
            return _Start(False, data[line_start:], skipped_lines + 1)
        if not block:
            return _Start(False, b"", skipped_lines + 1)
        if not at_start:  # all blank so far: keep only the unfinished line
            cut = data.rfind(b"\n") + 1
            skipped_lines += data.count(b"\n", 0, cut)
            data = data[cut:]


def _refuse_other_encodings(head: bytes, source: str) -> None:
    for bom, name in _OTHER_BOMS:
        if head.startswith(bom):
            raise ConfigError(f"tasks file {source} is {name}; save it as UTF-8")


class _LongLine:
    """A line too long to hold, read on: its first bytes, size and hash."""

    def __init__(self, start: bytes) -> None:
        self.head = b""
        self.size = 0
        self._hash = hashlib.sha256()
        self._cr = False  # a final \r is not part of the line (CRLF): held back until more comes
        self.add(start)

    def add(self, data: bytes) -> None:
        if not data:
            return
        if self._cr:
            self._take(b"\r")
        self._cr = data.endswith(b"\r")
        self._take(data[:-1] if self._cr else data)

    def _take(self, data: bytes) -> None:
        if len(self.head) < MAX_RAW_KEPT:
            self.head += data[: MAX_RAW_KEPT - len(self.head)]
        self._hash.update(data)
        self.size += len(data)

    def finish(self) -> OversizedMessage:
        return OversizedMessage(self.head, self.size, self._hash.hexdigest())


def iter_task_chunks(
    source: str,
    chunk_size: int = 256,
    *,
    block_bytes: int | None = None,
    max_line_bytes: int = MAX_RAW_KEPT,
) -> Iterator[Iterable[Item]]:
    """Yield the tasks of ``source`` (a path or ``-``) in chunks of at most ``chunk_size``.

    The first character that is not blank or a UTF-8 byte order mark decides the format: ``[``
    is one JSON array (checked whole before any task is yielded; a broken array is a
    :class:`ConfigError`). Anything else is JSON Lines: one task per line; blank lines are
    ignored; a line that is not valid JSON is a bad task like any other, not a file error. A
    line longer than ``max_line_bytes`` is never held whole: it comes as an
    :class:`~core.records.OversizedMessage` (its own chunk), which the pipeline rejects as
    ``too_large``. With ``block_bytes``, JSON Lines come as :class:`LineBlock` chunks of about
    that many bytes (whole lines) instead of lists.
    """
    stream = _open_binary(source)
    # read1: what a pipe has now, so a slow producer's tasks are not held back for a full block
    read = getattr(stream, "read1", stream.read)
    try:
        start = _sniff(read, source)
        if start.is_array:
            yield from _chunks(_array_items(start.data + stream.read(), source, start), chunk_size)
            return
        blocks = _line_blocks(start, read, block_bytes or _SNIFF_BYTES, max_line_bytes)
        if block_bytes is not None:
            yield from blocks
        else:
            yield from _chunks((item for block in blocks for item in block), chunk_size)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _line_blocks(
    start: _Start, read: Callable[[int], bytes], block_bytes: int, max_line_bytes: int
) -> Iterator[LineBlock | list[Item]]:
    """Whole lines in blocks; a line over ``max_line_bytes`` as a one-item list, read on
    without being held (memory stays near ``max_line_bytes`` plus a block)."""
    first_line = start.first_line
    parts: list[bytes] = []  # the start of a line not yet ended (a list: no quadratic copies)
    pending = 0  # bytes in parts
    long_line: _LongLine | None = None
    data = start.data
    while data or (data := read(block_bytes)):
        if long_line is not None:
            end = data.find(b"\n")
            if end < 0:
                long_line.add(data)
                data = b""
                continue
            long_line.add(data[:end])
            yield [(first_line, long_line.finish())]
            long_line, first_line, data = None, first_line + 1, data[end + 1 :]
            continue
        cut = data.rfind(b"\n") + 1
        if cut:
            parts.append(data[:cut])
            block = b"".join(parts)
            yield LineBlock(first_line, block)
            first_line += block.count(b"\n")
            parts, pending = [], 0
        rest = data[cut:]
        data = b""
        if rest:
            parts.append(rest)
            pending += len(rest)
            if pending > max_line_bytes:
                long_line, parts, pending = _LongLine(b"".join(parts)), [], 0
    if long_line is not None:
        yield [(first_line, long_line.finish())]
    elif parts:
        yield LineBlock(first_line, b"".join(parts))


def _array_items(data: bytes, source: str, opening: _Start) -> Iterator[Item]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"tasks file {source} is not valid UTF-8 (byte {exc.start})") from None
    spans = list(_array_spans(text, source, opening.first_line))
    for index, (start, end) in enumerate(spans, start=1):
        yield index, text[start:end]


def _array_spans(text: str, source: str, first_line: int = 1) -> Iterator[tuple[int, int]]:
    """Source spans of a JSON array's elements, so each task keeps its exact text."""

    def fail(message: str, pos: int) -> ConfigError:
        line = text.count("\n", 0, pos) + first_line
        return ConfigError(
            f"tasks file {source} is not a valid JSON array: {message} (line {line})"
        )

    spans: list[tuple[int, int]] = []
    pos = 1  # just after '['
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
            start = _sniff(stream.read, source)
            if start.is_array:
                return None  # counted when the array is split
            # the reader itself, so the count is what it yields and a long line is not held
            blocks = _line_blocks(start, stream.read, _SNIFF_BYTES, MAX_RAW_KEPT)
            return sum(1 for block in blocks for _ in block)
    except (OSError, ConfigError):
        return None
