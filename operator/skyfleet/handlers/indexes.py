"""In-memory indexes kopf keeps current from its watches: decisions read them, not the API.

Values are compact views, not bodies, so memory grows with what decisions need.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf

from skyfleet.api.cloudcredential import CloudCredential
from skyfleet.api.common import ConditionStatus
from skyfleet.api.deployment import Deployment
from skyfleet.api.image import Image
from skyfleet.api.instance import Instance, InstanceStatus
from skyfleet.handlers.context import GROUP, VERSION
from skyfleet.reconcile.conditions import find_condition
from skyfleet.reconcile.views import CredentialView, InstanceView, instance_view


@dataclass(frozen=True, slots=True)
class ObservedInstance:
    """What the VM observer needs about one Instance.

    The status is kept as read (the ``old`` of a status write) and validated when a pass needs
    the model: a validated InstanceStatus per Instance cost about 4 KiB more, for every Instance
    the operator watches (bench/scale.py --tracemalloc), and validating it again costs about 15 us.
    """

    name: str
    uid: str
    namespace: str
    deployment: str
    region: str | None
    status_raw: dict[str, Any] | None
    deleting: bool
    created: datetime | None = None
    generation: int | None = None

    @property
    def phase(self) -> str | None:
        phase = (self.status_raw or {}).get("phase")
        return phase if isinstance(phase, str) else None

    def status(self) -> InstanceStatus | None:
        """The status as the model (validated anew on every call: keep the result, not this)."""
        return InstanceStatus.model_validate(self.status_raw) if self.status_raw else None


@kopf.index(GROUP, VERSION, "instances")
def instances_by_deployment(*, namespace: str | None, body: kopf.Body, **_: Any) -> dict[tuple[str, str], InstanceView]:
    inst = Instance.model_validate(dict(body))
    return {(namespace or "", inst.spec.deployment): instance_view(inst)}


@kopf.index(GROUP, VERSION, "instances")
def instances_by_credential(
    *, namespace: str | None, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], ObservedInstance]:
    inst = Instance.model_validate(dict(body))
    raw = body.get("status")
    return {
        (namespace or "", inst.spec.credential): ObservedInstance(
            name=inst.metadata.name,
            uid=inst.metadata.uid,
            namespace=namespace or "",
            deployment=inst.spec.deployment,
            region=inst.spec.region,
            status_raw=dict(raw) if raw else None,
            deleting=inst.metadata.deletion_timestamp is not None,
            created=inst.metadata.creation_timestamp,
            generation=inst.metadata.generation or None,
        )
    }


@kopf.index(GROUP, VERSION, "instances")
def instance_uids(*, namespace: str | None, uid: str, **_: Any) -> dict[str, str]:
    # Every Instance counts, also one being orphaned: until its VM is released (untagged) and
    # the Instance gone, the VM is still ours and must never look like an orphan.
    return {namespace or "": uid}


@kopf.index(GROUP, VERSION, "cloudcredentials")
def credentials(
    *, namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], CredentialView]:
    return {(namespace or "", name): credential_view(name, body)}


def credential_view(name: str, body: Mapping[str, Any]) -> CredentialView:
    """What placement reads of a credential (also what wakes Deployments when it changes)."""
    cred = CloudCredential.model_validate(dict(body))
    ready = find_condition(cred.status.conditions if cred.status else [], "Ready")
    return CredentialView(
        name=name,
        provider=cred.spec.provider,
        region=cred.spec.region,
        ready=ready is not None and ready.status == ConditionStatus.TRUE,
        max_instances=cred.spec.limits.max_instances if cred.spec.limits else None,
        pending=ready is None or ready.status == ConditionStatus.UNKNOWN,
    )


@kopf.index(GROUP, VERSION, "images")
def images(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], Image]:
    return {(namespace or "", name): Image.model_validate(dict(body))}


@kopf.index(GROUP, VERSION, "deployments")
def deployments(*, namespace: str | None, body: kopf.Body, **_: Any) -> dict[str, Deployment]:
    return {namespace or "": Deployment.model_validate(dict(body))}
