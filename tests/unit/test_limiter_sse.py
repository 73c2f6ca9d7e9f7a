"""SSE decoding: any split of the bytes, every line ending, junk that must never raise."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.tokens import TokenUsage
from limiter.relay.dialects.anthropic import AnthropicStreamParser
from limiter.relay.dialects.openai import OpenAIStreamParser
from limiter.relay.sse import MAX_LINE_BYTES, StreamUsageParser, scan_text_chars, text_keys
from tests.support.fake_upstream import Answer, anthropic_events, openai_events


class Recorder(StreamUsageParser):
    """Keeps every dispatched event, to check the decoding itself."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bytes, bytes]] = []

    @property
    def usage(self) -> TokenUsage | None:
        return None

    @property
    def output_final(self) -> bool:
        return False

    def on_event(self, event: bytes, data: bytes) -> None:
        self.seen.append((event, data))


def decode(*chunks: bytes) -> list[tuple[bytes, bytes]]:
    parser = Recorder()
    for chunk in chunks:
        parser.feed(chunk)
    parser.close()
    return parser.seen


def test_events_with_names_and_default_name() -> None:
    stream = b"event: message_start\ndata: {\"a\":1}\n\ndata: plain\n\n"
    assert decode(stream) == [(b"message_start", b'{"a":1}'), (b"message", b"plain")]


def test_crlf_and_lone_cr_line_ends() -> None:
    expected = [(b"ping", b"x"), (b"message", b"y")]
    assert decode(b"event: ping\r\ndata: x\r\n\r\ndata: y\r\n\r\n") == expected
    assert decode(b"event: ping\rdata: x\r\rdata: y\r\r") == expected
    # A \r\n pair cut between two chunks is one line end, not two.
    assert decode(b"event: ping\r", b"\ndata: x\r", b"\n\r", b"\ndata: y\r\n\r\n") == expected


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert decode(b"data: first\ndata: second\ndata:third\n\n") == [
        (b"message", b"first\nsecond\nthird")]


def test_comments_ids_retry_and_unknown_fields_are_ignored() -> None:
    stream = b": keep-alive\nid: 7\nretry: 100\nbogus: 1\nnocolon\ndata: d\n\n"
    assert decode(stream) == [(b"message", b"d")]


def test_event_without_data_is_not_dispatched() -> None:
    assert decode(b"event: ping\n\ndata: d\n\n") == [(b"message", b"d")]


def test_unterminated_last_event_counts_at_close() -> None:
    assert decode(b"data: [DONE]") == [(b"message", b"[DONE]")]


def test_overlong_line_without_end_is_dropped() -> None:
    parser = Recorder()
    parser.feed(b"x" * (MAX_LINE_BYTES + 1))
    parser.feed(b"\ndata: ok\n\n")
    assert parser.seen == [(b"message", b"ok")]


def _stream(events: list[str], line_ending: str) -> bytes:
    return "".join(events).replace("\n", line_ending).encode()


USAGE = TokenUsage(input=1200, output=345, cache_read=800, cache_write=64)
OPENAI_STREAM = openai_events(Answer(usage=USAGE, reasoning_tokens=120), "gpt-x", True)
ANTHROPIC_STREAM = anthropic_events(
    Answer(usage=TokenUsage(input=50, output=345, cache_read=800, cache_write=64,
                            cache_write_1h=32)), "claude-x")


def _feed(parser: StreamUsageParser, data: bytes, cuts: list[int]) -> StreamUsageParser:
    previous = 0
    for cut in [*sorted(cuts), len(data)]:
        parser.feed(data[previous:cut])
        previous = cut
    parser.close()
    return parser


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(_stream(OPENAI_STREAM, "\r\n"))),
                     max_size=40),
       line_ending=st.sampled_from(["\n", "\r\n", "\r"]))
def test_openai_usage_is_the_same_for_any_split(cuts: list[int], line_ending: str) -> None:
    data = _stream(OPENAI_STREAM, line_ending)
    whole = _feed(OpenAIStreamParser(), data, [])
    split = _feed(OpenAIStreamParser(), data, [min(c, len(data)) for c in cuts])
    assert whole.usage == split.usage == TokenUsage(input=1200, output=345, cache_read=800,
                                                    cache_write=64)
    assert split.complete and whole.complete
    assert split.output_text_chars == whole.output_text_chars > 0


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(_stream(ANTHROPIC_STREAM, "\r\n"))),
                     max_size=40),
       line_ending=st.sampled_from(["\n", "\r\n", "\r"]))
def test_anthropic_usage_is_the_same_for_any_split(cuts: list[int], line_ending: str) -> None:
    data = _stream(ANTHROPIC_STREAM, line_ending)
    whole = _feed(AnthropicStreamParser(), data, [])
    split = _feed(AnthropicStreamParser(), data, [min(c, len(data)) for c in cuts])
    assert whole.usage == split.usage == TokenUsage(input=50, output=345, cache_read=800,
                                                    cache_write=64, cache_write_1h=32)
    assert split.complete and whole.complete
    assert split.output_text_chars == whole.output_text_chars > 0


PARSERS = {"openai": (OpenAIStreamParser, OPENAI_STREAM),
           "anthropic": (AnthropicStreamParser, ANTHROPIC_STREAM)}


@settings(max_examples=300, deadline=None)
@given(provider=st.sampled_from(sorted(PARSERS)), data=st.data(),
       line_ending=st.sampled_from(["\n", "\r\n", "\r"]))
def test_the_chunk_that_completes_an_answer_is_always_flagged_first(
        provider: str, data: st.DataObject, line_ending: str) -> None:
    """A relay writes unflagged chunks before parsing them: however the stream is split
    (the terminal marker or its blank line in pieces), the chunk on which the answer becomes
    complete is one `may_complete` flagged, and so is every chunk after it."""
    parser_type, events = PARSERS[provider]
    stream = _stream(events, line_ending)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=40)))
    parser = parser_type()
    flags = []
    completed_on = None
    previous = 0
    for cut in [*cuts, len(stream)]:
        chunk = stream[previous:cut]
        previous = cut
        flags.append(parser.may_complete(chunk))
        parser.feed(chunk)
        if parser.complete and completed_on is None:
            completed_on = len(flags) - 1
    assert completed_on is not None
    assert all(flags[completed_on:])
    # Chunks well before the end go out unparsed: the first event holds no marker.
    first_event = _stream(events[:1], line_ending)
    fresh = parser_type()
    assert not fresh.may_complete(first_event)
    (marker,) = parser_type.TERMINAL
    assert fresh.may_complete(marker[:3]) is False
    assert fresh.may_complete(marker[3:]) is True


JUNK_LINES = st.lists(st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"data: {", b"data: null", b"data: []", b"data: 12", b'data: {"usage": 5}',
                     b'data: {"usage": {"prompt_tokens": "x", "completion_tokens": -1}}',
                     b'data: {"choices": [1, {"delta": 3}], "error": "no"}',
                     b"event: message_start", b"event: message_delta", b"event: error",
                     b"event: content_block_delta", b'data: {"message": {"usage": [1]}}',
                     b'data: {"delta": {"text": 5}, "usage": {"output_tokens": true}}',
                     b"data: " + b"[" * 100_000, b"\xff\xfe", b"", b":", b"data"]),
)).map(lambda lines: b"\n".join(lines))


@settings(max_examples=300, deadline=None)
@given(junk=JUNK_LINES, cut=st.integers(min_value=0, max_value=64))
def test_junk_never_raises(junk: bytes, cut: int) -> None:
    for parser in (OpenAIStreamParser(), AnthropicStreamParser()):
        parser.feed(junk[:cut])
        parser.feed(junk[cut:])
        parser.close()
        usage = parser.usage
        assert usage is None or isinstance(usage, TokenUsage)
        assert parser.output_text_chars >= 0


def test_text_values_are_measured_in_characters_with_escapes_decoded() -> None:
    keys = text_keys("content", "text")
    event = json.dumps({"delta": {"content": 'héllo "quoted" \\ 🙂\n'},
                        "other": {"text": "ab", "type": "text"}}).encode()
    assert scan_text_chars(event, keys) == len('héllo "quoted" \\ 🙂\n') + 2
    # Compact JSON as providers send it, and keys only inside string values do not count.
    assert scan_text_chars(b'{"content":"a\\"content\\":\\"xyz"}', keys) == len('a"content":"xyz')
    assert scan_text_chars(b'{"content": null, "text": 5}', keys) == 0
    assert scan_text_chars(b'{"content":"unterminated', keys) == 0
