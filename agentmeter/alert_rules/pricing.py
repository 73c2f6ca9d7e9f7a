"""Pricing alerts: usage without a price is spend that neither reports nor limits can see.

Gaps come in kinds (the `gap` label): `price` (a model or a token kind without a price: the
tokens are recorded at no cost) and `variant`, `tier`, `fee` (an answer served at a service
tier, or reaching a tier, or carrying a fee the model has no price for: priced at the model's
highest prices, fees left unpriced). Each kind has its own alert.
"""

from __future__ import annotations

from agentmeter.alert_rules.settings import AlertSettings
from agentmeter.alert_rules.spec import LIMITS, Alert, label_value, series
from ledger import metric_names as m
from ledger.pricing import GAPS


def alerts(s: AlertSettings) -> list[Alert]:
    e = s.exporter_selector
    w = s.unpriced_usage_window
    # Without pricing = neither an input nor an output price; a model that lacks only, say, a
    # cache price is still priced and must not be named here.
    io_missing = series(m.MODEL_PRICING_MISSING, e, 'token_type=~"input|output"')
    missing = f"count by (model) ({io_missing}) == 2"
    models = (
        "{{ range $i, $gap := query `" + missing + '` | sortByLabel "model" }}'
        "{{ if $i }}, {{ end }}{{ $gap.Labels.model }}{{ end }}"
    )
    no_price = f'gap="{m.GAP_PRICE}"'
    unpriced = series(m.UNPRICED_MESSAGES + '_total', e, no_price)
    messages = f"sum by (model) (increase({unpriced}[{w}]))"
    answer_gaps = "|".join(gap.value for gap in GAPS)
    gapped = series(m.UNPRICED_MESSAGES + '_total', e, f'gap=~"{answer_gaps}"')
    gap_messages = f"sum by (model, gap) (increase({gapped}[{w}]))"
    tokens = f"sum by (model) (increase({series(m.UNPRICED_TOKENS + '_total', e)}[{w}]))"

    def of_model(total: str, *matchers: str) -> str:
        promql = f"sum(increase({series(total, e, 'model=%q', *matchers)}[{w}]))"
        return label_value(promql, "model", 'value | printf "%.0f"', empty="0")

    return [
        Alert(
            name="AgentmeterModelsWithoutPricing",
            expr=f"max({series(m.MODELS_WITHOUT_PRICING, e)}) > 0",
            for_=s.models_without_pricing_for,
            severity="warning",
            summary="Models without pricing are enabled or used; their spend is not counted.",
            description=(
                f"Models without pricing: {{{{ $value }}}} ({models}). They are enabled or seen "
                "in traffic; their messages are recorded at no cost, so spend reports and limits "
                "under-count them."
            ),
            dashboard=LIMITS,
            settings=("models_without_pricing_for",),
        ),
        Alert(
            name="AgentmeterUnpricedUsage",
            expr=f"""
{messages} > 0
or
{tokens} > 0
""",
            for_=s.unpriced_usage_for,
            severity="warning",
            summary="Usage was recorded without a price; spend and limits under-count it.",
            description=(
                f"In the last {w}, model {{{{ $labels.model }}}} was used without a price. "
                f"Unpriced messages (no price at all, recorded at no cost): about "
                f"{of_model(m.UNPRICED_MESSAGES + '_total', no_price)}. Unpriced tokens (of "
                f"kinds it has no price for): about {of_model(m.UNPRICED_TOKENS + '_total')}."
            ),
            dashboard=LIMITS,
            settings=("unpriced_usage_window", "unpriced_usage_for"),
        ),
        Alert(
            name="AgentmeterPricingGap",
            expr=f"{gap_messages} > 0",
            for_=s.unpriced_usage_for,
            severity="warning",
            summary="Answers needed a service tier, tier or fee price the model does not have.",
            description=(
                f"In the last {w}, {{{{ $value | printf \"%.0f\" }}}} messages of model "
                "{{ $labels.model }} had a {{ $labels.gap }} without a price: they were priced "
                "at the model's highest prices (variant, tier) or their fees left unpriced "
                "(fee). Give the price in the policy file, or upgrade the catalog and apply."
            ),
            dashboard=LIMITS,
            settings=("unpriced_usage_window", "unpriced_usage_for"),
        ),
    ]
