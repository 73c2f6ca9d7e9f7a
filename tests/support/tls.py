"""A self-signed certificate for `localhost`, made with the openssl binary."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

from tests.support.requirements import require_binary


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(key, certificate) PEM files; the certificate is its own CA."""
    openssl = require_binary("openssl")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return key, cert


def server_context(key: Path, cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
