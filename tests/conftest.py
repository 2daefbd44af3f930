"""Shared fixtures: real Kafka and Redis on loopback (see docs/infrastructure.md)."""

pytest_plugins = ["recsys.infra.pytest_plugin"]
