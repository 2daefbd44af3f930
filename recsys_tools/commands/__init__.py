"""The ``recsys`` subcommands of each service area (train, evaluate, replay, serve ...).

They sit in the tooling package because they load data sets and drive whole runs;
each module exposes ``register(subparsers)`` and imports its service lazily.
"""
