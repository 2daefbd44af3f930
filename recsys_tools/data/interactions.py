"""A shop's own interaction log and catalogue: read CSV, Parquet or JSON lines through a column
mapping, check every row, and write the normalised files the other commands read.

The normalised interaction log is a CSV with the header ``user,item,time,weight[,event]``, in the
input's row order (the holdout protocol breaks time ties by file order), times in Unix seconds;
its column names are the default ``--columns`` mapping, so ``recsys evaluate --data`` and
``recsys tune --data`` read an imported file without one. The normalised catalogue is JSON lines
of ``{"id", "title", "categories", "attributes", "price"}``.

A bad row raises :class:`RowError`, naming the row (1-based, among the data rows) and the
column; with ``on_error="skip"`` it is left out and counted instead, and the import goes on.
Parquet goes through pyarrow (the ``[tune]`` extra), imported only for a Parquet file.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from recsys.errors import ConfigError, DataError
from recsys.weights import DEFAULT_EVENT_WEIGHTS, parse_event_weights

FORMATS = ("csv", "parquet", "jsonl")
ON_ERROR = ("skip", "stop")
LOG_FIELDS = ("user", "item", "time", "weight", "event")
REQUIRED = ("user", "item", "time")
NORMALISED_COLUMNS = "user=user,item=item,time=time,weight=weight"
# How many skipped rows a report lists one by one; the rest are counted.
REPORT_ERRORS = 20


class RowError(DataError):
    """One bad row: which row, which column, and why (the message says all three)."""

    def __init__(self, row: int, column: str, reason: str) -> None:
        super().__init__(f"row {row}, column {column!r}: {reason}")
        self.row = row
        self.column = column
        self.reason = reason


def parse_columns(spec: str | None) -> dict[str, str]:
    """``user=COL,item=COL,time=COL[,weight=COL|event=COL]`` → {field: column}."""
    spec = spec or NORMALISED_COLUMNS
    out: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, col = part.partition("=")
        key, col = key.strip(), col.strip()
        if not sep or not col:
            raise ConfigError(f"--columns: {part!r} is not FIELD=COLUMN")
        if key not in LOG_FIELDS:
            raise ConfigError(f"--columns: unknown field {key!r}; fields: {', '.join(LOG_FIELDS)}")
        out[key] = col
    missing = [k for k in REQUIRED if k not in out]
    if missing:
        raise ConfigError(f"--columns lacks {', '.join(missing)} (needs user, item and time)")
    if "weight" in out and "event" in out:
        raise ConfigError("--columns: give weight or event, not both")
    return out


def detect_format(path: str | Path, given: str | None = None) -> str:
    if given:
        if given not in FORMATS:
            raise ConfigError(f"format {given!r} must be one of {', '.join(FORMATS)}")
        return given
    suffixes = [s.lower() for s in Path(path).suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        return "parquet"
    if {".jsonl", ".ndjson", ".json"} & set(suffixes):
        return "jsonl"
    if {".csv", ".tsv", ".txt", ".inter"} & set(suffixes):
        return "csv"
    raise ConfigError(f"cannot tell the format of {path}: name it .csv, .parquet or .jsonl")


def iter_records(path: str | Path, fmt: str) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    """(row number, record) per data row; a record that does not parse is yielded as the
    reason string, so the caller decides whether it stops the import."""
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8") as fh:
            # Tab-separated when the header has tabs and no comma (.tsv, RecBole's .inter).
            header = fh.readline()
            fh.seek(0)
            delimiter = "\t" if "\t" in header and "," not in header else ","
            for n, rec in enumerate(csv.DictReader(fh, delimiter=delimiter), start=1):
                yield n, rec
    elif fmt == "jsonl":
        with open(path, encoding="utf-8") as fh:
            n = 0
            for line in fh:
                if not line.strip():
                    continue
                n += 1
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield n, f"not JSON: {exc.msg}"
                    continue
                yield n, rec if isinstance(rec, dict) else "not a JSON object"
    elif fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(
                "reading Parquet needs pyarrow: pip install 'recsys-realtime[tune]'"
            ) from None
        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536):
            for rec in batch.to_pylist():
                n += 1
                yield n, rec
    else:
        raise ConfigError(f"format {fmt!r} must be one of {', '.join(FORMATS)}")


def parse_time(value: Any) -> float:
    """Unix seconds (a number, or a string of one) or an ISO 8601 date-time (naive = UTC)."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        t = float(value)
        if not math.isfinite(t):
            raise ValueError("not a finite time")
        return t
    else:
        text = str(value).strip()
        if not text:
            raise ValueError("empty")
        try:
            t = float(text)
        except ValueError:
            pass
        else:
            if not math.isfinite(t):
                raise ValueError("not a finite time")
            return t
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"{text!r} is neither Unix seconds nor ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _text(rec: Mapping[str, Any], column: str) -> str:
    value = rec.get(column)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError("missing")
    text = str(value).strip()
    if not text:
        raise ValueError("empty")
    return text


@dataclass
class ImportReport:
    """What an import read: rows kept, rows skipped and the first few errors."""

    rows: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def skip(self, err: RowError) -> None:
        self.skipped += 1
        if len(self.errors) < REPORT_ERRORS:
            self.errors.append(str(err))

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "skipped": self.skipped, "errors": self.errors}


@dataclass
class LogColumns:
    """An interaction log read into columns, in file order."""

    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    events: list[str] | None = None

    def __len__(self) -> int:
        return len(self.users)


def read_log(
    path: str | Path,
    columns: Mapping[str, str],
    *,
    fmt: str | None = None,
    on_error: str = "stop",
    event_weights: Mapping[str, float] | None = None,
    progress: bool = False,
) -> tuple[LogColumns, ImportReport]:
    """Read and check every row. An ``event`` column is weighted by ``event_weights`` (the
    service's ``EVENT_WEIGHTS`` default: view 1, click 2, add_to_cart 4, purchase 8), so a
    log's weights mean what the events service's weights mean."""
    from tqdm import tqdm

    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error {on_error!r} must be one of {', '.join(ON_ERROR)}")
    fmt = detect_format(path, fmt)
    if not Path(path).is_file():
        raise ConfigError(f"no such file: {path}")
    weights_by_event = dict(event_weights or parse_event_weights(DEFAULT_EVENT_WEIGHTS))
    out = LogColumns(events=[] if "event" in columns else None)
    report = ImportReport()
    for n, rec in tqdm(
        iter_records(path, fmt), unit="rows", desc=f"read {Path(path).name}", disable=not progress
    ):
        try:
            row = _check_row(n, rec, columns, weights_by_event)
        except RowError as err:
            if on_error == "stop":
                raise
            report.skip(err)
            continue
        user, item, t, w, event = row
        out.users.append(user)
        out.items.append(item)
        out.times.append(t)
        out.weights.append(w)
        if out.events is not None:
            out.events.append(event)
        report.rows += 1
    return out, report


def _check_row(
    n: int,
    rec: Mapping[str, Any] | str,
    columns: Mapping[str, str],
    weights_by_event: Mapping[str, float],
) -> tuple[str, str, float, float, str]:
    if isinstance(rec, str):
        raise RowError(n, "*", rec)
    values: dict[str, Any] = {}
    for key in ("user", "item"):
        try:
            values[key] = _text(rec, columns[key])
        except ValueError as exc:
            raise RowError(n, columns[key], str(exc)) from None
    try:
        t = parse_time(rec.get(columns["time"]) if columns["time"] in rec else "")
    except ValueError as exc:
        raise RowError(n, columns["time"], str(exc)) from None
    weight, event = 1.0, ""
    if "weight" in columns:
        col = columns["weight"]
        try:
            weight = float(_text(rec, col))
        except ValueError as exc:
            raise RowError(
                n, col, f"not a number ({exc})" if "missing" not in str(exc) else "missing"
            ) from None
        if not math.isfinite(weight) or weight <= 0:
            raise RowError(n, col, f"weight {weight} must be a positive finite number")
    elif "event" in columns:
        col = columns["event"]
        try:
            event = _text(rec, col).lower()
        except ValueError as exc:
            raise RowError(n, col, str(exc)) from None
        if event not in weights_by_event:
            raise RowError(
                n,
                col,
                f"unknown event type {event!r}; known: {', '.join(sorted(weights_by_event))}",
            )
        weight = float(weights_by_event[event])
    return values["user"], values["item"], t, weight, event


def write_log(path: str | Path, log_: LogColumns) -> None:
    """The normalised CSV (``user,item,time,weight[,event]``), row order kept."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        header = ["user", "item", "time", "weight"] + (["event"] if log_.events is not None else [])
        w.writerow(header)
        for j in range(len(log_)):
            row: list[Any] = [log_.users[j], log_.items[j], repr(log_.times[j]), log_.weights[j]]
            if log_.events is not None:
                row.append(log_.events[j])
            w.writerow(row)


# ------------------------------------------------------------------------ catalogue
CATALOGUE_FIELDS = ("id", "title", "categories", "attributes", "price")


def parse_catalogue_columns(spec: str | None) -> dict[str, str]:
    """``id=COL[,title=COL,categories=COL,attributes=COL,price=COL]``; unnamed fields default
    to a column of the same name when the file has one."""
    out = {f: f for f in CATALOGUE_FIELDS}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        key, sep, col = part.partition("=")
        if not sep or key.strip() not in CATALOGUE_FIELDS or not col.strip():
            raise ConfigError(
                f"--columns: {part!r} is not FIELD=COLUMN with FIELD one of "
                f"{', '.join(CATALOGUE_FIELDS)}"
            )
        out[key.strip()] = col.strip()
    return out


def _categories(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [c.strip() for c in str(value).replace(";", "|").split("|") if c.strip()]


def _attributes(value: Any) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError("not a JSON object of attributes") from None
    if not isinstance(value, dict):
        raise ValueError("not an object of attributes")
    return {str(k): str(v) for k, v in value.items()}


def read_catalogue(
    path: str | Path,
    columns: Mapping[str, str],
    *,
    fmt: str | None = None,
    on_error: str = "stop",
    progress: bool = False,
) -> tuple[list[dict[str, Any]], ImportReport]:
    """Items with id, title, categories (a list, or ``|``-separated text), attributes (an
    object, or its JSON text) and price (a non-negative number or empty)."""
    from tqdm import tqdm

    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error {on_error!r} must be one of {', '.join(ON_ERROR)}")
    fmt = detect_format(path, fmt)
    if not Path(path).is_file():
        raise ConfigError(f"no such file: {path}")
    items: list[dict[str, Any]] = []
    report = ImportReport()
    for n, rec in tqdm(
        iter_records(path, fmt), unit="items", desc=f"read {Path(path).name}", disable=not progress
    ):
        try:
            items.append(_check_item(n, rec, columns))
            report.rows += 1
        except RowError as err:
            if on_error == "stop":
                raise
            report.skip(err)
    return items, report


def _check_item(n: int, rec: Mapping[str, Any] | str, columns: Mapping[str, str]) -> dict[str, Any]:
    if isinstance(rec, str):
        raise RowError(n, "*", rec)
    try:
        item_id = _text(rec, columns["id"])
    except ValueError as exc:
        raise RowError(n, columns["id"], str(exc)) from None
    raw_price = rec.get(columns["price"])
    price: float | None = None
    if raw_price not in (None, ""):
        try:
            price = float(raw_price)
        except (TypeError, ValueError):
            raise RowError(n, columns["price"], f"{raw_price!r} is not a number") from None
        if not math.isfinite(price) or price < 0:
            raise RowError(n, columns["price"], f"price {price} must be >= 0")
    try:
        attributes = _attributes(rec.get(columns["attributes"]))
    except ValueError as exc:
        raise RowError(n, columns["attributes"], str(exc)) from None
    title = rec.get(columns["title"])
    return {
        "id": item_id,
        "title": "" if title is None else str(title),
        "categories": _categories(rec.get(columns["categories"])),
        "attributes": attributes,
        "price": price,
    }


def write_catalogue(path: str | Path, items: Sequence[Mapping[str, Any]]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        _write_lines(fh, items)


def _write_lines(fh: IO[str], items: Sequence[Mapping[str, Any]]) -> None:
    for item in items:
        fh.write(json.dumps(item, sort_keys=True) + "\n")
