"""A shop's own log in each supported format: ``recsys import`` normalises it, ``recsys replay
--log`` produces it through a real Kafka broker as click events of the contract, and
``recsys evaluate --data`` scores it under the holdout protocol (issue 13, "Done when")."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from recsys.events.v1 import events_pb2
from recsys.kafka_io import ensure_topics, make_consumer
from recsys_tools.cli import main
from recsys_tools.infra.endpoints import KafkaEndpoint

pytestmark = pytest.mark.integration

EVENTS = ("view", "click", "add_to_cart", "purchase")
TYPES = {
    "view": events_pb2.EVENT_TYPE_VIEW,
    "click": events_pb2.EVENT_TYPE_CLICK,
    "add_to_cart": events_pb2.EVENT_TYPE_ADD_TO_CART,
    "purchase": events_pb2.EVENT_TYPE_PURCHASE,
}
T0 = 1_750_000_000


def _rows() -> list[tuple[str, str, str, int]]:
    """30 shoppers, 10 events each over 3 item groups: enough for every evaluated user."""
    rows = []
    for u in range(30):
        group = u % 3
        for j in range(10):
            item = f"sku{group * 12 + (u + j) % 12}"
            rows.append((f"shopper{u}", item, EVENTS[(u + j) % 4], T0 + 3600 * j + u))
    return rows


def _write(path: Path, fmt: str, rows: list[tuple[str, str, str, int]]) -> None:
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["customer", "product", "kind", "at"])
            w.writerows(rows)
    elif fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as fh:
            for user, item, kind, t in rows:
                at = datetime.fromtimestamp(t, tz=UTC).isoformat()
                fh.write(json.dumps({"customer": user, "product": item, "kind": kind, "at": at}))
                fh.write("\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        users, items, kinds, times = zip(*rows, strict=True)
        table = pa.table({"customer": users, "product": items, "kind": kinds, "at": list(times)})
        pq.write_table(table, path)


def _json_line(out: str) -> dict[str, Any]:
    line = [x for x in out.splitlines() if x.startswith("{")][-1]
    result: dict[str, Any] = json.loads(line)
    return result


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_a_log_in_each_format_imports_replays_through_kafka_and_evaluates(
    fmt: str, tmp_path: Path, kafka: KafkaEndpoint, topic: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    rows = _rows()
    raw = tmp_path / f"log.{fmt}"
    _write(raw, fmt, rows)
    norm = tmp_path / "log.csv"
    columns = "user=customer,item=product,time=at,event=kind"
    assert main(["import", "interactions", str(raw), "--columns", columns,
                 "--out", str(norm), "--no-progress"]) == 0  # fmt: skip
    report = _json_line(capsys.readouterr().out)
    assert report["rows"] == len(rows) and report["skipped"] == 0

    ensure_topics(kafka.bootstrap, {topic: 2})
    assert main(["replay", "--bootstrap", kafka.bootstrap, "--topic", topic, "--log", str(norm),
                 "--columns", "user=user,item=item,time=time,event=event", "--max-speed",
                 "--partitions", "0", "--source", f"shop-{fmt}", "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    reader = make_consumer(kafka.bootstrap, None, topic,
                           **kafka.consumer_config(consumer_timeout_ms=5000))  # fmt: skip
    try:
        produced = [events_pb2.ClickEvent.FromString(r.value) for r in reader]
    finally:
        reader.close()
    assert len(produced) == len(rows)
    got = sorted((e.event_id, e.user_id, e.item_id, e.event_type) for e in produced)
    want = sorted(
        (f"shop-{fmt}-{n}", user, item, TYPES[kind])
        for n, (user, item, kind, _t) in enumerate(rows)
    )
    assert got == want

    assert main(["evaluate", "--data", str(norm), "--protocol", "holdout", "--no-progress"]) == 0
    result = _json_line(capsys.readouterr().out)
    # Every shopper has 10 events → 8 train; the 2 test items are new to them.
    assert result["protocol"] == "holdout"
    assert result["users"] == 30
    assert set(result["models"]) == {"popularity", "item_knn", "als_untuned"}
    for metrics in result["models"].values():
        assert set(metrics) == {"ndcg@10", "hr@10", "recall@10"}
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
