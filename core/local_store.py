"""The local-directory adapter of the results port: crash-safe files in one directory."""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
from pathlib import Path

from core.errors import StoreWriteError
from core.ports import RESULT_SUFFIX, ResultStore

TEMP_SUFFIX = ".tmp"
_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


# Temporary names carry the writer's pid, so a resume can tell a dead writer's leftovers from
# a live writer's files. Cached (getpid is a system call) and refreshed in forked children.
_writer_pid = os.getpid()
_temp_counter = itertools.count()


def _refresh_writer_pid() -> None:
    global _writer_pid
    _writer_pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_writer_pid)


def _temp_name(name: str) -> str:
    """``.{name}.{pid}-{n}.tmp``: hidden, unique, and telling which process wrote it."""
    return f".{name}.{_writer_pid}-{next(_temp_counter)}{TEMP_SUFFIX}"


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


class LocalDirectoryResultStore(ResultStore):
    """Writes ``{id}.out`` and ``{name}.err`` files into one directory, atomically.

    Each write goes to a hidden temporary file (``.{name}.{pid}-{n}.tmp``) which is then renamed
    over the final name, so a reader never sees an empty or partial file, even if the process
    is killed mid-write (a kill can at worst leave a temporary file, which ``--resume`` removes).
    Files are opened relative to a descriptor of the directory, so no name can reach outside it.
    ``durable=True`` adds an fsync per file (and of the directory) to survive power loss too;
    it is off by default because it costs a disk flush per task.
    """

    def __init__(self, directory: str | os.PathLike[str], *, durable: bool = False) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StoreWriteError(
                f"cannot open results directory {self.directory}: {exc.strerror}"
            ) from exc
        self._durable = durable

    def close(self) -> None:
        """Release the directory descriptor."""
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1

    def __enter__(self) -> LocalDirectoryResultStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def write_result(self, task_id: str, text: str) -> None:
        # the hot path of the local runner: the same as the port's, one call shorter
        self.put(task_id + RESULT_SUFFIX, text.encode("utf-8"), "")

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write ``data`` to the file ``key`` (a plain name) of the directory, atomically."""
        self._write(key, data)

    def has_result(self, task_id: str) -> bool:
        """True when ``{task_id}.out`` is a regular file (used by ``--resume``); a directory,
        link or device of that name is no result."""
        try:
            status = os.stat(task_id + RESULT_SUFFIX, dir_fd=self._dir_fd, follow_symlinks=False)
        except (OSError, ValueError):
            return False
        return stat.S_ISREG(status.st_mode)

    def check_writable(self) -> None:
        """Create and remove a temporary file, so an unusable directory fails now, once."""
        temp = _temp_name("probe")
        try:
            os.close(os.open(temp, _FLAGS, 0o644, dir_fd=self._dir_fd))
            os.unlink(temp, dir_fd=self._dir_fd)
        except OSError as exc:
            raise StoreWriteError(
                f"cannot write in results directory {self.directory}: {exc.strerror or exc}"
            ) from exc

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files left by writers that no longer run; return how many."""
        removed = 0
        for entry in os.scandir(self._dir_fd):
            name = entry.name
            if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
                continue
            pid_part = name[: -len(TEMP_SUFFIX)].rpartition(".")[2].partition("-")[0]
            if not pid_part.isdigit() or _process_alive(int(pid_part)):
                continue
            try:
                os.unlink(name, dir_fd=self._dir_fd)
                removed += 1
            except FileNotFoundError:
                pass
        return removed

    def _write(self, name: str, data: bytes) -> None:
        if not _is_plain_name(name):  # defence in depth: ids are validated upstream
            raise ValueError(f"refusing to write {name!r}: not a plain file name")
        temp = _temp_name(name)
        dir_fd = self._dir_fd
        try:
            fd = os.open(temp, _FLAGS, 0o644, dir_fd=dir_fd)
            try:
                written = os.write(fd, data)
                if written < len(data):  # short writes are rare; finish the rest
                    view = memoryview(data)[written:]
                    while view:
                        view = view[os.write(fd, view) :]
                if self._durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
            raise StoreWriteError(
                f"cannot write {self.directory / name}: {exc.strerror or exc}"
            ) from exc
        if self._durable:
            os.fsync(dir_fd)


def _process_alive(pid: int) -> bool:
    """True if ``pid`` is a running process (a zombie is dead: it can write nothing more)."""
    try:
        with Path(f"/proc/{pid}/stat").open("rb") as stat:
            return stat.read().rpartition(b")")[2][1:2] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): ask the kernel directly
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
