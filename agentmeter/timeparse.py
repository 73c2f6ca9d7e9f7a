"""Dates and times as operators type them: 2026-11-01 or 2026-11-01T12:00:00Z."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


def parse_instant(text: str, *, end_of_day: bool = False) -> datetime:
    """A date means 00:00 UTC that day (or the next day's 00:00 for an inclusive end)."""
    value = text.strip()
    try:
        day = date.fromisoformat(value)
    except ValueError:
        pass
    else:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start + timedelta(days=1) if end_of_day else start
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a date or RFC 3339 time: {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"time without a UTC offset is ambiguous: {text!r} (add Z or +HH:MM)")
    return moment.astimezone(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
