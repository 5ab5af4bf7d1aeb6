"""An Instance's status from what the cloud says, and what a failed cloud call means for it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from skyfleet.api.common import MEDIUM, SHORT
from skyfleet.api.instance import Addresses, InstanceStatus
from skyfleet.contract import CloudNode, NodeState, errors
from skyfleet.reconcile.conditions import set_condition

__all__ = [
    "CREATE_FAILURES",
    "FALLBACK_REASONS",
    "CreateFailure",
    "classify_create_error",
    "lost_for_good",
    "never_called_the_cloud",
    "observed_status",
    "unseen_vm_may_exist",
    "user_data_too_large",
]

_PHASES = {
    NodeState.PENDING: ("Pending", False, "VMPending", "the VM is starting"),
    NodeState.RUNNING: ("Running", True, "VMRunning", "the VM is running"),
    NodeState.STOPPED: ("Stopped", False, "VMStopped", "the VM was stopped outside Skyfleet"),
    NodeState.TERMINATED: ("Lost", False, "VMGone", "the VM was terminated outside Skyfleet"),
    NodeState.UNKNOWN: ("Pending", False, "VMStateUnknown", "the cloud reports an unknown state"),
}


def observed_status(
    current: InstanceStatus | None,
    node: CloudNode | None,
    *,
    provider: str,
    now: datetime,
    generation: int | None = None,
) -> InstanceStatus:
    """Status after an observation; a node of None means the cloud no longer lists the VM."""
    status = current.model_copy(deep=True) if current else InstanceStatus()
    if node is None:
        phase, ready, reason, message = _PHASES[NodeState.TERMINATED]
        message = f"VM {status.provider_id} is no longer listed by the cloud"
    else:
        phase, ready, reason, message = _PHASES[node.state]
        status.provider_id = node.provider_id
        status.provider = provider
        # What the cloud reports is written only where it fits the status schema: one value over
        # a limit would make the API server refuse the whole status, provider id included.
        public = [a for a in node.public_ips if _fits(a, _ADDRESS)][:_ADDRESSES]
        private = [a for a in node.private_ips if _fits(a, _ADDRESS)][:_ADDRESSES]
        status.addresses = Addresses(public=public or None, private=private or None)
        status.address = (public or private)[0] if public or private else None
        status.instance_type = _fitting(node.size_id, SHORT) or status.instance_type
        status.image_id = _fitting(node.image_id, MEDIUM) or status.image_id
    status.phase = phase
    status.observed_generation = generation
    status.message = None if ready else message
    status.conditions = set_condition(
        status.conditions, "Ready", ready, reason, message, now=now, generation=generation
    )
    return status


_ADDRESS, _ADDRESSES = 64, 16  # as Addresses' schema


def _fits(value: str, limit: int) -> bool:
    return len(value) <= limit


def _fitting(value: str | None, limit: int) -> str | None:
    return value if value is not None and _fits(value, limit) else None


def lost_for_good(first_missed: float, now: float, grace: float) -> bool:
    """Whether a VM that listings first missed at ``first_missed`` has been missing long enough
    to be called gone (the caller still confirms with a direct look)."""
    return now - first_missed >= grace


def unseen_vm_may_exist(phase: str | None, *, has_provider_id: bool) -> bool:
    """On deletion, when the cloud shows no VM at all: may one still turn up?

    A VM launched a moment ago can be invisible to listings and lookups for a while (EC2
    answers InvalidInstanceID.NotFound), so a recorded VM that is not seen, or a create that
    was in flight, is waited for. A VM already confirmed gone (Lost), a definitive failure, or
    an Instance that never called the cloud has nothing to wait for.
    """
    if phase == "Creating":
        return True
    return has_provider_id and phase not in ("Lost", "Failed")


def create_settled(status: Mapping[str, Any] | None) -> bool:
    """The create handler has nothing left to do: the VM is recorded, or the Instance failed
    for good. (On restart only the others need the handler.)"""
    status = status or {}
    return bool(status.get("providerId")) or status.get("phase") == "Failed"


def never_called_the_cloud(phase: str | None, *, has_provider_id: bool) -> bool:
    """On deletion: the Instance never got as far as calling the cloud to create its VM.

    Every create attempt first records phase Creating; an Instance still without a phase or
    Pending (waiting for its credential or region) has no VM anywhere, so deleting it needs no
    cloud call, which matters when the cloud cannot be reached there at all.
    """
    return not has_provider_id and phase in (None, "Pending")


def user_data_unsupported(user_data: str | None, accepted: bool) -> str:
    """Why a provider that takes no user data cannot boot this VM as asked, or "" when it can."""
    if not user_data or accepted:
        return ""
    return "the provider takes no user data (cloud-init), and this VM has some (image recipe or userData)"


def user_data_too_large(user_data: str | None, limit: int | None) -> str:
    """Why the provider would refuse this user data (its size in bytes), or "" when it fits."""
    if not user_data or limit is None:
        return ""
    size = len(user_data.encode())
    if size <= limit:
        return ""
    return f"user data (image recipe plus userData) is {size} bytes; the provider accepts at most {limit}"


@dataclass(frozen=True)
class CreateFailure:
    reason: str
    # Retry the same create later (throttling, 5xx) instead of failing the Instance.
    retry: bool


# What a failed create means for its Instance, first match wins: (error class, Ready reason,
# retry the same create). Whether another placement target may succeed is the error class's own
# ``fallback`` (contract/errors.py), stated there once: the connector's retries read it, and
# FALLBACK_REASONS below, which the Deployment reads from a failed Instance's reason, is made
# from it. Quota and capacity answers fail the Instance (no retry) so that its replacement can
# go to the next target.
CREATE_FAILURES: tuple[tuple[type[errors.ConnectorError], str, bool], ...] = (
    (errors.QuotaExceeded, "QuotaExceeded", False),
    (errors.CapacityUnavailable, "CapacityUnavailable", False),
    (errors.Throttled, "CloudUnavailable", True),
    (errors.Transient, "CloudUnavailable", True),
    (errors.InvalidCredentials, "InvalidCredentials", True),
    (errors.NotFound, "ImageNotFound", False),
    (errors.InvalidRequest, "InvalidRequest", False),
    (errors.ConnectorError, "ProvisioningFailed", False),
)
# Instance failure reasons after which the next placement target may succeed.
FALLBACK_REASONS = frozenset(reason for kind, reason, _ in CREATE_FAILURES if kind.fallback)


def classify_create_error(error: BaseException) -> CreateFailure:
    for kind, reason, retry in CREATE_FAILURES:
        if isinstance(error, kind):
            return CreateFailure(reason, retry=retry)
    # Not from the connector's taxonomy (a bug, or a cloud answer nobody mapped): try again later.
    return CreateFailure("CloudUnavailable", retry=True)
