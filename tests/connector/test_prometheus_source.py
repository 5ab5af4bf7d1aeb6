"""The Prometheus metric source against a real Prometheus scraping a load exporter: one number, or a
typed error that says why without quoting anything the server sent."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from skyfleet.metricsources import NoData, PrometheusClient, QueryInvalid, Sample, Unavailable
from skyfleet.testing.prometheus import LoadExporter, Prometheus
from tests.connector.conftest import CANARY

pytestmark = pytest.mark.connector


@pytest.fixture(scope="module")
def exporter() -> Iterator[LoadExporter]:
    with LoadExporter() as load:
        load.set("shop_load", 3.0)
        load.set("shop_requests", 1.0, pod="a")
        load.set("shop_requests", 2.0, pod="b")
        yield load


@pytest.fixture(scope="module")
def prometheus(exporter: LoadExporter) -> Iterator[Prometheus]:
    with Prometheus(targets=[exporter.target]) as prom:
        prom.wait_for("shop_load", lambda v: v == 3.0)
        prom.wait_for("count(shop_requests)", lambda v: v == 2)
        yield prom


@pytest.fixture
async def client() -> AsyncIterator[PrometheusClient]:
    async with PrometheusClient(timeout=2.0) as source:
        yield source


# (case, PromQL, the value) for answers that are one number
NUMBERS = [
    ("scalar", "scalar(shop_load)", 3.0),
    ("one-sample vector", "shop_load", 3.0),
    ("aggregated series", "sum(shop_requests)", 3.0),
    ("one series picked by label", 'shop_requests{pod="b"}', 2.0),
    ("literal", "42", 42.0),
]


@pytest.mark.parametrize(("case", "query", "value"), NUMBERS, ids=[c[0] for c in NUMBERS])
async def test_one_number(
    prometheus: Prometheus, client: PrometheusClient, case: str, query: str, value: float
) -> None:
    result = await client.query(prometheus.url, query)
    assert isinstance(result, Sample), result
    assert result.value == value
    assert abs(result.at - datetime.now(UTC)) < timedelta(seconds=10)


# (case, PromQL, error type, words the message must contain)
ERRORS = [
    ("several series", "shop_requests", QueryInvalid, "2 series"),
    ("empty vector", 'shop_requests{pod="gone"}', NoData, "no series"),
    ("metric nobody exports", "shop_nothing", NoData, "no series"),
    ("syntax error", "sum(shop_load", QueryInvalid, "rejected the query (HTTP 400, bad_data)"),
    ("range vector", "shop_load[1m]", QueryInvalid, "matrix"),
    ("string", '"hello"', QueryInvalid, "string"),
    ("not a number", "scalar(shop_load) * 0 / 0", NoData, "NaN"),
    ("infinite", "scalar(shop_load) / 0", NoData, "+Inf"),
]


@pytest.mark.parametrize(("case", "query", "kind", "says"), ERRORS, ids=[c[0] for c in ERRORS])
async def test_typed_errors(
    prometheus: Prometheus, client: PrometheusClient, case: str, query: str, kind: type, says: str
) -> None:
    result = await client.query(prometheus.url, query)
    assert type(result) is kind, result
    assert says in result.message
    assert query not in result.message  # the server's error text (which quotes the query) is never repeated


async def test_execution_error_is_an_invalid_query(prometheus: Prometheus, client: PrometheusClient) -> None:
    # Both sides have two series with no label to match them by: Prometheus refuses at execution (HTTP 422).
    result = await client.query(prometheus.url, "shop_requests + on() group_left shop_requests")
    assert isinstance(result, QueryInvalid), result
    assert "HTTP 422, execution" in result.message


async def test_reason_names_for_conditions() -> None:
    assert (Unavailable.reason, QueryInvalid.reason, NoData.reason) == ("MetricUnavailable", "QueryInvalid", "NoData")


async def test_wrong_path_is_unavailable(prometheus: Prometheus, client: PrometheusClient) -> None:
    result = await client.query(prometheus.url + "/not-prometheus", "shop_load")
    assert isinstance(result, Unavailable)
    assert "HTTP 404" in result.message


async def test_an_answer_too_large_is_refused_unread(prometheus: Prometheus) -> None:
    async with PrometheusClient(max_answer_bytes=200) as small:
        result = await small.query(prometheus.url, "shop_requests")
    assert isinstance(result, QueryInvalid)
    assert "exceeds" in result.message


async def test_prometheus_stopped_then_back(exporter: LoadExporter, client: PrometheusClient) -> None:
    with Prometheus(targets=[exporter.target]) as prom:
        prom.wait_for("shop_load", lambda v: v == 3.0)
        prom.stop()
        down = await client.query(prom.url, "shop_load")
        assert isinstance(down, Unavailable)
        assert down.message == "cannot connect"
        prom.start()
        back = await client.query(prom.url, "shop_load")
        assert isinstance(back, Sample)
        assert back.value == 3.0


async def test_a_server_that_never_answers_costs_only_the_timeout() -> None:
    # A listening socket nobody accepts on: the kernel completes the handshake, no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        async with PrometheusClient(timeout=1.0) as source:
            started = time.monotonic()
            results = await asyncio.gather(*(source.query(f"http://127.0.0.1:{port}", "up") for _ in range(3)))
            elapsed = time.monotonic() - started
    assert all(isinstance(r, Unavailable) and r.message == "no answer within 1s" for r in results), results
    assert elapsed < 2.0  # concurrent queries share the deadline, none waits for another


async def test_tls_is_verified(exporter: LoadExporter, client: PrometheusClient) -> None:
    with Prometheus(targets=[exporter.target], tls=True) as prom:
        untrusted = await client.query(prom.url, "vector(1)")
        assert isinstance(untrusted, Unavailable)
        assert "TLS verification" in untrusted.message
        trusted = await client.query(prom.url, "vector(1)", ca_pem=prom.ca_pem)
        assert isinstance(trusted, Sample)
        assert trusted.value == 1.0


# -- what a real Prometheus cannot be made to do: a loopback aiohttp server stands in (named as such) --


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A loopback server that records request headers and answers per path: /ok needs the bearer token,
    /redirect sends elsewhere, /leaky fails with a body that must never be repeated."""
    seen: list[dict[str, str]] = []
    answer = {"status": "success", "data": {"resultType": "scalar", "result": [time.time(), "5"]}}

    async def ok(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if request.headers.get("Authorization") != f"Bearer {CANARY}":
            return web.json_response({"status": "error", "errorType": "bad_data", "error": CANARY}, status=401)
        return web.json_response(answer)

    async def redirect(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        raise web.HTTPFound("/ok/api/v1/query")

    async def leaky(request: web.Request) -> web.Response:
        return web.json_response({"status": "error", "errorType": f"bad_data {CANARY}", "error": CANARY}, status=400)

    async def teapot(request: web.Request) -> web.Response:
        return web.Response(text=f"<html>{CANARY}</html>", status=500)

    app = web.Application()
    app.router.add_post("/ok/api/v1/query", ok)
    app.router.add_post("/redirect/api/v1/query", redirect)
    app.router.add_post("/leaky/api/v1/query", leaky)
    app.router.add_post("/teapot/api/v1/query", teapot)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_bearer_token_is_sent_and_never_shown(
    stand_in: tuple[str, list[dict[str, str]]], client: PrometheusClient
) -> None:
    url, seen = stand_in
    result = await client.query(url + "/ok", "up", bearer_token=CANARY)
    assert isinstance(result, Sample)
    assert result.value == 5.0
    refused = await client.query(url + "/ok", "up", bearer_token="wrong")
    assert isinstance(refused, Unavailable)
    assert "HTTP 401" in refused.message
    assert "bearer token" in refused.message
    assert [h.get("Authorization") for h in seen] == [f"Bearer {CANARY}", "Bearer wrong"]


async def test_redirects_are_not_followed(stand_in: tuple[str, list[dict[str, str]]], client: PrometheusClient) -> None:
    url, seen = stand_in
    result = await client.query(url + "/redirect", "up", bearer_token=CANARY)
    assert isinstance(result, Unavailable)
    assert "redirect refused (HTTP 302)" in result.message
    assert len(seen) == 1  # the token went to the URL the policy named, and nowhere else


@pytest.mark.parametrize("path", ["/leaky", "/teapot"])
async def test_error_messages_never_carry_the_body(
    stand_in: tuple[str, list[dict[str, str]]], client: PrometheusClient, path: str
) -> None:
    url, _ = stand_in
    result = await client.query(url + path, "up")
    assert isinstance(result, Unavailable)  # not a Prometheus error vocabulary: not taken for a bad query
    assert CANARY not in result.message
    assert len(result.message) < 200


async def test_a_name_resolving_to_a_refused_address_is_not_queried(prometheus: Prometheus) -> None:
    """A tenant's URL passes the endpoint rules for every address its host resolves to: `localhost`
    reaches this Prometheus only when the allow-list names loopback."""
    from skyfleet.connectors.endpoints import EndpointPolicy

    url = prometheus.url.replace("127.0.0.1", "localhost")
    async with PrometheusClient(timeout=2.0, address_check=EndpointPolicy().check_address) as refusing:
        result = await refusing.query(url, "shop_load")
    assert isinstance(result, Unavailable), result
    assert result.message == "the server's address is not allowed by the operator's endpoint allow-list"
    allowing = EndpointPolicy.parse(["127.0.0.1", "::1"]).check_address
    async with PrometheusClient(timeout=2.0, address_check=allowing) as allowed:
        answer = await allowed.query(url, "shop_load")
    assert isinstance(answer, Sample), answer
    assert answer.value == 3.0
