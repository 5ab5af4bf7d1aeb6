"""What kopf keeps on our objects between passes, kept small whatever the object holds.

kopf's stock diff-base storage copies the object's whole essence (spec, labels, annotations)
into one annotation as ASCII-escaped JSON. Annotations total at most 256 KiB per object, and a
tenant's Deployment admitted by the schema (user data, non-ASCII text that escapes to 6-12
bytes a character) can exceed that: every patch kopf makes to it then fails with 422 forever,
finalizers included. Here the annotation holds a digest per field instead, a few hundred bytes
for any object. kopf only needs the old essence to tell whether, and which, fields changed:
fields whose digest still matches are rebuilt from the object itself, changed ones stand in as
a marker value, so change detection (and ``field=`` filters of update handlers) work as
before; only the old *value* of a changed field is unknown, which no handler here reads.

kopf writes that annotation once an object's create or update handlers are done, one PATCH
(and one more watch event) per object. Kinds listed in ``settled`` go without it: for them kopf
needs the old essence only to tell a new object from a handled one, and the object says that
itself (an Instance is handled once its status records its VM or its failure; a Deployment or
Image has no create or update handler at all). Their diff-base is the object as it is once it
says so: no cause to act on, no annotation written (an annotation written before is ignored).
Between a create handler's success and the watch event that shows its status, the object's UID
stands in (in memory), so a stale event in between does not run the create again.

kopf's progress records (one annotation per handler in progress) carry the last error
message; it is bounded here, so a long error can never make the object unwritable either.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

import kopf

from skyfleet.reconcile.messages import safe_message

__all__ = ["MARKER", "BoundedProgressStorage", "DigestDiffBaseStorage", "digests", "rebuild"]

FORMAT = "skyfleet.io/digests-v2"
# The annotation kopf adds to every object it keeps state on (``{prefix}/kopf-managed``). An
# object created with it needs no patch from kopf when its handlers finish at the first try.
MARKER = ("skyfleet.io/kopf-managed", "yes")
# Objects whose create handler succeeded but whose status the watch has not shown yet: at most
# this many remembered (a handful at any moment; the bound is for objects deleted meanwhile).
_HANDLED_MAX = 10_000
# Fields below these paths are digested one by one (so a field filter such as spec.region
# matches exactly); deeper structure is digested whole.
_DEPTH = 3
# Above this many bytes the per-field map itself would grow with the object (a thousand
# labels): then whole top-level sections are digested instead.
_MAX_ENCODED = 4096


def _digest(value: Any) -> str:
    material = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def _leaves(value: Any, path: tuple[str, ...], depth: int) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, Mapping) and value and depth > 0:
        for key, sub in value.items():
            yield from _leaves(sub, (*path, str(key)), depth - 1)
    else:
        yield path, value


def digests(essence: Mapping[str, Any]) -> list[list[Any]]:
    """``[[["spec", "region"], "<digest>"], ...]`` for an essence; bounded in size whatever it
    holds. Paths are lists, not dotted strings: label and annotation keys contain dots."""
    for depth in (_DEPTH, 1):
        out: list[list[Any]] = [[list(path), _digest(value)] for path, value in _leaves(essence, (), depth) if path]
        if len(json.dumps(out)) <= _MAX_ENCODED or depth == 1:
            return out
    raise AssertionError("unreachable")


def _get(essence: Mapping[str, Any], path: Iterable[str]) -> tuple[bool, Any]:
    value: Any = essence
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return False, None
        value = value[key]
    return True, value


def _put(essence: dict[str, Any], path: list[str], value: Any) -> None:
    node = essence
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


def rebuild(stored: Iterable[list[Any]], current: Mapping[str, Any]) -> dict[str, Any]:
    """The old essence as far as digests tell it: unchanged fields as they are now, changed or
    removed ones as a marker that differs from any real value."""
    old: dict[str, Any] = {}
    for path, digest in stored:
        found, value = _get(current, path)
        _put(old, path, value if found and _digest(value) == digest else f"<changed {digest}>")
    return old


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base, holding digests instead of the object (see the module doc).

    ``settled``: kind -> whether an object of that kind (its body) has no create or update
    handler left to run; such kinds never get the annotation.
    """

    def __init__(
        self, *, settled: Mapping[str, Callable[[Mapping[str, Any]], bool]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.settled = dict(settled or {})
        self._handled: dict[str, None] = {}  # UIDs, oldest first

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        """kopf's essence of ``body``, without deep-copying what it then drops.

        kopf deep-copies the whole object, metadata.managedFields and status included, only to
        delete them: about 3 ms of CPU for an Instance, twice for every watch event (here and
        in ``fetch``), which was most of the operator's CPU for each Instance's six events and
        for a restart's whole listing. The essence is the same: kopf builds it from this lean
        copy, which keeps every field kopf reads (labels, annotations, ownerReferences, kind)
        and the status only when a handler asked for a status field.
        """
        meta = body.get("metadata") or {}
        lean = {k: v for k, v in body.items() if k not in ("metadata", "status")}
        lean["metadata"] = {k: meta[k] for k in _ESSENTIAL_METADATA if k in meta}
        fields = list(extra_fields or [])
        if fields and "status" in body:
            lean["status"] = body["status"]
        return super().build(body=kopf.Body(cast(Any, lean)), extra_fields=fields)

    def fetch(self, *, body: Any) -> Any:
        settled = self.settled.get(str(body.get("kind")))
        uid = str((body.get("metadata") or {}).get("uid"))
        if settled is not None and settled(body):
            self._handled.pop(uid, None)
            return self.build(body=body)
        stored = self._fetch_stored(body)
        if stored is not None:
            return stored
        return self.build(body=body) if settled is not None and uid in self._handled else None

    def _fetch_stored(self, body: Any) -> Any:
        for full_key in self.make_keys(self.key, body=body):
            encoded = body.metadata.annotations.get(full_key)
            if encoded is None:
                continue
            decoded = json.loads(encoded)
            if isinstance(decoded, dict) and decoded.get("format") == FORMAT:
                return rebuild(cast(list[list[Any]], decoded.get("digests") or []), self.build(body=body))
            if isinstance(decoded, dict) and str(decoded.get("format", "")).startswith("skyfleet.io/digests"):
                return None  # an older digest format: treated as never handled, like a new object
            return decoded  # a full essence written before digests: still a valid base
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        if str(body.get("kind")) in self.settled:
            uid = str((body.get("metadata") or {}).get("uid"))
            self._handled[uid] = None
            while len(self._handled) > _HANDLED_MAX:
                del self._handled[next(iter(self._handled))]
            return
        encoded = json.dumps({"format": FORMAT, "digests": digests(essence)}, separators=(",", ":"))
        for full_key in self.make_keys(self.key, body=body):
            patch.metadata.annotations[full_key] = encoded
        self._store_marker(prefix=self.prefix, patch=patch, body=body)


# What kopf's essence and its storage keys read of metadata (labels and annotations go into
# the essence, the rest names the keys); everything else it drops.
_ESSENTIAL_METADATA = ("name", "namespace", "labels", "annotations", "ownerReferences")


class BoundedProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's per-handler progress annotations, with the error message bounded and made safe."""

    def store(self, *, key: Any, record: Any, body: Any, patch: Any) -> None:
        if record.get("message"):
            record = {**record, "message": safe_message(record["message"], limit=200)}
        super().store(key=key, record=record, body=body, patch=patch)
