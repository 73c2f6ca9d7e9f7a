"""Structured (JSON) log lines, each one also counted in agentmeter_log_events_total."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter

from ledger.metric_names import LOG_EVENTS

LEVELS = ("debug", "info", "warning", "error", "critical")
COMPONENTS = ("limiter", "exporter", "ledger", "cli")
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def level_name(levelno: int) -> str:
    if levelno >= logging.CRITICAL:
        return "critical"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


def component_of(logger_name: str) -> str:
    """agentmeter.limiter.spool -> limiter; anything outside agentmeter's loggers -> other."""
    parts = logger_name.split(".")
    if parts[0] == "agentmeter" and len(parts) > 1:
        return parts[1]
    return "other"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": level_name(record.levelno),
            "component": component_of(record.name),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value if isinstance(value, (str, int, float, bool)) else repr(value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class CountingHandler(logging.Handler):
    """Counts every event that reaches it; never formats or writes anything."""

    def __init__(self, registry: CollectorRegistry, components: tuple[str, ...] = COMPONENTS):
        super().__init__(level=logging.DEBUG)
        self.counter = Counter(LOG_EVENTS, "Log events by component and severity.",
                               ["component", "level"], registry=registry)
        for component in components:
            for level in LEVELS:
                self.counter.labels(component, level)

    def emit(self, record: logging.LogRecord) -> None:
        self.counter.labels(component_of(record.name), level_name(record.levelno)).inc()


def setup_logging(level: str = "info", registry: CollectorRegistry | None = None) -> None:
    """JSON lines on stderr for agentmeter's loggers; counted when a registry is given."""
    root = logging.getLogger("agentmeter")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(JsonFormatter())
    root.addHandler(stream)
    if registry is not None:
        root.addHandler(CountingHandler(registry))
