"""Families as columns of pre-rendered label text, and the cache that keeps that text per object.

On a big cluster the per-pod and per-node families are most of a scrape: 5,000 pods give tens of
thousands of series. Building a Sample and a label dict for each, then validating and escaping
every label again at exposition, cost more than the 200 ms budget (and the garbage collector's
passes over those objects made the slow scrapes slower). Instead each object's rows and their
`name="value"` text are rendered once, when the object first shows up or changes (records are
immutable, so a changed pod or node is a new record), and reused by later scrapes; a scrape only
appends them to fresh RowFamily columns, which exporter.exposition writes out directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from exporter.row_family import LabelRows, RowFamily, escape_label_value

Row = tuple[str, ...]
K = TypeVar("K", bound=Hashable)
R = TypeVar("R")
S = TypeVar("S")


def label_text(names: Sequence[str], values: Sequence[str]) -> str:
    """`a="x",b="y"`, values escaped as the text exposition format wants them."""
    return ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))


@dataclass(frozen=True, slots=True)
class Columns:
    """Rows, their label text and values, side by side so a scrape can extend lists in bulk."""

    rows: tuple[Row, ...] = ()
    text: tuple[str, ...] = ()
    values: tuple[float, ...] = ()

    @classmethod
    def of(cls, entries: Sequence[tuple[Row, str, float]]) -> Columns:
        if not entries:
            return cls()
        rows, text, values = zip(*entries, strict=True)
        return cls(rows, text, values)


class _RenderedRows(LabelRows):
    """Label rows whose text was rendered beforehand."""

    def __init__(self, label_names: Sequence[str], rows: list[Row], rendered: list[str]) -> None:
        super().__init__(label_names, rows)
        self._text = rendered

    @property
    def rendered(self) -> list[str]:
        return self._text


class FamilyColumns:
    """One family being built during a scrape."""

    def __init__(self, label_names: Sequence[str]) -> None:
        self.names = label_names
        self.rows: list[Row] = []
        self.text: list[str] = []
        self.values: list[float] = []

    def add(self, row: Row, text: str, value: float) -> None:
        self.rows.append(row)
        self.text.append(text)
        self.values.append(value)

    def extend(self, columns: Columns) -> None:
        self.rows += columns.rows
        self.text += columns.text
        self.values += columns.values

    def family(self, name: str, documentation: str) -> RowFamily:
        return RowFamily(name, documentation, "gauge",
                         _RenderedRows(self.names, self.rows, self.text), self.values)


class RenderCache(Generic[K, R, S]):
    """Rendered series per object, kept while the object's record is the same Python object.

    Owned by one collector (no module state). Each call keeps only the records it was given, so
    deleted objects do not linger. Two concurrent scrapes at worst render an object twice.
    """

    def __init__(self, key: Callable[[R], K], render: Callable[[R], S]) -> None:
        self._key = key
        self._render = render
        self._records: dict[K, R] = {}
        self._rendered: dict[K, S] = {}
        self._lock = threading.Lock()

    def rendered(self, records: Sequence[R]) -> list[S]:
        with self._lock:
            old_records, old_rendered = self._records, self._rendered
        new_records: dict[K, R] = {}
        new_rendered: dict[K, S] = {}
        out: list[S] = []
        for record in records:
            key = self._key(record)
            unchanged = old_records.get(key) is record
            series = old_rendered[key] if unchanged else self._render(record)
            new_records[key] = record
            new_rendered[key] = series
            out.append(series)
        with self._lock:
            self._records, self._rendered = new_records, new_rendered
        return out
