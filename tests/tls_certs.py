"""Test certificates from the openssl CLI: a support module (tests do not import each other)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

HAVE_OPENSSL = any(
    os.access(os.path.join(p, "openssl"), os.X_OK)
    for p in os.environ.get("PATH", "").split(os.pathsep)
)


def make_certs(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    openssl = "openssl"
    paths = {name: directory / name for name in (
        "ca.key", "ca.pem", "server.key", "server.csr", "server.pem",
        "client.key", "client.csr", "client.pem", "san.cnf")}  # fmt: skip

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(paths["ca.key"]),
        "-out", str(paths["ca.pem"]), "-days", "2", "-subj", "/CN=test-ca")  # fmt: skip
    paths["san.cnf"].write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for who in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(paths[f"{who}.key"]),
            "-out", str(paths[f"{who}.csr"]), "-subj", f"/CN={who}")  # fmt: skip
        run("x509", "-req", "-in", str(paths[f"{who}.csr"]), "-CA", str(paths["ca.pem"]),
            "-CAkey", str(paths["ca.key"]), "-CAcreateserial", "-out", str(paths[f"{who}.pem"]),
            "-days", "2", "-extfile", str(paths["san.cnf"]))  # fmt: skip
    return paths
