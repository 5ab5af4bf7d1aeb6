"""docs/api-reference.md, generated from the CRDs (``make crds``), so it cannot drift from them."""

from __future__ import annotations

from typing import Any

from skyfleet.api.common import GROUP, VERSION
from skyfleet.api.crd import KINDS, crd_for

__all__ = ["render_reference"]

_HEADER = f"""# API reference: {GROUP}/{VERSION}

Generated from the CRDs by `make crds`; do not edit. Every field with its type, constraints and
description, as the API server validates them (`kubectl explain cloudcredentials.spec` and the like
show the same from a cluster). Concepts: [concepts.md](concepts.md); reasons in conditions:
[troubleshooting.md](troubleshooting.md).
"""


def _type(node: dict[str, Any]) -> str:
    kind = str(node.get("type", "object" if node.get("x-kubernetes-preserve-unknown-fields") else "any"))
    if kind == "array":
        return f"[]{_type(node.get('items', {}))}"
    if kind == "object" and "additionalProperties" in node:
        return f"map[string]{_type(node['additionalProperties'])}"
    return kind


def _limits(node: dict[str, Any]) -> str:
    parts = []
    for key, label in (
        ("enum", "one of"),
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("maxProperties", "max entries"),
        ("pattern", "pattern"),
        ("default", "default"),
    ):
        if key in node:
            value = node[key]
            shown = ", ".join(f"`{v}`" for v in value) if key == "enum" else f"`{value}`"
            parts.append(f"{label} {shown}")
    for rule in node.get("x-kubernetes-validations", []):
        where = f"{rule['fieldPath'].lstrip('.')} " if rule.get("fieldPath") else ""
        parts.append(f"rule: {where}{rule.get('message') or rule['rule']}")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rows(node: dict[str, Any], prefix: str, rows: list[str]) -> None:
    required = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        need = "yes" if name in required else ""
        rows.append(
            f"| `{path}` | {_type(child)} | {need} | {_cell(child.get('description', ''))} | {_cell(_limits(child))} |"
        )
        target = child.get("items", {}) if child.get("type") == "array" else child
        if target.get("properties"):
            _rows(target, f"{path}[]" if child.get("type") == "array" else path, rows)


def render_reference() -> str:
    out = [_HEADER]
    for kind in KINDS:
        crd = crd_for(kind)
        version = crd["spec"]["versions"][0]
        schema = version["schema"]["openAPIV3Schema"]
        names = crd["spec"]["names"]
        out.append(f"\n## {names['kind']}\n")
        out.append(
            f"`{names['plural']}.{GROUP}`, short names {', '.join(f'`{n}`' for n in names.get('shortNames', []))}."
        )
        if schema.get("description"):
            out.append(f" {_cell(schema['description'])}")
        out.append("\n")
        for part in ("spec", "status"):
            section = schema.get("properties", {}).get(part)
            if not section:
                continue
            out.append(f"\n### {names['kind']}.{part}\n")
            if section.get("x-kubernetes-validations"):
                out.append(f"\n{_cell(_limits({'x-kubernetes-validations': section['x-kubernetes-validations']}))}\n")
            rows: list[str] = []
            _rows(section, part, rows)
            out.append("\n| field | type | required | description | constraints |\n|---|---|---|---|---|\n")
            out.append("\n".join(rows) + "\n")
    return "".join(out)
