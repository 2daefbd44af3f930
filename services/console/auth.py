"""The console's one authentication check, for actions (the pages are read-only).

Kept to one function on purpose: the gRPC APIs take bearer tokens too (``Authorization:
Bearer <token>``), and when the shared auth module lands this is the one place to call it.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping


def authorised(headers: Mapping[str, str], token: str) -> bool:
    """True when ``headers`` carry ``Authorization: Bearer <token>``; always False while no
    token is configured (``CONSOLE_TOKEN`` empty: no actions at all). Constant-time compare:
    the token is a secret."""
    if not token:
        return False
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())
