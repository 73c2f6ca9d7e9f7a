"""Metric families kept as columns, for the ledger's few hundred thousand per-user samples.

A scrape of 10,000 users x 3 models is ~250k samples. Building a `Sample` and a label dict for
each, then escaping the same username again in every family, was most of a scrape. Here the
label values are held once per row (`LabelRows`, shared by every family over the same rows and
rendered once), values are a plain list, and `exporter.exposition` writes the family straight
from them. A family over expanded rows (each user-model once per token kind) never builds the
expanded label strings: each line is the row's labels plus the kind's, written as it goes.
`samples` still materialises ordinary Samples on demand, so prometheus-client's registry,
encoders and `get_sample_value` see an ordinary family.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import isnan

from prometheus_client.core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

Number = int | float

_MINUS_INF = float("-inf")
# Below this a finite float's repr() is what floatToGoString writes (Go switches to an exponent
# once the integer part has 7 digits or more).
_GO_EXPONENT_FROM = 1e6
_INT: frozenset[type] = frozenset({int})
_FLOAT: frozenset[type] = frozenset({float})


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def format_value(value: Number) -> str:
    """A sample value as prometheus-client writes it (Go's float notation), integers exact."""
    if type(value) is int:
        return str(value)
    if type(value) is float and _MINUS_INF < value < _GO_EXPONENT_FROM:
        return repr(value)
    return floatToGoString(value)


def _formattable(values: Sequence[Number]) -> Sequence[Number | str]:
    """Values that an f-string writes as `format_value` would: ints and floats whose repr() is
    already the Go form stay numbers (f"{x}" is str()/repr() for them), the rest become text.

    The common columns (all counts, or all modest amounts of USD) are checked with C loops and
    handed back as they are; only a column with something else is converted value by value.
    """
    kinds = set(map(type, values))
    if kinds <= _INT or (kinds == _FLOAT and not any(map(isnan, values))
                         and min(values) > _MINUS_INF and max(values) < _GO_EXPONENT_FROM):
        return values
    return [value if type(value) is int
            or (type(value) is float and _MINUS_INF < value < _GO_EXPONENT_FROM)
            else format_value(value) for value in values]


def render_label_rows(names: Sequence[str], rows: Sequence[tuple[str, ...]]) -> list[str]:
    """`name="value",...` for each row, escaping column by column (a C loop per column)."""
    if not rows:
        return []
    template = ",".join(f'{name}="%s"' for name in names)
    columns = [list(map(escape_label_value, column)) for column in zip(*rows, strict=True)]
    return list(map(template.__mod__, zip(*columns, strict=True)))


class LabelRows:
    """Label values per row; `rendered` is `name="value",...` per row, computed once."""

    def __init__(self, names: Sequence[str], rows: Sequence[tuple[str, ...]], *,
                 rendered: list[str] | None = None) -> None:
        self.names = tuple(names)
        if rendered is not None and len(rendered) != len(rows):
            raise ValueError(f"{len(rendered)} rendered label sets for {len(rows)} rows")
        self._rows: Sequence[tuple[str, ...]] | None = rows
        self._length = len(rows)
        self._rendered = rendered
        # Set on expanded rows: the base rows, and the extra label's values and rendered suffixes.
        self._expanded_from: tuple[LabelRows, tuple[str, ...], tuple[str, ...]] | None = None

    def __len__(self) -> int:
        return self._length

    @property
    def rows(self) -> Sequence[tuple[str, ...]]:
        # Expanded rows are only built when someone asks for Samples (tests, the full encoder).
        if self._rows is None:
            assert self._expanded_from is not None
            base, choices, _ = self._expanded_from
            self._rows = [(*row, choice) for row in base.rows for choice in choices]
        return self._rows

    @property
    def rendered(self) -> list[str]:
        if self._rendered is None:
            if self._expanded_from is not None:
                base, _, suffixes = self._expanded_from
                self._rendered = [prefix + suffix for prefix in base.rendered
                                  for suffix in suffixes]
            else:
                self._rendered = render_label_rows(self.names, self.rows)
        return self._rendered

    def expand(self, name: str, choices: Sequence[str]) -> LabelRows:
        """Every row once per choice of one more label (e.g. each token kind of a user-model)."""
        expanded = LabelRows((*self.names, name), ())
        expanded._rows = None
        expanded._length = len(self) * len(choices)
        suffixes = tuple(f',{name}="{escape_label_value(choice)}"' for choice in choices)
        expanded._expanded_from = (self, tuple(choices), suffixes)
        return expanded

    def render_lines(self, sample_name: str, values: Sequence[Number]) -> str:
        """`sample_name{labels} value` per row, one line each."""
        formatted = _formattable(values)
        if self._expanded_from is None:
            return "".join([f"{sample_name}{{{labels}}} {value}\n"
                            for labels, value in zip(self.rendered, formatted, strict=True)])
        base, _, suffixes = self._expanded_from
        closers = [suffix + "} " for suffix in suffixes]
        head = sample_name + "{"
        value_iter = iter(formatted)
        return "".join([f"{head}{labels}{closer}{next(value_iter)}\n"
                        for labels in base.rendered for closer in closers])


class LabelCache:
    """Rendered label sets kept from one scrape to the next, so only new rows are escaped.

    Each call keeps exactly the rows it was given, so users no longer exported are forgotten at
    the next scrape and the cache never holds more than one exposition's label sets. Rendering is
    a pure function of the values, so a race between two calls costs at most a re-render.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._rendered: dict[tuple[str, ...], str] = {}

    def __len__(self) -> int:
        return len(self._rendered)

    def label_rows(self, rows: Sequence[tuple[str, ...]]) -> LabelRows:
        known = self._rendered
        rendered: list[str | None] = list(map(known.get, rows))
        missing = [index for index, text in enumerate(rendered) if text is None]
        if missing:
            fresh = render_label_rows(self.names, [rows[index] for index in missing])
            for index, text in zip(missing, fresh, strict=True):
                rendered[index] = text
        done: list[str] = rendered  # type: ignore[assignment]  # every None was filled above
        self._rendered = dict(zip(rows, done, strict=True))
        return LabelRows(self.names, rows, rendered=done)


class RowFamily(Metric):
    """A gauge or counter whose samples are `labels.rows[i]` -> `values[i]`."""

    def __init__(self, name: str, documentation: str, typ: str, labels: LabelRows,
                 values: Sequence[Number]) -> None:
        if typ not in ("gauge", "counter"):
            raise ValueError(f"RowFamily is for gauges and counters, not {typ}")
        if len(values) != len(labels):
            raise ValueError(f"{name}: {len(values)} values for {len(labels)} label rows")
        self._materialised: list[Sample] | None = None
        super().__init__(name, documentation, typ)
        self.labels = labels
        self.values = values

    @property
    def sample_name(self) -> str:
        return self.name + "_total" if self.type == "counter" else self.name

    @property  # type: ignore[override]
    def samples(self) -> list[Sample]:
        if self._materialised is None:
            name, names = self.sample_name, self.labels.names
            self._materialised = [Sample(name, dict(zip(names, row, strict=True)), value)
                                  for row, value in zip(self.labels.rows, self.values,
                                                        strict=True)]
        return self._materialised

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        # Metric.__init__ assigns an empty list; anything else would contradict the columns.
        if value:
            raise AttributeError("RowFamily samples come from its columns")

    def render_samples(self) -> str:
        return self.labels.render_lines(self.sample_name, self.values)
