"""Every metric name agentmeter publishes — the contract dashboards and alerts rely on.

The exporter and the limiter build their families from these constants; dashboards and alert
rules are checked against this module, so a rename here is caught everywhere at once.
"""

from __future__ import annotations

PREFIX = "agentmeter_"

# Ledger (exporter)
USER_INFO = "agentmeter_user_info"
USER_SPEND_USD = "agentmeter_user_spend_usd"
USER_LIMIT_USD = "agentmeter_user_limit_usd"
USER_LIMIT_UTILIZATION_RATIO = "agentmeter_user_limit_utilization_ratio"
# Counter families are named without `_total`; prometheus-client appends it on exposition.
SPEND_USD = "agentmeter_spend_usd"
TOKENS = "agentmeter_tokens"
MESSAGES = "agentmeter_messages"
CHATS = "agentmeter_chats"
LIMITS_ENABLED = "agentmeter_limits_enabled"
LIMITS_DEFAULT_USD = "agentmeter_limits_default_usd"
LIMITS_PERIOD_END_TIMESTAMP_SECONDS = "agentmeter_limits_period_end_timestamp_seconds"
LIMITS_INFO = "agentmeter_limits_info"
MODELS_WITHOUT_PRICING = "agentmeter_models_without_pricing"
MODEL_PRICING_MISSING = "agentmeter_model_pricing_missing"
MODEL_PRICE_USD_PER_MILLION_TOKENS = "agentmeter_model_price_usd_per_million_tokens"
UNPRICED_MESSAGES = "agentmeter_unpriced_messages"
UNPRICED_TOKENS = "agentmeter_unpriced_tokens"
# Per-request fees (label `fee`, ledger.pricing.Fee), counted whether priced or not.
FEES = "agentmeter_fees"
# Values of the `gap` label on MODEL_PRICING_MISSING and UNPRICED_MESSAGES: this one for a model
# or token kind without a price, and ledger.pricing.Gap's for what answers needed.
GAP_PRICE = "price"
SERIES_DROPPED = "agentmeter_series_dropped"

# Message retention (exporter)
LEDGER_MESSAGES_OLDEST_TIMESTAMP_SECONDS = "agentmeter_ledger_messages_oldest_timestamp_seconds"
LEDGER_MESSAGE_RETENTION_SECONDS = "agentmeter_ledger_message_retention_seconds"
LEDGER_PRUNE_LAST_SUCCESS_TIMESTAMP_SECONDS = \
    "agentmeter_ledger_prune_last_success_timestamp_seconds"
LEDGER_PRUNE_LAST_REMOVED_MESSAGES = "agentmeter_ledger_prune_last_removed_messages"

# Kubernetes (exporter)
WORKSPACE_INFO = "agentmeter_workspace_info"
WORKSPACE_RESOURCE_LIMIT = "agentmeter_workspace_resource_limit"
WORKSPACE_RESOURCE_REQUEST = "agentmeter_workspace_resource_request"
WORKSPACE_CPU_USAGE_CORES = "agentmeter_workspace_cpu_usage_cores"
WORKSPACE_MEMORY_WORKING_SET_BYTES = "agentmeter_workspace_memory_working_set_bytes"
NODE_ALLOCATABLE = "agentmeter_node_allocatable"
NODE_CAPACITY = "agentmeter_node_capacity"
NODE_RESOURCE_LIMITS_RATIO = "agentmeter_node_resource_limits_ratio"
NODE_RESOURCE_REQUESTS_RATIO = "agentmeter_node_resource_requests_ratio"
NODE_CPU_USAGE_CORES = "agentmeter_node_cpu_usage_cores"
NODE_MEMORY_WORKING_SET_BYTES = "agentmeter_node_memory_working_set_bytes"

# Self-health (exporter)
COLLECTOR_SUCCESS = "agentmeter_collector_success"
COLLECTOR_DURATION_SECONDS = "agentmeter_collector_duration_seconds"

# Limiter
LIMITER_REQUESTS = "agentmeter_limiter_requests"
LIMITER_REQUEST_DURATION_SECONDS = "agentmeter_limiter_request_duration_seconds"
LIMITER_OVERHEAD_SECONDS = "agentmeter_limiter_overhead_seconds"
LIMITER_UPSTREAM_DURATION_SECONDS = "agentmeter_limiter_upstream_duration_seconds"
LIMITER_TIME_TO_FIRST_TOKEN_SECONDS = "agentmeter_limiter_time_to_first_token_seconds"
LIMITER_BLOCKED = "agentmeter_limiter_blocked"
LIMITER_FAIL_OPEN = "agentmeter_limiter_fail_open"
LIMITER_SPOOL_PENDING = "agentmeter_limiter_spool_pending"
LIMITER_KEY_CHECKS = "agentmeter_limiter_key_checks"
LIMITER_UPSTREAM_CONNECTION_WAIT_SECONDS = "agentmeter_limiter_upstream_connection_wait_seconds"
LIMITER_CLIENT_TIMEOUTS = "agentmeter_limiter_client_timeouts"
LIMITER_BUFFERED_BODY_BYTES = "agentmeter_limiter_buffered_body_bytes"
# Usage records older than the oldest message kept (ledger.retention): refused, never counted.
LIMITER_RECORDS_REFUSED = "agentmeter_limiter_records_refused"

# Coder: the sync the exporter runs on a timer, and the limiter's token lookups
CODER_SYNC_SUCCESS = "agentmeter_coder_sync_success"
CODER_SYNC_LAST_SUCCESS_TIMESTAMP_SECONDS = "agentmeter_coder_sync_last_success_timestamp_seconds"
CODER_SYNC_DURATION_SECONDS = "agentmeter_coder_sync_duration_seconds"
CODER_SYNC_CHANGES = "agentmeter_coder_sync_changes"
CODER_TOKEN_LOOKUPS = "agentmeter_coder_token_lookups"  # label outcome (coder.tokens.Outcome)

# Both processes
LOG_EVENTS = "agentmeter_log_events"

COUNTERS = frozenset(
    {
        SPEND_USD,
        TOKENS,
        MESSAGES,
        CHATS,
        UNPRICED_MESSAGES,
        UNPRICED_TOKENS,
        FEES,
        LIMITER_REQUESTS,
        LIMITER_BLOCKED,
        LIMITER_FAIL_OPEN,
        LIMITER_KEY_CHECKS,
        CODER_SYNC_CHANGES,
        CODER_TOKEN_LOOKUPS,
        LIMITER_CLIENT_TIMEOUTS,
        LIMITER_RECORDS_REFUSED,
        LOG_EVENTS,
    }
)
HISTOGRAMS = frozenset(
    {
        LIMITER_REQUEST_DURATION_SECONDS,
        LIMITER_OVERHEAD_SECONDS,
        LIMITER_UPSTREAM_DURATION_SECONDS,
        LIMITER_TIME_TO_FIRST_TOKEN_SECONDS,
        LIMITER_UPSTREAM_CONNECTION_WAIT_SECONDS,
    }
)


def exposed_names() -> frozenset[str]:
    """Every series name as it appears on /metrics (counters with `_total`, histogram parts)."""
    names: set[str] = set()
    for value in globals().values():
        if not (isinstance(value, str) and value.startswith(PREFIX) and value != PREFIX):
            continue
        if value in COUNTERS:
            names.add(value + "_total")
        elif value in HISTOGRAMS:
            names.update({value + "_bucket", value + "_sum", value + "_count"})
        else:
            names.add(value)
    return frozenset(names)
