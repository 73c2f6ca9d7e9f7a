"""Exporter alerts: without the exporter there are no spend, pricing or compute alerts at all."""

from __future__ import annotations

from agentmeter.alert_rules.scaling import parse_duration
from agentmeter.alert_rules.settings import AlertSettings
from agentmeter.alert_rules.spec import Alert, series
from ledger import metric_names as m


def alerts(s: AlertSettings) -> list[Alert]:
    e = s.exporter_selector
    return [
        Alert(
            name="AgentmeterExporterDown",
            expr=f"sum by (job) ({series('up', e)}) == 0\nor\nabsent({series('up', e)})",
            for_=s.exporter_down_for,
            severity="critical",
            summary="No agentmeter exporter is up; spend, pricing and compute alerts are blind.",
            description=(
                f"Prometheus has had no healthy target matching {{{e}}} for "
                f"{s.exporter_down_for}. Every alert built on the exporter's metrics is silent "
                "while it is down."
            ),
            settings=("exporter_selector", "exporter_down_for"),
        ),
        Alert(
            name="AgentmeterCollectorFailing",
            expr=f"{series(m.COLLECTOR_SUCCESS, e)} == 0",
            for_=s.collector_failing_for,
            severity="warning",
            summary="An exporter collector keeps failing; its metrics are missing or stale.",
            description=(
                "Collector {{ $labels.collector }} of exporter {{ $labels.instance }} has failed "
                f"every scrape for {s.collector_failing_for}; the metrics it provides are missing."
            ),
            settings=("collector_failing_for",),
        ),
        Alert(
            name="AgentmeterCoderSyncFailing",
            expr=f"{series(m.CODER_SYNC_SUCCESS, e)} == 0",
            for_=s.coder_sync_failing_for,
            severity="warning",
            summary="Users and groups are no longer synced from Coder; limits follow stale groups.",
            description=(
                "Every Coder sync of exporter {{ $labels.instance }} has failed for "
                f"{s.coder_sync_failing_for}. New Coder users, renames and group changes do not "
                "reach the ledger, so group limits apply to the members Coder had before."
            ),
            settings=("coder_sync_failing_for",),
        ),
        Alert(
            name="AgentmeterLedgerPruneStale",
            # Never pruned (the success gauge absent) counts as stale too.
            expr=(f"max by (job) ({series(m.LEDGER_MESSAGE_RETENTION_SECONDS, e)}) > 0\n"
                  "unless on (job)\n"
                  f"(time() - max by (job) "
                  f"({series(m.LEDGER_PRUNE_LAST_SUCCESS_TIMESTAMP_SECONDS, e)}))\n"
                  f"  < {parse_duration(s.ledger_prune_stale_after) // 1000}"),
            for_=s.ledger_prune_stale_for,
            severity="warning",
            summary="Old ledger messages are not being pruned.",
            description=(
                "Message retention is set on {{ $labels.job }}, but no prune has succeeded for "
                f"more than {s.ledger_prune_stale_after}: the messages table grows past the "
                "retention. The exporter logs why each maintenance round failed."
            ),
            settings=("ledger_prune_stale_after", "ledger_prune_stale_for"),
        ),
    ]
