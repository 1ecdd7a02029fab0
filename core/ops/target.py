"""Where a job lives: its queue, dead-letter queue and results, found for the user.

Each setting comes from, in order: its flag; the stack's ``terraform output -json``
(``--stack DIR``, or ``infra/<cloud>`` when that stack has state in the working directory);
the seed's cloud config file (``--config FILE``: provider, job_id, queue_name, result_bucket,
result_prefix, config.{region, project, namespace...}); an environment variable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import read_config_document
from core.errors import ConfigError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping, Sequence

TERRAFORM_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Setting:
    """One setting of a cloud's job: a queue URL, a bucket, a region..."""

    name: str
    """Attribute name; the flag is ``--name`` with dashes."""
    help: str
    output: str | None = None
    """The stack's terraform output that holds it."""
    config: str | None = None
    """Its key in a cloud config file; ``config.region`` for one inside ``config``."""
    env: tuple[str, ...] = ()
    """Environment variables that give it, first set wins."""
    secret: bool = False
    """Never printed (connection strings)."""

    @property
    def flag(self) -> str:
        """The command-line flag."""
        return "--" + self.name.replace("_", "-")

    def ways(self, *, environment: bool = True) -> str:
        """Every way to give it, for a line that says it is missing or wrong, e.g. ``--topic,
        --stack DIR (terraform output topic_id) or --config FILE (queue_name)`` (then its
        ``$VAR``s, unless told not to)."""
        ways = [self.flag]
        ways += [f"--stack DIR (terraform output {self.output})"] if self.output else []
        ways += [f"--config FILE ({self.config})"] if self.config else []
        ways += [f"${name}" for name in self.env] if environment else []
        return ways[0] if len(ways) == 1 else ", ".join(ways[:-1]) + f" or {ways[-1]}"


@dataclass(frozen=True)
class Target:
    """The resolved settings of one job on one cloud, and where each came from."""

    cloud: str
    values: Mapping[str, str]
    sources: Mapping[str, str] = field(default_factory=dict)
    job: str | None = None
    """The config file's ``job_id``, when one was read."""

    def get(self, name: str) -> str | None:
        """The setting's value, or None when nothing gave it."""
        return self.values.get(name) or None

    def require(self, name: str, settings: Sequence[Setting], what: str) -> str:
        """The setting's value, or a ConfigError that says every way to give it."""
        value = self.get(name)
        if value:
            return value
        setting = next((s for s in settings if s.name == name), None) or Setting(name, "")
        raise ConfigError(f"{what} needs {name.replace('_', ' ')}: give {setting.ways()}")


def add_target_arguments(parser: argparse.ArgumentParser, settings: Sequence[Setting]) -> None:
    """``--stack``, ``--config`` and one flag per setting."""
    parser.add_argument(
        "--stack",
        metavar="DIR",
        help="read the settings from this terraform stack's outputs "
        "(default: infra/CLOUD when it has state here)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="read the settings from a cloud config file (provider, job_id, queue_name, "
        "result_bucket, result_prefix, config.*)",
    )
    for setting in settings:
        parser.add_argument(setting.flag, dest=setting.name, metavar="VALUE", help=setting.help)


def resolve_target(
    cloud: str,
    settings: Sequence[Setting],
    args: argparse.Namespace,
    *,
    remembered: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Target:
    """Every setting's value from flags, the job's manifest (``remembered``), the stack, the
    config file and the environment, in that order."""
    remembered = remembered or {}
    environ = os.environ if environ is None else environ
    stack_dir = _stack_dir(cloud, getattr(args, "stack", None), cwd or Path.cwd(), remembered)
    outputs = terraform_outputs(stack_dir) if stack_dir is not None else {}
    config = load_cloud_config(args.config, cloud) if getattr(args, "config", None) else {}
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for setting in settings:
        candidates = [
            (getattr(args, setting.name, None), setting.flag),
            (remembered.get(setting.name), "the job's manifest"),
            (outputs.get(setting.output) if setting.output else None, f"stack {stack_dir}"),
            (_config_value(config, setting.config), f"config {getattr(args, 'config', '')}"),
            *((environ.get(name), f"${name}") for name in setting.env),
        ]
        for value, source in candidates:
            if value not in (None, ""):
                values[setting.name] = str(value)
                sources[setting.name] = source
                break
    job = config.get("job_id")
    return Target(cloud, values, sources, str(job) if job else None)


def _stack_dir(
    cloud: str, given: str | None, cwd: Path, remembered: Mapping[str, str]
) -> Path | None:
    if given:
        path = Path(given)
        if not path.is_dir():
            raise ConfigError(f"--stack {given}: no such directory")
        return path
    if remembered:  # the job's own settings need no stack
        return None
    default = cwd / "infra" / cloud
    if (default / "terraform.tfstate").is_file():
        return default
    return None


def terraform_outputs(stack: Path) -> dict[str, Any]:
    """``terraform output -json`` of ``stack`` as {name: value}."""
    terraform = os.environ.get("TERRAFORM_BIN") or shutil.which("terraform")
    if terraform is None:
        raise ConfigError(
            f"--stack {stack} needs the terraform command on PATH (or give the settings as flags)"
        )
    try:
        done = subprocess.run(
            [terraform, f"-chdir={stack}", "output", "-json", "-no-color"],
            capture_output=True,
            text=True,
            timeout=TERRAFORM_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(f"terraform output in {stack} took over 60 s") from None
    first_error = (done.stderr.strip().splitlines() or ["no output"])[0]
    if done.returncode != 0:
        raise ConfigError(f"terraform output in {stack} failed: {first_error}")
    try:
        document = json.loads(done.stdout or "{}")
    except ValueError:
        raise ConfigError(f"terraform output in {stack} did not print JSON") from None
    if not document:
        raise ConfigError(f"the stack in {stack} has no outputs: run terraform apply there first")
    return {name: entry.get("value") for name, entry in document.items()}


def load_cloud_config(path: str, cloud: str | None = None) -> dict[str, Any]:
    """A cloud config file as a dict; its provider must be ``cloud`` when both name one."""
    document = read_config_document(path)
    if not isinstance(document, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    provider = document.get("provider")
    if cloud and provider is not None and provider != cloud:
        raise ConfigError(f"config file {path} is for provider {provider!r}, not {cloud!r}")
    return document


def config_provider(path: str) -> str:
    """The ``provider`` a cloud config file names (for ``adder submit --config FILE``)."""
    provider = load_cloud_config(path).get("provider")
    if not isinstance(provider, str) or not provider:
        raise ConfigError(
            f"config file {path} names no provider: name the cloud, e.g. adder submit aws"
        )
    return provider


def _config_value(config: Mapping[str, Any], key: str | None) -> Any:
    if not key or not config:
        return None
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
