"""kopf's indexes as the operator registers them (handlers/indexes.py)."""

from __future__ import annotations

import inspect

import kopf
import pytest
from kopf._core.intents.registries import get_default_registry

import skyfleet.handlers  # noqa: F401 - importing registers every handler
from skyfleet.handlers.indexes import instance_uids

pytestmark = pytest.mark.unit


def test_every_index_runs_on_the_event_loop_under_the_name_handlers_ask_for() -> None:
    # kopf runs a synchronous handler in its thread pool: one hand-off per index per watch
    # event (four per Instance event, 40,000 on a restart at 10,000 Instances).
    handlers = {h.id: h.fn for h in get_default_registry()._indexing.get_all_handlers()}
    assert {
        "instances_by_deployment",
        "instances_by_credential",
        "instance_uids",
        "credentials",
        "images",
        "deployments",
        "images_in_use",
        "scaling_policies",
    } <= set(handlers)
    assert [name for name, fn in handlers.items() if not inspect.iscoroutinefunction(fn)] == []


async def test_a_registered_index_gives_what_its_function_gives() -> None:
    handler = next(h.fn for h in get_default_registry()._indexing.get_all_handlers() if h.id == "instance_uids")
    body = kopf.Body({"metadata": {"name": "shop-web-0", "namespace": "team", "uid": "u-1"}})
    assert (
        await handler(namespace="team", uid="u-1", body=body)
        == instance_uids(namespace="team", uid="u-1")
        == {"team": "u-1"}
    )
