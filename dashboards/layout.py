"""Placing panels on Grafana's grid and wrapping them into a dashboard.

Positions and ids are computed, never typed by hand, so they cannot overlap or repeat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attr
from grafanalib import core

from dashboards.config import DashboardConfig

# Schema of Grafana 10.4; an older number would make Grafana run its legacy migrations.
SCHEMA_VERSION = 39

GRID_WIDTH = 24


class Layout:
    """Places panels left to right in Grafana's 24-column grid and numbers them.

    Positions and ids are computed, never typed by hand, so they cannot overlap or repeat.
    A collapsed row keeps its panels inside it; they are placed just below the row.
    """

    def __init__(self) -> None:
        self._top: list[core.Panel] = []
        self._open_row: core.RowPanel | None = None
        self._x = 0
        self._y = 0
        self._line_height = 0
        self._next_id = 1

    def _place(self, panel: core.Panel, w: int, h: int) -> core.Panel:
        if not 0 < w <= GRID_WIDTH:
            raise ValueError(f"panel width must be 1..{GRID_WIDTH}: {w}")
        if self._x + w > GRID_WIDTH:
            self._newline()
        placed = attr.evolve(panel, gridPos=core.GridPos(h=h, w=w, x=self._x, y=self._y),
                             id=self._next_id)
        self._next_id += 1
        self._x += w
        self._line_height = max(self._line_height, h)
        return placed

    def _newline(self) -> None:
        self._y += self._line_height
        self._x = 0
        self._line_height = 0

    def add(self, panel: core.Panel, w: int = 12, h: int = 8) -> None:
        placed = self._place(panel, w, h)
        if self._open_row is not None:
            self._open_row.panels.append(placed)
        else:
            self._top.append(placed)

    def row(self, title: str, *, collapsed: bool = False) -> None:
        """Start a row; with collapsed=True the panels added next stay folded inside it."""
        self._newline()
        self._open_row = None
        row = self._place(core.RowPanel(title=title, collapsed=collapsed), GRID_WIDTH, 1)
        self._newline()
        self._top.append(row)
        if collapsed:
            self._open_row = row

    def panels(self) -> list[core.Panel]:
        return list(self._top)


def dashboard(
    *, uid: str, title: str, description: str, config: DashboardConfig,
    variables: Sequence[core.Template], layout: Layout, time_from: str = "now-24h",
    links: Sequence[Mapping[str, Any]] = (),
) -> core.Dashboard:
    return core.Dashboard(
        uid=uid, title=title, description=description, tags=list(config.tags),
        templating=core.Templating(list=list(variables)), panels=layout.panels(),
        time=core.Time(time_from, "now"), timezone="utc", refresh="1m",
        schemaVersion=SCHEMA_VERSION, graphTooltip=1, editable=True,
        links=list(links) or [default_links()],
    )


def default_links() -> dict[str, Any]:
    """Every agentmeter dashboard links to the others, keeping variables and time range."""
    return {
        "type": "dashboards", "tags": ["agentmeter"], "asDropdown": True, "title": "agentmeter",
        "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False,
        "url": "", "tooltip": "",
    }
