"""Image decisions: which source a target boots, parents folded, where a Deployment uses an image."""

from __future__ import annotations

from typing import Any

import pytest

from skyfleet.api.deployment import Deployment
from skyfleet.api.image import Image, ImageSource
from skyfleet.reconcile.images import ImageError, effective_image, image_uses, select_source
from skyfleet.reconcile.views import deployment_view

pytestmark = pytest.mark.unit


def src(**kw: Any) -> ImageSource:
    return ImageSource.model_validate(kw)


@pytest.mark.parametrize(
    ("sources", "expected_id"),
    [
        # credential-specific entry beats a provider-wide lookup, wherever it is listed
        ([src(provider="ec2", id="ami-any"), src(credential="virginia", id="ami-v")], "ami-v"),
        # an exact region beats an entry for every region
        ([src(provider="ec2", id="ami-any"), src(provider="ec2", region="us-east-1", id="ami-r")], "ami-r"),
        # equally specific: the first listed (child before parent)
        ([src(provider="ec2", id="ami-1"), src(provider="ec2", id="ami-2")], "ami-1"),
        # entries for other credentials, providers or regions do not apply
        (
            [
                src(credential="frankfurt", id="x"),
                src(provider="gce", id="y"),
                src(provider="ec2", region="eu-west-1", id="z"),
            ],
            None,
        ),
    ],
)
def test_select_source(sources: list[ImageSource], expected_id: str | None) -> None:
    got = select_source(sources, credential="virginia", provider="ec2", region="us-east-1")
    assert (got.id if got else None) == expected_id


def image(name: str, **spec: Any) -> Image:
    return Image.model_validate({"metadata": {"name": name}, "spec": spec})


def test_effective_image_folds_parents() -> None:
    images = {
        "base": image(
            "base",
            loginUser="debian",
            clouds=[{"provider": "ec2", "id": "ami-base"}],
            recipe={"packages": ["curl"], "scripts": ["#!/bin/sh\necho base\n"]},
        ),
        "app": image(
            "app",
            parent="base",
            clouds=[{"credential": "a", "id": "ami-app"}],
            recipe={"packages": ["curl", "nginx"], "scripts": ["#!/bin/sh\necho app\n"]},
        ),
    }
    eff = effective_image("app", images.get)
    assert [s.id for s in eff.sources] == ["ami-app", "ami-base"]
    assert eff.login_user == "debian"
    assert eff.recipe is not None
    assert eff.recipe.packages == ["curl", "nginx"]
    assert eff.recipe.scripts == ["#!/bin/sh\necho base\n", "#!/bin/sh\necho app\n"]


@pytest.mark.parametrize(
    ("images", "fragment"),
    [
        ({"app": image("app", parent="base")}, "'base' not found"),
        ({"app": image("app", parent="app")}, "cycle"),
        ({}, "'app' not found"),
    ],
)
def test_effective_image_errors(images: dict[str, Image], fragment: str) -> None:
    with pytest.raises(ImageError, match=fragment):
        effective_image("app", images.get)


def test_image_uses_lists_every_credential_and_region_a_deployment_places_it_on() -> None:
    dep = Deployment.model_validate(
        {
            "metadata": {"name": "d"},
            "spec": {
                "nodeGroups": [
                    {
                        "name": "a",
                        "imageRef": "ubuntu",
                        "size": {"cpu": 1, "memoryMiB": 512},
                        "placement": {"targets": [{"credential": "f"}, {"credential": "v", "region": "us-west-2"}]},
                    },
                    {
                        "name": "b",
                        "imageRef": "other",
                        "size": {"cpu": 1, "memoryMiB": 512},
                        "placement": {"targets": [{"credential": "x"}]},
                    },
                ]
            },
        }
    )
    assert image_uses("ubuntu", [deployment_view(dep)], {"f": "eu-central-1", "v": "us-east-1"}) == [
        ("f", "eu-central-1"),
        ("v", "us-west-2"),
    ]
