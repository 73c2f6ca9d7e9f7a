"""The proxy handler of every billed route: identify, check the limit, forward, then record
what the answer cost.

Order matters: the limit check is sent to the ledger (or answered from the check cache) on the
request head alone, and its answer (401, 409) comes before anything the request could earn
(400, 413, 415). A small body (up to `OVERLAP_BODY_BYTES` declared) is read, parsed, matched to
its model and encoded for the provider while the ledger answers, so that admission is followed
by one write upstream; a larger body is read only once the caller is admitted (an unknown key
or a blocked user costs no upload: at most `OVERLAP_BODY_BYTES` of a body are read before the
key is known valid). Bodies are read within the bounds of `limiter.relay.body`; the model must
be declared (unless `unknown_models: allow`); strict mode holds an upper bound (with the
service tier, speed and web searches the request asks for); the usage, with the service tier
and fees the answer reports (an estimated record: those the request asked for; web searches
counted as the provider bills them, `Asked.billed`), is
appended to the journal just before the answer's last byte goes out (one page-cache write) and
committed to the ledger after it, so recording adds next to nothing to the latency the client
sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from aiohttp import web

from ledger.catalog import Model
from ledger.usage import UsageRecord
from limiter.admission.answer_owners import AnswerOwners
from limiter.admission.catalog_cache import CatalogUnavailable
from limiter.admission.credentials import credential_of
from limiter.admission.enforcement import Admission, strict_upper_bound
from limiter.http.app_keys import (
    ANSWER_OWNERS,
    BODY_BUDGET,
    CATALOG,
    CLOCK,
    ENFORCER,
    METRICS,
    PROVIDER,
    RECORDER,
    RESPONDED_AT,
    SETTINGS,
    UPSTREAM_SECONDS,
    UPSTREAMS,
)
from limiter.http.errors import BadRequest, LimiterError
from limiter.recording.record_files import Entry
from limiter.relay.body import BodyHold, parse_json_object, read_capped
from limiter.relay.dialects.base import Asked, estimated_billing
from limiter.relay.forward import ForwardResult, UpstreamCall, relay
from limiter.relay.prepare import prepare_call
from limiter.relay.registry import Route
from limiter.relay.upstreams import Upstream

log = logging.getLogger("agentmeter.limiter")

CHAT_HEADER = "X-Chat-ID"
# Bodies declared this small are read while the limit check is out (see the module doc).
OVERLAP_BODY_BYTES = 64 * 1024
MAX_CHAT_ID_LENGTH = 200


def chat_of(request: web.Request) -> str | None:
    chat = request.headers.get(CHAT_HEADER, "").strip()
    if not chat:
        return None
    if len(chat) > MAX_CHAT_ID_LENGTH:
        raise BadRequest(f"{CHAT_HEADER} is longer than {MAX_CHAT_ID_LENGTH} characters.",
                         code="invalid_chat_id")
    if not chat.isprintable():  # undecodable bytes could not be stored in the ledger
        raise BadRequest(f"{CHAT_HEADER} holds control characters or undecodable bytes.",
                         code="invalid_chat_id")
    return chat


async def find_model(request: web.Request, name: str) -> Model | None:
    """The declared model for `name`, None for an unknown one that may pass; 400 otherwise.

    Raises CatalogUnavailable when the catalog cannot be read and no copy is cached (the
    caller decides: a failed-open request passes unpriced, any other is answered 503).
    """
    catalog = await request.app[CATALOG].get()
    model = catalog.find(name)
    if model is not None and model.enabled:
        return model
    if model is not None and model.declared:
        raise BadRequest(f"Model {name!r} is disabled on this gateway.",
                         code="model_not_allowed")
    if request.app[SETTINGS].unknown_models == "allow":
        return model
    raise BadRequest(f"Model {name!r} is not declared on this gateway.", code="model_not_allowed")


@dataclass(slots=True)
class Prepared:
    """A request read, checked and encoded for the provider, waiting for its admission."""

    raw: bytearray
    # The body's bytes under max_buffered_body_bytes, released once the call is sent.
    hold: BodyHold
    body: dict[str, Any]
    model_name: str
    model: Model | None
    chat: str | None
    call: UpstreamCall
    asked: Asked
    # The catalog could not be read: only a failed-open admission lets the request pass.
    catalog_error: CatalogUnavailable | None


@dataclass(slots=True)
class Exchange:
    """One admitted request on its way to the provider, and what its record needs."""

    request: web.Request
    route: Route
    upstream: Upstream
    # Handed to the relay (which drops the request once sent).
    call: UpstreamCall | None
    admission: Admission
    model: Model | None
    model_name: str
    chat: str | None
    asked: Asked
    reservation_id: str | None
    # The idempotency key of the usage record, fixed when the request arrived.
    record_id: str
    arrived: datetime
    # Resolved as soon as the client has the whole answer (before the usage is recorded).
    answered: asyncio.Future[web.StreamResponse]


async def proxy(request: web.Request, route: Route) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    request[PROVIDER] = app[UPSTREAMS].label_for(route)
    record_id = str(uuid.uuid4())
    now = app[CLOCK]()
    enforcer = app[ENFORCER]

    admitting = enforcer.admit(credential_of(request, settings), now)
    early = await _prepare_while_checking(request, route, admitting)
    try:
        admission = await admitting
    except BaseException:
        if isinstance(early, Prepared):
            early.hold.release()
        raise
    if isinstance(early, LimiterError):
        raise early
    prepared = early if early is not None else await _prepare(request, route)
    try:
        if prepared.catalog_error is not None and not admission.failed_open:
            raise prepared.catalog_error
        referenced = route.dialect.referenced_answer(prepared.body)
        if referenced is not None:
            await app[ANSWER_OWNERS].check(referenced, admission.identity.user_id,
                                           route.dialect)
        reservation_id: str | None = None
        if enforcer.strict:
            asked = prepared.asked
            bound = strict_upper_bound(prepared.model, len(prepared.raw),
                                       route.dialect.requested_max_tokens(prepared.body),
                                       service_tier=asked.service_tier, speed=asked.speed,
                                       web_searches=asked.web_searches)
            reservation_id = await enforcer.hold(admission, bound, now)
    except BaseException:
        prepared.hold.release()
        raise

    answered: asyncio.Future[web.StreamResponse] = asyncio.get_running_loop().create_future()
    exchange = Exchange(request, route, prepared.call.upstream, prepared.call, admission,
                        prepared.model, prepared.model_name, prepared.chat, prepared.asked,
                        reservation_id,
                        record_id, now, answered)
    del prepared, early
    # The exchange runs as its own task: the handler returns (freeing the keep-alive
    # connection for the agent's next request) once the answer is out, while the task records
    # the usage; and a handler cancelled because its client left cannot stop that recording
    # (it cancels only `answered`, which the task then leaves alone: no shield needed).
    task = app[RECORDER].spawn(_forward_and_record(exchange))
    task.add_done_callback(lambda done: _settle(answered, done))
    return await answered


async def relay_unbilled(request: web.Request, route: Route) -> web.StreamResponse:
    """A route whose calls cost nothing (token counting, retrieving a stored answer): the
    caller must be known, but no limit applies and nothing is recorded. An answer the call
    names (in its path, or as the one it builds on) must be the caller's. The body, if any, is
    read within the same bounds and forwarded as it came."""
    app = request.app
    settings = app[SETTINGS]
    request[PROVIDER] = app[UPSTREAMS].label_for(route)
    identity = await app[ENFORCER].identify(credential_of(request, settings))
    raw, hold = await _read_body(request)
    try:
        body = parse_json_object(raw) if raw.strip() else {}
        named = (request.match_info[route.answer_param] if route.answer_param is not None
                 else route.dialect.referenced_answer(body))
        if named is not None:
            await app[ANSWER_OWNERS].check(named, identity.user_id, route.dialect)
        upstream = app[UPSTREAMS].for_call(route, await _named_model(request, route, body))
        request[PROVIDER] = upstream.name
        call = prepare_call(route=route, upstream=upstream, request=request, body=body,
                            raw_body=cast(bytes, raw), on_sent=hold.release)
    except BaseException:
        hold.release()
        raise
    result = await relay(call, request)
    _observe_upstream(request, upstream, result)
    if not result.response.prepared and not result.client_gone:
        with contextlib.suppress(ConnectionError):
            await _send_whole(request, cast(web.Response, result.response))
    return result.response


async def _named_model(request: web.Request, route: Route,
                       body: dict[str, Any]) -> Model | None:
    """The declared model an unbilled call names, if any: it picks the upstream, nothing else
    (an unknown or missing model, or an unreadable catalog, leaves the kind's default)."""
    name = (request.match_info.get(route.model_param) if route.model_param is not None
            else body.get("model"))
    if not isinstance(name, str):
        return None
    try:
        return (await request.app[CATALOG].get()).find(name)
    except CatalogUnavailable:
        return None


async def _read_body(request: web.Request) -> tuple[bytearray, BodyHold]:
    """The body read within its bounds, and its hold under max_buffered_body_bytes (released
    here if reading fails, by the caller once the body is sent or refused)."""
    settings = request.app[SETTINGS]
    hold = await request.app[BODY_BUDGET].reserve(request.content_length or 0)
    try:
        raw = await read_capped(request, settings.max_body_bytes,
                                settings.client_body_timeout_seconds, hold)
    except BaseException:
        hold.release()
        raise
    return raw, hold


async def _prepare(request: web.Request, route: Route) -> Prepared:
    """Read the body within its bounds, parse it, find its model and encode the call."""
    app = request.app
    raw, hold = await _read_body(request)
    try:
        body = parse_json_object(raw)
        route.dialect.check_request(body)
        model_name = route.model_of(body, request.match_info)
        catalog_error: CatalogUnavailable | None = None
        try:
            model = await find_model(request, model_name)
        except CatalogUnavailable as exc:
            model, catalog_error = None, exc
        chat = chat_of(request)
        upstream = app[UPSTREAMS].for_call(route, model)
        request[PROVIDER] = upstream.name
        # the bytearray is sent as it is: no copy of a large body
        call = prepare_call(route=route, upstream=upstream, request=request, body=body,
                            raw_body=cast(bytes, raw), on_sent=hold.release)
    except BaseException:
        hold.release()
        raise
    return Prepared(raw, hold, body, model_name, model, chat, call,
                    route.dialect.asked(body, model_name), catalog_error)


async def _prepare_while_checking(request: web.Request, route: Route,
                                  admitting: Awaitable[Admission]
                                  ) -> Prepared | LimiterError | None:
    """`_prepare` a small body while the check is out: the request, or its error held for
    later (the check's answer goes first). None for a body not declared small (not read)."""
    length = request.content_length
    if length is None or length > OVERLAP_BODY_BYTES:
        return None
    try:
        return await _prepare(request, route)
    except LimiterError as exc:
        return exc
    except BaseException:
        # The client went away mid-body: the check finishes on its own, its answer unused.
        asyncio.ensure_future(admitting).add_done_callback(_ignore_outcome)
        raise


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: an unused refusal is not an error to log


def _settle(answered: asyncio.Future[web.StreamResponse],
            task: asyncio.Task[web.StreamResponse]) -> None:
    """Hand the task's outcome to the handler if the answer was not handed over already."""
    if task.cancelled():
        if not answered.done():
            answered.cancel()
        return
    error = task.exception()  # also marks it retrieved
    if answered.done():
        if error is not None:
            log.error("recording a usage record failed", exc_info=error)
        return
    if error is not None:
        answered.set_exception(error)
    else:
        answered.set_result(task.result())


async def _send_whole(request: web.Request, response: web.Response) -> None:
    """Send a complete answer; `write_eof` waits until the client has taken it (back-pressure:
    the connection's next pipelined request is not read before)."""
    await response.prepare(request)
    await response.write_eof()


def _usage_record(x: Exchange, result: ForwardResult) -> UsageRecord | None:
    if result.usage is None:
        return None
    billing = x.asked.billed(estimated_billing(result.billing, x.asked)
                             if result.estimated or result.partial else result.billing)
    return UsageRecord(
        id=x.record_id,
        user_id=x.admission.identity.user_id,
        model=x.model.name if x.model is not None else x.model_name,
        provider=x.upstream.name,
        usage=result.usage,
        created_at=x.arrived,
        chat=x.chat,
        partial=result.partial,
        reservation_id=x.reservation_id,
        response_id=AnswerOwners.storable(result.answer_id),
        service_tier=billing.service_tier,
        batch=billing.batch,
        speed=billing.speed,
        web_searches=billing.web_searches,
    )


async def _forward_and_record(x: Exchange) -> web.StreamResponse:
    request = x.request
    app = request.app
    recorder = app[RECORDER]
    journaled: Entry | None = None

    def journal(record: UsageRecord | None) -> None:
        """Before the answer's last byte: a process killed after it cannot lose the record."""
        nonlocal journaled
        if record is not None:
            journaled = recorder.journal_now(record)
            if record.response_id is not None:
                app[ANSWER_OWNERS].remember(record.response_id, record.user_id)

    call, x.call = x.call, None
    assert call is not None
    try:
        # streams: before_end is called before the chunk with the terminal event
        result = await relay(call, request,
                             before_end=lambda done: journal(_usage_record(x, done)))
    except BaseException:
        # 502/504 or the client went away before any answer: nothing was spent.
        await asyncio.shield(recorder.release(x.reservation_id))
        raise

    record = _usage_record(x, result)
    response = result.response
    if not response.prepared and not result.client_gone:
        # The provider has charged whatever happens to the client now: record regardless.
        if journaled is None:
            journal(record)
        with contextlib.suppress(ConnectionError):
            await _send_whole(request, cast(web.Response, response))
    request[RESPONDED_AT] = time.perf_counter()
    if not x.answered.done():
        x.answered.set_result(response)
    _observe_upstream(request, x.upstream, result)  # after the answer: not on its path

    if record is None:
        await recorder.release(x.reservation_id)
        if result.status < 400:
            log.warning("the provider answered without usage; nothing recorded",
                        extra={"provider": x.upstream.name, "model": x.model_name})
        return response
    recorder.record(record, journaled)
    return response


def _observe_upstream(request: web.Request, upstream: Upstream, result: ForwardResult) -> None:
    metrics = request.app[METRICS]
    request[UPSTREAM_SECONDS] = result.upstream_seconds
    metrics.upstream_duration_by(upstream.name).observe(result.upstream_seconds)
    if result.first_byte_seconds is not None:
        metrics.time_to_first_token_by(upstream.name).observe(result.first_byte_seconds)

