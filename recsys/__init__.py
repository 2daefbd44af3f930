"""Shared library of the real-time recommendation platform.

Holds what all three services need (settings helpers, Kafka and Redis clients,
logging, metrics, health, the local-infrastructure launcher, data loaders) and
the generated API stubs under ``recsys.<api>.v1``.
"""

__version__ = "0.1.0"
