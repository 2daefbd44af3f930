"""``recsys auth add-client``: create a client's API credential.

The token is printed once, on stdout alone (``TOKEN=$(recsys auth add-client ...)``), and
only its SHA-256 is written, to the credentials file the servers read
(``AUTH_CREDENTIALS_FILE``). Given a directory, the entry goes to a file of its own,
``<name>.json``: one client, one Kubernetes Secret (docs/operations.md, "API
authentication"). A lost token is not recoverable: ``--replace`` issues a new one.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

from recsys.auth import KNOWN_METHODS, ROLES, hash_token, parse_credentials
from recsys.errors import ConfigError

#: 32 random bytes (256 bits), URL-safe so it pastes into metadata and shells unquoted.
TOKEN_BYTES = 32
TOKEN_PREFIX = "rsk_"  # recognisable in a leaked paste, so secret scanners can match it


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"clients": []}
    text = path.read_text(encoding="utf-8")
    parse_credentials(text, str(path))  # refuse to add to a file the servers would reject
    doc: dict[str, Any] = json.loads(text)
    return doc


def _write(path: Path, doc: dict[str, Any]) -> None:
    """Atomically, readable by the owner only (the hashes are not secret, but which
    clients exist and what they may do is nobody else's business)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(doc, handle, indent=2)
            handle.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_client(
    path: Path,
    name: str,
    allow: list[str],
    *,
    tls_name: str = "",
    replace: bool = False,
) -> tuple[Path, str]:
    """Write ``name``'s entry; return the file written and the new token ("" for a
    certificate-only client)."""
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"client name {name!r}: use letters, digits, '-', '_' and '.'")
    file = path / f"{name}.json" if path.is_dir() else path
    doc = _read(file)
    others = [c for c in doc["clients"] if c.get("name") != name]
    if len(others) != len(doc["clients"]) and not replace:
        raise ConfigError(f"{file} already has a client {name!r}; --replace issues a new token")
    token = "" if tls_name else new_token()
    entry: dict[str, Any] = {"name": name}
    if token:
        entry["token_sha256"] = hash_token(token)
    if tls_name:
        entry["tls_name"] = tls_name
    entry["allow"] = sorted(dict.fromkeys(allow))
    new = {**doc, "clients": [*others, entry]}
    parse_credentials(json.dumps(new), str(file))  # the servers' own validation
    _write(file, new)
    return file, token


def _run(args: argparse.Namespace) -> int:
    allow = [m for role in args.role for m in ROLES[role]] + list(args.allow)
    if not allow:
        print("error: give --role or --allow (what the client may call)", file=sys.stderr)
        return 2
    path = Path(args.file)
    if args.file.endswith(("/", os.sep)):  # "creds/": a directory, one file per client
        path.mkdir(parents=True, exist_ok=True)
    file, token = add_client(
        path, args.name, allow, tls_name=args.tls_name or "", replace=args.replace
    )
    who = f"certificate name {args.tls_name!r}" if args.tls_name else "a new token"
    print(f"{args.name}: {who} in {file}; allowed: {', '.join(sorted(set(allow)))}",
          file=sys.stderr)  # fmt: skip
    if token:
        print("the token is shown only now; give it to the client (RECSYS_TOKEN)", file=sys.stderr)
        print(token)
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("auth", help="API credentials (AUTH_CREDENTIALS_FILE)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    add = actions.add_parser(
        "add-client",
        help="create a client's token (printed once) and write its hash entry",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add.add_argument("name", help="the client's name, as logs and denials show it")
    add.add_argument("--file", required=True,
                     help="credentials file to create or update, or a directory (an "
                          "existing one, or a path ending in /) for <name>.json")  # fmt: skip
    add.add_argument("--role", action="append", default=[], choices=sorted(ROLES),
                     help="frontend: Recommend, SimilarItems, BatchRecommend; support: every "
                          "recommender method (Explain too); crm: Classify, ClassifyBatch; "
                          "admin: everything")  # fmt: skip
    add.add_argument("--allow", action="append", default=[], choices=KNOWN_METHODS,
                     metavar="METHOD",
                     help="a method by full name, e.g. "
                          "recsys.recommender.v1.RecommenderService/Explain")  # fmt: skip
    add.add_argument("--tls-name", help="recognise the client by this mutual-TLS certificate "
                     "name instead of a token")  # fmt: skip
    add.add_argument("--replace", action="store_true", help="replace the client's entry")
    add.set_defaults(func=_run)
