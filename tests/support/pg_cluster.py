"""A PostgreSQL cluster of the test's own, for tests that stop and start the database.

Never touches the shared cluster: `pg_createcluster <ver> <name> --port <p>` makes a new one,
`pg_ctlcluster` starts and stops it, and `pg_dropcluster` removes it at the end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.requirements import missing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _version() -> str:
    versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").exists() else []
    if not versions:
        missing("a PostgreSQL server installation (/etc/postgresql)")
    return versions[-1]


class OwnCluster:
    def __init__(self, version: str, name: str, port: int) -> None:
        self.version, self.name, self.port = version, name, port

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, action: str) -> None:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action],
            check=True, capture_output=True, timeout=60,
        )

    def start(self) -> None:
        self._ctl("start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"own PostgreSQL cluster {self.name} did not start")

    def stop(self) -> None:
        self._ctl("stop")


@contextmanager
def own_cluster() -> Iterator[OwnCluster]:
    """A started cluster with trust auth on 127.0.0.1; dropped afterwards."""
    version = _version()
    name = f"am{uuid.uuid4().hex[:10]}"
    port = _free_port()
    created = subprocess.run(
        ["pg_createcluster", version, name, "--port", str(port),
         "--", "--auth-local=trust", "--auth-host=trust"],
        capture_output=True, text=True, timeout=120,
    )
    if created.returncode != 0:
        missing(f"pg_createcluster: {created.stderr.strip()}")
    cluster = OwnCluster(version, name, port)
    try:
        cluster.start()
        yield cluster
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, name],
                       capture_output=True, timeout=120)
