"""Tooling around the platform: everything a developer, the demo, the tests and the
benchmarks need, and a running service does not.

The ``recsys`` command line, the demo, the local-infrastructure launchers (Apache
Kafka, Tansu, redis-server), data fetch and loaders, the pytest plugin and the
process harness live here, so the runtime library (:mod:`recsys`) that every
production image carries stays small. The layer rules are in ``pyproject.toml``
(``[tool.importlinter]``) and CONTRIBUTING.md.
"""
