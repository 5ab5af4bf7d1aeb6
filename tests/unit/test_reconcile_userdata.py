"""User data: recipe to cloud-init and templates wired to other tiers."""

from __future__ import annotations

import email

import pytest
import yaml

from skyfleet.api.deployment import NodeGroup
from skyfleet.api.image import Recipe, RecipeFile
from skyfleet.reconcile.userdata import (
    TemplateError,
    combine,
    recipe_to_cloud_config,
    render_template,
    template_hash,
)

pytestmark = pytest.mark.unit


def render(template: str, allowed: tuple[str, ...] = ("db",)) -> str:
    return render_template(
        template,
        deployment="shop",
        group="web",
        instance="shop-web-0",
        allowed_groups=allowed,
        addresses={"db": ["203.0.113.5", "203.0.113.6"]},
        private_addresses={"db": ["10.0.0.5", "10.0.0.6"]},
    )


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("DB={{ groups.db.privateAddresses }}", "DB=10.0.0.5,10.0.0.6"),
        ("DB={{groups.db.addresses}}", "DB=203.0.113.5,203.0.113.6"),
        ("{{ deployment }}/{{ group }}/{{ instance }}", "shop/web/shop-web-0"),
        ("no placeholders: ${HOME} {not one}", "no placeholders: ${HOME} {not one}"),
    ],
)
def test_placeholders_expand(template: str, expected: str) -> None:
    assert render(template) == expected


@pytest.mark.parametrize(
    ("template", "allowed", "fragment"),
    [
        ("{{ groups.cache.addresses }}", ("db",), "dependsOn"),
        ("{{ groups.db.addresses }}", (), "dependsOn"),
        ("{{ secret }}", ("db",), "unknown placeholder"),
        ("{{ groups.db.publicKeys }}", ("db",), "unknown placeholder"),
    ],
)
def test_bad_references_are_errors_not_blanks(template: str, allowed: tuple[str, ...], fragment: str) -> None:
    with pytest.raises(TemplateError, match=fragment):
        render(template, allowed)


def test_recipe_becomes_cloud_config_with_scripts_run_in_order() -> None:
    recipe = Recipe(
        packages=["curl", "jq"],
        files=[RecipeFile(path="/etc/motd", content="hi\n", permissions="0644")],
        scripts=["#!/bin/sh\necho one\n", "#!/bin/sh\necho two\n"],
    )
    text = recipe_to_cloud_config(recipe)
    assert text is not None
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert doc["packages"] == ["curl", "jq"]
    assert doc["write_files"][0] == {"path": "/etc/motd", "content": "hi\n", "permissions": "0644"}
    scripts = [f for f in doc["write_files"] if f["path"].startswith("/var/lib/skyfleet/")]
    assert [s["content"] for s in scripts] == ["#!/bin/sh\necho one\n", "#!/bin/sh\necho two\n"]
    assert doc["runcmd"] == [[s["path"]] for s in scripts]


def test_empty_recipe_gives_no_cloud_config() -> None:
    assert recipe_to_cloud_config(None) is None
    assert recipe_to_cloud_config(Recipe()) is None


def test_recipe_and_script_combine_into_a_multipart_cloud_init_reads() -> None:
    blob = combine("#cloud-config\npackages: [jq]\n", "#!/bin/sh\necho DB=10.0.0.5\n")
    assert blob is not None
    message = email.message_from_string(blob)
    assert message.is_multipart()
    parts = [(p.get_content_type(), p.get_payload()) for p in message.get_payload()]  # type: ignore[union-attr]
    assert parts == [
        ("text/cloud-config", "#cloud-config\npackages: [jq]\n"),
        ("text/x-shellscript", "#!/bin/sh\necho DB=10.0.0.5\n"),
    ]


@pytest.mark.parametrize(
    ("cloud_config", "script", "expected"),
    [(None, None, None), ("#cloud-config\n", None, "#cloud-config\n"), (None, "#!/bin/sh\n", "#!/bin/sh\n")],
)
def test_one_part_alone_is_passed_through(cloud_config: str | None, script: str | None, expected: str | None) -> None:
    assert combine(cloud_config, script) == expected


def group(**overrides: object) -> NodeGroup:
    base: dict[str, object] = {
        "name": "web",
        "replicas": 3,
        "imageRef": "ubuntu",
        "size": {"cpu": 1, "memoryMiB": 1024},
        "placement": {"targets": [{"credential": "a"}]},
    }
    base.update(overrides)
    return NodeGroup.model_validate(base)


def test_template_hash_changes_with_size_or_image_only() -> None:
    h = template_hash(group())
    assert template_hash(group(replicas=7, placement={"targets": [{"credential": "b"}]})) == h
    assert template_hash(group(userData="#!/bin/sh\n")) == h
    assert template_hash(group(size={"cpu": 2, "memoryMiB": 1024})) != h
    assert template_hash(group(imageRef="debian")) != h
