"""The model store: atomic publish, LATEST pointer, memory-mapped loading, pruning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.errors import DataError, NotFoundError
from services.recommender import artifact
from services.recommender.model import ItemMeta, Model
from services.recommender.training import TrainConfig, build_matrix, train


def _model() -> Model:
    users = [f"u{u}" for u in range(6) for _ in range(3)]
    items = [f"i{(u + j) % 5}" for u in range(6) for j in range(3)]
    data = build_matrix(users, items, [1.0] * len(users), item_ids=[f"i{i}" for i in range(6)])
    meta = {f"i{i}": ItemMeta(f"i{i}", f"Item {i}", 1999, ("Drama",)) for i in range(6)}
    return train(data, TrainConfig(factors=4, iterations=5, num_threads=1), items=meta)


def test_publish_then_load_is_memory_mapped_and_identical(tmp_path: Path) -> None:
    model = _model()
    version = model.save(tmp_path)
    assert artifact.current_version(tmp_path) == version
    assert artifact.list_versions(tmp_path) == [version]
    loaded = Model.load(tmp_path)  # the store resolves through LATEST
    assert loaded.version == version
    assert isinstance(loaded.item_factors, np.memmap) and not loaded.item_factors.flags.writeable
    assert isinstance(loaded.user_factors, np.memmap)
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
    assert loaded.recommend("u1", k=3).ids == model.recommend("u1", k=3).ids
    assert loaded.user_history("u1") == model.user_history("u1")
    assert loaded.items["i2"].genres == ("Drama",)
    assert loaded.config["factors"] == 4
    assert not list(tmp_path.glob(".tmp-*"))


def test_failed_publish_leaves_store_unchanged(tmp_path: Path) -> None:
    first = _model().save(tmp_path)
    arrays, json_files = _model().to_artifact()
    json_files["metrics"] = {"bad": object()}  # not serialisable: fails mid-write
    with pytest.raises(TypeError):
        artifact.publish(tmp_path, arrays=arrays, json_files=json_files)
    assert artifact.list_versions(tmp_path) == [first]
    assert artifact.current_version(tmp_path) == first
    assert not list(tmp_path.glob(".tmp-*"))


def test_new_version_without_make_current_does_not_move_pointer(tmp_path: Path) -> None:
    first = _model().save(tmp_path)
    second = _model().save(tmp_path, make_current=False)
    assert artifact.current_version(tmp_path) == first
    artifact.write_pointer(tmp_path, second)
    assert Model.load(tmp_path).version == second
    with pytest.raises(NotFoundError):
        artifact.write_pointer(tmp_path, "20000101T000000Z-00000000")


def test_truncated_array_is_rejected(tmp_path: Path) -> None:
    version = _model().save(tmp_path)
    path = tmp_path / version / "item_factors.npy"
    np.save(path, np.zeros((2, 2), dtype=np.float32))  # shape no longer matches the manifest
    with pytest.raises(DataError):
        Model.load(tmp_path)


def test_missing_model_and_dangling_pointer(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        artifact.resolve(tmp_path)
    (tmp_path / artifact.LATEST).write_text("20000101T000000Z-00000000\n")
    with pytest.raises(DataError):
        artifact.resolve(tmp_path)


def test_prune_keeps_newest_and_current(tmp_path: Path) -> None:
    versions = []
    for i in range(4):  # one per second: ids sort by their creation time
        model = _model()
        model.version = artifact.new_version_id(1_700_000_000 + i)
        versions.append(model.save(tmp_path, make_current=(i == 0)))
    removed = artifact.prune(tmp_path, keep=2)
    assert set(removed) == {versions[1]}
    assert artifact.list_versions(tmp_path) == sorted([versions[0], versions[2], versions[3]])


def test_version_ids_sort_by_time() -> None:
    early, late = artifact.new_version_id(1_000_000), artifact.new_version_id(2_000_000)
    assert early < late and artifact.is_version_id(early)
