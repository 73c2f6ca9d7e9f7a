"""A fake LLM provider on a real port that answers every call coding agents make, in the
providers' real shapes: OpenAI Chat Completions and Responses (with its retrieve, delete, cancel,
input-items and input-tokens routes), Anthropic Messages (with `count_tokens`) and the Gemini
API (`:generateContent`, `:streamGenerateContent` as SSE or a JSON array, `:countTokens`), each
dialect's model list, and `HEAD /`.

Tests script the answers (`Reply`, first in first out, then `default`) and read every call it
received (`calls`) with the usage it reported for each, to compare with a ledger to the micro.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from ledger.tokens import TokenUsage
from tests.support import shapes_anthropic, shapes_gemini, shapes_openai
from tests.support.agent_replies import Reply, estimated_tokens
from tests.support.local_server import LocalServer

DEFAULT_MODELS = {"openai": ["gpt-5-codex", "gpt-5-mini"],
                  "anthropic": ["claude-sonnet-4-6", "claude-haiku-4-5"],
                  "google": ["gemini-2.5-pro", "gemini-2.5-flash"]}


@dataclass
class Call:
    """One request the fake received, and the usage it reported (billed answers only)."""

    method: str
    path: str
    query: str
    headers: CIMultiDict[str]
    body: Any
    reported: TokenUsage | None = None


# Where the middleware leaves a request's `Call` (agents make calls concurrently).
_CALL = web.RequestKey("call", Call)


class FakeAgentsProvider(LocalServer):
    """The fake provider; start it with `await fake.start()` (or `async with`), point clients
    at `base_url` (without a version suffix: clients add `/v1`, `/v1beta`)."""

    def __init__(self, default: Reply | None = None,
                 models: dict[str, list[str]] | None = None) -> None:
        super().__init__()
        self.default = default or Reply()
        self.replies: deque[Reply] = deque()
        self.models = models or DEFAULT_MODELS
        self.calls: list[Call] = []
        # Stored Responses by id: the object and the input items it was asked with.
        self.responses: dict[str, tuple[dict[str, Any], list[Any]]] = {}
        self._ids = itertools.count(1)

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def reported(self) -> list[TokenUsage]:
        """The usage of every billed answer, in order."""
        return [call.reported for call in self.calls if call.reported is not None]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.middlewares.append(self._record)
        add = app.router
        add.add_route("HEAD", "/", _ok)
        add.add_get("/", _ok, allow_head=False)
        add.add_get("/v1/models", self._models)
        add.add_post("/v1/chat/completions", self._chat)
        add.add_post("/v1/responses", self._responses)
        add.add_post("/v1/responses/input_tokens", self._input_tokens)
        add.add_get("/v1/responses/{id}", self._response_get)
        add.add_delete("/v1/responses/{id}", self._response_delete)
        add.add_post("/v1/responses/{id}/cancel", self._response_cancel)
        add.add_get("/v1/responses/{id}/input_items", self._response_input_items)
        add.add_post("/v1/messages", self._messages)
        add.add_post("/v1/messages/count_tokens", self._count_tokens)
        for version in ("v1beta", "v1"):
            add.add_post(f"/{version}/models/{{target}}", self._gemini)
        add.add_get("/v1beta/models", self._gemini_models)
        add.add_get("/v1beta/models/{model}", self._gemini_model)
        return app

    # Recording and scripting -------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        call = Call(request.method, request.path, request.query_string,
                    CIMultiDict(request.headers), body)
        self.calls.append(call)
        request[_CALL] = call
        return await handler(request)

    def _next(self, body: dict[str, Any]) -> Reply:
        """The next queued reply; a tool call only to a request that offers tools (an agent's
        side calls, such as a session title, offer none and get the default answer)."""
        if not self.replies or (self.replies[0].tool_call is not None and not body.get("tools")):
            return self.default
        return self.replies.popleft()

    @staticmethod
    def _billed(request: web.Request, reply: Reply) -> None:
        request[_CALL].reported = reply.usage

    @staticmethod
    def _refuse(reply: Reply, fallback: dict[str, Any]) -> web.Response:
        return web.json_response(reply.body or fallback, status=reply.status,
                                 headers=reply.headers)

    @staticmethod
    async def _stream(request: web.Request, events: list[str],
                      content_type: str = "text/event-stream") -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type,
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        for event in events:
            await response.write(event.encode())
        await response.write_eof()
        return response

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        body = await request.json()
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object")
        return body

    # OpenAI ------------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        if "anthropic-version" in request.headers:
            return web.json_response(shapes_anthropic.models_list(self.models["anthropic"]))
        return web.json_response(shapes_openai.models_list(self.models["openai"]))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        reply = self._next(body)
        if reply.is_refusal:
            return self._refuse(reply, shapes_openai.error_body("refused by the fake"))
        self._billed(request, reply)
        model = str(body.get("model"))
        if body.get("stream") is not True:
            return web.json_response(shapes_openai.chat_body(reply, model))
        options = body.get("stream_options")
        include = isinstance(options, dict) and options.get("include_usage") is True
        return await self._stream(request, shapes_openai.chat_events(reply, model, include))

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        reply = self._next(body)
        if reply.is_refusal:
            return self._refuse(reply, shapes_openai.error_body("refused by the fake"))
        self._billed(request, reply)
        model, response_id = str(body.get("model")), f"resp_fake{next(self._ids)}"
        answer = shapes_openai.response_object(reply, model, response_id, status="completed",
                                               request=body)
        if body.get("store", True) is not False:
            given = body.get("input")
            items = given if isinstance(given, list) else [
                {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": str(given)}]}]
            self.responses[response_id] = (answer, items)
        if body.get("stream") is not True:
            return web.json_response(answer)
        return await self._stream(request, shapes_openai.responses_events(
            reply, model, response_id, body))

    async def _input_tokens(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "response.input_tokens",
                                  "input_tokens": estimated_tokens(await request.read())})

    def _stored(self, request: web.Request) -> tuple[dict[str, Any], list[Any]]:
        response_id = request.match_info["id"]
        if response_id not in self.responses:
            raise web.HTTPNotFound(
                text=json.dumps(shapes_openai.error_body(
                    f"Response with id '{response_id}' not found.")),
                content_type="application/json")
        return self.responses[response_id]

    async def _response_get(self, request: web.Request) -> web.Response:
        return web.json_response(self._stored(request)[0])

    async def _response_delete(self, request: web.Request) -> web.Response:
        answer, _ = self._stored(request)
        del self.responses[answer["id"]]
        return web.json_response({"id": answer["id"], "object": "response.deleted",
                                  "deleted": True})

    async def _response_cancel(self, request: web.Request) -> web.Response:
        answer, _ = self._stored(request)
        return web.json_response({**answer, "status": "cancelled"})

    async def _response_input_items(self, request: web.Request) -> web.Response:
        _, items = self._stored(request)
        data = [{"id": f"msg_in_{n}", **item} for n, item in enumerate(items)
                if isinstance(item, dict)]
        return web.json_response({"object": "list", "data": data, "has_more": False,
                                  "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None})

    # Anthropic ---------------------------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        reply = self._next(body)
        if reply.is_refusal:
            return self._refuse(reply, shapes_anthropic.error_body("refused by the fake"))
        self._billed(request, reply)
        model = str(body.get("model"))
        if body.get("stream") is not True:
            return web.json_response(shapes_anthropic.messages_body(reply, model))
        return await self._stream(request, shapes_anthropic.messages_events(reply, model))

    async def _count_tokens(self, request: web.Request) -> web.Response:
        return web.json_response({"input_tokens": estimated_tokens(await request.read())})

    # Gemini ------------------------------------------------------------------------------------

    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        model, _, action = request.match_info["target"].partition(":")
        if action == "countTokens":
            total = estimated_tokens(await request.read())
            return web.json_response(shapes_gemini.count_tokens_body(total))
        if action not in ("generateContent", "streamGenerateContent"):
            return web.json_response(shapes_gemini.error_body(
                404, f"Method {action!r} not found.", "NOT_FOUND"), status=404)
        reply = self._next(await self._json(request))
        if reply.is_refusal:
            return self._refuse(reply, shapes_gemini.error_body(
                reply.status, "refused by the fake", "FAILED_PRECONDITION"))
        self._billed(request, reply)
        if action == "generateContent":
            return web.json_response(shapes_gemini.generate_body(reply, model))
        chunks = shapes_gemini.stream_chunks(reply, model)
        if request.query.get("alt") == "sse":
            return await self._stream(request, shapes_gemini.sse_stream(chunks))
        return await self._stream(request, shapes_gemini.array_stream(chunks),
                                  "application/json; charset=UTF-8")

    async def _gemini_models(self, request: web.Request) -> web.Response:
        return web.json_response(shapes_gemini.models_list(self.models["google"]))

    async def _gemini_model(self, request: web.Request) -> web.Response:
        listed = shapes_gemini.models_list([request.match_info["model"]])
        return web.json_response(listed["models"][0])


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")
