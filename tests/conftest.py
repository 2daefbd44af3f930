"""Shared fixtures: real Kafka and Redis on loopback (see docs/infrastructure.md)."""

pytest_plugins = ["recsys_tools.infra.pytest_plugin"]
