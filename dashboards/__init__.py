"""Grafana dashboards as code: grafanalib modules, one per dashboard, rendered by `build`."""
