"""The project's exceptions: one root, ``Error`` suffixes, one meaning each.

``InvalidTaskError`` is permanent (the task itself is bad: record it, acknowledge the message).
``StoreWriteError`` is transient (the results store failed: let the queue deliver it again).
"""

from __future__ import annotations


class AdderError(Exception):
    """Root of every exception this project raises on purpose."""


class InvalidTaskError(AdderError):
    """A task that can never succeed; retrying it would give the same answer.

    ``code`` is a stable machine-readable reason (documented in the README), ``message`` the
    human-readable one, and ``task_id`` the task's id when the message carried a valid one.
    """

    def __init__(self, code: str, message: str, task_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.task_id = task_id


class StoreWriteError(AdderError):
    """The results store did not take a write; the same task may succeed on a later try.

    ``task_id`` is the id of the task whose write failed, when the pipeline knew it: set by
    :func:`core.pipeline.process_message` so that a retry's log line names the task.
    """

    task_id: str | None = None


class WorkerDiedError(AdderError):
    """A worker process of the local runner died (killed, out of memory): the run stops."""


class ConfigError(AdderError):
    """The local runner's configuration or input file is unusable (exit code 2)."""


class ProviderUnavailableError(AdderError):
    """A cloud command was asked for but its SDK is not installed."""


class CloudUnavailableError(AdderError):
    """A cloud call failed in a way another try may fix (throttled, 5xx, connection reset)."""
