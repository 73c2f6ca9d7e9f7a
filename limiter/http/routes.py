"""Every route of the limiter: the proxied ones from the registry (`limiter.relay.registry`),
the API beside them (the OpenAPI file documents the same list)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from limiter.api import admin as api_admin
from limiter.api.models import list_gemini_models, list_models, root
from limiter.api.status import usage_status
from limiter.database import reachable
from limiter.http.app_keys import DATABASE, ENGINE, ERROR_SHAPE, REGISTRY
from limiter.relay.proxy import proxy, relay_unbilled
from limiter.relay.registry import ROUTES, Route


@cache
def openapi_document() -> dict[str, Any]:
    text = resources.files("limiter.api").joinpath("openapi.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving (no dependency is checked: that is /readyz)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    if await reachable(app[ENGINE], app[DATABASE].connect_timeout_seconds):
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "unavailable", "database": "unreachable"}, status=503)


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(request.app[REGISTRY]))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def proxy_handler(route: Route) -> Handler:
    """The aiohttp handler of one registry row; its errors, the limit refusal included, speak
    the row's dialect (`ERROR_SHAPE`, read by limiter.http.middleware)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        request[ERROR_SHAPE] = route.error_shape
        if not route.billed:
            return await relay_unbilled(request, route)
        return await proxy(request, route)

    return handle


def setup_routes(app: web.Application) -> None:
    app.router.add_routes([
        *(web.route(route.method, route.path, proxy_handler(route)) for route in ROUTES),
        web.get("/", root),  # HEAD / too
        web.get("/v1/models", list_models, allow_head=False),
        web.get("/v1beta/models", list_gemini_models, allow_head=False),
        web.get("/api/v1/usage/status", usage_status, allow_head=False),
        web.get("/api/v1/limits", api_admin.get_limits, allow_head=False),
        web.put("/api/v1/limits", api_admin.put_limits),
        web.put("/api/v1/limits/users/{username}", api_admin.put_user_limit),
        web.delete("/api/v1/limits/users/{username}", api_admin.delete_user_limit),
        web.put("/api/v1/limits/groups/{group}", api_admin.put_group_limit),
        web.delete("/api/v1/limits/groups/{group}", api_admin.delete_group_limit),
        web.get("/api/v1/usage/users", api_admin.usage_users, allow_head=False),
        web.get("/api/v1/usage/users/{username}", api_admin.usage_user, allow_head=False),
        web.get("/healthz", healthz, allow_head=False),
        web.get("/readyz", readyz, allow_head=False),
        web.get("/metrics", metrics, allow_head=False),
        web.get("/openapi.json", openapi, allow_head=False),
    ])
