"""Connector discovery: the built-in connector and an out-of-tree one installed with pip."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyfleet.connectors import (
    CreateRequest,
    CredentialConfig,
    NodeState,
    OwnershipMismatch,
    OwnerTags,
    UnknownConnector,
    Unsupported,
    registry,
)
from skyfleet.connectors.libcloud import LibcloudConnector
from tests.connector.conftest import CANARY_SECRET

pytestmark = pytest.mark.connector

PLUGIN = '''
"""An in-memory connector shipped by a third party."""
import itertools
from skyfleet.connectors import (
    Capabilities, CloudNode, Connector, NodeState, OwnershipMismatch, OwnerTags,
)


class MemoryConnector(Connector):
    _ids = itertools.count(1)

    def __init__(self, config):
        super().__init__(config)
        self.nodes = {}

    @property
    def capabilities(self):
        return Capabilities()

    async def verify(self):
        return None

    async def list_sizes(self):
        return []

    async def list_images(self):
        return []

    async def list_locations(self):
        return []

    async def find_by_tags(self, tags):
        return [n for n in self.nodes.values() if all(n.tags.get(k) == v for k, v in tags.items())]

    async def create(self, req):
        found = await self.find_by_tags(req.owner.identity())
        if found:
            return found[0]
        node = CloudNode(f"mem-{next(self._ids)}", req.name, NodeState.RUNNING, tags=req.tags())
        self.nodes[node.provider_id] = node
        return node

    async def describe(self, provider_id):
        return self.nodes.get(provider_id)

    async def destroy(self, provider_id, owner_tags):
        node = self.nodes.get(provider_id)
        if node is None:
            return
        if not owner_tags.owns(node.tags):
            raise OwnershipMismatch(f"{provider_id} is not ours")
        del self.nodes[provider_id]

    async def list_cluster(self, cluster_id):
        return await self.find_by_tags({OwnerTags.CLUSTER_ID: cluster_id})
'''

PYPROJECT = """
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "skyfleet-memory-connector"
version = "0.0.1"

[project.entry-points."skyfleet.connectors"]
memory = "skyfleet_memory_connector:MemoryConnector"
broken = "skyfleet_memory_connector_missing:Nothing"
"""


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("plugin")
    source = root / "src"
    (source / "skyfleet_memory_connector").mkdir(parents=True)
    (source / "skyfleet_memory_connector" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    (source / "pyproject.toml").write_text(PYPROJECT)
    target = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    sys.modules.pop("skyfleet_memory_connector", None)
    importlib.invalidate_caches()


def config(provider: str = "memory") -> CredentialConfig:
    return CredentialConfig(name="c", namespace="ns", provider=provider, secret=CANARY_SECRET)


def test_builtin_libcloud_connector_is_registered() -> None:
    assert "libcloud" in registry.available()
    assert registry.load("libcloud") is LibcloudConnector


def test_unknown_name_lists_what_is_installed() -> None:
    with pytest.raises(UnknownConnector, match=r"'nimbus'.*installed: .*libcloud"):
        registry.load("nimbus")


async def test_out_of_tree_connector_is_used_through_the_registry(installed_plugin: Path) -> None:
    assert {"memory", "libcloud"} <= set(registry.available())

    connector = registry.create("memory", config())
    owner = OwnerTags(cluster_id="c1", instance_uid="u1")
    node = await connector.create(CreateRequest(name="n1", image_id="img", size_id="s", owner=owner))
    again = await connector.create(CreateRequest(name="n1", image_id="img", size_id="s", owner=owner))

    assert type(connector).__module__ == "skyfleet_memory_connector"
    assert again.provider_id == node.provider_id
    assert node.state is NodeState.RUNNING
    assert await connector.list_cluster("c1") == [node]
    with pytest.raises(OwnershipMismatch):
        await connector.destroy(node.provider_id, OwnerTags(cluster_id="c1", instance_uid="u2"))
    # A connector written before release existed inherits the contract's refusal.
    assert not connector.capabilities.release
    with pytest.raises(Unsupported):
        await connector.release(node.provider_id, OwnerTags(cluster_id="c1", instance_uid="u1"))
    await connector.destroy(node.provider_id, OwnerTags(cluster_id="c1", instance_uid="u1"))
    assert await connector.describe(node.provider_id) is None


def test_broken_plugin_reports_an_import_failure_not_a_missing_name(installed_plugin: Path) -> None:
    with pytest.raises(UnknownConnector, match="failed to import"):
        registry.load("broken")
