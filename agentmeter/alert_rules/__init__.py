"""agentmeter's Prometheus alerting rules, as code: one config block, one module per area.

The plain rule files in `alerts/rules/` are generated from this package; time-scaled copies for
end-to-end tests come from the same source through `scaled_rules` / `write_scaled`.
"""

from agentmeter.alert_rules.build import (
    ALERTS_DIR,
    AREAS,
    RULES_DIR,
    build_alerts,
    build_rules,
    load_rules,
    render,
    scaled_rules,
    write_rules,
    write_scaled,
)
from agentmeter.alert_rules.settings import AlertSettings, AlertSettingsError

__all__ = [
    "ALERTS_DIR",
    "AREAS",
    "RULES_DIR",
    "AlertSettings",
    "AlertSettingsError",
    "build_alerts",
    "build_rules",
    "load_rules",
    "render",
    "scaled_rules",
    "write_rules",
    "write_scaled",
]
