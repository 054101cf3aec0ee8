"""A self-signed certificate for the tests of the TLS servers (made with `openssl`)."""

import shutil
import subprocess

import pytest


def self_signed(folder) -> tuple[str, str]:
    """`(cert_file, key_file)` for localhost and 127.0.0.1, written into `folder`; skips the test
    where `openssl` is missing."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", folder / "key.pem", "-out", folder / "cert.pem", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(folder / "cert.pem"), str(folder / "key.pem")
