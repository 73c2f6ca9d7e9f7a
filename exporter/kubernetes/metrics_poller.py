"""Polls `metrics.k8s.io` (metrics-server) for pod and node usage in a background thread.

The metrics API has no watch, so the newest PodMetricsList and NodeMetricsList are fetched every
`metrics_poll_seconds` and kept as one snapshot that the collector reads without waiting.

Clusters without metrics-server answer 404: that is a valid set-up, not a failure, so the usage
series are simply absent, the collector stays healthy and the fact is logged once (again only if
it changes). Other errors (metrics-server down answers 503 through the aggregator) are retried
with back-off; the last snapshot is kept for a few poll intervals and then dropped, so a stale
usage figure never outlives its meaning. They do not make the collector unhealthy: losing the
usage figures must not take the pod and node series, which come from the API server, with it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from exporter.kubernetes.quantities import quantity_or_none
from exporter.kubernetes.records import Resources
from exporter.kubernetes.retry import FailureEpisode
from ledger.backoff import Backoff

GROUP, VERSION = "metrics.k8s.io", "v1beta1"
HTTP_NOT_FOUND = 404
# A snapshot older than this many poll intervals is dropped rather than published.
STALE_AFTER_POLLS = 3
REQUEST_TIMEOUT = (10.0, 30.0)


@dataclass(frozen=True)
class Usage:
    """One poll: per pod (namespace, name) per container, and per node."""

    pods: dict[tuple[str, str], dict[str, Resources]] = field(default_factory=dict)
    nodes: dict[str, Resources] = field(default_factory=dict)
    taken_at: float = 0.0


def _usage(raw: object) -> Resources:
    if not isinstance(raw, dict):
        return Resources()
    return Resources(quantity_or_none(raw.get("cpu")), quantity_or_none(raw.get("memory")))


def parse_pod_metrics(listing: dict[str, Any]) -> dict[tuple[str, str], dict[str, Resources]]:
    pods: dict[tuple[str, str], dict[str, Resources]] = {}
    for item in listing.get("items") or ():
        metadata = item.get("metadata") or {}
        key = (str(metadata.get("namespace", "")), str(metadata.get("name", "")))
        pods[key] = {str(c.get("name", "")): _usage(c.get("usage"))
                     for c in item.get("containers") or ()}
    return pods


def parse_node_metrics(listing: dict[str, Any]) -> dict[str, Resources]:
    return {str((item.get("metadata") or {}).get("name", "")): _usage(item.get("usage"))
            for item in listing.get("items") or ()}


class MetricsPoller:
    def __init__(self, api: CustomObjectsApi, *, namespace: str | None, interval_seconds: float,
                 stop: threading.Event, logger: logging.Logger, backoff: Backoff,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._api = api
        self._namespace = namespace
        self._interval = interval_seconds
        self._stop = stop
        self._logger = logger
        self._backoff = backoff
        self._monotonic = monotonic
        self._usage = Usage()
        # None until the first answer; False when the cluster does not serve metrics.k8s.io.
        self.available: bool | None = None
        self.failures = FailureEpisode("metrics.k8s.io poll", logger, monotonic)

    def usage(self) -> Usage:
        """The latest snapshot, or an empty one when it is too old to be trusted."""
        usage = self._usage
        if self._monotonic() - usage.taken_at > STALE_AFTER_POLLS * self._interval:
            return Usage()
        return usage

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
                wait = self._interval
            except Exception as error:
                if self._stop.is_set():
                    break
                self.failures.failed(error)
                wait = min(self._interval, self._backoff.delay(self.failures.attempts))
            self._stop.wait(wait)

    def poll_once(self) -> None:
        try:
            pods = self._list("pods")
            nodes = self._list("nodes")
        except ApiException as error:
            if error.status != HTTP_NOT_FOUND:
                raise
            self._usage = Usage()
            self.failures.succeeded()
            if self.available is not False:
                self._logger.info("metrics.k8s.io is not served by this cluster (404): the "
                                  "workspace and node CPU/memory usage series are left out")
            self.available = False
            return
        self._usage = Usage(parse_pod_metrics(pods), parse_node_metrics(nodes), self._monotonic())
        self.failures.succeeded()
        if self.available is False:
            self._logger.info("metrics.k8s.io is served again: usage series are back")
        self.available = True

    def _list(self, plural: str) -> dict[str, Any]:
        response: Any
        if plural == "pods" and self._namespace:
            response = self._api.list_namespaced_custom_object(
                GROUP, VERSION, self._namespace, plural,
                _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        else:
            response = self._api.list_cluster_custom_object(
                GROUP, VERSION, plural, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        try:
            return dict(json.loads(response.data))
        finally:
            response.release_conn()
