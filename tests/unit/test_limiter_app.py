"""The app factory's own promises: routes documented, health, metrics on the given registry,
and errors that never leak a traceback."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry

from ledger.settings import DatabaseSettings
from limiter.http.app import create_app
from limiter.relay.registry import ROUTES
from limiter.settings import LimiterSettings
from tests.support.requirements import missing

OPENAPI = Path(__file__).resolve().parents[2] / "limiter" / "api" / "openapi.json"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_without_database(tmp_path: Path, registry: CollectorRegistry) -> web.Application:
    database = DatabaseSettings(url=f"postgresql://postgres@127.0.0.1:{closed_port()}/none",
                                connect_timeout_seconds=1.0)
    return create_app(LimiterSettings(spool_dir=str(tmp_path / "spool")), database,
                      registry=registry)


def test_openapi_is_valid_3_1_and_documents_every_route(tmp_path: Path) -> None:
    try:
        from openapi_spec_validator import validate
    except ImportError:
        missing("the openapi-spec-validator package")
        return
    document = json.loads(OPENAPI.read_text())
    validate(document)
    assert document["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, item in document["paths"].items()
                  for method in item if method != "parameters"}
    app = app_without_database(tmp_path, CollectorRegistry())
    served = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.resource is not None and route.method != "HEAD"}
    assert documented == served


async def test_health_metrics_and_openapi_without_a_database(
        aiohttp_client: Any, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    client = await aiohttp_client(app_without_database(tmp_path, registry))
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["database"] == "unreachable"
    served = await (await client.get("/openapi.json")).json()
    assert served == json.loads(OPENAPI.read_text())

    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    for line in ('agentmeter_limiter_fail_open_total{reason="database_error"} 0.0',
                 'agentmeter_limiter_fail_open_total{reason="timeout"} 0.0',
                 "agentmeter_limiter_spool_pending 0.0",
                 'agentmeter_limiter_requests_total{code="409",provider="anthropic",'
                 'route="/v1/messages"} 0.0'):
        assert line in text
    assert 'route="/healthz"' in text  # requests are counted by route template
    # Never the process-wide registry.
    assert REGISTRY.get_sample_value("agentmeter_limiter_spool_pending") is None
    assert registry.get_sample_value("agentmeter_limiter_requests_total", {
        "route": "/readyz", "code": "503", "provider": ""}) == 1


async def test_routes_are_labelled_by_template_not_path(aiohttp_client: Any,
                                                        tmp_path: Path) -> None:
    registry = CollectorRegistry()
    client = await aiohttp_client(app_without_database(tmp_path, registry))
    await client.get("/api/v1/usage/users/someone")
    await client.get("/no/such/path/12345")
    text = await (await client.get("/metrics")).text()
    assert 'route="/api/v1/usage/users/{username}"' in text
    assert "someone" not in text and "12345" not in text
    assert 'route="unmatched"' in text


async def test_unexpected_errors_are_a_generic_500_with_the_traceback_logged(
        aiohttp_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = app_without_database(tmp_path, CollectorRegistry())

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("internal detail: password=hunter2")

    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)
    with caplog.at_level(logging.ERROR, logger="agentmeter.limiter"):
        resp = await client.get("/broken")
    assert resp.status == 500
    body = await resp.json()
    assert body == {"error": {"code": "internal_error", "message": "Internal error."}}
    assert "hunter2" not in json.dumps(body)
    logged = [r for r in caplog.records if r.name == "agentmeter.limiter"]
    assert logged and logged[0].exc_info is not None
    assert "hunter2" in str(logged[0].exc_info[1])


async def test_ledger_down_on_the_status_route_is_503(aiohttp_client: Any,
                                                      tmp_path: Path) -> None:
    client = await aiohttp_client(app_without_database(tmp_path, CollectorRegistry()))
    resp = await client.get("/api/v1/usage/status", headers={"Authorization": "Bearer am-x"})
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "ledger_unavailable"
    # Without any credential the answer is 401 before the ledger is asked.
    assert (await client.get("/api/v1/usage/status")).status == 401


def test_the_documented_proxy_operations_are_exactly_the_registrys_routes() -> None:
    document = json.loads(OPENAPI.read_text())
    documented = {(method.upper(), path): operation
                  for path, item in document["paths"].items()
                  for method, operation in item.items()
                  if method != "parameters"
                  and operation.get("operationId", "").startswith("proxy_")}
    assert set(documented) == {(route.method, route.path) for route in ROUTES}
    for route in ROUTES:
        responses = documented[route.method, route.path]["responses"]
        assert {"401", "408", "413", "415", "502", "503", "504"} <= set(responses)
        assert ("409" in responses) == route.billed


def test_a_routes_error_shape_shapes_its_errors_and_joins_the_limit_refusal() -> None:
    from aiohttp.test_utils import make_mocked_request

    from limiter.http.app_keys import ERROR_SHAPE
    from limiter.http.errors import BadRequest, LimitExceeded
    from limiter.http.middleware import error_answer

    request = make_mocked_request("POST", "/v1beta/models/m:generateContent")
    request[ERROR_SHAPE] = lambda status, code, message: {
        "error": {"code": status, "message": message, "status": code.upper()}}
    refused = error_answer(request, BadRequest("Bad.", code="invalid_json"))
    assert refused.status == 400
    assert json.loads(cast(bytes, refused.body)) == {
        "error": {"code": 400, "message": "Bad.", "status": "INVALID_JSON"}}
    limited = error_answer(request, LimitExceeded({"message": "Chat usage limit exceeded."},
                                                  retry_after_seconds=5))
    assert json.loads(cast(bytes, limited.body)) == {
        "message": "Chat usage limit exceeded.",
        "error": {"code": 409, "message": "Chat usage limit exceeded.",
                  "status": "LIMIT_EXCEEDED"}}
