"""A fake LLM provider on a real port, speaking OpenAI Chat Completions and Anthropic Messages.

Tests script what it answers (`Answer`: text, reference usage, status, pauses, hangs, drops,
error events) and read what it received (`FakeUpstream.received`). The usage it reports is given
as the reference `TokenUsage` and converted to each provider's own fields, so a test can check the
limiter's reading against the reference per token kind. Standalone for benchmarks:
`python -m tests.support.fake_upstream --port P`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from ledger.tokens import TokenUsage
from tests.support.local_server import LocalServer

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"
ANTHROPIC_COUNT_TOKENS_PATH = "/v1/messages/count_tokens"


@dataclass
class Answer:
    """What the fake answers to one request (the default answer when none is queued)."""

    text: str = "Hello from the fake upstream, streamed in pieces."
    usage: TokenUsage = field(default_factory=lambda: TokenUsage(input=12, output=9))
    # OpenAI only: part of the output reported as reasoning (already inside completion_tokens).
    reasoning_tokens: int = 0
    status: int = 200
    # Error answers (status >= 400) report usage too when set.
    usage_on_error: bool = False
    # Send no usage at all (a provider or proxy that does not report it).
    omit_usage: bool = False
    # Events written before waiting for `resume` (set by the test).
    pause_after: int | None = None
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    # Stream: after the last event, wait for `resume` before ending the response.
    pause_before_end: bool = False
    # Events written before the connection is cut (no terminal event, no chunked end).
    drop_after: int | None = None
    # Events written before a provider error event, after which the stream ends cleanly.
    error_after: int | None = None
    # Wait this long before answering at all (while the caller stays connected).
    hang_seconds: float = 0.0
    event_delay: float = 0.0
    # Write each event in pieces of this many bytes (exercises SSE reassembly over TCP).
    write_size: int | None = None
    line_ending: str = "\n"
    # The model named in the answer (default: the one requested).
    model: str | None = None
    # gzip the (non-streamed) answer when the caller accepts it.
    compress: bool = False
    # Extra headers on a non-streamed answer (e.g. a provider's Set-Cookie).
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    path: str
    headers: CIMultiDict[str]
    raw: bytes
    body: Any
    # The path and query string exactly as they arrived.
    raw_path: str = ""


# Reference usage -> provider fields -----------------------------------------------------------


def openai_usage_json(usage: TokenUsage, reasoning_tokens: int = 0) -> dict[str, Any]:
    if usage.cache_write_1h:
        raise ValueError("OpenAI reports no one-hour cache writes")
    details: dict[str, int] = {"cached_tokens": usage.cache_read, "audio_tokens": 0}
    if usage.cache_write:
        details["cache_write_tokens"] = usage.cache_write
    prompt = usage.input + usage.cache_read + usage.cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output,
        "total_tokens": prompt + usage.output,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


def anthropic_usage_json(usage: TokenUsage, *, output: int | None = None) -> dict[str, Any]:
    return {
        "input_tokens": usage.input,
        "cache_creation_input_tokens": usage.cache_write + usage.cache_write_1h,
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": usage.cache_write,
                           "ephemeral_1h_input_tokens": usage.cache_write_1h},
        "output_tokens": usage.output if output is None else output,
        "service_tier": "standard",
    }


def pieces(text: str) -> list[str]:
    """The text cut into word-sized deltas, as a model streams it."""
    words = text.split(" ")
    return [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]


# Answer bodies and streams ------------------------------------------------------------------


def openai_body(answer: Answer, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": answer.text, "refusal": None}}],
    }
    if not answer.omit_usage:
        body["usage"] = openai_usage_json(answer.usage, answer.reasoning_tokens)
    return body


def anthropic_body(answer: Answer, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": answer.text}],
        "stop_reason": "end_turn", "stop_sequence": None,
    }
    if not answer.omit_usage:
        body["usage"] = anthropic_usage_json(answer.usage)
    return body


def error_body(path: str, answer: Answer) -> dict[str, Any]:
    if path == ANTHROPIC_PATH:
        body: dict[str, Any] = {"type": "error",
                                "error": {"type": "api_error", "message": "fake failure"}}
        if answer.usage_on_error:
            body["usage"] = anthropic_usage_json(answer.usage)
    else:
        body = {"error": {"message": "fake failure", "type": "server_error", "code": None}}
        if answer.usage_on_error:
            body["usage"] = openai_usage_json(answer.usage, answer.reasoning_tokens)
    return body


def sse_event(data: dict[str, Any] | str, event: str | None = None) -> str:
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"


def openai_events(answer: Answer, model: str, include_usage: bool) -> list[str]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return sse_event({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish}], **extra})

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in pieces(answer.text)]
    events.append(chunk({}, "stop"))
    if include_usage and not answer.omit_usage:
        events.append(sse_event({**base, "choices": [],
                            "usage": openai_usage_json(answer.usage, answer.reasoning_tokens)}))
    events.append(sse_event("[DONE]"))
    return events


def openai_error_event() -> str:
    return sse_event({"error": {"message": "fake failure mid-stream", "type": "server_error"}})


def anthropic_events(answer: Answer, model: str) -> list[str]:
    start_usage = anthropic_usage_json(answer.usage, output=1)
    # message_delta repeats the input side: a parser that summed would double-bill it.
    delta_usage = anthropic_usage_json(answer.usage)
    del delta_usage["cache_creation"], delta_usage["service_tier"]
    if answer.omit_usage:
        start_usage, delta_usage = {}, {}
    message: dict[str, Any] = {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    events = [
        sse_event({"type": "message_start", "message": message}, "message_start"),
        sse_event({"type": "content_block_start", "index": 0,
              "content_block": {"type": "text", "text": ""}}, "content_block_start"),
        sse_event({"type": "ping"}, "ping"),
    ]
    events += [sse_event({"type": "content_block_delta", "index": 0,
                     "delta": {"type": "text_delta", "text": piece}}, "content_block_delta")
               for piece in pieces(answer.text)]
    events += [
        sse_event({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse_event({"type": "message_delta",
              "delta": {"stop_reason": "end_turn", "stop_sequence": None},
              "usage": delta_usage}, "message_delta"),
        sse_event({"type": "message_stop"}, "message_stop"),
    ]
    return events


def anthropic_error_event() -> str:
    return sse_event({"type": "error", "error": {"type": "overloaded_error",
                                            "message": "fake overload mid-stream"}}, "error")


# The server -------------------------------------------------------------------------------------


class FakeUpstream(LocalServer):
    """The fake provider; `answers` are used first-in first-out, then `default`. `base_url` is
    the provider base URL as the limiter's settings take it (no /v1)."""

    def __init__(self, default: Answer | None = None, keep_received: bool = True) -> None:
        super().__init__()
        self.default = default or Answer()
        self.answers: deque[Answer] = deque()
        # Off for a long-running fake (benchmarks): every request kept grows it without end.
        self.keep_received = keep_received
        self.received: list[Received] = []
        # Set when a stream's caller closed the connection before the stream ended.
        self.disconnected = asyncio.Event()

    def queue(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(OPENAI_PATH, self._handle)
        app.router.add_post(ANTHROPIC_PATH, self._handle)
        app.router.add_post(ANTHROPIC_COUNT_TOKENS_PATH, self._count_tokens)
        return app

    async def _count_tokens(self, request: web.Request) -> web.Response:
        """Anthropic's token counting: free, answers `{"input_tokens": N}` (here: bytes / 4)."""
        raw = await request.read()
        if self.keep_received:
            self.received.append(Received(request.path, CIMultiDict(request.headers), raw,
                                          json.loads(raw), request.raw_path))
        return web.json_response({"input_tokens": len(raw) // 4})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if self.keep_received:
            self.received.append(Received(request.path, CIMultiDict(request.headers), raw,
                                          body, request.raw_path))
        answer = self.answers.popleft() if self.answers else self.default
        if not isinstance(body, dict):
            return web.json_response({"error": {"message": "not JSON"}}, status=400)
        model = answer.model or str(body.get("model", "fake-model"))
        if answer.hang_seconds:
            try:
                await self._wait(request, None, answer.hang_seconds)
            except ConnectionError:
                return web.Response(status=499)
        if answer.status >= 400:
            return web.json_response(error_body(request.path, answer), status=answer.status)
        if body.get("stream") is not True:
            shape = anthropic_body if request.path == ANTHROPIC_PATH else openai_body
            response = web.json_response(shape(answer, model), headers=answer.headers)
            if answer.compress:
                response.enable_compression(web.ContentCoding.gzip)
            return response
        return await self._stream(request, body, answer, model)

    async def _stream(self, request: web.Request, body: dict[str, Any], answer: Answer,
                      model: str) -> web.StreamResponse:
        if request.path == ANTHROPIC_PATH:
            events, error = anthropic_events(answer, model), anthropic_error_event()
        else:
            options = body.get("stream_options")
            include = isinstance(options, dict) and options.get("include_usage") is True
            events, error = openai_events(answer, model, include), openai_error_event()
        if answer.error_after is not None:
            events = [*events[: answer.error_after], error]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache",
                                               "x-request-id": "req_fake"})
        await response.prepare(request)
        try:
            for index, event in enumerate(events):
                if index == answer.drop_after:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if index == answer.pause_after:
                    await self._wait(request, answer.resume, None)
                if answer.event_delay:
                    await asyncio.sleep(answer.event_delay)
                await self._write(response, event, answer)
            if answer.pause_before_end:
                await self._wait(request, answer.resume, None)
            await response.write_eof()
        except ConnectionError:
            self.disconnected.set()
        return response

    async def _write(self, response: web.StreamResponse, event: str, answer: Answer) -> None:
        data = event.replace("\n", answer.line_ending).encode()
        size = answer.write_size
        if size is None:
            await response.write(data)
            return
        for start in range(0, len(data), size):
            await response.write(data[start:start + size])
            await asyncio.sleep(0)

    async def _wait(self, request: web.Request, event: asyncio.Event | None,
                    seconds: float | None) -> None:
        """Wait for `event` or `seconds`, noticing at once when the caller hangs up."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while event is None or not event.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                self.disconnected.set()
                raise ConnectionResetError("caller hung up")
            if deadline is not None and time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.005)




def main() -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic upstream for benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--words", type=int, default=40, help="words per answer")
    parser.add_argument("--event-delay", type=float, default=0.0,
                        help="seconds before each streamed event")
    parser.add_argument("--backlog", type=int, default=128, help="listen backlog")
    args = parser.parse_args()
    text = " ".join(f"word{i}" for i in range(args.words))
    fake = FakeUpstream(Answer(text=text, event_delay=args.event_delay), keep_received=False)
    web.run_app(fake.app(), host=args.host, port=args.port, access_log=None, print=None,
                backlog=args.backlog)


if __name__ == "__main__":
    main()
