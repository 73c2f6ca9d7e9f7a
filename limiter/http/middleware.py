"""The two middlewares: request metrics (outermost) and domain errors -> JSON answers.

Every error a client sees is `{"error": {"code": ..., "message": ...}}` (the limit refusal is
the documented status object with its route's dialect's error object instead). Unexpected
exceptions are logged with their traceback and answered with a generic 500: no traceback, query
or secret ever reaches a client.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy.exc import DataError, SQLAlchemyError

from ledger.errors import InvalidValue, LedgerError, NotFoundError
from limiter.http.app_keys import ERROR_SHAPE, METRICS, PROVIDER, RESPONDED_AT, UPSTREAM_SECONDS
from limiter.http.errors import (
    CLIENT_CLOSED_REQUEST,
    LimiterError,
    LimitExceeded,
    RequestTimeout,
    error_body,
)

log = logging.getLogger("agentmeter.limiter")



def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(status, code, message), status=status, headers=headers)


def _code_for(reason: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_") or "error"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, _code_for(exc.reason), f"{exc.reason}.", headers)
    except Exception as exc:
        return error_answer(request, exc)


def error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer for an exception a handler raised."""
    if isinstance(exc, RequestTimeout):
        request.app[METRICS].client_timeouts_by("body").inc()
    if isinstance(exc, LimiterError):
        # The limit refusal merges the route's error object into its documented fields; an
        # error that shapes its own body (a dialect's own 404) keeps it; any other takes the
        # shape of the route it happened on.
        shape = request.get(ERROR_SHAPE)
        if isinstance(exc, LimitExceeded):
            body = exc.body() if shape is None else exc.body(shape)
        elif shape is None or type(exc).body is not LimiterError.body:
            body = exc.body()
        else:
            body = shape(exc.status, exc.code, exc.message)
        return web.json_response(body, status=exc.status, headers=exc.headers)
    if isinstance(exc, NotFoundError):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, InvalidValue):
        return error_response(400, "invalid_value", str(exc))
    if isinstance(exc, LedgerError):
        return error_response(400, "ledger_error", str(exc))
    if isinstance(exc, DataError):
        # The database refused a value the client sent (a NUL byte, a name too long for its
        # column): the request's fault, not an outage.
        return error_response(400, "invalid_value",
                              "A value in the request cannot be stored in the ledger.")
    if isinstance(exc, SQLAlchemyError | TimeoutError):  # only the ledger raises these here
        log.warning("ledger unreachable while answering %s %s: %s", request.method,
                    request.path, type(exc).__name__)
        return error_response(503, "ledger_unavailable",
                              "The spend ledger is unreachable; try again shortly.")
    log.error("unexpected error while answering %s %s", request.method, request.path,
              exc_info=exc)
    return error_response(500, "internal_error", "Internal error.")


def _route_label(request: web.Request) -> str:
    """The route template, never the raw path (usernames in paths would explode cardinality)."""
    match_info = request.match_info
    resource = match_info.route.resource
    if resource is None or match_info.http_exception is not None:  # 404 and 405
        return "unmatched"
    return resource.canonical


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except asyncio.CancelledError:
        status = CLIENT_CLOSED_REQUEST
        raise
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        observe_request(request, _route_label(request), status, started)


def observe_request(request: web.Request, route: str, status: int, started: float) -> None:
    """Count an answered request and its durations."""
    metrics = request.app[METRICS]
    # Until the client had the whole answer: recording after it is not client latency.
    elapsed = request.get(RESPONDED_AT, time.perf_counter()) - started
    metrics.requests_by(route, str(status), request.get(PROVIDER, "")).inc()
    metrics.request_duration_by(route).observe(elapsed)
    upstream = request.get(UPSTREAM_SECONDS)
    if upstream is not None:
        metrics.overhead_by(route).observe(max(0.0, elapsed - upstream))
