"""The catalog is the installed genai-prices package: read with no network at all."""

from __future__ import annotations

import subprocess
import sys

NO_NETWORK = """
import socket

def refuse(*args, **kwargs):
    raise AssertionError(f"network use: {args!r}")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

from ledger.policy_file import load_policy
from ledger.price_catalog import catalog_version, find_catalog_model

policy = load_policy("examples/policy.yaml")
sonnet = find_catalog_model("anthropic", "claude-sonnet-4-5")
assert sonnet is not None and sonnet.schedule[-1][1].thresholds == (200_000,)
print(catalog_version(), len(policy.models))
"""


def test_catalog_prices_are_read_without_the_network() -> None:
    result = subprocess.run([sys.executable, "-c", NO_NETWORK], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["genai-prices", "0.2.5", "6"]


def test_a_model_the_catalog_does_not_know_is_none() -> None:
    from ledger.price_catalog import find_catalog_model

    assert find_catalog_model("openai", "acme-llm-9") is None
    # A name of another provider's model is not that provider's price.
    assert find_catalog_model("openai", "claude-sonnet-4-5") is None
