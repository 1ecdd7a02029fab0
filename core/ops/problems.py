"""The one wording of a cloud failure, the same on every cloud.

Each cloud's adapter sorts its SDK's exception into a :class:`Problem` (that part is
cloud-specific) and lets :func:`problem_error` say it: what was touched, what went wrong and
how to fix it, in one line. ConfigError for what no retry can fix (exit 2),
CloudUnavailableError for what another try may fix.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from core.errors import CloudUnavailableError, ConfigError

MAX_DETAIL = 200


class Problem(enum.Enum):
    """What kind of failure an SDK exception is."""

    NO_CREDENTIALS = "no credentials, or credentials refused"
    MISSING = "the queue, topic, bucket or container does not exist"
    DENIED = "the credentials lack a permission"
    UNREACHABLE = "the endpoint never answered (wrong address, no network)"
    REFUSED = "the service refused the request as given"
    RETRY = "another try may work (throttled, 5xx, a dropped connection)"


@dataclass(frozen=True)
class Resource:
    """What a call touched, as error lines name it."""

    what: str
    """E.g. ``SQS queue https://...``, ``Pub/Sub topic projects/p/topics/t``."""
    check: str
    """How to point at the right one, e.g. ``check --queue-url (or the stack's queue_url)``."""
    needs: str
    """The permission the call needs, e.g. ``sqs:SendMessage on it``."""


def one_line(text: object, limit: int = MAX_DETAIL) -> str:
    """``text`` on one line, whitespace collapsed, cut at ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def problem_error(
    problem: Problem, resource: Resource, detail: object = "", *, login: str = ""
) -> ConfigError | CloudUnavailableError:
    """The project error for ``problem`` on ``resource``; ``login`` says how to get
    credentials (for NO_CREDENTIALS). ``detail`` (the service's own words) is never shown for
    credential problems: it can quote tokens or key material."""
    said = f" ({one_line(detail)})" if str(detail).strip() else ""
    if problem is Problem.NO_CREDENTIALS:
        return ConfigError(f"no usable credentials for {resource.what}: {login}")
    if problem is Problem.MISSING:
        return ConfigError(f"{resource.what} does not exist{said}: {resource.check}")
    if problem is Problem.DENIED:
        return ConfigError(
            f"access denied to {resource.what}{said}: the caller needs {resource.needs}"
        )
    if problem is Problem.UNREACHABLE:
        return ConfigError(f"cannot reach {resource.what}{said}: {resource.check}, and the network")
    if problem is Problem.REFUSED:
        return ConfigError(f"{resource.what} refused the request{said}")
    return CloudUnavailableError(f"{resource.what}: try again later{said}")
