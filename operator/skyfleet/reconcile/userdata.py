"""User data: the image recipe as cloud-init, plus the group's template with tier wiring.

The template language is deliberately tiny (``{{ name.path }}`` substitution, nothing else):
user data ends up on VMs, and a full template engine there would be an execution surface for
whoever can edit a Deployment. Unknown references are errors, not empty strings, so a typo
cannot boot a fleet with a blank database address; nor can a group whose addresses are not
known yet (``NoAddresses``: the caller waits).

``{{ raw }}`` ... ``{{ endraw }}`` passes its content through untouched, for text that needs
literal double braces, such as cloud-init's own Jinja templates (``## template: jinja``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import yaml

from skyfleet.api.deployment import NodeGroup
from skyfleet.api.image import Recipe

__all__ = [
    "NoAddresses",
    "TemplateError",
    "combine",
    "recipe_to_cloud_config",
    "render_template",
    "template_hash",
]

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_RAW = re.compile(r"\{\{\s*raw\s*\}\}(.*?)\{\{\s*endraw\s*\}\}", re.DOTALL)
_RAW_TAG = re.compile(r"\{\{\s*(end)?raw\s*\}\}")
_GROUP_REF = re.compile(r"^groups\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(addresses|privateAddresses)$")


class TemplateError(ValueError):
    """A userData template references something that does not exist or is not allowed."""


class NoAddresses(TemplateError):
    """A referenced group has no addresses of the wanted kind yet: wait rather than render blank."""


def template_hash(group: NodeGroup) -> str:
    """What makes a VM of this group outdated: its size and image. Replicas and placement do not."""
    material = json.dumps(
        {"imageRef": group.image_ref, "size": group.size.model_dump(by_alias=True, exclude_none=True)},
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def referenced_groups(template: str | None) -> set[str]:
    out: set[str] = set()
    for expr in _PLACEHOLDER.findall(_RAW.sub("", template or "")):
        m = _GROUP_REF.match(expr)
        if m:
            out.add(m.group(1))
    return out


def render_template(
    template: str,
    *,
    deployment: str,
    group: str,
    instance: str,
    allowed_groups: Sequence[str],
    addresses: Mapping[str, Sequence[str]],
    private_addresses: Mapping[str, Sequence[str]],
) -> str:
    """Expand placeholders; ``allowed_groups`` are the dependsOn groups (known to be running)."""

    def expand(m: re.Match[str]) -> str:
        expr = m.group(1)
        names = {"deployment": deployment, "group": group, "instance": instance}
        if expr in names:
            return names[expr]
        ref = _GROUP_REF.match(expr)
        if ref is None:
            raise TemplateError(f"unknown placeholder {{{{ {expr} }}}}")
        other, kind = ref.group(1), ref.group(3)
        if other not in allowed_groups:
            raise TemplateError(f"{{{{ {expr} }}}} needs group {other!r} in dependsOn")
        source = addresses if kind == "addresses" else private_addresses
        found = [a for a in source.get(other, ()) if a]
        if not found:
            raise NoAddresses(f"group {other!r} has no {kind} yet")
        return ",".join(found)

    out: list[str] = []
    pos = 0
    for block in _RAW.finditer(template):
        out.append(_expand_outside_raw(template[pos : block.start()], expand))
        out.append(block.group(1))
        pos = block.end()
    out.append(_expand_outside_raw(template[pos:], expand))
    return "".join(out)


def _expand_outside_raw(text: str, expand: Callable[[re.Match[str]], str]) -> str:
    stray = _RAW_TAG.search(text)
    if stray:
        raise TemplateError(f"{stray.group(0)} without its {'raw' if stray.group(1) else 'endraw'}")
    return _PLACEHOLDER.sub(expand, text)


def recipe_to_cloud_config(recipe: Recipe | None) -> str | None:
    """The recipe as a ``#cloud-config`` document, or None when there is nothing to do."""
    if recipe is None:
        return None
    doc: dict[str, object] = {}
    if recipe.packages:
        doc["packages"] = list(recipe.packages)
    if recipe.files:
        doc["write_files"] = [
            {"path": f.path, "content": f.content, **({"permissions": f.permissions} if f.permissions else {})}
            for f in recipe.files
        ]
    if recipe.scripts:
        # Each script is written out and run as a file so its own shebang decides the interpreter.
        files = doc.setdefault("write_files", [])
        assert isinstance(files, list)
        runcmd = []
        for i, script in enumerate(recipe.scripts):
            path = f"/var/lib/skyfleet/recipe-{i:02d}.sh"
            files.append({"path": path, "content": script, "permissions": "0755"})
            runcmd.append([path])
        doc["runcmd"] = runcmd
    if not doc:
        return None
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def combine(cloud_config: str | None, script: str | None) -> str | None:
    """One user data blob: either part alone, or both as the MIME multipart cloud-init reads."""
    if not cloud_config or not script:
        return cloud_config or script or None
    message = MIMEMultipart(boundary="==skyfleet==")
    for body, subtype, name in ((cloud_config, "cloud-config", "recipe.cfg"), (script, _script_type(script), "user")):
        # ASCII stays readable in the blob (7bit); only other text gets base64.
        part = MIMEText(body, subtype, "us-ascii" if body.isascii() else "utf-8")
        part.add_header("Content-Disposition", "attachment", filename=name)
        message.attach(part)
    return message.as_string()


def _script_type(script: str) -> str:
    """cloud-init picks a part's handler by MIME type, the way it picks a lone blob's by first line."""
    if script.startswith("#cloud-config"):
        return "cloud-config"
    if script.startswith("#include"):
        return "x-include-url"
    return "x-shellscript" if script.startswith("#!") else "plain"
