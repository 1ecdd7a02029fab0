"""Reading a function's settings: the same clear failure on every cloud when one is missing."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping


def setting(name: str, environ: Mapping[str, str] | None = None, default: str = "") -> str:
    """The setting ``name`` (from ``environ``, default the process environment), stripped."""
    env = os.environ if environ is None else environ
    return env.get(name, default).strip()


def required_setting(name: str, what: str, environ: Mapping[str, str] | None = None) -> str:
    """The setting ``name``; a :class:`ConfigError` naming it when it is missing or blank.

    ``what`` says what it holds (``"the results bucket"``); the stacks in infra/ set every
    required setting, so a missing one means a deployment made some other way.
    """
    value = setting(name, environ)
    if not value:
        raise ConfigError(f"{name} is not set: the function needs {what} (the stack sets it)")
    return value
