"""The local runner's configuration file: the seed's three shapes, checked with clear errors.

Shapes accepted::

    {"sample_task": {"id": "test-task", "data": {"num1": 42, "num2": 58}}}
    {"provider": "aws", "job_id": ..., "queue_name": ..., "result_bucket": ...,
     "result_prefix": ..., "config": {...}, "sample_task": {...}}
    {"sample_task": {"task_id": "test-task", "num1": 42, "num2": 58}}

Cloud fields are accepted and ignored by the local runner. Credentials found anywhere in the
file produce a warning: keys belong to the provider's default credential chain, not a file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.clouds import CLOUDS
from core.errors import ConfigError, InvalidTaskError
from core.task import loads_exact

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

PROVIDERS = ("local", *CLOUDS)
_STRING_FIELDS = ("provider", "job_id", "queue_name", "result_bucket", "result_prefix")
_KNOWN_FIELDS = frozenset({*_STRING_FIELDS, "config", "sample_task"})
_SECRET_WORDS = (
    "access_key",
    "accesskey",
    "secret",
    "session_token",
    "password",
    "private_key",
    "account_key",
    "accountkey",
    "connection_string",
    "connectionstring",
    "sas_token",
    "credentials",
    "api_key",
)


@dataclass(frozen=True)
class RunnerConfig:
    """What the local runner takes from a config file."""

    path: Path
    sample_task: Mapping[str, Any] | None
    provider: str | None = None
    warnings: list[str] = field(default_factory=list)


def load_config(path: str | Path) -> RunnerConfig:
    """Read and check a config file; raise :class:`ConfigError` with one clear line if unusable."""
    path = Path(path)
    return parse_config(read_config_document(path), path)


def read_config_document(path: str | Path) -> object:
    """A config file's JSON document (exact numbers; a UTF-8 BOM allowed), or a one-line
    :class:`ConfigError`. The local runner and the cloud commands read config files with it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not JSON
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory, not a file: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        return loads_exact(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError, InvalidTaskError) as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None


def parse_config(document: object, path: Path) -> RunnerConfig:
    """Check a decoded config document (see the module docstring for the shapes)."""
    if not isinstance(document, dict):
        raise ConfigError(f"config file {path} must hold a JSON object, not {_json_kind(document)}")
    for name in _STRING_FIELDS:
        if name in document and not isinstance(document[name], str):
            raise ConfigError(
                f"config file {path}: '{name}' must be a string, not {_json_kind(document[name])}"
            )
    provider = document.get("provider")
    if provider is not None and provider not in PROVIDERS:
        raise ConfigError(
            f"config file {path}: unknown provider {provider!r} "
            f"(expected one of {', '.join(PROVIDERS)})"
        )
    if "config" in document and not isinstance(document["config"], dict):
        raise ConfigError(
            f"config file {path}: 'config' must be an object, not {_json_kind(document['config'])}"
        )
    sample = document.get("sample_task")
    if sample is not None and not isinstance(sample, dict):
        raise ConfigError(
            f"config file {path}: 'sample_task' must be an object, not {_json_kind(sample)}"
        )
    warnings = [
        f"config file {path}: ignoring unknown field '{name}'"
        for name in sorted(set(document) - _KNOWN_FIELDS)
    ]
    cloud = CLOUDS.get(str(provider))
    chain = cloud.credential_chain if cloud else "the provider's default credential chain"
    warnings += [
        f"config file {path} holds credentials at '{where}': remove them and use {chain}"
        for where in _secret_paths(document)
    ]
    return RunnerConfig(path=path, sample_task=sample, provider=provider, warnings=warnings)


def _secret_paths(node: object, where: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}" if where else str(key)
            lowered = str(key).lower().replace("-", "_")
            if any(word in lowered for word in _SECRET_WORDS) and value not in (None, "", {}):
                yield here
            else:
                yield from _secret_paths(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _secret_paths(value, f"{where}[{index}]")


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)) or type(value).__name__ == "Decimal":
        return "a number"
    if isinstance(value, list):
        return "an array"
    return "an object"
