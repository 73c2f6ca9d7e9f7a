"""GET /api/v1/usage/status: the calling user's own limit status (what an agent or IDE shows).

Not fail-open: a status page that guesses is worse than a 503 that says so.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ledger.spend import LimitStatus
from limiter.admission.credentials import credential_of
from limiter.http.app_keys import CLOCK, ENFORCER, SETTINGS
from limiter.timefmt import rfc3339


def status_view(status: LimitStatus) -> dict[str, Any]:
    return {
        "username": status.username,
        "is_limited": status.is_limited,
        "blocked": status.blocked,
        "period": status.period.value,
        "limit_micros": status.limit_micros,
        "limit_source": status.limit_source.value,
        "current_spend_micros": status.spent_micros,
        "period_start": rfc3339(status.period_start),
        "period_end": rfc3339(status.period_end),
    }


async def usage_status(request: web.Request) -> web.Response:
    app = request.app
    credential = credential_of(request, app[SETTINGS])
    status = await app[ENFORCER].status(credential, app[CLOCK]())
    return web.json_response(status_view(status))
