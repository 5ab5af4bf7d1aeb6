"""At DEBUG, nothing logs the user data: EC2's RunInstances carries it in the request URL."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from skyfleet.connectors import CreateRequest
from skyfleet.logs import install_object_refs
from skyfleet.testing.faultproxy import FaultProxy
from tests.connector.conftest import AMI, ConnectorFactory, owner

pytestmark = pytest.mark.connector

USER_DATA = "#!/bin/sh\necho USERDATA-CANARY-7c1e > /etc/motd\n"


def spellings(text: str) -> list[str]:
    """Every form the user data travels in: as written, base64, and base64 in a query string."""
    b64 = base64.b64encode(text.encode()).decode()
    return [text, "USERDATA-CANARY-7c1e", b64, quote(b64, safe=""), b64[:40]]


def create(uid: str) -> CreateRequest:
    return CreateRequest(f"shop-web-{uid}", AMI, "t3.micro", user_data=USER_DATA, owner=owner(uid))


@pytest.fixture
def everything_at_debug(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """What ``skyfleet run --log-level DEBUG`` does: the root at DEBUG, our filters installed.
    The HTTP library loggers are opened up explicitly too, as a later setLevel could."""
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "urllib3.connectionpool", "libcloud"):
        caplog.set_level(logging.DEBUG, logger=name)
    root = logging.getLogger()
    install_object_refs(root)
    # install_object_refs pins the library loggers again; open the child the way a careless
    # setLevel would, so that the handler filter is what has to hold.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.DEBUG)
    yield
    for handler in root.handlers:
        handler.filters.clear()


async def test_a_create_at_debug_logs_no_user_data(
    everything_at_debug: None,
    caplog: pytest.LogCaptureFixture,
    proxy: FaultProxy,
    make_connector: ConnectorFactory,
) -> None:
    connector = make_connector(proxy.endpoint)
    # One create that succeeds, and one whose answer is lost: the error path prints URLs too.
    await connector.create(create("u0"))
    proxy.drop_next_response("RunInstances")
    await connector.create(create("u1"))

    assert proxy.count("requests:RunInstances") == 2  # the retry adopted the VM of the lost answer
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "RunInstances" not in text  # no request line of the HTTP layer made it
    for form in spellings(USER_DATA):
        assert form not in text
