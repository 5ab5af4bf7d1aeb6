"""EC2 image resolution asks for exactly what it needs, as the fault proxy's record shows.

On real AWS an unfiltered DescribeImages returns the whole public catalogue (hundreds of MB),
and anyone can publish an AMI with a familiar name.
"""

from __future__ import annotations

import pytest

from skyfleet.connectors import InvalidRequest, NotFound
from skyfleet.testing.faultproxy import FaultProxy
from tests.connector.conftest import AMI, ConnectorFactory

pytestmark = pytest.mark.connector

AMAZON = "137112412989"  # publishes moto's amzn2 images, as Amazon does on AWS
PATTERN = "amzn2-ami-hvm-*-x86_64-gp2"


async def test_an_explicit_id_is_asked_for_exactly(proxy: FaultProxy, make_connector: ConnectorFactory) -> None:
    connector = make_connector(proxy.endpoint)

    image = await connector.resolve_image(image_id=AMI)

    assert image.id == AMI
    (query,) = proxy.queries("DescribeImages")
    assert {k: v for k, v in query.items() if not k.startswith(("X-Amz", "Version"))} == {
        "Action": "DescribeImages",
        "ImageId.1": AMI,
    }
    with pytest.raises(NotFound, match="ami-0000000000000dead"):
        await connector.resolve_image(image_id="ami-0000000000000dead")


async def test_a_name_lookup_asks_for_the_owners_images_named_so(
    proxy: FaultProxy, make_connector: ConnectorFactory
) -> None:
    connector = make_connector(proxy.endpoint)

    image = await connector.resolve_image(name_pattern=PATTERN, owner=AMAZON)

    assert image.owner == AMAZON
    (query,) = proxy.queries("DescribeImages")
    assert query["Owner.1"] == AMAZON
    assert (query["Filter.1.Name"], query["Filter.1.Value.1"]) == ("name", PATTERN)


async def test_an_alias_owner_keeps_to_that_publisher(proxy: FaultProxy, make_connector: ConnectorFactory) -> None:
    connector = make_connector(proxy.endpoint)

    image = await connector.resolve_image(name_pattern=PATTERN, owner="amazon")

    assert image.name.startswith("amzn2-ami-hvm-")
    assert proxy.queries("DescribeImages")[0]["Owner.1"] == "amazon"


async def test_a_name_lookup_without_owner_is_refused_before_any_request(
    proxy: FaultProxy, make_connector: ConnectorFactory
) -> None:
    connector = make_connector(proxy.endpoint)

    with pytest.raises(InvalidRequest, match=r"lookup\.owner") as refused:
        await connector.resolve_image(name_pattern=PATTERN)

    assert refused.value.code == "OwnerRequired"
    assert proxy.queries("DescribeImages") == []


async def test_any_owner_is_an_explicit_choice_and_still_filters_by_name(
    proxy: FaultProxy, make_connector: ConnectorFactory
) -> None:
    connector = make_connector(proxy.endpoint)

    image = await connector.resolve_image(name_pattern=PATTERN, owner="*")

    assert image.name.startswith("amzn2-ami-hvm-")
    (query,) = proxy.queries("DescribeImages")
    assert "Owner.1" not in query
    assert query["Filter.1.Value.1"] == PATTERN


async def test_the_credentials_image_owner_parameter_is_the_default_owner(
    proxy: FaultProxy, make_connector: ConnectorFactory
) -> None:
    connector = make_connector(proxy.endpoint, parameters={"image_owner": AMAZON})

    image = await connector.resolve_image(name_pattern=PATTERN)

    assert image.owner == AMAZON
    assert proxy.queries("DescribeImages")[0]["Owner.1"] == AMAZON
