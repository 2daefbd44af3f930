"""``recsys import``: column mapping, time formats, and bad rows named by row and column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.errors import ConfigError
from recsys_tools.cli import main
from recsys_tools.data import interactions as inter

CSV = """u,i,t,w
alice,apple,1700000000,2
bob,pear,2023-11-14T22:13:21Z,1
carol,,1700000002,1
dave,plum,yesterday,1
erin,fig,1700000004,-3
frank,kiwi,1700000005,1.5
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_bad_rows_stop_the_import_naming_row_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "log.csv", CSV)
    with pytest.raises(inter.RowError) as err:
        inter.read_log(path, inter.parse_columns("user=u,item=i,time=t,weight=w"))
    assert err.value.row == 3 and err.value.column == "i"
    assert "row 3, column 'i'" in str(err.value)


def test_bad_rows_are_skipped_and_reported_when_asked(tmp_path: Path) -> None:
    path = _write(tmp_path, "log.csv", CSV)
    data, report = inter.read_log(
        path, inter.parse_columns("user=u,item=i,time=t,weight=w"), on_error="skip"
    )
    assert data.users == ["alice", "bob", "frank"]
    assert data.weights == [2.0, 1.0, 1.5]
    assert data.times[1] == 1700000001.0  # ISO 8601 with Z, as Unix seconds
    assert report.rows == 3 and report.skipped == 3
    assert [e.split(":")[0] for e in report.errors] == [
        "row 3, column 'i'",
        "row 4, column 't'",
        "row 5, column 'w'",
    ]


def test_cli_import_writes_the_normalised_log_and_reports_skips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "log.csv", CSV)
    out = tmp_path / "norm.csv"
    rc = main(["import", "interactions", str(path), "--columns", "user=u,item=i,time=t,weight=w",
               "--out", str(out), "--on-error", "skip", "--no-progress"])  # fmt: skip
    assert rc == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.splitlines()[-1])["skipped"] == 3
    assert "row 4, column 't'" in captured.err
    again, _ = inter.read_log(out, inter.parse_columns(None))
    assert again.users == ["alice", "bob", "frank"] and again.weights == [2.0, 1.0, 1.5]
    # The default (stop) fails the command with the row and column, exit status 2.
    assert main(["import", "interactions", str(path), "--columns", "user=u,item=i,time=t",
                 "--out", str(out), "--no-progress"]) == 2  # fmt: skip
    assert "row 3, column 'i'" in capsys.readouterr().err


def test_event_column_is_weighted_like_the_events_service(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "log.jsonl",
        '{"u": "a", "i": "x", "t": 1, "e": "purchase"}\n'
        '{"u": "a", "i": "y", "t": "1970-01-01T00:00:02", "e": "View"}\n'
        "not json\n"
        '{"u": "a", "i": "z", "t": 3, "e": "wishlist"}\n',
    )
    data, report = inter.read_log(
        path, inter.parse_columns("user=u,item=i,time=t,event=e"), on_error="skip"
    )
    assert data.weights == [8.0, 1.0] and data.events == ["purchase", "view"]
    assert data.times == [1.0, 2.0]
    assert report.errors[0].startswith("row 3, column '*': not JSON")
    assert report.errors[1].startswith("row 4, column 'e': unknown event type 'wishlist'")


@pytest.mark.parametrize(
    "spec",
    [
        "user=u,item=i",
        "user=u,item=i,time=t,weight=w,event=e",
        "user=u,item=i,time=t,colour=c",
        "user,item=i,time=t",
    ],
)
def test_column_mappings_that_cannot_work_are_refused(spec: str) -> None:
    with pytest.raises(ConfigError):
        inter.parse_columns(spec)


def test_catalogue_import_checks_price_and_parses_categories(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "items.csv",
        "sku,name,cats,attributes,price\n"
        's1,Red shoe,shoes|red,"{""size"": 42}",19.9\n'
        "s2,Blue hat,hats,,\n"
        "s3,Broken,hats,,cheap\n",
    )
    items, report = inter.read_catalogue(
        path,
        inter.parse_catalogue_columns("id=sku,title=name,categories=cats"),
        on_error="skip",
    )
    assert items[0] == {
        "id": "s1",
        "title": "Red shoe",
        "categories": ["shoes", "red"],
        "attributes": {"size": "42"},
        "price": 19.9,
    }
    assert items[1]["price"] is None and items[1]["attributes"] == {}
    assert report.errors == ["row 3, column 'price': 'cheap' is not a number"]
