"""A job's manifest: what a submit sent, so watch knows "every" and a resume skips the sent.

Two files under the jobs directory (``.adder/jobs`` by default): ``<job>.json``, the job's
cloud, settings and state (rewritten whole, temp + rename), and ``<job>.sent``, one record
name per line, appended as the queue confirms each batch (a crash loses at most the batch
in flight, which a resume sends again: duplicates are harmless, losses are not).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

DEFAULT_JOBS_DIR = ".adder/jobs"
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def jobs_dir(given: str | None = None) -> Path:
    """``given``, else ``$ADDER_JOBS_DIR``, else ``.adder/jobs`` in the working directory."""
    return Path(given or os.environ.get("ADDER_JOBS_DIR") or DEFAULT_JOBS_DIR)


def check_job_name(name: str) -> str:
    """``name`` if it can name a job's files; a ConfigError otherwise."""
    if not JOB_NAME.match(name) or name in {".", ".."}:
        raise ConfigError(f"job name {name!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    return name


@dataclass
class Manifest:
    """One job's manifest files."""

    directory: Path
    job: str
    header: dict[str, Any]

    @property
    def header_path(self) -> Path:
        """``<job>.json``."""
        return self.directory / f"{self.job}.json"

    @property
    def sent_path(self) -> Path:
        """``<job>.sent``."""
        return self.directory / f"{self.job}.sent"

    @property
    def cloud(self) -> str:
        """The cloud the job was submitted to."""
        return str(self.header["cloud"])

    @property
    def settings(self) -> dict[str, str]:
        """The job's settings (queue, bucket, prefix...) as submit resolved them."""
        return dict(self.header.get("settings") or {})

    @property
    def complete(self) -> bool:
        """True once a submit read the whole tasks file and every task was sent."""
        return bool(self.header.get("complete"))

    @classmethod
    def create(
        cls, directory: Path, job: str, cloud: str, settings: Mapping[str, str], source: str
    ) -> Manifest:
        """A new, empty manifest; a ConfigError if the job exists (use ``--resume``)."""
        check_job_name(job)
        manifest = cls(
            directory,
            job,
            {
                "job": job,
                "cloud": cloud,
                "settings": dict(settings),
                "tasks": source,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "complete": False,
            },
        )
        if manifest.header_path.exists():
            raise ConfigError(
                f"job {job!r} was submitted before ({manifest.header_path}): add --resume to "
                "send what it has not sent, or give a new --job NAME"
            )
        directory.mkdir(parents=True, exist_ok=True)
        manifest.sent_path.touch()
        manifest.save()
        return manifest

    @classmethod
    def load(cls, directory: Path, job: str) -> Manifest:
        """The manifest of ``job``; a ConfigError naming the jobs there if it is missing."""
        check_job_name(job)
        path = directory / f"{job}.json"
        try:
            header = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            known = ", ".join(sorted(p.stem for p in directory.glob("*.json"))[:10]) or "none"
            raise ConfigError(f"no job {job!r} in {directory} (jobs there: {known})") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the manifest {path}: {exc}") from None
        if not isinstance(header, dict) or "cloud" not in header:
            raise ConfigError(f"{path} is not a job manifest")
        return cls(directory, job, header)

    @classmethod
    def latest(cls, directory: Path, cloud: str) -> Manifest | None:
        """The most recently submitted job on ``cloud``, if any."""
        candidates = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in candidates:
            try:
                manifest = cls.load(directory, path.stem)
            except ConfigError:
                continue
            if manifest.cloud == cloud:
                return manifest
        return None

    def save(self) -> None:
        """Rewrite the header whole (temp file + rename)."""
        temporary = self.header_path.with_name(f".{self.job}.json.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self.header, indent=2) + "\n", encoding="utf-8")
        temporary.replace(self.header_path)

    def sent_names(self) -> set[str]:
        """Every record name a submit of this job saw confirmed by the queue."""
        try:
            with self.sent_path.open(encoding="utf-8", errors="surrogateescape") as lines:
                return {line.rstrip("\n") for line in lines if line.endswith("\n")}
        except FileNotFoundError:
            return set()

    def record_sent(self, names: Iterable[str]) -> None:
        """Append confirmed names (whole lines only, flushed to the OS at once)."""
        text = "".join(f"{name}\n" for name in names)
        if text:
            with self.sent_path.open("a", encoding="utf-8", errors="surrogateescape") as out:
                out.write(text)

    def finish(self, *, read: int, sent: int, failed: int) -> None:
        """Note how the submit ended: complete when every task read was sent."""
        self.header.update(read=read, sent=sent, failed=failed, complete=failed == 0)
        self.save()
