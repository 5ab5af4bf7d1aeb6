"""`skyfleet run --log-format json`: one JSON object per line, naming the object it is about."""

from __future__ import annotations

import json
from typing import Any

import pytest

from skyfleet.testing.faultproxy import Faults
from tests.e2e.operator_fixtures import World, example_docs, world

pytestmark = pytest.mark.e2e
__all__ = ["world"]

SECRET_VALUES = ("replace-me-with-the-real-secret-access-key", "e2e-secret-value-123")


def test_json_logs_name_their_object_and_never_a_secret(world: World) -> None:
    world.operator.stop()
    offset = len(world.operator.log())
    world.operator.start("--log-format", "json", "--log-level", "DEBUG")
    # Some cloud weather, so the connectors (which log through plain module loggers) speak too.
    proxy = world.cloud.proxy()
    proxy.faults = Faults(error_rate=0.3)
    world.kube.apply(*example_docs(world.cloud.endpoint, {"aws-frankfurt": proxy.endpoint}))
    world.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/shop", "--timeout=180s")
    world.kube("delete", "deployments.skyfleet.io", "shop", "--timeout=120s")
    world.operator.stop()

    text = world.operator.log()[offset:]
    lines = [line for line in text.splitlines() if line.strip()]
    records: list[dict[str, Any]] = [json.loads(line) for line in lines]  # every line is JSON
    about = [r for r in records if "object" in r]
    kinds = {r["object"].get("kind") for r in about}
    assert {"CloudCredential", "Image", "Deployment", "Instance"} <= kinds
    # A line that speaks of one object ("<namespace>/<name>") carries its reference, even when
    # it comes from code that never saw a kopf logger (connectors, the API client wrapper).
    namespace = world.kube.namespace
    mentioning = [r for r in records if f"{namespace}/" in r["message"]]
    assert any("retry" in r["message"] for r in mentioning)  # the connector's own retry lines
    assert [r["message"] for r in mentioning if "object" not in r] == []
    assert len(about) > len(records) / 2
    for value in SECRET_VALUES:
        assert value not in text
