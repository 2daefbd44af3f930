"""The Redis ACL each service needs: least privilege, derived from the code and the schema.

One place says which commands and keys every Redis client of the platform uses
(docs/redis-schema.md, "Access control"), so that a service whose REDIS_URL logs in
as its own user can do its job and nothing else: the recommender reads, the
sentiment service writes only its three per-user kinds, nobody can FLUSHALL,
CONFIG, KEYS, DEBUG, publish, or touch keys under another prefix.

The rules are generated, not written down twice:

- key patterns come from :class:`~recsys.store.keys.KeySchema` (its key methods, so
  a prefix change or a new layout follows);
- the commands the Lua scripts run are read from the scripts themselves (Redis 7
  checks every ``redis.call`` against the caller's ACL, and the keys declared in
  ``KEYS`` against its key patterns), so editing a script cannot silently need a
  command no user has.

``recsys redis-acl`` (tooling) prints them as an ACL file; the integration test
``tests/integration/test_redis_acl.py`` loads that file into a real redis-server
and runs every service's operations as its user.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from recsys.store.keys import KeySchema

#: The Redis clients of the platform, each with a user of its own.
SERVICES = ("events", "recommender", "sentiment", "trainer", "admin")

#: What every client sends without being asked: PING (the opener's check, the client's
#: health checks), HELLO (``protocol=3`` in REDIS_URL), SELECT (a database in the URL).
#: AUTH needs no grant. Not CLIENT SETINFO, which redis-py sends on connect and whose
#: refusal it ignores: Redis 7.0 does not know the subcommand, and an ACL file naming it
#: would stop that server from starting.
_CONNECT = ("ping", "hello", "select")
#: A Redis Cluster client reads the slot map and the command table when it starts.
_CLUSTER = ("cluster|slots", "command")
#: Never granted, whatever a script or a store method comes to use: they reach every
#: key or the server itself. Checked by :func:`acl_rules` and the unit tests.
FORBIDDEN = frozenset(
    {
        "flushall", "flushdb", "keys", "config", "debug", "shutdown", "acl", "eval",
        "script", "script|flush", "script|kill", "module", "monitor", "save", "bgsave",
        "bgrewriteaof", "replicaof", "slaveof", "migrate", "restore", "sort", "function",
        "client", "client|kill", "cluster", "failover", "swapdb", "publish", "subscribe",
    }
)  # fmt: skip

_CALL = re.compile(r"redis\.p?call\(\s*(['\"])([A-Za-z]+)\1")


@cache
def script_commands(name: str) -> frozenset[str]:
    """The commands the store's Lua script ``name`` runs (lower case).

    Every call in the scripts names its command as a literal; a call that did not
    would be missed here, which ``tests/unit/test_redis_acl_rules.py`` rules out.
    """
    source = resources.files("recsys.store.lua").joinpath(f"{name}.lua").read_text("utf-8")
    return frozenset(match.group(2).lower() for match in _CALL.finditer(source))


@dataclass(frozen=True)
class Grant:
    """One service's commands and key patterns (read-write, and read-only)."""

    commands: tuple[str, ...]
    read_write: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ()


def service_grant(service: str, keys: KeySchema, *, cluster: bool = False) -> Grant:
    """What ``service`` runs on which keys, from the store methods it calls.

    ``cluster``: the services run against a Redis Cluster (``REDIS_CLUSTER=true``),
    whose client reads the topology first.
    """
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    user: Callable[[Callable[[str], str]], str] = keys.per_user_pattern
    scripts = ("script|load", "evalsha")
    if service == "events":
        # apply_events / begin_apply: the batch script over the user's four event keys
        # and the three global keys (docs/redis-schema.md, "Writes").
        # WAIT: REDIS_WAIT_REPLICAS (it reaches no key).
        grant = Grant(
            (*scripts, *sorted(script_commands("batch")), "wait"),
            read_write=(
                user(keys.recent), user(keys.seen), user(keys.weights), user(keys.applied),
                *map(keys.literal_pattern, keys.global_keys()),
            ),
        )  # fmt: skip
    elif service == "recommender":
        # get_serving_state, get_user_state (Explain), get_sentiment, trending (redis-py
        # sends ZRANGE ... REV as ZREVRANGE): reads only, and the recommender opens its
        # store unchecked, so it loads no script.
        grant = Grant(
            (
                "smembers", "hgetall", "zrangebyscore", "exists", "lrange", "hmget", "zrange",
                "zrevrange",
            ),
            read_only=(
                user(keys.recent), user(keys.seen), user(keys.weights), user(keys.suppressed),
                user(keys.forgotten), user(keys.sentiment), keys.literal_pattern(keys.trending()),
            ),
        )  # fmt: skip
    elif service == "sentiment":
        # update_sentiment and suppress are scripts; unsuppress is ZSCORE + ZREM.
        grant = Grant(
            (
                *scripts,
                *sorted(script_commands("sentiment") | script_commands("suppress")),
                "zscore", "zrem", "wait",
            ),
            read_write=(user(keys.sentiment), user(keys.feedback_applied), user(keys.suppressed)),
        )  # fmt: skip
    elif service == "trainer":
        # `recsys train`: SCAN of the weights hashes and the forgotten records, then
        # HGETALL / GET of each. SCAN is not checked against key patterns: the trainer
        # sees every key name in the database, not their values. Its store is opened
        # with the usual check, which loads the scripts (it never runs one).
        grant = Grant(
            ("script|load", "scan", "hgetall", "get"),
            read_only=(keys.weights_pattern(), keys.forgotten_pattern()),
        )
    else:
        # The operator's `recsys forget-user` (SET forgotten, ZRANGE applied, ZREM of the
        # global dedup ids, DEL of the data keys) and `recsys unsuppress` (ZSCORE + ZREM).
        grant = Grant(
            ("script|load", "set", "zrange", "zrem", "del", "zscore"),
            read_write=(
                *keys.user_key_patterns(),
                keys.forgotten_pattern(),
                keys.literal_pattern(keys.global_applied()),
            ),
        )
    extra = _CONNECT + (_CLUSTER if cluster else ())
    commands = tuple(dict.fromkeys((*extra, *grant.commands)))
    denied = FORBIDDEN.intersection(commands)
    if denied:
        raise ValueError(f"{service}: refusing to grant {', '.join(sorted(denied))}")
    return Grant(commands, grant.read_write, grant.read_only)


def acl_rules(
    service: str, keys: KeySchema, *, password_rule: str | None = None, cluster: bool = False
) -> str:
    """The ``ACL SETUSER`` rules (also the tail of an ACL file's ``user`` line) for ``service``.

    ``password_rule``: ``>password`` or ``#<sha256 hex>`` (:func:`password_hash_rule`);
    without one the rules carry :func:`password_placeholder`, which Redis rejects, so
    a file printed without passwords cannot be loaded by mistake. Starts with
    ``reset``: applying the rules again drops whatever the user had before.
    """
    grant = service_grant(service, keys, cluster=cluster)
    password = password_rule if password_rule is not None else password_placeholder(service)
    if not password.startswith((">", "#")) or any(c.isspace() for c in password[1:]):
        raise ValueError("password_rule must be '>password' or '#<sha256 hex>', without spaces")
    rules = ["reset", "on", password, "resetchannels", "-@all"]
    rules += [f"+{command}" for command in grant.commands]
    rules += [f"~{pattern}" for pattern in grant.read_write]
    rules += [f"%R~{pattern}" for pattern in grant.read_only]
    return " ".join(rules)


def acl_user(service: str, user_prefix: str = "recsys") -> str:
    """The ACL user name of ``service`` (the user part of its REDIS_URL)."""
    return f"{user_prefix}-{service}"


def password_env(service: str) -> str:
    """The variable ``recsys redis-acl`` reads ``service``'s password from."""
    return f"REDIS_ACL_PASSWORD_{service.upper()}"


def password_hash_rule(password: str) -> str:
    """``#<sha256 hex>``: the ACL file holds the hash, never the password."""
    return "#" + hashlib.sha256(password.encode("utf-8")).hexdigest()


def password_placeholder(service: str) -> str:
    """Stands where the hash goes until an operator fills it in; not a valid rule."""
    return f"#<sha256-of-{password_env(service)}>"
