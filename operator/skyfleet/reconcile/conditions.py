"""Conditions that only move their timestamp when their status moves.

GitOps tools diff whole objects; a ``lastTransitionTime`` refreshed on every pass would make a
converged object look changed forever. Reason and message may change without a transition.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from skyfleet.api.common import Condition, ConditionStatus
from skyfleet.reconcile.messages import safe_message

__all__ = ["find_condition", "is_true", "set_condition"]


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    cond = find_condition(conditions, type_)
    return cond is not None and cond.status == ConditionStatus.TRUE


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: bool | ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None = None,
) -> list[Condition]:
    """Return ``conditions`` with ``type_`` set; order is kept, a new type goes last.

    The message is made safe here (bounded, one line, no encoded payloads), so no caller can
    write a status the schema refuses or copy a response body into it.
    """
    message = safe_message(message)
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    old = find_condition(conditions, type_)
    transition = now if old is None or old.status != status else old.last_transition_time
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=transition,
    )
    out = [new if c.type == type_ else c for c in conditions]
    if old is None:
        out.append(new)
    return out
