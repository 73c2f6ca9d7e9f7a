"""limiter.json_codec reads and writes what the standard library would, faster."""

from __future__ import annotations

import json

import pytest

from limiter.json_codec import dumps_line, loads

SAME = [b'{"model":"gpt","messages":[{"role":"user","content":"h\\u00e9 \\u2603"}]}',
        b' {"a": [1, 2.5, -3e2, true, false, null], "a": "last wins"} ',
        b'"text"', b"[]", b"12", "{\"\u00e9\": 1}".encode()]
# What orjson refuses and the standard library accepts: read as before.
LENIENT = [b'{"x": NaN, "y": -Infinity}', b'{"s": "\\ud800"}', b'\xef\xbb\xbf{"bom": 1}']
INVALID = [b"", b"{", b'{"a":1} x', b"{'a': 1}", b"\xff", b"[" * 100_000]


@pytest.mark.parametrize("data", SAME + LENIENT)
def test_values_equal_the_standard_librarys(data: bytes) -> None:
    # Compared as the standard library writes them: NaN equals NaN there.
    reference = json.dumps(json.loads(data))
    assert json.dumps(loads(data)) == reference
    assert json.dumps(loads(bytearray(data))) == reference  # request bodies are bytearrays


@pytest.mark.parametrize("data", INVALID)
def test_what_is_not_json_raises_as_before(data: bytes) -> None:
    with pytest.raises((ValueError, RecursionError)):
        json.loads(data)
    with pytest.raises((ValueError, RecursionError)):
        loads(data)


def test_lines_are_compact_sorted_and_read_back_equal() -> None:
    entry = {"z": 1, "a": None, "usage": {"output": 2, "input": 1}, "chat": "caf\u00e9",
             "partial": False}
    line = dumps_line(entry)
    assert line == (b'{"a":null,"chat":"caf\xc3\xa9","partial":false,'
                    b'"usage":{"input":1,"output":2},"z":1}')
    assert json.loads(line) == entry
    # What orjson cannot write is written by the standard library.
    for odd in ({"model": "\ud800"}, {"tokens": 2**70}):
        assert json.loads(dumps_line(odd)) == odd
        assert b"\n" not in dumps_line(odd)
