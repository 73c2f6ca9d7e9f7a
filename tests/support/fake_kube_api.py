"""A local Kubernetes API server for tests: real-shaped JSON, list+watch, and injectable faults.

It serves what the exporter reads, the way the real API server does:

- `GET /api/v1/pods`, `/api/v1/namespaces/{ns}/pods`, `/api/v1/nodes`: PodList / NodeList with
  `metadata.resourceVersion`, `labelSelector`, and `limit`/`continue` paging (an expired continue
  token answers HTTP 410);
- the same paths with `watch=true`: a chunked stream of newline-delimited
  `{"type": "ADDED|MODIFIED|DELETED|ERROR", "object": ...}` events from `resourceVersion`,
  ending cleanly after `timeoutSeconds`; a resourceVersion older than the retained history gets
  an ERROR event carrying a Status with code 410 (or HTTP 410, with `stale_watch_http = True`);
- `/apis/metrics.k8s.io/v1beta1/pods` (and namespaced) and `/nodes`: PodMetricsList and
  NodeMetricsList, or a 404 Status when `metrics_enabled` is False.

Tests change the cluster with `put_pod`/`delete_pod`/`put_node`/`delete_node` (every change gets
the next resourceVersion and is pushed to the open watches), force a relist with
`expire_watches()`, break things with `fail(500)` + `drop_watches()` and heal them with
`heal()`, and read `requests` to see what the client asked for. `write_kubeconfig(path)` points a
kubeconfig at the server. Serves 5,000 pods and 500 nodes without trouble (the benchmark does).
"""

from __future__ import annotations

import bisect
import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from tests.support.kube_objects import (  # re-exported: tests build objects from here
    CODER_LABELS,
    JSON,
    container,
    node,
    pod,
    status,
    workspace_pod,
)
from tests.support.local_server import ThreadedServer

TOKEN = "fake-service-account-token"
__all__ = ["CODER_LABELS", "FakeKubeApi", "container", "fake_kube_api", "node", "pod", "status",
           "wait_until", "workspace_pod"]


def _selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Equality and existence requirements, enough for the tests (`a=b,c!=d,e,!f`)."""
    for part in filter(None, (p.strip() for p in selector.split(","))):
        if "!=" in part:
            key, value = (s.strip() for s in part.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in part:
            key, value = (s.strip() for s in part.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif part.startswith("!"):
            if part[1:].strip() in labels:
                return False
        elif part not in labels:
            return False
    return True


# -- the server -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None = None

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")


@dataclass(frozen=True)
class _Event:
    version: int
    plural: str
    type: str
    object: JSON


class FakeKubeApi(ThreadedServer):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._version = 1000
        self._objects: dict[str, dict[tuple[str, str], JSON]] = {"pods": {}, "nodes": {}}
        self._events: list[_Event] = []
        self._event_versions: list[int] = []
        # Watches from a resourceVersion at or below this are told 410 Gone.
        self._compacted = 0
        self._expire_generation = 0
        self._error_code = 410
        # The next request with a continue token is answered 410 (the token expired).
        self.expire_next_continue = False
        self._drop_generation = 0
        self._continues: dict[str, tuple[list[JSON], int]] = {}
        self._closing = False
        self.requests: list[Request] = []
        self.failure: int | None = None
        self.stale_watch_http = False
        self.metrics_enabled = True
        # metrics-server down: the aggregator answers this status for metrics.k8s.io only.
        self.metrics_failure: int | None = None
        self.pod_metrics: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
        self.node_metrics: dict[str, tuple[str, str]] = {}
        self.open_watches = 0
        # Like the API server's --min-request-timeout: watches end (cleanly) after at most this.
        self.max_watch_seconds: float | None = None
        super().__init__(_handler_for(self), "fake-kube-api", poll_interval=0.05)

    # -- lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        """Ends the open watches, then stops serving."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        super().close()

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.base_url}}],
            "users": [{"name": "exporter", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "exporter"}}],
            "current-context": "fake",
        }))
        return path

    # -- the cluster ------------------------------------------------------------------------------

    def put_pod(self, obj: JSON) -> JSON:
        meta = obj["metadata"]
        return self._put("pods", (meta["namespace"], meta["name"]), obj)

    def delete_pod(self, namespace: str, name: str) -> None:
        self._delete("pods", (namespace, name))

    def put_node(self, obj: JSON) -> JSON:
        return self._put("nodes", ("", obj["metadata"]["name"]), obj)

    def delete_node(self, name: str) -> None:
        self._delete("nodes", ("", name))

    def put_many(self, pods: Iterable[JSON] = (), nodes: Iterable[JSON] = ()) -> None:
        for obj in nodes:
            self.put_node(obj)
        for obj in pods:
            self.put_pod(obj)

    def _put(self, plural: str, key: tuple[str, str], obj: JSON) -> JSON:
        with self._cond:
            self._version += 1
            stored = json.loads(json.dumps(obj))
            stored["metadata"]["resourceVersion"] = str(self._version)
            kind = "MODIFIED" if key in self._objects[plural] else "ADDED"
            self._objects[plural][key] = stored
            self._record(plural, kind, stored)
            return stored

    def _delete(self, plural: str, key: tuple[str, str]) -> None:
        with self._cond:
            stored = self._objects[plural].pop(key)
            self._version += 1
            stored = {**stored, "metadata": {**stored["metadata"],
                                             "resourceVersion": str(self._version)}}
            self._record(plural, "DELETED", stored)

    def bookmark(self) -> None:
        """Send open watches a BOOKMARK: the current resourceVersion, without any change."""
        with self._cond:
            for plural, kind in (("pods", "Pod"), ("nodes", "Node")):
                self._record(plural, "BOOKMARK", {"kind": kind, "apiVersion": "v1", "metadata": {
                    "resourceVersion": str(self._version)}})

    def _record(self, plural: str, kind: str, obj: JSON) -> None:
        self._events.append(_Event(self._version, plural, kind, obj))
        self._event_versions.append(self._version)
        self._cond.notify_all()

    # -- faults -----------------------------------------------------------------------------------

    def compact(self) -> None:
        """Forget the history so far: watching from an older resourceVersion is 410 Gone."""
        with self._cond:
            self._compacted = self._version
            self._continues.clear()

    def expire_watches(self) -> None:
        """Compact, and tell the open watches so with an ERROR event carrying a 410 Status."""
        with self._cond:
            self.compact()
            self.error_watches(410)

    def error_watches(self, code: int) -> None:
        """End every open watch with an ERROR event carrying a Status with this code."""
        with self._cond:
            self._error_code = code
            self._expire_generation += 1
            self._cond.notify_all()

    def drop_watches(self) -> None:
        """Cut every open watch connection mid-stream, as a crashed API server would."""
        with self._cond:
            self._drop_generation += 1
            self._cond.notify_all()

    def fail(self, code: int = 500) -> None:
        """Answer every API request with this status until `heal()`."""
        self.failure = code

    def heal(self) -> None:
        self.failure = None

    def list_calls(self, plural: str) -> int:
        return sum(1 for r in self.requests
                   if r.path.endswith("/" + plural) and not r.is_watch
                   and "continue" not in r.query and "metrics.k8s.io" not in r.path)

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> bool:
        """Wait until `predicate(self)` holds; requests and watches notify the condition."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    # -- request handling (called from the handler threads) ---------------------------------------

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        request = Request("GET", parts.path, query, handler.headers.get("Authorization"))
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()
        if self.failure is not None:
            _send_json(handler, self.failure, status(self.failure, "InternalError",
                                                     "fake API server failure"))
            return
        path = parts.path.rstrip("/").split("/")[1:]
        if path[:2] == ["apis", "metrics.k8s.io"]:
            self._metrics(handler, path[3:], query)
        elif path[:2] == ["api", "v1"] and path[-1] in ("pods", "nodes"):
            namespace = path[3] if len(path) == 5 and path[2] == "namespaces" else None
            if request.is_watch:
                self._watch(handler, path[-1], namespace, query)
            else:
                self._list(handler, path[-1], namespace, query)
        else:
            _send_json(handler, 404, status(404, "NotFound",
                                            "the server could not find the requested resource"))

    def _matching(self, plural: str, obj: JSON, namespace: str | None, selector: str) -> bool:
        meta = obj["metadata"]
        if namespace is not None and meta.get("namespace") != namespace:
            return False
        return _selector_matches(selector, meta.get("labels") or {})

    def _list(self, handler: BaseHTTPRequestHandler, plural: str, namespace: str | None,
              query: dict[str, str]) -> None:
        limit = int(query.get("limit", "0") or 0)
        token = query.get("continue")
        with self._cond:
            if token:
                if self.expire_next_continue:
                    self.expire_next_continue = False
                    self._continues.clear()
                if token.split(":")[0] not in self._continues:
                    _send_json(handler, 410, status(410, "Expired",
                                                    "The provided continue parameter is too old"))
                    return
                snapshot, version = self._continues[token.split(":")[0]]
                offset = int(token.split(":")[1])
            else:
                selector = query.get("labelSelector", "")
                snapshot = [o for _, o in sorted(self._objects[plural].items())
                            if self._matching(plural, o, namespace, selector)]
                version, offset = self._version, 0
            page = snapshot[offset:offset + limit] if limit else snapshot[offset:]
            metadata: JSON = {"resourceVersion": str(version)}
            if limit and offset + limit < len(snapshot):
                snapshot_id = token.split(":")[0] if token else uuid.uuid4().hex
                self._continues[snapshot_id] = (snapshot, version)
                metadata["continue"] = f"{snapshot_id}:{offset + limit}"
        kind = "PodList" if plural == "pods" else "NodeList"
        items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in page]
        _send_json(handler, 200, {"kind": kind, "apiVersion": "v1", "metadata": metadata,
                                  "items": items})

    def _watch(self, handler: BaseHTTPRequestHandler, plural: str, namespace: str | None,
               query: dict[str, str]) -> None:
        selector = query.get("labelSelector", "")
        timeout = float(query.get("timeoutSeconds", "1800"))
        if self.max_watch_seconds is not None:
            timeout = min(timeout, self.max_watch_seconds)
        since = int(query.get("resourceVersion") or 0)
        with self._cond:
            stale = since and since < self._compacted
            if stale and self.stale_watch_http:
                _send_json(handler, 410, status(410, "Expired", "too old resource version"))
                return
            cursor = bisect.bisect_right(self._event_versions, since) if since else len(
                self._events)
            expire_generation, drop_generation = self._expire_generation, self._drop_generation
            self.open_watches += 1
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        deadline = _now() + timeout
        try:
            if stale:
                _send_chunk(handler, {"type": "ERROR", "object": status(
                    410, "Expired", f"too old resource version: {since} ({self._compacted})")})
                _end_chunks(handler)
                return
            while True:
                with self._cond:
                    seen = cursor
                    self._cond.wait_for(
                        lambda: seen < len(self._events) or self._closing  # noqa: B023
                        or self._expire_generation != expire_generation
                        or self._drop_generation != drop_generation or _now() >= deadline,
                        timeout=max(0.0, min(0.5, deadline - _now())))
                    if (self._closing or self._drop_generation != drop_generation
                            or _client_gone(handler)):
                        handler.close_connection = True
                        return
                    expired = self._expire_generation != expire_generation
                    error_code = self._error_code
                    events = self._events[cursor:]
                    cursor = len(self._events)
                if expired:
                    _send_chunk(handler, {"type": "ERROR", "object": status(
                        error_code, "Expired" if error_code == 410 else "InternalError",
                        "too old resource version" if error_code == 410 else "etcd trouble")})
                    _end_chunks(handler)
                    return
                for event in events:
                    if event.type == "BOOKMARK" and event.plural == plural:
                        if query.get("allowWatchBookmarks") == "true":
                            _send_chunk(handler, {"type": event.type, "object": event.object})
                    elif event.plural == plural and self._matching(plural, event.object,
                                                                   namespace, selector):
                        _send_chunk(handler, {"type": event.type, "object": event.object})
                if _now() >= deadline:
                    _end_chunks(handler)
                    return
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
        finally:
            with self._cond:
                self.open_watches -= 1
                self._cond.notify_all()

    def _metrics(self, handler: BaseHTTPRequestHandler, path: list[str],
                 query: dict[str, str]) -> None:
        if self.metrics_failure is not None:
            _send_json(handler, self.metrics_failure, status(
                self.metrics_failure, "ServiceUnavailable",
                "the server is currently unable to handle the request"))
            return
        if not self.metrics_enabled:
            _send_json(handler, 404, status(404, "NotFound",
                                            "the server could not find the requested resource"))
            return
        meta: JSON = {"resourceVersion": ""}
        if path and path[-1] == "nodes":
            items = [{"metadata": {"name": name, "creationTimestamp": "2026-01-05T10:00:00Z"},
                      "timestamp": "2026-01-05T10:00:00Z", "window": "20.05s",
                      "usage": {"cpu": cpu, "memory": memory}}
                     for name, (cpu, memory) in sorted(self.node_metrics.items())]
            _send_json(handler, 200, {"kind": "NodeMetricsList",
                                      "apiVersion": "metrics.k8s.io/v1beta1",
                                      "metadata": meta, "items": items})
            return
        namespace = path[1] if len(path) == 3 and path[0] == "namespaces" else None
        pod_items: list[JSON] = [{"metadata": {"name": name, "namespace": ns,
                               "creationTimestamp": "2026-01-05T10:00:00Z"},
                  "timestamp": "2026-01-05T10:00:00Z", "window": "18.2s",
                  "containers": [{"name": c, "usage": {"cpu": cpu, "memory": memory}}
                                 for c, (cpu, memory) in containers.items()]}
                 for (ns, name), containers in sorted(self.pod_metrics.items())
                 if namespace is None or ns == namespace]
        _send_json(handler, 200, {"kind": "PodMetricsList",
                                  "apiVersion": "metrics.k8s.io/v1beta1",
                                  "metadata": meta, "items": pod_items})


def _now() -> float:
    return time.monotonic()


def _client_gone(handler: BaseHTTPRequestHandler) -> bool:
    """Whether the client closed its end (a watch only notices when it next reads)."""
    sock = handler.connection
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _send_json(handler: BaseHTTPRequestHandler, code: int, body: JSON) -> None:
    data = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _send_chunk(handler: BaseHTTPRequestHandler, event: JSON) -> None:
    data = json.dumps(event).encode() + b"\n"
    handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    handler.wfile.flush()


def _end_chunks(handler: BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"0\r\n\r\n")
    handler.wfile.flush()


def _handler_for(api: FakeKubeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            api.handle(self)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read `api.requests` instead."""

    return Handler


@contextmanager
def fake_kube_api() -> Iterator[FakeKubeApi]:
    with FakeKubeApi() as api:
        yield api


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll `predicate()` until it is true (the collector's threads work in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
