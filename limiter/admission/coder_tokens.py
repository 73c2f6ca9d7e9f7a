"""Coder tokens at the limiter: Coder's verdict as an HTTP answer, and its count on /metrics.

`coder.tokens.TokenResolver` decides (ask Coder, cache, outage grace); this module turns a
refusal into the limiter's error (401 unknown or expired, 403 suspended, 503 Coder unreachable
for a token not seen before) and publishes the resolver's counts as
`agentmeter_coder_token_lookups_total{outcome}`.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily
from prometheus_client.registry import Collector

from coder.tokens import Outcome, TokenCheck, TokenResolver
from ledger.metric_names import CODER_TOKEN_LOOKUPS
from limiter.http.errors import Forbidden, LimiterError, ServiceUnavailable, Unauthorized

# Machine codes of the refusals, beside the message Coder's verdict carries.
_REFUSALS: dict[Outcome, tuple[type[LimiterError], str]] = {
    Outcome.REFUSED: (Unauthorized, "invalid_coder_token"),
    Outcome.SUSPENDED: (Forbidden, "account_suspended"),
    Outcome.UNAVAILABLE: (ServiceUnavailable, "coder_unavailable"),
}


def refusal(check: TokenCheck) -> LimiterError:
    """The error answering a token Coder did not vouch for (its status is the check's)."""
    error, code = _REFUSALS[check.outcome]
    return error(check.message, code=code)


class CoderTokenLookups(Collector):
    """The resolver's answers by outcome, every outcome from the start::

        agentmeter_coder_token_lookups_total{outcome="accepted"} 12.0
        agentmeter_coder_token_lookups_total{outcome="unavailable"} 0.0
    """

    def __init__(self, resolver: TokenResolver) -> None:
        self._resolver = resolver

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(CODER_TOKEN_LOOKUPS,
                                     "Coder tokens checked by the limiter, by outcome.",
                                     labels=["outcome"])
        for outcome, count in self._resolver.outcomes.items():
            family.add_metric([outcome.value], count)
        yield family
