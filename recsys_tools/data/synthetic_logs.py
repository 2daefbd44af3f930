"""Synthetic interaction logs with known structure, to check that ``recsys tune`` generalises
beyond MovieLens-100K (docs/evaluation.md, "Your own log").

No retail log ships in a package this project may fetch from, so two generators stand in for
the logs the issue evaluates on, each with a structure a different model family captures best,
and each written with its own column names and time format so the import path is exercised:

``retail``
    Shoppers in sessions. Items belong to categories; popularity is Zipf-distributed (a long
    tail). Each shopper prefers one to three categories; a session browses one category
    (views, clicks, some add-to-carts and purchases of popular items there), and an item
    bought often pulls in one of its few fixed *complements* next (item-to-item structure: what
    item-item models see and a low-rank model blurs). Shoppers come back to items they bought
    (repeat purchases). Columns ``customer_id,sku,event_type,ts`` with ISO 8601 times.
``lowrank``
    A movie-like log: users and items have latent taste vectors (``dim`` of them) plus an item
    popularity bias; each user watches items without repetition, drawn with probability
    ∝ exp(taste · item / temperature + bias), in time order. Low-rank structure: what ALS
    models. Columns ``userId,movieId,timestamp`` with Unix seconds.

Both are seeded and deterministic for a seed and size.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

KINDS = ("retail", "lowrank")
START = 1_700_000_000  # the logs' first second (Nov 2023)


def _zipf_weights(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return np.asarray(rng.permutation(w), dtype=np.float64)


def retail(path: str | Path, *, users: int = 3000, items: int = 2000, seed: int = 0) -> int:
    """Write the retail log; returns the number of rows."""
    rng = np.random.default_rng(seed)
    n_cats = max(items // 40, 2)
    cat = rng.integers(0, n_cats, size=items)
    pop = _zipf_weights(items, 1.0, rng)
    by_cat = [np.flatnonzero(cat == c) for c in range(n_cats)]
    cat_p = [pop[ix] / pop[ix].sum() for ix in by_cat]
    # Each item's complements: three items of other categories, chosen by popularity.
    complements = rng.choice(items, size=(items, 3), p=pop / pop.sum())
    rows: list[tuple[str, str, str, int]] = []
    for u in range(users):
        prefs = rng.choice(n_cats, size=int(rng.integers(1, 4)), replace=False)
        t = START + int(rng.integers(0, 60 * 86400))
        bought: list[int] = []
        for _ in range(int(rng.geometric(0.15))):
            c = int(rng.choice(prefs))
            pool, p = by_cat[c], cat_p[c]
            session = rng.choice(
                pool, size=min(len(pool), int(rng.integers(1, 6))), p=p, replace=False
            )
            for i in session:
                i = int(i)
                rows.append((f"c{u}", f"sku{i}", "view", t))
                t += int(rng.integers(5, 120))
                if rng.random() < 0.5:
                    rows.append((f"c{u}", f"sku{i}", "click", t))
                    t += int(rng.integers(5, 60))
                if rng.random() < 0.25:
                    rows.append((f"c{u}", f"sku{i}", "add_to_cart", t))
                    t += int(rng.integers(5, 60))
                    if rng.random() < 0.6:
                        rows.append((f"c{u}", f"sku{i}", "purchase", t))
                        bought.append(i)
                        t += int(rng.integers(5, 60))
                        if rng.random() < 0.5:
                            j = int(complements[i, rng.integers(0, 3)])
                            rows.append((f"c{u}", f"sku{j}", "view", t))
                            t += int(rng.integers(5, 60))
                            if rng.random() < 0.5:
                                rows.append((f"c{u}", f"sku{j}", "purchase", t))
                                bought.append(j)
            if bought and rng.random() < 0.3:  # a repeat purchase
                rows.append((f"c{u}", f"sku{int(rng.choice(bought))}", "purchase", t))
            t += int(rng.exponential(5 * 86400))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["customer_id", "sku", "event_type", "ts"])
        for user, item, event, ts in rows:
            iso = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            w.writerow([user, item, event, iso])
    return len(rows)


def lowrank(
    path: str | Path,
    *,
    users: int = 2000,
    items: int = 1500,
    dim: int = 16,
    temperature: float = 0.5,
    seed: int = 0,
) -> int:
    """Write the movie-like low-rank log; returns the number of rows."""
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=(users, dim)) / np.sqrt(dim)
    item_vec = rng.normal(size=(items, dim))
    bias = np.log(_zipf_weights(items, 0.9, rng))
    rows: list[tuple[str, str, int]] = []
    for u in range(users):
        n = int(min(items // 3, max(5, rng.lognormal(3.2, 0.8))))
        logits = item_vec @ taste[u] / temperature + bias
        p = np.exp(logits - logits.max())
        picks = rng.choice(items, size=n, replace=False, p=p / p.sum())
        times = np.sort(START + rng.integers(0, 365 * 86400, size=n))
        rows.extend(
            (f"{u + 1}", f"{int(i) + 1}", int(ts)) for i, ts in zip(picks, times, strict=True)
        )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["userId", "movieId", "timestamp"])
        w.writerows(rows)
    return len(rows)


COLUMNS = {
    "retail": "user=customer_id,item=sku,time=ts,event=event_type",
    "lowrank": "user=userId,item=movieId,time=timestamp",
}
