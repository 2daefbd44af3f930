"""MovieLens 100K as typed arrays: interactions, item and user attributes.

The files are RecBole's "atomic files" of the GroupLens MovieLens 100K release:
tab-separated, one header row of ``name:type`` columns, UTF-8.

- ``ml-100k.inter``: ``user_id:token item_id:token rating:float timestamp:float``,
  100,000 ratings (integers 1-5) with unix-second timestamps.
- ``ml-100k.item``: ``item_id:token movie_title:token_seq release_year:token
  class:token_seq``; RecBole moved the year out of the title and space-separated
  the genres (genre names contain no spaces).
- ``ml-100k.user``: ``user_id:token age:token gender:token occupation:token
  zip_code:token``.

Ids stay the external strings of the files ("196", "242"): the row mapping is
the model's business, not the loader's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.errors import DataError
from recsys_tools.data.fetch import require_files

DATASET = "ml-100k"
_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


@dataclass(frozen=True, eq=False)
class Interactions:
    """Parallel arrays, one entry per rating event.

    ``eq=False`` because element-wise array comparison has no single truth
    value; compare fields with ``np.array_equal`` instead.
    """

    user_ids: np.ndarray  # dtype object (str external ids), shape (n,)
    item_ids: np.ndarray  # dtype object (str)
    ratings: np.ndarray  # float32
    timestamps: np.ndarray  # int64 unix seconds

    def __post_init__(self) -> None:
        n = len(self.user_ids)
        for name in ("user_ids", "item_ids", "ratings", "timestamps"):
            arr = getattr(self, name)
            if arr.ndim != 1 or len(arr) != n:
                raise DataError(f"Interactions.{name} has shape {arr.shape}, expected ({n},)")
        if self.ratings.dtype != np.float32 or self.timestamps.dtype != np.int64:
            raise DataError(
                f"Interactions needs float32 ratings and int64 timestamps, got "
                f"{self.ratings.dtype} and {self.timestamps.dtype}"
            )

    def __len__(self) -> int:
        return len(self.user_ids)

    def take(self, idx: np.ndarray) -> Interactions:
        """Subset by an integer index array or a boolean mask (the order of ``idx`` is kept)."""
        idx = np.asarray(idx)
        if idx.dtype == np.bool_ and idx.shape != (len(self),):
            raise DataError(f"boolean mask has shape {idx.shape}, expected ({len(self)},)")
        return Interactions(
            user_ids=self.user_ids[idx],
            item_ids=self.item_ids[idx],
            ratings=self.ratings[idx],
            timestamps=self.timestamps[idx],
        )


@dataclass(frozen=True)
class ItemInfo:
    """A movie. ``year`` is None when the release year is unknown; the genre
    placeholder "unknown" becomes an empty tuple."""

    item_id: str
    title: str
    year: int | None
    genres: tuple[str, ...]


@dataclass(frozen=True)
class UserInfo:
    """A rater's demographics as given (``gender`` is "M" or "F")."""

    user_id: str
    age: int | None
    gender: str | None
    occupation: str | None


@dataclass(frozen=True)
class MovieLens:
    interactions: Interactions  # sorted by (timestamp, user, item), stable
    items: dict[str, ItemInfo]
    users: dict[str, UserInfo]


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, fields)`` after checking the header names the expected columns."""
    with path.open(encoding="utf-8", newline="") as fh:
        header = [h.split(":", 1)[0] for h in fh.readline().rstrip("\r\n").split("\t")]
        if tuple(header[: len(columns)]) != columns:
            raise DataError(f"{path}: header {header} does not start with {list(columns)}")
        for lineno, line in enumerate(fh, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) < len(columns):
                raise DataError(
                    f"{path}:{lineno}: {len(fields)} fields, expected at least {len(columns)}"
                )
            yield lineno, fields


def _opt(value: str) -> str | None:
    value = value.strip()
    return value or None


def _opt_int(value: str) -> int | None:
    value = value.strip()
    return int(value) if value.isdigit() else None


def _parse_year(raw: str, title: str) -> int | None:
    raw = raw.strip()
    if len(raw) == 4 and raw.isdigit():
        return int(raw)
    # One RecBole row (item 1412) has "V" here and kept "(1995)" in its title.
    match = _YEAR_IN_TITLE.search(title)
    return int(match.group(1)) if match else None


def read_interactions(path: Path) -> Interactions:
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    stamps: list[int] = []
    for lineno, f in _rows(path, ("user_id", "item_id", "rating", "timestamp")):
        try:
            rating = float(f[2])
            stamp = int(float(f[3]))
        except ValueError:
            raise DataError(f"{path}:{lineno}: bad rating/timestamp {f[2]!r}/{f[3]!r}") from None
        users.append(f[0].strip())
        items.append(f[1].strip())
        ratings.append(rating)
        stamps.append(stamp)
    user_arr = np.array(users, dtype=object)
    item_arr = np.array(items, dtype=object)
    ts = np.array(stamps, dtype=np.int64)
    # Time order first (what a replay or a temporal split wants), ids break
    # ties so the order does not depend on the file's.
    order = sorted(range(len(users)), key=lambda i: (stamps[i], users[i], items[i]))
    idx = np.array(order, dtype=np.int64)
    return Interactions(
        user_ids=user_arr[idx],
        item_ids=item_arr[idx],
        ratings=np.array(ratings, dtype=np.float32)[idx],
        timestamps=ts[idx],
    )


def read_items(path: Path) -> dict[str, ItemInfo]:
    items: dict[str, ItemInfo] = {}
    for _, f in _rows(path, ("item_id", "movie_title", "release_year", "class")):
        item_id = f[0].strip()
        title = f[1].strip()
        genres = tuple(g for g in f[3].split() if g != "unknown")
        items[item_id] = ItemInfo(item_id, title, _parse_year(f[2], title), genres)
    return items


def read_users(path: Path) -> dict[str, UserInfo]:
    users: dict[str, UserInfo] = {}
    for _, f in _rows(path, ("user_id", "age", "gender", "occupation")):
        user_id = f[0].strip()
        users[user_id] = UserInfo(user_id, _opt_int(f[1]), _opt(f[2]), _opt(f[3]))
    return users


def load_ml100k(data_dir: Path | None = None) -> MovieLens:
    """Load MovieLens 100K from the cache (``recsys data fetch`` puts it there).

    Raises DataError when the files are missing or malformed. Checksums are
    checked by the fetch, not here, so loading costs only the parse.
    """
    directory = require_files(DATASET, data_dir)
    return MovieLens(
        interactions=read_interactions(directory / "ml-100k.inter"),
        items=read_items(directory / "ml-100k.item"),
        users=read_users(directory / "ml-100k.user"),
    )
