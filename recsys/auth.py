"""Who may call which gRPC method: the credentials file, its validation and the decision.

Pure on purpose (no ``grpc`` import): the servers' thin wrapper (``recsys.grpc_auth``) hands
over the method's full name, the ``authorization`` metadata value and, on a mutual-TLS
connection, the client certificate's names, and gets back ``None`` (allowed) or a
:class:`Denial` with the status and a message the caller can act on. Unit tests drive it
without a server.

The credentials file (``AUTH_CREDENTIALS_FILE``) is JSON, one object per client::

    {"clients": [{"name": "web-frontend",
                  "token_sha256": "<64 hex digits>",
                  "allow": ["recsys.recommender.v1.RecommenderService/Recommend", ...]}]}

It holds each token's SHA-256, never the token (``recsys auth add-client`` prints the token
once and writes the entry), so the file, the Secret that carries it and a backup of either
give nobody a working token. A token is 32 random bytes: a fast hash is enough, nothing
can be guessed that a slow one would protect. ``AUTH_CREDENTIALS_FILE`` may name a
directory, whose ``*.json`` files are read together: on Kubernetes each client is its own
Secret, projected into one directory (docs/operations.md, "API authentication").

A client with ``"tls_name"`` is recognised by the common name or a DNS/URI subject
alternative name of the certificate it presented on a mutual-TLS connection (the
recommender's ``TLS_CLIENT_CA_FILE``); the CA vouches for it, so no token is needed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from recsys.errors import ConfigError
from recsys.recommender.v1 import recommender_pb2
from recsys.sentiment.v1 import sentiment_pb2

AUTH_MODES = ("required", "off")

# Why a call was refused: the ``reason`` label of the servers' auth denial counters.
REASON_MISSING = "missing"  # no authorization metadata and no known client certificate
REASON_MALFORMED = "malformed"  # authorization metadata that is not "Bearer <token>"
REASON_UNKNOWN = "unknown"  # a token (or certificate name) that no client has
REASON_FORBIDDEN = "forbidden"  # a known client calling a method it is not allowed
REASONS = (REASON_MISSING, REASON_MALFORMED, REASON_UNKNOWN, REASON_FORBIDDEN)

HINT = "send metadata 'authorization: Bearer <token>' (recsys client --token or RECSYS_TOKEN)"


def _methods(service: object) -> tuple[str, ...]:
    full = service.full_name  # type: ignore[attr-defined]
    return tuple(f"{full}/{m.name}" for m in service.methods)  # type: ignore[attr-defined]


#: Every method a credential may allow, by full name as gRPC spells it (without the
#: leading slash): a typo in the credentials file fails the start instead of denying later.
KNOWN_METHODS: tuple[str, ...] = (
    *_methods(recommender_pb2.DESCRIPTOR.services_by_name["RecommenderService"]),
    *_methods(sentiment_pb2.DESCRIPTOR.services_by_name["SentimentService"]),
)
KNOWN_SERVICES = tuple(dict.fromkeys(m.partition("/")[0] for m in KNOWN_METHODS))

_RECOMMENDER = "recsys.recommender.v1.RecommenderService"
_SENTIMENT = "recsys.sentiment.v1.SentimentService"

#: What ``recsys auth add-client --role`` allows: frontends get the read paths of the
#: recommender; Explain (a user's history) is for support staff and operators only;
#: CRM systems classify feedback. A role is a shorthand for writing the file: the file
#: itself lists methods, so what a client may do is read in one place.
ROLES: Mapping[str, tuple[str, ...]] = {
    "frontend": (
        f"{_RECOMMENDER}/Recommend",
        f"{_RECOMMENDER}/SimilarItems",
        f"{_RECOMMENDER}/BatchRecommend",
    ),
    "support": (f"{_RECOMMENDER}/*",),
    "crm": (f"{_SENTIMENT}/Classify", f"{_SENTIMENT}/ClassifyBatch"),
    "admin": (f"{_RECOMMENDER}/*", f"{_SENTIMENT}/*"),
}


def hash_token(token: str) -> str:
    """The hex SHA-256 the credentials file stores for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Client:
    """One caller: its name (in logs and denials), how it proves who it is, what it may call."""

    name: str
    allow: frozenset[str]
    token_sha256: bytes = field(default=b"", repr=False)  # the digest, 32 bytes; b"": none
    tls_name: str = ""

    def allows(self, method: str) -> bool:
        """Whether ``method`` (``package.Service/Method``) is allowed, by name or ``Service/*``."""
        if method in self.allow:
            return True
        return f"{method.partition('/')[0]}/*" in self.allow


@dataclass(frozen=True)
class Denial:
    """A refused call: the gRPC status name, the counter's reason, the caller's message and,
    for a known client, its name (for the log)."""

    status: Literal["UNAUTHENTICATED", "PERMISSION_DENIED"]
    reason: str
    message: str
    client: str = ""


class Policy:
    """The clients of one server and the allow/deny decision.

    Tokens are compared by digest with :func:`hmac.compare_digest` against every client
    (no early exit, no dictionary lookup keyed by a secret), so the time taken says nothing
    about how much of a token was right.
    """

    def __init__(self, clients: Sequence[Client]) -> None:
        self.clients = tuple(clients)
        self._by_token = tuple(c for c in self.clients if c.token_sha256)
        self._by_tls = {c.tls_name: c for c in self.clients if c.tls_name}

    @property
    def uses_tls_names(self) -> bool:
        return bool(self._by_tls)

    def client_for_token(self, token: str) -> Client | None:
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: Client | None = None
        for client in self._by_token:
            if hmac.compare_digest(digest, client.token_sha256):
                found = client
        return found

    def decide(
        self, method: str, authorization: str | None, tls_names: Iterable[str] = ()
    ) -> Denial | None:
        """None when the call may go ahead; otherwise why not.

        ``authorization`` is the metadata value as sent (None when absent); ``tls_names``
        the verified certificate's names on a mutual-TLS connection. A token, when sent,
        decides alone: a caller that sends a wrong one is told so, even over mTLS.
        """
        client: Client | None
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                message = f"authorization metadata is not 'Bearer <token>'; {HINT}"
                return Denial("UNAUTHENTICATED", REASON_MALFORMED, message)
            client = self.client_for_token(token)
            if client is None:
                return Denial(
                    "UNAUTHENTICATED",
                    REASON_UNKNOWN,
                    "the bearer token is not one this server knows (revoked, mistyped, or "
                    "for another deployment); ask the operator for a token "
                    "(recsys auth add-client)",
                )
        else:
            names = list(tls_names)
            client = next((self._by_tls[n] for n in names if n in self._by_tls), None)
            if client is None:
                if names:
                    return Denial("UNAUTHENTICATED", REASON_UNKNOWN,
                                  f"the client certificate ({names[0]!r}) is not a known "
                                  f"client; {HINT}")  # fmt: skip
                return Denial("UNAUTHENTICATED", REASON_MISSING, f"no credentials; {HINT}")
        if client.allows(method):
            return None
        return Denial(
            "PERMISSION_DENIED",
            REASON_FORBIDDEN,
            f"client {client.name!r} may not call {method}; the operator grants methods in "
            "the credentials file (recsys auth add-client --allow)",
            client.name,
        )


# ----------------------------------------------------------------------- the file
def _client(entry: object, where: str) -> Client:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: a client must be a JSON object")
    unknown = set(entry) - {"name", "token_sha256", "tls_name", "allow"}
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: 'name' must be a non-empty string")
    where = f"{where} ({name!r})"
    token_hex = entry.get("token_sha256", "")
    tls_name = entry.get("tls_name", "")
    if not isinstance(token_hex, str) or not isinstance(tls_name, str):
        raise ConfigError(f"{where}: 'token_sha256' and 'tls_name' must be strings")
    if not token_hex and not tls_name:
        raise ConfigError(f"{where}: needs 'token_sha256' or 'tls_name'")
    digest = b""
    if token_hex:
        try:
            digest = bytes.fromhex(token_hex)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise ConfigError(
                f"{where}: 'token_sha256' must be 64 hex digits (the token's SHA-256, "
                "never the token itself)"
            )
    allow = entry.get("allow")
    if not isinstance(allow, list) or not all(isinstance(m, str) for m in allow):
        raise ConfigError(f"{where}: 'allow' must be a list of method names")
    for method in allow:
        service, _, rpc = method.partition("/")
        if method not in KNOWN_METHODS and not (rpc == "*" and service in KNOWN_SERVICES):
            raise ConfigError(
                f"{where}: {method!r} is not a method; use package.Service/Method or "
                f"package.Service/* (services: {', '.join(KNOWN_SERVICES)})"
            )
    return Client(name.strip(), frozenset(allow), digest, tls_name.strip())


def parse_credentials(text: str, source: str) -> list[Client]:
    """The clients in one credentials document; ConfigError naming ``source`` otherwise."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("clients"), list):
        raise ConfigError(f'{source}: expected {{"clients": [...]}}')
    return [_client(e, f"{source}: clients[{i}]") for i, e in enumerate(doc["clients"])]


def credential_files(path: Path) -> list[Path]:
    """``path`` itself, or the ``*.json`` files of a directory (a projected Secret volume
    also holds hidden ``..data`` links: only visible JSON files count)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix == ".json" and p.is_file())
    return [path]


def load_policy(path: str, variable: str = "AUTH_CREDENTIALS_FILE") -> Policy:
    """Every client of the file or directory ``path``; duplicate names, tokens or
    certificate names, and an empty set, fail (ConfigError naming ``variable``)."""
    root = Path(path)
    if not root.exists():
        raise ConfigError(f"{variable}={path!r} does not exist")
    clients: list[Client] = []
    for file in credential_files(root):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{variable}: {file} cannot be read: {exc}") from None
        clients += parse_credentials(text, f"{variable}: {file.name}")
    if not clients:
        raise ConfigError(f"{variable}={path!r} holds no clients (recsys auth add-client)")
    for what, key in (("name", "name"), ("token", "token_sha256"), ("tls_name", "tls_name")):
        seen: dict[object, str] = {}
        for c in clients:
            value = getattr(c, key)
            if not value:
                continue
            if value in seen:
                shown = c.name if key == "name" else f"{seen[value]!r} and {c.name!r}"
                raise ConfigError(f"{variable}: the same {what} twice ({shown})")
            seen[value] = c.name
    return Policy(clients)


@dataclass(frozen=True)
class AuthSettings:
    """``AUTH_MODE`` and the policy read from ``AUTH_CREDENTIALS_FILE`` at start."""

    mode: str = "required"
    credentials_file: str = ""
    policy: Policy | None = field(default=None, compare=False)

    @property
    def enabled(self) -> bool:
        return self.mode == "required"


def load_auth_settings(env: Mapping[str, str] | None = None) -> AuthSettings:
    """Read and validate the auth settings of a serving process.

    ``AUTH_MODE`` defaults to ``required``: a deployment that forgets its credentials fails
    the start with one line naming the variable instead of serving everyone. ``off`` is
    for the local demo: ``recsys infra up``'s export line, ``make demo`` and the test
    harness set it (docs/recommender.md, "Authentication").
    """
    env = os.environ if env is None else env
    mode = env.get("AUTH_MODE", "").strip().lower() or "required"
    if mode not in AUTH_MODES:
        raise ConfigError(f"AUTH_MODE={mode!r} must be one of {', '.join(AUTH_MODES)}")
    path = env.get("AUTH_CREDENTIALS_FILE", "").strip()
    if mode == "off":
        return AuthSettings("off", path)
    if not path:
        raise ConfigError(
            "AUTH_CREDENTIALS_FILE is not set: AUTH_MODE=required (the default) needs the "
            "clients' credentials (recsys auth add-client); AUTH_MODE=off is for a local demo"
        )
    return AuthSettings("required", path, load_policy(path))


#: What a settings object built in code (not from the environment) starts with.
AUTH_OFF = AuthSettings("off")
