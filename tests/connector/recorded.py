"""Recorded-HTTP replay in libcloud's own style, for providers without a local emulator.

A ``RecordedHttp`` subclass answers each request from a method named after the URL path
(``/v2/droplets`` -> ``_v2_droplets``), exactly like libcloud's ``MockHttp`` test classes,
reading bodies from ``tests/connector/fixtures/<provider>/``. It also keeps every request it
saw, so tests can assert on what the connector actually sent.

The helpers at the end hold what every provider's error-mapping and release tests check alike,
so each provider's test only states the request its API takes.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import libcloud
import pytest
from libcloud.test import MockHttp as _MockHttp

from skyfleet.connectors import Connector, CreateRequest, NotFound, OwnershipMismatch
from tests.connector.conftest import CANARY, owner

FIXTURES = Path(__file__).parent / "fixtures"
# The responses apache-libcloud's maintainers recorded from the real APIs, shipped in its wheel.
LIBCLOUD_FIXTURES = Path(libcloud.__file__).parent / "test" / "compute" / "fixtures"

Reply = tuple[int, str, dict[str, str], str]
# libcloud's test helpers are unannotated; treat the base as dynamic rather than sprinkle ignores.
MockHttp: Any = _MockHttp


class Sent:
    def __init__(self, method: str, url: str, body: Any, headers: dict[str, str], origin: str | None = None) -> None:
        # Where the connection was made to ("https://host:port"): endpoint overrides show here.
        self.origin = origin
        self.method = method
        self.url = url
        self.path = urlsplit(url).path
        self.query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        self.body = body.decode() if isinstance(body, bytes) else body
        self.headers = headers

    def json(self) -> Any:
        return json.loads(self.body or "null")


class RecordedHttp(MockHttp):  # type: ignore[misc]  # dynamic base, see above
    __test__ = False  # a unittest.TestCase by inheritance; nothing for pytest to collect
    provider: ClassVar[str]
    type: ClassVar[str | None] = None
    sent: ClassVar[list[Sent]] = []
    # libcloud's MockHttp answers through ``requests_mock.mock()``, which patches requests'
    # transport for the whole process while one request runs: two connector threads replaying
    # at once would each reach the other's mock ("Failed to mock out URL"). One at a time.
    _replaying: ClassVar[threading.Lock] = threading.Lock()

    def request(self, *args: Any, **kwargs: Any) -> Any:
        with RecordedHttp._replaying:
            return super().request(*args, **kwargs)

    def prepared_request(self, *args: Any, **kwargs: Any) -> Any:
        with RecordedHttp._replaying:
            return super().prepared_request(*args, **kwargs)

    @classmethod
    def reset(cls, scenario: str | None = None) -> None:
        cls.type = scenario
        cls.sent = []

    def _get_request(self, method: str, url: str, body: Any = None, headers: Any = None) -> Reply:
        type(self).sent.append(Sent(method, url, body, dict(headers or {}), origin=getattr(self, "host", None)))
        reply: Reply = super()._get_request(method, url, body, headers)
        return reply

    def _get_method_name(self, type: str | None, use_param: str | None, qs: Any, path: str) -> str:
        # libcloud appends the scenario to the method name; falling back to the plain method
        # lets one handler branch on ``self.type`` instead of duplicating every path.
        # Colons (DigitalOcean tag names in paths) cannot stand in a method name either.
        typed: str = super()._get_method_name(type, use_param, qs, path).replace(":", "_")
        if hasattr(self, typed.replace("%", "_")):
            return typed
        plain: str = super()._get_method_name(None, use_param, qs, path).replace(":", "_")
        return plain

    def fixture(self, name: str) -> str:
        return (FIXTURES / self.provider / name).read_text()

    def recorded(
        self,
        status: int,
        path: str,
        edit: Callable[[Any], object] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """A response libcloud recorded from the real API (``path`` under its compute fixtures).

        ``edit`` changes the parsed body in place before it is served: it writes values of ours
        (owner tags, the name we sent) into the fields where the recording shows the provider
        keeps them, so the shape stays the provider's and only the values are the test's."""
        text = (LIBCLOUD_FIXTURES / path).read_text()
        if edit is not None:
            body = json.loads(text)
            edit(body)
            text = json.dumps(body)
        return status, text, {"content-type": "application/json", **(headers or {})}, HTTPStatus(status).phrase

    def handwritten(self, status: int, fixture: str, *, why: str, headers: dict[str, str] | None = None) -> Reply:
        """A response written for this project (``tests/connector/fixtures/<provider>/``), only
        where libcloud ships no recording of the call; ``why`` names what is missing."""
        assert why, "say which recording libcloud lacks"
        return self.reply(status, fixture, headers)

    def reply(self, status: int, fixture: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        """An empty answer (``fixture`` None: the 204s and bodiless 200s providers send), or a
        hand-written body (provider tests say why through ``handwritten``)."""
        body = self.fixture(fixture) if fixture else ""
        return status, body, {"content-type": "application/json", **(headers or {})}, HTTPStatus(status).phrase


def recording(path: str) -> Any:
    """A response libcloud recorded from the real API, parsed."""
    return json.loads((LIBCLOUD_FIXTURES / path).read_text())


def changes(http: type[RecordedHttp]) -> list[Sent]:
    """What was sent to change something at the provider: every request but reads and logins."""
    return [s for s in http.sent if s.method != "GET" and not s.path.endswith("/oauth2/token")]


async def destroyed(
    connector: Connector, http: type[RecordedHttp], *, ours: str, foreign: str, missing: str
) -> list[str]:
    """Destroy refuses a VM that is not ours, takes one already gone as done, and destroys
    ``ours`` (all for the owner ``uid-1``): the paths it sent DELETE to."""
    with pytest.raises(OwnershipMismatch):
        await connector.destroy(foreign, owner("uid-1"))
    await connector.destroy(missing, owner("uid-1"))
    await connector.destroy(ours, owner("uid-1"))
    return [s.path for s in http.sent if s.method == "DELETE"]


async def release_refusals(
    connector: Connector, http: type[RecordedHttp], *, ours: str, foreign: str, missing: str, uid: str
) -> None:
    """Release is supported, and refuses (sending no change) a VM that is not ``uid``'s or does not exist."""
    assert connector.capabilities.release
    # The message names the VM (by its last segment: Azure ids hold the secret subscription id).
    with pytest.raises(OwnershipMismatch, match=re.escape(foreign.rsplit("/", 1)[-1])):
        await connector.release(foreign, owner(uid))
    with pytest.raises(OwnershipMismatch):
        await connector.release(ours, owner("another-uid"))
    with pytest.raises(OwnershipMismatch):
        await connector.release(ours, owner(uid, cluster="another-cluster"))
    with pytest.raises(NotFound):
        await connector.release(missing, owner(uid))
    assert changes(http) == []


async def create_fails_as(
    connector: Connector,
    http: type[RecordedHttp],
    request: CreateRequest,
    scenario: str,
    expected: type[Exception],
    *,
    attempts: int,
    creating: Callable[[Sent], bool] = lambda sent: sent.method == "POST",
) -> None:
    """A create answered as in ``scenario`` raises ``expected`` after ``attempts`` creating
    requests (one: not retried), and the error does not carry the credential's secret."""
    http.reset(scenario)
    with pytest.raises(expected) as caught:
        await connector.create(request)
    assert len([s for s in http.sent if creating(s)]) == attempts
    assert CANARY not in repr(caught.value)
