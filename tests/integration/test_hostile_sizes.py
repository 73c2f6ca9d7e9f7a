"""Oversized input against a real `agentmeter limiter` process: a clear 4xx, bounded memory.

The limiter runs as the command an operator starts (default `max_body_bytes`, 32 MiB); its
memory is read from /proc/<pid>/status (VmHWM, the peak resident size, so a spike between two
samples cannot hide). A 100 MB body — declared or chunked —, 10,000 headers and a 1 MB username
each get a prompt 4xx, leave the ledger as it was, and leave the process healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import openai_request, policy, seed_ledger
from tests.support.hostile import TableDump, ledger_dump
from tests.support.monitoring_stack import ManagedProcess, free_port, running

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
BODY_BYTES = 100 * 1000 * 1000  # "a 100 MB body"
DEFAULT_CAP = 32 * MIB
SECRET = "size-s3cret"
# Time for a refusal, upload included up to the cap, on a loaded 2-core box.
PROMPT_SECONDS = 10.0


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


@dataclass
class Limiter:
    url: str
    port: int
    process: ManagedProcess
    ledger: str
    key: str
    upstream: FakeUpstream

    def peak_mib(self) -> float:
        return memory_kib(self.process.popen.pid)["VmHWM"] / 1024

    def dump(self) -> TableDump:
        return ledger_dump(self.ledger)

    def messages(self) -> int:
        return len(self.dump()["messages"])

    async def healthy(self) -> None:
        """Still serving: /healthz, and a real request answered, forwarded and recorded."""
        assert self.process.popen.poll() is None, self.process.log_tail()
        recorded = self.messages()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{self.url}/healthz") as answer:
                assert answer.status == 200
            async with session.post(f"{self.url}/v1/chat/completions", json=openai_request(),
                                    headers={"Authorization": f"Bearer {self.key}"}) as answer:
                assert answer.status == 200, await answer.text()
        deadline = time.monotonic() + PROMPT_SECONDS
        while self.messages() == recorded:  # usage is written just after the answer
            assert time.monotonic() < deadline, self.process.log_tail()
            await asyncio.sleep(0.05)


@pytest.fixture
async def limiter(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Limiter]:
    keys = seed_ledger(sqlite_url, policy(), keys_for=("alice",))
    fake = FakeUpstream()
    await fake.start()
    config = tmp_path / "agentmeter.yaml"
    config.write_text(yaml.safe_dump({
        "database": {"url": sqlite_url},
        "limiter": {"spool_dir": str(tmp_path / "spool"), "trusted_header_secret": SECRET,
                    "admin_token": "size-admin-token",
                    "providers": {name: {"base_url": fake.base_url, "api_key": f"sk-{name}"}
                                  for name in ("openai", "anthropic")}},
    }))
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    try:
        async with running("agentmeter limiter",
                           [sys.executable, "-m", "agentmeter", "limiter", "--listen",
                            f"127.0.0.1:{port}", "--config", str(config)],
                           tmp_path / "limiter.log", env=env,
                           cwd=Path(__file__).resolve().parents[2]) as process:
            url = f"http://127.0.0.1:{port}"
            await process.wait_ready(f"{url}/healthz")
            limiter = Limiter(url, port, process, sqlite_url, keys["alice"], fake)
            await limiter.healthy()  # warmed up: the baseline includes a served request
            fake.received.clear()
            yield limiter
    finally:
        await fake.close()


async def send_raw(port: int, head: bytes, body_bytes: int, *, chunked: bool) -> bytes:
    """Sends `head`, then up to `body_bytes` of body until the server answers; the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    block = b" " * MIB

    async def upload() -> None:
        with contextlib.suppress(ConnectionError):
            sent = 0
            while sent < body_bytes:
                size = min(len(block), body_bytes - sent)
                if chunked:
                    writer.write(f"{size:x}\r\n".encode() + block[:size] + b"\r\n")
                else:
                    writer.write(block[:size])
                await writer.drain()
                sent += size
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()

    writer.write(head)
    sender = asyncio.create_task(upload())
    try:
        answer = await asyncio.wait_for(reader.read(64 * 1024), PROMPT_SECONDS)
        with contextlib.suppress(TimeoutError, ConnectionError):
            answer += await asyncio.wait_for(reader.read(64 * 1024), 0.5)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        writer.close()
    return answer


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[:int(size, 16)]
    return status, body


def json_error(body: bytes) -> str:
    error = json.loads(body)["error"]
    assert error["message"]
    return str(error["code"])


def post_head(key: str, extra: bytes = b"", *, length: int | None = None) -> bytes:
    framing = (b"Transfer-Encoding: chunked\r\n" if length is None
               else f"Content-Length: {length}\r\n".encode())
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: limiter\r\n"
            b"Content-Type: application/json\r\n" + framing
            + f"Authorization: Bearer {key}\r\n".encode() + extra + b"\r\n")


async def test_100_mb_body_with_content_length_is_refused_at_once(limiter: Limiter) -> None:
    before, peak_before = limiter.dump(), limiter.peak_mib()
    started = time.monotonic()
    answer = await send_raw(limiter.port, post_head(limiter.key, length=BODY_BYTES),
                            BODY_BYTES, chunked=False)
    elapsed = time.monotonic() - started
    status, body = status_and_body(answer)
    assert status == 413 and json_error(body) == "payload_too_large"
    assert elapsed < 2.0  # refused from the declared length, before the upload
    assert limiter.peak_mib() - peak_before < 8, (peak_before, limiter.peak_mib())
    assert limiter.dump() == before
    assert limiter.upstream.received == []
    await limiter.healthy()


async def test_100_mb_chunked_body_is_refused_at_the_cap(limiter: Limiter) -> None:
    before, peak_before = limiter.dump(), limiter.peak_mib()
    started = time.monotonic()
    answer = await send_raw(limiter.port, post_head(limiter.key), BODY_BYTES, chunked=True)
    elapsed = time.monotonic() - started
    status, body = status_and_body(answer)
    assert status == 413 and json_error(body) == "payload_too_large"
    assert elapsed < PROMPT_SECONDS
    # At most the 32 MiB cap (plus buffers) was ever held, never the 100 MB.
    growth = limiter.peak_mib() - peak_before
    assert growth < DEFAULT_CAP / MIB + 24, (peak_before, growth)
    assert limiter.dump() == before
    assert limiter.upstream.received == []
    await limiter.healthy()


async def test_100_mb_body_on_an_admin_route_is_refused(limiter: Limiter) -> None:
    """Admin bodies are capped far lower (64 KiB) than agent contexts."""
    before, peak_before = limiter.dump(), limiter.peak_mib()
    head = (b"PUT /api/v1/limits HTTP/1.1\r\nHost: limiter\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nAuthorization: Bearer size-admin-token\r\n\r\n")
    status, body = status_and_body(await send_raw(limiter.port, head, BODY_BYTES, chunked=True))
    assert status == 413 and json_error(body) == "payload_too_large"
    assert limiter.peak_mib() - peak_before < 8
    assert limiter.dump() == before
    await limiter.healthy()


async def test_10000_headers_get_a_clean_4xx(limiter: Limiter) -> None:
    before, peak_before = limiter.dump(), limiter.peak_mib()
    many = b"".join(f"X-Junk-{i}: {'v' * 20}\r\n".encode() for i in range(10_000))
    raw = json.dumps(openai_request()).encode()
    answer = await send_raw(limiter.port, post_head(limiter.key, many, length=len(raw)) + raw,
                            0, chunked=False)
    status, _ = status_and_body(answer)
    assert 400 <= status < 500, answer[:300]
    assert b"Traceback" not in answer
    assert limiter.peak_mib() - peak_before < 8
    assert limiter.dump() == before
    assert limiter.upstream.received == []
    await limiter.healthy()


@pytest.mark.parametrize("length", [MIB, 2000], ids=["1MB", "2000-chars"])
async def test_huge_trusted_username_gets_a_clean_4xx_and_writes_nothing(
        limiter: Limiter, length: int) -> None:
    """1 MB is over aiohttp's 8 KiB header line limit; 2000 characters is over the ledger's
    1024-character username column (and was created as a user on SQLite before)."""
    before = limiter.dump()
    raw = json.dumps(openai_request()).encode()
    trusted = (f"X-Agentmeter-Secret: {SECRET}\r\nX-Forwarded-User: ".encode() + b"u" * length
               + b"\r\n")
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: limiter\r\nContent-Type: "
            b"application/json\r\n" + f"Content-Length: {len(raw)}\r\n".encode() + trusted
            + b"\r\n")
    status, body = status_and_body(await send_raw(limiter.port, head + raw, 0, chunked=False))
    assert 400 <= status < 500, body[:300]
    if length < 8190:  # past aiohttp's parser: the limiter's own JSON error
        assert json_error(body) == "invalid_forwarded_user"
    assert limiter.dump() == before
    assert limiter.upstream.received == []
    await limiter.healthy()


def test_huge_username_in_the_policy_file_is_a_clear_error(
        sqlite_url: str, tmp_path: Path) -> None:
    seed_ledger(sqlite_url, policy(), keys_for=())
    before = ledger_dump(sqlite_url)
    document: dict[str, Any] = policy(users=[{"username": "u" * MIB, "name": "Huge"}])
    file = tmp_path / "policy.yaml"
    file.write_text(yaml.safe_dump(document, width=2 * MIB))
    result = subprocess.run(
        [sys.executable, "-m", "agentmeter", "apply", "-f", str(file)],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "AGENTMETER_DATABASE_URL": sqlite_url},
        cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 400, result.stderr[:500]
    assert "users[0].username: must be at most 1024 characters" in lines[0]
    assert ledger_dump(sqlite_url) == before
