"""``recsys redis-acl``: print the Redis ACL file that gives each service only what it needs.

Operators run it once per deployment (and again after changing ``REDIS_KEY_PREFIX`` or
upgrading, since a release may use new commands) and load the output as the server's
``aclfile`` (docs/redis-schema.md, "Access control"). The rules come from
``recsys.store.acl``; the passwords from ``REDIS_ACL_PASSWORD_<SERVICE>``, of which only
the SHA-256 is printed. A service without one gets a placeholder Redis refuses to load.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

from recsys.store.acl import (
    SERVICES,
    acl_rules,
    acl_user,
    password_env,
    password_hash_rule,
)
from recsys.store.keys import DEFAULT_PREFIX, KeySchema


def acl_file(
    prefix: str,
    env: Mapping[str, str],
    *,
    user_prefix: str = "recsys",
    cluster: bool = False,
    keep_default: bool = False,
) -> tuple[str, list[str]]:
    """The ACL file's text, and the services whose password variable was not set."""
    if not prefix or any(c.isspace() for c in prefix):
        raise ValueError(f"key prefix {prefix!r} must be non-empty and without spaces")
    keys = KeySchema(prefix)
    lines = [] if keep_default else ["user default off"]
    missing: list[str] = []
    for service in SERVICES:
        password = env.get(password_env(service), "")
        if not password:
            missing.append(service)
        rule = password_hash_rule(password) if password else None
        rules = acl_rules(service, keys, password_rule=rule, cluster=cluster)
        lines.append(f"user {acl_user(service, user_prefix)} {rules}")
    return "\n".join(lines) + "\n", missing


def _redis_acl(args: argparse.Namespace) -> int:
    text, missing = acl_file(
        args.prefix,
        os.environ,
        user_prefix=args.user_prefix,
        cluster=args.cluster,
        keep_default=args.keep_default,
    )
    sys.stdout.write(text)
    if missing:
        names = ", ".join(password_env(s) for s in missing)
        print(
            f"placeholders left for {names}: set them and run again (Redis refuses to load "
            "a placeholder)",
            file=sys.stderr,
        )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "redis-acl",
        help="print the Redis ACL file: one least-privilege user per service",
        description=(
            "Users recsys-events, -recommender, -sentiment, -trainer (recsys train) and "
            "-admin (recsys forget-user, unsuppress), each limited to its commands and to "
            "the keys under --prefix. Passwords: REDIS_ACL_PASSWORD_<SERVICE> (only their "
            "SHA-256 is printed). The default user is turned off unless --keep-default."
        ),
    )
    parser.add_argument(
        "--prefix",
        default=os.environ.get("REDIS_KEY_PREFIX", DEFAULT_PREFIX),
        help="the services' REDIS_KEY_PREFIX (default: that variable, else rs)",
    )
    parser.add_argument(
        "--user-prefix", default="recsys", help="user names are <this>-<service> (recsys)"
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="the services use a Redis Cluster (REDIS_CLUSTER=true): grant its topology reads",
    )
    parser.add_argument(
        "--keep-default",
        action="store_true",
        help="leave the default user as it is (no 'user default off' line)",
    )
    parser.set_defaults(func=_redis_acl)
