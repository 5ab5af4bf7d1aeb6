"""In-memory indexes kopf keeps current from its watches: decisions read them, not the API.

Values are compact views, not bodies, so memory grows with what decisions need.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

import kopf

from skyfleet.api.cloudcredential import CloudCredential
from skyfleet.api.common import ConditionStatus
from skyfleet.api.deployment import Deployment
from skyfleet.api.image import Image
from skyfleet.api.instance import Instance, InstanceStatus
from skyfleet.handlers.context import GROUP, VERSION
from skyfleet.reconcile.conditions import find_condition
from skyfleet.reconcile.views import (
    CredentialView,
    DeploymentView,
    InstanceView,
    deployment_view,
    instance_view,
    interned,
)

F = TypeVar("F", bound=Callable[..., Any])


def inline_index(plural: str) -> Callable[[F], F]:
    """Register a (synchronous, cheap) function as kopf's index of ``plural`` that runs on the
    event loop.

    kopf runs a synchronous handler in its thread pool (``--workers`` threads): a hand-off, a
    context copy and a shielded future for every index of every watch event, contending for the
    GIL with the loop. Instances have four indexes; a restart at 10,000 Instances made 40,000
    such hand-offs before anything else could run. The function itself stays synchronous (and
    callable as it is); the index keeps its name, which is how handlers ask for it.
    """

    def register(fn: F) -> F:
        async def handler(**kwargs: Any) -> Any:
            return fn(**kwargs)

        handler.__name__ = handler.__qualname__ = fn.__name__
        handler.__doc__ = fn.__doc__
        kopf.index(GROUP, VERSION, plural, id=fn.__name__)(handler)
        return fn

    return register


@dataclass(frozen=True, slots=True)
class ObservedInstance:
    """What the VM observer needs about one Instance.

    The status is kept as read (the ``old`` of a status write), as its compact JSON text: the
    decoded tree (conditions, addresses: some 50 dicts, lists and strings) cost about 3.5 KiB
    per Instance the operator watches, the text about 600 bytes (bench/scale.py --tracemalloc).
    A pass decodes and validates it for the Instances it compares with the listing, about 30 us
    each. Repeated strings (namespace, Deployment, region, phase) are interned: 10,000 Instances
    share a handful of them.
    """

    name: str
    uid: str
    namespace: str
    deployment: str
    region: str | None
    status_json: str | None
    deleting: bool
    created: datetime | None = None
    generation: int | None = None
    phase: str | None = None

    @property
    def status_raw(self) -> dict[str, Any] | None:
        """The status as read (decoded anew on every call)."""
        raw = json.loads(self.status_json) if self.status_json else None
        return raw if isinstance(raw, dict) else None

    def status(self) -> InstanceStatus | None:
        """The status as the model (validated anew on every call: keep the result, not this)."""
        return InstanceStatus.model_validate_json(self.status_json) if self.status_json else None


def observed_instance(namespace: str, body: Mapping[str, Any]) -> ObservedInstance:
    """The observer's view of an Instance body (see ObservedInstance)."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    raw = body.get("status") or None
    phase = raw.get("phase") if raw else None
    created = meta.get("creationTimestamp")
    return ObservedInstance(
        name=meta.get("name") or "",
        uid=meta.get("uid") or "",
        namespace=interned(namespace) or "",
        deployment=interned(spec.get("deployment")) or "",
        region=interned(spec.get("region")),
        status_json=_compact(raw) if raw else None,
        deleting=meta.get("deletionTimestamp") is not None,
        created=_timestamp(created) if isinstance(created, str) else None,
        generation=meta.get("generation") or None,
        phase=interned(phase) if isinstance(phase, str) else None,
    )


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _timestamp(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def instances_by_deployment(*, namespace: str | None, body: kopf.Body, **_: Any) -> dict[tuple[str, str], InstanceView]:
    inst = Instance.model_validate(dict(body))
    return {(namespace or "", inst.spec.deployment): instance_view(inst)}


def instances_by_credential(
    *, namespace: str | None, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], ObservedInstance]:
    # Read from the body as it is: a second validation of the whole Instance (the first is
    # instances_by_deployment's) would cost CPU for every event and a restart's whole listing.
    credential = (body.get("spec") or {}).get("credential") or ""
    return {(namespace or "", credential): observed_instance(namespace or "", body)}


def instance_uids(*, namespace: str | None, uid: str, **_: Any) -> dict[str, str]:
    # Every Instance counts, also one being orphaned: until its VM is released (untagged) and
    # the Instance gone, the VM is still ours and must never look like an orphan.
    return {namespace or "": uid}


# The kinds of key of the one Instance index (``instances``).
BY_DEPLOYMENT, BY_CREDENTIAL, UIDS = "deployment", "credential", "uid"


@inline_index("instances")
def instances(*, namespace: str | None, uid: str, body: kopf.Body, **_: Any) -> dict[tuple[str, ...], Any]:
    """Every Instance under three kinds of key: its Deployment (the views a Deployment's plan
    reads), its credential (what the observer compares with the cloud; its size is the count
    placement reads) and its namespace (UIDs, for the orphan sweep). Read them with
    ``by_deployment``, ``by_credential`` and ``uids``.

    One index, not three: kopf runs each index of each watch event through its handler
    machinery (about half of what an Instance event cost at a restart, cProfile at 300) and
    keeps a reverse entry per index per object.
    """
    ns = namespace or ""
    keyed: dict[tuple[str, ...], Any] = {}
    for kind, part in (
        (BY_DEPLOYMENT, instances_by_deployment(namespace=ns, body=body)),
        (BY_CREDENTIAL, instances_by_credential(namespace=ns, body=body)),
        (UIDS, instance_uids(namespace=ns, uid=uid)),
    ):
        for key, value in part.items():
            keyed[(kind, *key) if isinstance(key, tuple) else (kind, key)] = value
    return keyed


class Lookup(Protocol):
    """What handlers read of an index: its values under one key."""

    def get(self, key: Any, default: Any = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class Keyed:
    """One kind of key of the ``instances`` index, read as an index of its own."""

    index: Mapping[Any, Any]
    kind: str

    def get(self, key: Any, default: Any = None) -> Any:
        return self.index.get((self.kind, *key) if isinstance(key, tuple) else (self.kind, key), default)


def by_deployment(kwargs: Mapping[str, Any]) -> Keyed:
    """InstanceViews by (namespace, Deployment), from a handler's kwargs."""
    return Keyed(kwargs["instances"], BY_DEPLOYMENT)


def by_credential(kwargs: Mapping[str, Any]) -> Keyed:
    """ObservedInstances by (namespace, credential), from a handler's kwargs."""
    return Keyed(kwargs["instances"], BY_CREDENTIAL)


def uids(kwargs: Mapping[str, Any]) -> Keyed:
    """Instance UIDs by namespace, from a handler's kwargs."""
    return Keyed(kwargs["instances"], UIDS)


@inline_index("cloudcredentials")
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


@inline_index("images")
def images(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], Image]:
    return {(namespace or "", name): Image.model_validate(dict(body))}


@inline_index("deployments")
def deployments(*, namespace: str | None, body: kopf.Body, **_: Any) -> dict[str, DeploymentView]:
    """Every Deployment of a namespace as the view Images, bakes, credential wake-ups and
    ScalingPolicies read (DeploymentView), not the validated model."""
    # Its status is not read: not validated either (the Deployment's loop writes it often).
    spec_only = {k: v for k, v in body.items() if k != "status"}
    return {namespace or "": deployment_view(Deployment.model_validate(spec_only))}
