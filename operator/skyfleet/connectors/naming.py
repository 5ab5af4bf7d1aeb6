"""VM names in the cloud: unique per installation and namespace.

An Instance is named ``<deployment>-<group>-<n>``, unique in its namespace only. Clouds where a
VM name is unique per account (GCE per zone, Linode, Azure per resource group) would let a
second namespace -- or a second cluster sharing the account -- collide with the first: Azure's
create-or-update PUT takes the other tenant's VM over, GCE and Linode refuse the create. So the
name a VM gets in the cloud carries a short digest of the cluster id and namespace:
``<instance>-<scope>``, where ``scope`` is six base32 characters of SHA-256(cluster id,
namespace). The Instance keeps its own name; its ``providerId`` is what links the two.

Where a provider's rules would change the name (too long, must start with a letter, characters
it does not allow), the changed part is replaced by a digest of the whole original, so two
different Instances never end up with one cloud name.
"""

from __future__ import annotations

import base64
import hashlib
import re

__all__ = ["scope_digest", "vm_name"]

_SCOPE_LENGTH = 6
_NOT_ALLOWED = re.compile(r"[^a-z0-9-]+")
_DASHES = re.compile(r"-{2,}")


def _digest(*parts: str, length: int) -> str:
    raw = hashlib.sha256("\0".join(parts).encode()).digest()
    return base64.b32encode(raw).decode().lower()[:length]


def scope_digest(cluster_id: str, namespace: str) -> str:
    """Six characters that tell installations and namespaces apart (30 bits)."""
    return _digest("scope", cluster_id, namespace, length=_SCOPE_LENGTH)


def vm_name(
    instance: str,
    *,
    cluster_id: str,
    namespace: str,
    max_length: int = 63,
    letter_first: bool = False,
) -> str:
    """The cloud name of Instance ``instance``: lowercase letters, digits and single dashes,
    starting and ending with a letter or digit (with ``letter_first``, a letter), at most
    ``max_length`` characters, and different for every (cluster id, namespace, instance)."""
    suffix = "-" + scope_digest(cluster_id, namespace)
    base = _DASHES.sub("-", _NOT_ALLOWED.sub("-", instance.lower())).strip("-")
    if letter_first and not base[:1].isalpha():
        base = f"vm-{base}" if base else "vm"
    changed = base != instance
    room = max_length - len(suffix)
    if changed or len(base) > room:
        # Anything the rules changed could collide with another Instance's name: a digest of
        # the original name makes the result unique again.
        tag = "-" + _digest("name", instance, length=8)
        base = base[: room - len(tag)].rstrip("-") + tag
    return base + suffix
