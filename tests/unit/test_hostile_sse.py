"""The SSE usage parsers against hostile streams: every byte split, junk lines, missing usage.

A representative stream per provider (cache reads and writes, reasoning, the input side repeated
in Anthropic's `message_delta`) is fed cut at EVERY byte position, and one byte at a time, with
each line ending SSE allows: the usage read must be identical to the usage of the whole stream.
Junk (comments, unknown fields, ids, undecodable bytes, broken events) must neither raise nor
change the usage; a stream without usage must give None, never an invented count.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.tokens import TokenUsage
from limiter.relay.dialects.anthropic import AnthropicStreamParser
from limiter.relay.dialects.openai import OpenAIStreamParser
from limiter.relay.sse import StreamUsageParser
from tests.support.fake_upstream import Answer, anthropic_events, openai_events

OPENAI_USAGE = TokenUsage(input=1200, output=345, cache_read=800, cache_write=64)
ANTHROPIC_USAGE = TokenUsage(input=50, output=345, cache_read=800, cache_write=64,
                             cache_write_1h=32)
TEXT = "Patch: `héllo 🙂` — \"quoted\" \\ done."
LINE_ENDINGS = ["\n", "\r\n", "\r"]

ParserFactory = Callable[[], StreamUsageParser]
PROVIDERS: dict[str, tuple[ParserFactory, Callable[[Answer], list[str]], TokenUsage]] = {
    "openai": (OpenAIStreamParser, lambda a: openai_events(a, "gpt-x", True), OPENAI_USAGE),
    "anthropic": (AnthropicStreamParser, lambda a: anthropic_events(a, "claude-x"),
                  ANTHROPIC_USAGE),
}


def events(provider: str, **answer: object) -> list[str]:
    _, build, usage = PROVIDERS[provider]
    return build(Answer(**{"text": TEXT, "usage": usage, **answer}))  # type: ignore[arg-type]


def encode(parts: list[str], line_ending: str) -> bytes:
    return "".join(parts).replace("\n", line_ending).encode()


def parse(provider: str, *chunks: bytes) -> StreamUsageParser:
    parser = PROVIDERS[provider][0]()
    for chunk in chunks:
        parser.feed(chunk)
    parser.close()
    return parser


def summary(parser: StreamUsageParser) -> tuple[object, ...]:
    return (parser.usage, parser.complete, parser.output_final, parser.output_text_chars,
            parser.error)


# -- split at every byte ------------------------------------------------------------------------


@pytest.mark.parametrize("line_ending", LINE_ENDINGS, ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_split_at_every_byte_gives_the_same_usage(provider: str, line_ending: str) -> None:
    data = encode(events(provider, reasoning_tokens=100) if provider == "openai"
                  else events(provider), line_ending)
    whole = summary(parse(provider, data))
    assert whole[0] == PROVIDERS[provider][2]
    assert whole[1] is True and whole[3] == len(TEXT)
    for cut in range(len(data) + 1):
        assert summary(parse(provider, data[:cut], data[cut:])) == whole, cut


@pytest.mark.parametrize("line_ending", LINE_ENDINGS, ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_one_byte_at_a_time_gives_the_same_usage(provider: str, line_ending: str) -> None:
    data = encode(events(provider), line_ending)
    single_bytes = [data[i:i + 1] for i in range(len(data))]
    assert summary(parse(provider, *single_bytes)) == summary(parse(provider, data))


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_every_pair_of_cuts_around_the_usage_event(provider: str) -> None:
    """Two cuts anywhere inside the event that carries the final counts (a 3-way split)."""
    parts = events(provider)
    counts = "completion_tokens" if provider == "openai" else "output_tokens"
    index = max(i for i, part in enumerate(parts) if counts in part)
    start = len(encode(parts[:index], "\r\n"))
    end = start + len(encode([parts[index]], "\r\n"))
    data = encode(parts, "\r\n")
    whole = summary(parse(provider, data))
    for first in range(start, end + 1):
        for second in range(first, end + 1, 7):
            assert summary(parse(provider, data[:first], data[first:second],
                                 data[second:])) == whole, (first, second)


# -- every prefix: a stream cut anywhere never raises ---------------------------------------------


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_stream_cut_at_every_byte_never_raises_and_never_overstates(provider: str) -> None:
    data = encode(events(provider), "\n")
    final = PROVIDERS[provider][2]
    for cut in range(len(data) + 1):
        parser = parse(provider, data[:cut])
        usage = parser.usage
        if usage is not None:
            for kind in ("input", "output", "cache_read", "cache_write", "cache_write_1h"):
                assert getattr(usage, kind) <= getattr(final, kind), (cut, usage)
        assert parser.output_text_chars <= len(TEXT)


# -- junk lines ---------------------------------------------------------------------------------

# Lines that are not events' data: comments, ids, retries, unknown fields, undecodable bytes.
SAFE_JUNK = st.one_of(
    st.binary(max_size=40).map(lambda b: b":" + b),
    st.binary(max_size=40).map(lambda b: b"id: " + b),
    st.binary(max_size=10).map(lambda b: b"retry: " + b),
    st.sampled_from([b"\xff\xfe\xfd", b"nocolon", b"dat: {}", b"Data: {\"usage\": 1}",
                     b"event", b" data: x", b"\x00\x00", b"usage: {\"prompt_tokens\": 9}"]),
    st.binary(min_size=1, max_size=40).filter(
        lambda b: not b.startswith((b"data", b"event"))),
).map(lambda line: line.replace(b"\r", b"").replace(b"\n", b""))


def with_junk(parts: list[str], line_ending: str, junk: list[tuple[int, bytes]]) -> bytes:
    """The stream with junk lines inserted at event boundaries."""
    encoded = [encode([part], line_ending) for part in parts]
    for position, line in sorted(junk, key=lambda item: -item[0]):
        encoded.insert(position % (len(encoded) + 1), line + line_ending.encode())
    return b"".join(encoded)


@settings(max_examples=100, deadline=None)
@given(provider=st.sampled_from(list(PROVIDERS)), line_ending=st.sampled_from(LINE_ENDINGS),
       junk=st.lists(st.tuples(st.integers(min_value=0, max_value=100), SAFE_JUNK),
                     min_size=1, max_size=12),
       cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_junk_lines_between_events_change_nothing(
        provider: str, line_ending: str, junk: list[tuple[int, bytes]], cuts: list[int]) -> None:
    parts = events(provider)
    clean = summary(parse(provider, encode(parts, line_ending)))
    data = with_junk(parts, line_ending, junk)
    positions = sorted({cut % (len(data) + 1) for cut in cuts})
    chunks = [data[a:b] for a, b in zip([0, *positions], [*positions, len(data)], strict=True)]
    assert summary(parse(provider, *chunks)) == clean


BROKEN_EVENTS = st.sampled_from([
    b"data: {\n\n", b"data: null\n\n", b"data: []\n\n", b"data: \xff\xfe\n\n",
    b'data: {"usage": "many"}\n\n', b'data: {"usage": {"prompt_tokens": -5}}\n\n',
    b'data: {"usage": {"prompt_tokens": 1.5, "completion_tokens": "9"}}\n\n',
    b'data: {"choices": 7}\n\n', b'data: {"choices": [null, 1, {"delta": []}]}\n\n',
    b"event: message_start\ndata: {\"message\": 5}\n\n",
    b'event: message_start\ndata: {"message": {"usage": "x"}}\n\n',
    b'event: message_delta\ndata: {"usage": {"output_tokens": -1}}\n\n',
    b'event: message_delta\ndata: {"usage": {"output_tokens": true}}\n\n',
    b"event: message_delta\ndata: [1,2\n\n", b"event: ping\ndata: {\n\n",
    b"event: \xff\xfe\ndata: {}\n\n", b"data: " + b"[" * 20_000 + b"\n\n",
    b"data: " + b'{"a":' * 5_000 + b"\n\n",
])


@settings(max_examples=100, deadline=None)
@given(provider=st.sampled_from(list(PROVIDERS)),
       junk=st.lists(st.tuples(st.integers(min_value=0, max_value=100), BROKEN_EVENTS),
                     min_size=1, max_size=6))
def test_broken_events_never_raise_nor_change_valid_counts(
        provider: str, junk: list[tuple[int, bytes]]) -> None:
    parts = events(provider)
    clean = parse(provider, encode(parts, "\n"))
    broken = parse(provider, with_junk(parts, "\n", [(p, j[:-1]) for p, j in junk]))
    assert broken.usage == clean.usage
    assert broken.complete


@settings(max_examples=100, deadline=None)
@given(provider=st.sampled_from(list(PROVIDERS)), data=st.binary(max_size=2000),
       cut=st.integers(min_value=0, max_value=2000))
def test_arbitrary_bytes_never_raise(provider: str, data: bytes, cut: int) -> None:
    parser = parse(provider, data[:cut], data[cut:])
    assert parser.usage is None or isinstance(parser.usage, TokenUsage)
    assert parser.output_text_chars >= 0


# -- missing usage ------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_stream_without_usage_reports_none_at_every_split(provider: str) -> None:
    data = encode(events(provider, omit_usage=True), "\r\n")
    for cut in range(len(data) + 1):
        parser = parse(provider, data[:cut], data[cut:])
        assert parser.usage is None, cut
        assert parser.complete and not parser.output_final
        assert parser.output_text_chars == len(TEXT)


def test_openai_stream_without_include_usage_reports_none() -> None:
    data = encode(openai_events(Answer(text=TEXT, usage=OPENAI_USAGE), "gpt-x", False), "\n")
    for cut in range(len(data) + 1):
        parser = parse("openai", data[:cut], data[cut:])
        assert parser.usage is None and parser.complete


def test_empty_and_blank_streams_report_nothing() -> None:
    for provider in PROVIDERS:
        for data in (b"", b"\n", b"\r\n\r\n", b": keep-alive\n\n" * 50, b"data:\n\n"):
            parser = parse(provider, data)
            assert parser.usage is None and not parser.complete, (provider, data)
