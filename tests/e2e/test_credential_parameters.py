"""A CloudCredential's parameters on the live operator: the documented spelling works, a misspelt
key is Ready=False naming it."""

from __future__ import annotations

import pytest

from tests.e2e.operator_fixtures import World, condition, eventually, world

pytestmark = pytest.mark.e2e
__all__ = ["world"]


def test_documented_parameters_work_and_a_misspelt_one_is_named(world: World) -> None:
    w = world
    good = w.credential("good", "us-east-1", w.cloud.endpoint, parameters={"imageOwner": "self"})
    bad = w.credential("bad", "us-east-1", w.cloud.endpoint, parameters={"imageOwnr": "self"})
    w.kube.apply(*good, *bad)

    eventually(lambda: condition(w.kube.get("cloudcredentials.skyfleet.io", "good")) == ("True", "Verified"))
    eventually(lambda: condition(w.kube.get("cloudcredentials.skyfleet.io", "bad")) == ("False", "UnknownParameter"))
    ready = next(
        c for c in w.kube.get("cloudcredentials.skyfleet.io", "bad")["status"]["conditions"] if c["type"] == "Ready"
    )
    assert "'imageOwnr'" in ready["message"]
    assert "imageOwner" in ready["message"]  # what the provider does read
