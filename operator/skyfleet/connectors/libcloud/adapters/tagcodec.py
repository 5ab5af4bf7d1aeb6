"""Tag values in alphabets smaller than ours, without two values ever sharing one spelling.

Owner tags decide what is ours: if two cluster ids (``prod.eu`` and ``prod_eu``, or ``Prod`` and
``prod``) were spelt alike in a cloud, one installation would list, count and delete the other's
VMs. Replacing or lower-casing characters is what providers' tag rules invite, and it is not
one-to-one. These codecs are:

``LowercaseCodec`` (GCE labels, DigitalOcean tags: ``[a-z0-9_-]``)
    an escape code with ``_`` as escape character: ``_`` is ``__``, ``.`` is ``_-`` and an
    upper-case letter is ``_`` plus the letter in lower case. Values too long once escaped (or
    with characters outside ``[A-Za-z0-9._-]``) become ``<prefix>_0<digest>``: a readable prefix,
    the marker ``_0`` (which no escaped value contains) and ten base32 characters of SHA-256 of
    the value. Escaped values decode back to the value; digest forms decode to themselves.

``LengthCodec`` (Linode tags: any characters, at most 50 per tag)
    values that fit pass unchanged, longer ones become ``<prefix>~<digest>`` (``~`` never occurs
    in cluster ids, namespaces, names or UIDs).

Both are injective on the values Skyfleet writes (up to a 50-bit digest collision), and
``encode(decode(s)) == s`` for every spelling ``s`` they produce, so a value read back from a
VM (an orphan's tags) compares equal to the value it was written from.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import ClassVar

__all__ = ["LengthCodec", "LowercaseCodec"]

_DIGEST = 10


def _digest(value: str) -> str:
    return base64.b32encode(hashlib.sha256(value.encode()).digest()).decode().lower()[:_DIGEST]


class LowercaseCodec:
    _PLAIN: ClassVar[frozenset[str]] = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
    _HASHED: ClassVar[re.Pattern[str]] = re.compile(rf"^(?:[a-z0-9-]|_[_a-z-])*_0[a-z2-7]{{{_DIGEST}}}$")
    _ESCAPES: ClassVar[dict[str, str]] = {"_": "__", ".": "_-"}
    _UNESCAPES: ClassVar[dict[str, str]] = {"_": "_", "-": "."}

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def _escaped(self, value: str) -> str | None:
        out: list[str] = []
        for char in value:
            if char in self._PLAIN:
                out.append(char)
            elif char in self._ESCAPES:
                out.append(self._ESCAPES[char])
            elif "A" <= char <= "Z":
                out.append("_" + char.lower())
            else:
                return None
        return "".join(out)

    def encode(self, value: str) -> str:
        if len(value) <= self.max_length and self._HASHED.match(value):
            return value  # already a digest spelling (read back from a VM)
        escaped = self._escaped(value)
        if escaped is not None and len(escaped) <= self.max_length:
            return escaped
        marker = "_0" + _digest(value)
        prefix = re.sub(r"[^a-z0-9-]+", "-", value.lower())[: self.max_length - len(marker)]
        return prefix + marker

    def decode(self, spelt: str) -> str:
        if self._HASHED.match(spelt):
            return spelt
        out: list[str] = []
        chars = iter(spelt)
        for char in chars:
            if char != "_":
                out.append(char)
                continue
            following = next(chars, "")
            if following in self._UNESCAPES:
                out.append(self._UNESCAPES[following])
            elif "a" <= following <= "z":
                out.append(following.upper())
            else:
                return spelt  # not our spelling: keep it as the cloud has it
        return "".join(out)


class LengthCodec:
    _HASHED: ClassVar[re.Pattern[str]] = re.compile(rf"~[a-z2-7]{{{_DIGEST}}}$")

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def encode(self, value: str) -> str:
        if len(value) <= self.max_length and (self._HASHED.search(value) or "~" not in value):
            return value
        marker = "~" + _digest(value)
        return value[: self.max_length - len(marker)] + marker

    def decode(self, spelt: str) -> str:
        return spelt
