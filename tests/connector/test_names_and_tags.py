"""VM names and tag spellings: one per (installation, namespace, instance), one per value."""

from __future__ import annotations

import itertools
import re

import pytest

from skyfleet.connectors import vm_name
from skyfleet.connectors.libcloud.adapters.tagcodec import LengthCodec, LowercaseCodec

pytestmark = pytest.mark.connector

CLUSTERS = ["skyfleet", "prod.eu", "prod_eu", "Prod", "prod", "p" * 63]
NAMESPACES = ["team-a", "team-b", "default"]
INSTANCES = ["shop-web-0", "shop-web-1", "1shop-web-0", "a--b-c-0", "a-b-c-0", f"{'d' * 40}-{'g' * 16}-99999"]
VALUES = [
    *CLUSTERS,
    "prod-eu",
    "prod.EU",
    "a_-b",
    "a.b",
    "a__b",
    "_a",
    "A",
    "x" * 60 + "a",
    "x" * 60 + "b",
    "0c6f2b0e-4a7e-4f1e-9c1a-1f2d3e4c5b6a",
    "",
]


def test_vm_names_are_unique_per_cluster_namespace_and_instance() -> None:
    triples = list(itertools.product(CLUSTERS, NAMESPACES, INSTANCES))
    names = {vm_name(i, cluster_id=c, namespace=n) for c, n, i in triples}
    assert len(names) == len(triples)


@pytest.mark.parametrize("instance", INSTANCES)
@pytest.mark.parametrize(("max_length", "letter_first"), [(63, True), (64, False)])
def test_vm_names_follow_the_strictest_rules(instance: str, max_length: int, letter_first: bool) -> None:
    name = vm_name(
        instance, cluster_id="skyfleet", namespace="team-a", max_length=max_length, letter_first=letter_first
    )
    assert len(name) <= max_length
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name)  # no double dashes (Linode), no edges
    if letter_first:
        assert name[0].isalpha()  # GCE
    assert vm_name(instance, cluster_id="skyfleet", namespace="team-a", max_length=max_length) == vm_name(
        instance, cluster_id="skyfleet", namespace="team-a", max_length=max_length
    )


def test_a_plain_instance_name_stays_readable() -> None:
    assert vm_name("shop-web-0", cluster_id="skyfleet", namespace="team-a").startswith("shop-web-0-")


@pytest.mark.parametrize("codec", [LowercaseCodec(63), LowercaseCodec(30), LengthCodec(39), LengthCodec(20)])
def test_tag_spellings_are_one_to_one_and_read_back_as_written(codec: LowercaseCodec | LengthCodec) -> None:
    spelt = {v: codec.encode(v) for v in VALUES}

    assert len(set(spelt.values())) == len(VALUES)  # no two values share a spelling
    for spelling in spelt.values():
        assert len(spelling) <= codec.max_length
        # A value read back from a VM compares equal to the value it was written from.
        assert codec.encode(codec.decode(spelling)) == spelling
        if isinstance(codec, LowercaseCodec):
            assert re.fullmatch(r"[a-z0-9_-]*", spelling)


def test_lowercase_spellings_decode_to_the_value_where_they_fit() -> None:
    codec = LowercaseCodec(63)
    for value in ("prod.eu", "prod_eu", "Prod", "a_-b", "team-a", "0c6f2b0e-4a7e-4f1e-9c1a-1f2d3e4c5b6a"):
        assert codec.decode(codec.encode(value)) == value
    assert codec.encode("prod.eu") == "prod_-eu"
    assert codec.encode("Prod") == "_prod"
