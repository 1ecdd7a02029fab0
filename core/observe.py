"""The fields of the one structured log line every entry point writes per message."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.jsontext import encodable

if TYPE_CHECKING:
    from core.outcome import Outcome

RETRY = "retry"
"""The ``outcome`` value of a transient failure: the message goes back to the queue."""


def outcome_fields(
    outcome: Outcome | None,
    *,
    message_id: str | None,
    seconds: float,
    error: BaseException | None = None,
    **platform: object,
) -> dict[str, object]:
    """Fields describing how one message ended.

    ``outcome`` is None for a transient failure, whose ``error`` is then reported. ``platform``
    adds the platform's own identifiers (delivery count, receive count, ...).
    """
    fields: dict[str, object] = {
        "task_id": outcome.task_id if outcome else getattr(error, "task_id", None),
        "message_id": message_id,
        "outcome": outcome.kind.value if outcome else RETRY,
        "duration_ms": round(seconds * 1000, 3),
    }
    if outcome is not None and outcome.code is not None:
        fields["error_code"] = outcome.code
        fields["reason"] = encodable(outcome.reason or "")
        fields["record"] = f"{outcome.name}.err"
    if error is not None:
        fields["error_type"] = type(error).__name__
        fields["reason"] = encodable(str(error))
    fields.update(platform)
    return fields
