"""``recsys kafka-acls``: print, or apply as an admin, the ACLs each service needs.

Operators run it once per cluster (and again after renaming a topic or group): the
topic and group names come from the same variables the services read, the admin's
login from ``KAFKA_SECURITY_PROTOCOL`` / ``KAFKA_SASL_*``.
"""

from __future__ import annotations

import argparse
import os

from recsys.settings import DEFAULT_KAFKA_BOOTSTRAP, load_kafka_security
from recsys_tools.infra.kafka_acls import apply_grants, parse_users, service_grants


def _kafka_acls(args: argparse.Namespace) -> int:
    grants = service_grants(os.environ, parse_users(args.user))
    if args.apply:
        from recsys.kafka_io import check_reachable

        security = load_kafka_security(os.environ)
        check_reachable(args.bootstrap, security=security)
        count = apply_grants(args.bootstrap, grants, security)
        print(f"applied {count} ACLs ({len(grants)} grants) on {args.bootstrap}")
        return 0
    if args.format == "kafka-acls":
        for grant in grants:
            print(grant.kafka_acls_command(args.bootstrap))
    else:
        for grant in grants:
            print(grant.describe())
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "kafka-acls",
        help="print or apply the Kafka ACLs each service needs (least privilege per user)",
        description=(
            "Topic and group names follow EVENTS_* / SENTIMENT_* like the services; CREATE is "
            "granted only while *_CREATE_TOPICS is true (set it to false in production). "
            "--apply logs in with KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_* as an admin."
        ),
    )
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA_BOOTSTRAP),
        help="host:port[,host:port] (default: KAFKA_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="ROLE=NAME",
        help="SCRAM user of a role (events, sentiment, frontend, crm); default recsys-<role>",
    )
    parser.add_argument(
        "--format",
        choices=("table", "kafka-acls"),
        default="table",
        help="table (default) or one kafka-acls.sh command per grant",
    )
    parser.add_argument("--apply", action="store_true", help="create the ACLs on the broker")
    parser.set_defaults(func=_kafka_acls)
