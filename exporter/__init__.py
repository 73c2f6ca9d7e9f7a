"""The agentmeter exporter: Prometheus collectors for the ledger, Kubernetes and self-health."""
