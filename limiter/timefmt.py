"""RFC 3339 timestamps in and out of the HTTP API (always UTC, written with `Z`)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from limiter.http.errors import BadRequest


def rfc3339(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    spec = "seconds" if moment.microsecond == 0 else "microseconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def parse_instant(value: str, name: str) -> datetime:
    """An RFC 3339 timestamp, or a date (meaning 00:00 UTC that day)."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadRequest(f"`{name}` must be an RFC 3339 timestamp or a date (YYYY-MM-DD), "
                         f"got {value!r}.", code="invalid_parameter") from None
    if moment.tzinfo is None:
        raise BadRequest(f"`{name}` needs a timezone (e.g. `Z`), got {value!r}.",
                         code="invalid_parameter")
    return moment.astimezone(UTC)
