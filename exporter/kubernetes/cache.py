"""List+watch caches of pods and nodes, kept current by a background thread each.

The scheme is the informer's: list (in pages) to learn the state and its resourceVersion, then
watch from that resourceVersion and apply ADDED/MODIFIED/DELETED events; when the watch ends
(server timeout) resume it from the last resourceVersion seen; when the API server answers
410 Gone (history compacted: an ERROR event with code 410, or HTTP 410 on the watch or on a list
continue token), list again. Any other error (500, connection refused, a dropped stream) is
retried with back-off while the cache keeps serving what it holds; the collector decides from
`failing_for()` when that data has become too old to publish as healthy.

The watch is read straight from the client's streaming response (`_preload_content=False`)
rather than through `kubernetes.watch.Watch`, for two reasons: the raw events are parsed into
small records without building V1Pod models, and knowing the response lets `stop()` shut its
socket down so the thread ends at once instead of at the next event or server timeout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from exporter.kubernetes.retry import FailureEpisode
from ledger.backoff import Backoff

K = TypeVar("K")
R = TypeVar("R")

ListCall = Callable[..., Any]

HTTP_GONE = 410
PAGE_SIZE = 500
# Server-side watch duration; jittered so that many exporters do not reconnect in step.
WATCH_SECONDS = 300
CONNECT_TIMEOUT_SECONDS = 10.0
# A list page of 500 big pods can take a while on a loaded API server.
LIST_READ_TIMEOUT_SECONDS = 60.0


class ResourceGone(Exception):
    """The resourceVersion or continue token has expired: the cache must list again."""


class Reflector(Generic[K, R]):
    """One resource kind mirrored into a dict; `run()` is the body of its thread."""

    def __init__(
        self,
        kind: str,
        list_call: ListCall,
        parse: Callable[[dict[str, Any]], R],
        key: Callable[[R], K],
        *,
        stop: threading.Event,
        logger: logging.Logger,
        backoff: Backoff,
    ) -> None:
        self.kind = kind
        self._list_call = list_call
        self._parse = parse
        self._key = key
        self._stop = stop
        self._backoff = backoff
        self.failures = FailureEpisode(f"{kind} watch", logger)
        self._logger = logger
        self._lock = threading.Lock()
        self._items: dict[K, R] = {}
        self._resource_version: str | None = None
        self._synced = threading.Event()
        self._response: Any = None

    # -- what the collector reads -------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def items(self) -> list[R]:
        """A snapshot: the watch thread may change the cache while the caller iterates."""
        with self._lock:
            return list(self._items.values())

    # -- the thread -----------------------------------------------------------------------------

    def run(self) -> None:
        gone_in_a_row = 0
        while not self._stop.is_set():
            try:
                if self._resource_version is None:
                    self._relist()
                self._watch()
                gone_in_a_row = 0
            except ResourceGone:
                gone_in_a_row += 1
                self._resource_version = None
                self._logger.info("kubernetes %s watch expired (410 Gone), listing again",
                                  self.kind)
                # A server that answers 410 to a fresh list too is failing; pace the retries.
                if gone_in_a_row > 1:
                    self._pause(gone_in_a_row - 1)
            except Exception as error:
                if self._stop.is_set():
                    break
                self.failures.failed(error)
                self._pause(self.failures.attempts)

    def interrupt(self) -> None:
        """Unblock a thread waiting on the watch stream (called by `stop()`)."""
        response = self._response
        if response is not None:
            # Already closed or released: the thread is past the read anyway.
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                response.shutdown()

    def _pause(self, attempt: int) -> None:
        self._stop.wait(self._backoff.delay(attempt))

    def _relist(self) -> None:
        items: dict[K, R] = {}
        token: str | None = None
        resource_version = ""
        while True:
            kwargs: dict[str, Any] = {"limit": PAGE_SIZE}
            if token:
                kwargs["_continue"] = token
            page = self._request(**kwargs)
            for raw in page.get("items") or ():
                record = self._parse(raw)
                items[self._key(record)] = record
            metadata = page.get("metadata") or {}
            resource_version = str(metadata.get("resourceVersion", ""))
            token = metadata.get("continue")
            if self._stop.is_set():
                return
            if not token:
                break
        with self._lock:
            self._items = items
        self._resource_version = resource_version
        self._synced.set()
        self.failures.succeeded()

    def _request(self, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._list_call(
                _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, LIST_READ_TIMEOUT_SECONDS),
                **kwargs,
            )
        except ApiException as error:
            if error.status == HTTP_GONE:
                raise ResourceGone() from error
            raise
        try:
            return dict(json.loads(response.data))
        finally:
            response.release_conn()

    def _watch(self) -> None:
        seconds = int(WATCH_SECONDS * random.uniform(0.9, 1.1))
        try:
            response = self._list_call(
                watch=True,
                resource_version=self._resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=seconds,
                _preload_content=False,
                # The read timeout catches a silently dead connection; the server ends the
                # watch itself after `seconds`.
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, seconds + 30),
            )
        except ApiException as error:
            if error.status == HTTP_GONE:
                raise ResourceGone() from error
            raise
        self._response = response
        try:
            if self._stop.is_set():
                return
            # The watch is open: the API server answers again.
            self.failures.succeeded()
            for line in iter_resp_lines(response):
                if line:
                    self._apply(json.loads(line))
                if self._stop.is_set():
                    return
        finally:
            self._response = None
            response.close()
            response.release_conn()

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        raw = event.get("object") or {}
        if kind == "ERROR":
            code = raw.get("code")
            if code == HTTP_GONE:
                raise ResourceGone()
            raise ApiException(status=code or 0,
                               reason=f"watch error event: {raw.get('message', '')}")
        version = (raw.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            record = self._parse(raw)
            with self._lock:
                self._items[self._key(record)] = record
        elif kind == "DELETED":
            record = self._parse(raw)
            with self._lock:
                self._items.pop(self._key(record), None)
        if version:
            # BOOKMARK events carry only this: where to resume from.
            self._resource_version = str(version)
