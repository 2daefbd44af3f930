"""The model store: versioned, immutable model directories published atomically.

Layout::

    <store>/
      LATEST                      # text: the current version id (replaced atomically)
      20250101T120000Z-3f2a9c1e/  # one directory per version, never modified once published
        manifest.json             # version, created_at, files, shapes, format
        config.json               # the training configuration (hyperparameters, weighting)
        metrics.json              # evaluation metrics measured at training time
        item_ids.json  user_ids.json  items.json (metadata)
        item_factors.npy  user_factors.npy  item_popularity.npy  item_norm.npy  cold_items.npy
        user_items_indptr.npy  user_items_indices.npy  user_items_data.npy  (training history)
        item_index.usearch        # optional: the ANN index over the item factors (ann.py)

Publishing writes everything into a hidden temporary directory inside the store, fsyncs it,
renames it to its version name (atomic on one filesystem), and only then replaces ``LATEST``
through a temp file + ``os.replace``. A reader therefore sees either the old model or the new
one, never a half-written directory, and a crash mid-write leaves only a ``.tmp-*`` directory
that :func:`prune` removes. Factors are ``.npy`` so they can be memory-mapped (``mmap_mode="r"``):
several server processes share one copy in the page cache, and loading a 100k-item model costs
no copy at all.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from recsys.errors import DataError, NotFoundError

FORMAT = "recsys-als/1"
LATEST = "LATEST"
MANIFEST = "manifest.json"
_VERSION_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


def new_version_id(now: float | None = None) -> str:
    """Sortable by time, unique across concurrent trainers (random suffix)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(4)}"


def is_version_id(value: str) -> bool:
    return bool(_VERSION_RE.match(value))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _write_json(path: Path, obj: Any) -> None:
    _write_bytes(
        path, json.dumps(obj, ensure_ascii=False, indent=1, default=_json_default).encode()
    )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _write_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def write_pointer(store: Path, version: str) -> None:
    """Point ``LATEST`` at ``version`` atomically (temp file + fsync + rename)."""
    if not (store / version / MANIFEST).is_file():
        raise NotFoundError(f"model version {version!r} not found in {store}")
    tmp = store / f".{LATEST}.{secrets.token_hex(4)}.tmp"
    _write_bytes(tmp, (version + "\n").encode())
    os.replace(tmp, store / LATEST)
    _fsync_dir(store)


def publish(
    store: str | os.PathLike[str],
    *,
    arrays: Mapping[str, np.ndarray],
    json_files: Mapping[str, Any],
    version: str | None = None,
    make_current: bool = True,
    files: Mapping[str, Callable[[Path], None]] | None = None,
) -> Path:
    """Write a new model version into ``store`` atomically and return its directory.

    ``arrays`` are saved as ``<name>.npy``; ``json_files`` as ``<name>.json``; ``files``
    names other files, each written by its callable given the path (an index a library
    saves itself). The manifest (version, timestamp, shapes, dtypes, file sizes) is added
    here so readers can check what they load.
    """
    root = Path(store)
    root.mkdir(parents=True, exist_ok=True)
    version = version or new_version_id()
    if not _VERSION_RE.match(version):
        raise ValueError(f"bad version id {version!r}")
    final = root / version
    if final.exists():
        raise FileExistsError(f"model version {version} already exists in {root}")
    tmp = root / f".tmp-{version}"
    tmp.mkdir()
    try:
        for name, array in arrays.items():
            _write_npy(tmp / f"{name}.npy", array)
        for name, obj in json_files.items():
            _write_json(tmp / f"{name}.json", obj)
        sizes: dict[str, int] = {}
        for name, write in (files or {}).items():
            write(tmp / name)
            with open(tmp / name, "rb+") as fh:
                os.fsync(fh.fileno())
            sizes[name] = (tmp / name).stat().st_size
        manifest = {
            "format": FORMAT,
            "version": version,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "arrays": {
                name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()
            },
            "json": sorted(json_files),
        }
        if sizes:
            manifest["files"] = sizes
        _write_json(tmp / MANIFEST, manifest)  # last: its presence marks a complete version
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if make_current:
        write_pointer(root, version)
    return final


def list_versions(store: str | os.PathLike[str]) -> list[str]:
    """Complete versions in the store, oldest first."""
    root = Path(store)
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if _VERSION_RE.match(p.name) and (p / MANIFEST).is_file()
    )


def current_version(store: str | os.PathLike[str]) -> str | None:
    pointer = Path(store) / LATEST
    try:
        version = pointer.read_text().strip()
    except FileNotFoundError:
        return None
    return version or None


def resolve(path: str | os.PathLike[str]) -> Path:
    """A version directory, given either a version directory or a store (→ its ``LATEST``)."""
    p = Path(path)
    if (p / MANIFEST).is_file():
        return p
    version = current_version(p)
    if version is None:
        raise NotFoundError(
            f"no model at {p}: neither a version directory nor a store with {LATEST}"
        )
    target = p / version
    if not (target / MANIFEST).is_file():
        raise DataError(f"{p / LATEST} points at {version!r}, which is missing or incomplete")
    return target


class ArtifactReader:
    """Reads one version directory; arrays are memory-mapped read-only (no copy)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = resolve(path)
        try:
            self.manifest: dict[str, Any] = json.loads((self.path / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"unreadable manifest in {self.path}: {exc}") from None
        if self.manifest.get("format") != FORMAT:
            raise DataError(f"{self.path}: unsupported model format {self.manifest.get('format')}")

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    def has_array(self, name: str) -> bool:
        return name in self.manifest.get("arrays", {})

    def array(self, name: str, *, mmap: bool = True) -> np.ndarray:
        meta = self.manifest.get("arrays", {}).get(name)
        if meta is None:
            raise DataError(f"{self.path}: no array {name!r} in the manifest")
        arr: np.ndarray = np.load(
            self.path / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False
        )
        if list(arr.shape) != meta["shape"] or str(arr.dtype) != meta["dtype"]:
            raise DataError(f"{self.path}/{name}.npy does not match the manifest (truncated?)")
        return arr

    def file(self, name: str) -> Path | None:
        """The path of a file published with ``files=`` (None if this version has none);
        DataError when its size differs from the manifest's (truncated)."""
        size = self.manifest.get("files", {}).get(name)
        if size is None:
            return None
        path = self.path / name
        if not path.is_file() or path.stat().st_size != size:
            raise DataError(f"{path} is missing or does not match the manifest (truncated?)")
        return path

    def json(self, name: str, default: Any = None) -> Any:
        path = self.path / f"{name}.json"
        if not path.is_file():
            if default is not None:
                return default
            raise DataError(f"{self.path}: missing {name}.json")
        return json.loads(path.read_text())


def prune(
    store: str | os.PathLike[str], keep: int = 3, *, protect: Iterable[str] = ()
) -> list[str]:
    """Delete all but the newest ``keep`` versions (never the current one) and stale temp dirs."""
    root = Path(store)
    keep_set = set(list_versions(root)[-keep:] if keep > 0 else []) | set(protect)
    current = current_version(root)
    if current:
        keep_set.add(current)
    removed = []
    for name in list_versions(root):
        if name not in keep_set:
            shutil.rmtree(root / name, ignore_errors=True)
            removed.append(name)
    # A temp dir younger than an hour may belong to a trainer that is still writing.
    for p in root.glob(".tmp-*"):
        if time.time() - p.stat().st_mtime > 3600:
            shutil.rmtree(p, ignore_errors=True)
    return removed
