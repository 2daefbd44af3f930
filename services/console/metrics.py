"""The console's own Prometheus metrics, every series at zero from start."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PAGES = ("system", "system_api", "user", "user_live", "why", "item", "action")
OUTCOMES = ("ok", "refused", "error")

REQUESTS = Counter(
    "recsys_console_requests_total",
    "Console pages and actions answered, by page and outcome (ok, refused, error).",
    ["page", "outcome"],
)
RENDER = Histogram(
    "recsys_console_render_seconds",
    "Server-side time to build a page (the services' answers included), by page.",
    ["page"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

for _page in PAGES:
    RENDER.labels(_page)
    for _outcome in OUTCOMES:
        REQUESTS.labels(_page, _outcome)
