"""What callers get back from the launchers: an address plus how to talk to it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

KafkaKind = Literal["external", "docker", "apache", "tansu"]
KAFKA_KINDS: tuple[str, ...] = ("external", "docker", "apache", "tansu")

# Tansu finishes a consumer-group join only when the rebalance timeout
# (max.poll.interval.ms) expires, so default clients would wait 5 minutes. It also answers
# an empty fetch only at its max-wait deadline, even when records arrive meanwhile, so the
# client's default max wait delayed every click by most of it; a short one here fixes that
# (measured before/after: docs/infrastructure.md, "Tansu").
TANSU_CONSUMER_OVERRIDES: dict[str, Any] = {
    "max_poll_interval_ms": 3000,
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "fetch_max_wait_ms": 25,
}


class Restartable(Protocol):
    """A server process a fault test can stop, kill and bring back on the same address."""

    def stop(self) -> None: ...

    def kill(self) -> None: ...

    def start(self) -> None: ...

    def restart(self) -> None: ...


@dataclass(frozen=True)
class KafkaEndpoint:
    """A reachable Kafka: ``bootstrap`` for clients, ``consumer_overrides`` for every consumer."""

    bootstrap: str
    kind: KafkaKind
    description: str
    consumer_overrides: Mapping[str, Any] = field(default_factory=dict)
    # The process behind it when we started it (None for external/docker).
    server: Restartable | None = field(default=None, compare=False, repr=False)

    def consumer_config(self, **extra: Any) -> dict[str, Any]:
        """Overrides merged with the caller's own settings (the caller wins)."""
        merged = dict(self.consumer_overrides)
        merged.update(extra)
        return merged


@dataclass(frozen=True)
class RedisEndpoint:
    url: str
    description: str
    server: Restartable | None = field(default=None, compare=False, repr=False)


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """RECSYS_CACHE_DIR, default ~/.cache/recsys: downloaded jars, state, work dirs."""
    env = os.environ if env is None else env
    raw = env.get("RECSYS_CACHE_DIR", "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "recsys"
