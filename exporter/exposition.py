"""Exposition of the registry in the format the scraper asked for, fast enough for 10k users.

prometheus-client's encoders validate and escape every metric and label *name* on every sample;
the ledger's families carry a few hundred thousand samples whose names are fixed constants, so
that per-sample work was most of a scrape. Plain gauges and counters (no timestamps, exemplars or
`_created` samples — everything agentmeter's collectors build) are written here with only the
label *values* escaped; every other family (histograms, the lead's instrumented metrics) goes
through prometheus-client's own encoder for the negotiated format, so the output is the same
either way. Negotiation itself (`Accept`) is prometheus-client's `choose_encoder`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from exporter.row_family import RowFamily, escape_label_value, format_value

OPENMETRICS = "application/openmetrics-text"
EOF_LINE = "# EOF\n"
_EOF_BYTES = EOF_LINE.encode("ascii")

_SIMPLE_TYPES = frozenset({"gauge", "counter"})


class _One:
    """A registry holding one family, to hand a single family to prometheus-client's encoder."""

    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> Iterable[Metric]:
        return [self._family]


def _escape_help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    return text.replace('"', r"\"") if openmetrics else text


def _header(family: Metric, openmetrics: bool) -> str:
    # The text format names counters with their `_total`; OpenMetrics names the family without.
    declared = family.name + "_total" if family.type == "counter" and not openmetrics \
        else family.name
    return (f"# HELP {declared} {_escape_help(family.documentation, openmetrics)}\n"
            f"# TYPE {declared} {family.type}\n")


def _simple_family(family: Metric, openmetrics: bool) -> str | None:
    """The family's text, or None when it needs the full encoder."""
    if isinstance(family, RowFamily):
        return _header(family, openmetrics) + family.render_samples()
    if family.type not in _SIMPLE_TYPES or family.unit:
        return None
    allowed = family.name + "_total" if family.type == "counter" else family.name
    escaped: dict[str, str] = {}
    lines: list[str] = []
    append = lines.append
    for sample in family.samples:
        if sample.name != allowed or sample.timestamp is not None or sample.exemplar is not None:
            return None
        labels = sample.labels
        if labels:
            parts = []
            for key, value in labels.items():
                text = escaped.get(value)
                if text is None:
                    text = escaped[value] = escape_label_value(value)
                parts.append(f'{key}="{text}"')
            append(f"{allowed}{{{','.join(parts)}}} {format_value(sample.value)}\n")
        else:
            append(f"{allowed} {format_value(sample.value)}\n")
    return _header(family, openmetrics) + "".join(lines)


def render_chunks(registry: Collector, accept: str) -> tuple[Iterator[bytes], str]:
    """The exposition for an `Accept` header as it is written, one family per chunk (the
    registry is collected as the chunks are read), and its content type."""
    encoder, content_type = choose_encoder(accept)
    return _chunks(registry, encoder, content_type.startswith(OPENMETRICS)), content_type


def _chunks(registry: Collector, fallback: Callable[[Collector], bytes], openmetrics: bool
            ) -> Iterator[bytes]:
    for family in registry.collect():
        text = _simple_family(family, openmetrics)
        if text is None:
            encoded = fallback(_One(family))
            if openmetrics and encoded.endswith(_EOF_BYTES):
                encoded = encoded[: -len(_EOF_BYTES)]
            yield encoded
        else:
            yield text.encode("utf-8")
    if openmetrics:
        yield _EOF_BYTES


def render(registry: Collector, accept: str) -> tuple[bytes, str]:
    """The exposition and its content type for an `Accept` header."""
    chunks, content_type = render_chunks(registry, accept)
    return b"".join(chunks), content_type
