"""Metric families kept as columns, for the ledger's few hundred thousand per-user samples.

A scrape of 10,000 users x 3 models is ~250k samples. Building a `Sample` and a label dict for
each, then escaping the same username again in every family, was most of a scrape. Here the
label values are held once per row (`LabelRows`, shared by every family over the same rows and
escaped once), values are a plain list, and `exporter.exposition` writes the family straight from
them. `samples` still materialises ordinary Samples on demand, so prometheus-client's registry,
encoders and `get_sample_value` see an ordinary family.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

Number = int | float


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def format_value(value: Number) -> str:
    # Integers (token and message counts) are exact as written; floats use Go's notation.
    return str(value) if type(value) is int else floatToGoString(value)


class LabelRows:
    """Label values per row; `rendered` is `name="value",...` per row, computed once."""

    def __init__(self, names: Sequence[str], rows: Sequence[tuple[str, ...]]) -> None:
        self.names = tuple(names)
        self._rows: Sequence[tuple[str, ...]] | None = rows
        self._length = len(rows)
        self._rendered: list[str] | None = None
        self._expanded_from: tuple[LabelRows, tuple[str, ...]] | None = None

    def __len__(self) -> int:
        return self._length

    @property
    def rows(self) -> Sequence[tuple[str, ...]]:
        # Expanded rows are only built when someone asks for Samples (tests, the full encoder).
        if self._rows is None:
            assert self._expanded_from is not None
            base, choices = self._expanded_from
            self._rows = [(*row, choice) for row in base.rows for choice in choices]
        return self._rows

    @property
    def rendered(self) -> list[str]:
        if self._rendered is None:
            names = self.names
            self._rendered = [
                ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, row, strict=True))
                for row in self.rows]
        return self._rendered

    def expand(self, name: str, choices: Sequence[str]) -> LabelRows:
        """Every row once per choice of one more label (e.g. each token kind of a user-model)."""
        expanded = LabelRows((*self.names, name), ())
        expanded._rows = None
        expanded._length = len(self) * len(choices)
        expanded._expanded_from = (self, tuple(choices))
        suffixes = [f',{name}="{escape_label_value(choice)}"' for choice in choices]
        expanded._rendered = [prefix + suffix for prefix in self.rendered for suffix in suffixes]
        return expanded


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
        name = self.sample_name
        return "".join([f"{name}{{{labels}}} {format_value(value)}\n"
                        for labels, value in zip(self.labels.rendered, self.values,
                                                 strict=True)])
