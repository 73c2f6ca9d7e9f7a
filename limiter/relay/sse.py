"""Incremental Server-Sent Events decoding for reading token usage out of relayed streams.

The relay hands every upstream chunk to `StreamUsageParser.feed` right after writing it to the
client, so the parser sees the bytes exactly as TCP delivered them: an event, a line or even a
`\\r\\n` pair may be cut anywhere. The decoder keeps only the unfinished last line between calls
(never the stream), follows the SSE rules (`\\n`, `\\r\\n` or `\\r` line ends, `:` comments, one
optional space after the colon, multi-line `data`, a blank line dispatches) and never raises on
junk: a usage parser that broke the relay would cost the user their answer.
"""

from __future__ import annotations

import re
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

from ledger.pricing import STANDARD, Billing
from ledger.tokens import TokenUsage
from limiter import json_codec

# A line longer than this without a line end is junk, not SSE: drop it rather than grow forever.
MAX_LINE_BYTES = 8 * 1024 * 1024


def load_json(data: bytes) -> Any:
    """The decoded JSON value, or None for anything that is not JSON (never raises)."""
    try:
        return json_codec.loads(data)
    except (ValueError, RecursionError):
        return None


def count(value: object) -> int | None:
    """A token count as providers send it: a non-negative int; anything else is not a count."""
    if type(value) is int and value >= 0:
        return value
    return None


class StreamUsageParser:
    """Reads a provider's SSE stream incrementally; subclasses interpret the events.

    `usage` is the best known usage (latest value of each counter, never a sum) or None,
    `complete` says the provider's terminal event was seen, `output_final` that the output count
    is the provider's final one, `output_text_chars` how much generated text was relayed (the basis
    of the estimate when counts are missing), `error` the provider's error object, if any, and
    `billing` what the answer reported beyond tokens (service tier, speed, web searches; the
    standard tier until the stream says otherwise).
    """

    __slots__ = ("_cr", "_data", "_ending", "_event", "_seen", "_tail", "complete", "error",
                 "events", "output_text_chars")

    # Bytes that one of the dialect's terminal events always contains, one entry per terminal
    # event (empty: unknown, every chunk may complete the answer).
    TERMINAL: frozenset[bytes] = frozenset()

    def __init__(self) -> None:
        self._tail = b""
        self._cr = False
        self._event = b""
        self._data: list[bytes] = []
        self.complete = False
        self.error: dict[str, Any] | None = None
        self.output_text_chars = 0
        self.events = 0
        self._ending = not self.TERMINAL
        self._seen = b""

    # Subclass interface ------------------------------------------------------------------------

    @property
    def usage(self) -> TokenUsage | None:
        raise NotImplementedError

    @property
    def output_final(self) -> bool:
        raise NotImplementedError

    @property
    def answer_id(self) -> str | None:
        """The id the provider gave the answer, where the gateway keeps whose it is."""
        return None

    @property
    def billing(self) -> Billing:
        return STANDARD

    def on_event(self, event: bytes, data: bytes) -> None:
        """One dispatched event (`event` is b"message" when the stream named none)."""
        raise NotImplementedError

    def may_complete(self, chunk: bytes) -> bool:
        """Whether feeding `chunk` next may complete the answer: from the first chunk holding
        the terminal event's marker (or the end of one split across chunks) on, since the
        event's blank line may come later. A relay writes any other chunk before feeding it;
        one that may complete the answer is fed first, so its usage is known before the
        client has it. Call once per chunk, in order."""
        if self._ending:
            return True
        keep = max(map(len, self.TERMINAL)) - 1
        joined = self._seen + chunk[:keep] if self._seen else b""
        for marker in self.TERMINAL:
            if marker in chunk or (joined and marker in joined):
                self._ending = True
                return True
        # The bytes a marker split across chunks could begin with.
        if keep:
            self._seen = (chunk if len(chunk) >= keep else self._seen + chunk)[-keep:]
        return False

    # Decoding ----------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the stream, however they were split."""
        if not chunk:
            return
        if self._cr:
            # The previous chunk ended in \r, already taken as a line end; its \n belongs to it.
            self._cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return
        if self._tail:
            chunk = self._tail + chunk
        if b"\r" in chunk:
            self._cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        tail = lines.pop()
        self._tail = tail if len(tail) <= MAX_LINE_BYTES else b""
        data = self._data
        for line in lines:
            # Inlined fast path for the common `data: ...` line; everything else goes the long way.
            if line[:5] == b"data:":
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            else:
                self._line(line)
                data = self._data

    def close(self) -> None:
        """End of stream: an unterminated last line or event still counts (lenient on purpose)."""
        if self._tail:
            self._line(self._tail)
            self._tail = b""
        self._line(b"")

    def _line(self, line: bytes) -> None:
        if not line:
            if self._data:
                data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                event = self._event or b"message"
                self._data = []
                self._event = b""
                self.events += 1
                self.on_event(event, data)
            else:
                self._event = b""
            return
        if line[0] == 0x3A:  # ":" starts a comment (keep-alives)
            return
        colon = line.find(b":")
        if colon < 0:
            field, value = line, b""
        else:
            field, value = line[:colon], line[colon + 1:]
            if value[:1] == b" ":
                value = value[1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value
        # `id`, `retry` and unknown fields carry nothing about usage.


def text_chars(value: object) -> int:
    """Characters of generated text in a delta field (0 for anything that is not a string)."""
    return len(value) if isinstance(value, str) else 0


def text_keys(*names: str) -> re.Pattern[str]:
    """A pattern for `"name": "` (any of `names`), the start of a text value in an event's JSON."""
    return re.compile(r'"(?:' + "|".join(map(re.escape, names)) + r')"\s*:\s*"')


def scan_text_chars(data: bytes, keys: re.Pattern[str]) -> int:
    """Characters of the string values of `keys` (see `text_keys`) in an event's JSON.

    Only feeds the output estimate, so it skips a full JSON parse of every delta: a quoted key
    followed by a colon cannot occur inside a JSON string (quotes there are escaped), and each
    value is decoded by the json module's own C string scanner. Malformed input never raises.
    """
    text = data.decode("utf-8", "replace")
    total = 0
    match = keys.search(text)
    while match is not None:
        try:
            value, end = scanstring(text, match.end())
        except ValueError:
            break
        total += len(value)
        match = keys.search(text, end)
    return total
