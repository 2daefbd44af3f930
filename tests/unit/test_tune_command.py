"""``recsys tune`` finishes within its time box on MovieLens-100K and on a second (synthetic
retail) log, and ``recsys train --config`` publishes the same family with the same
hyperparameters, which the recommender then loads as that family."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from recsys_tools.cli import main
from recsys_tools.data import synthetic_logs
from services.recommender import families
from services.recommender.reload import load_model

BUDGET_S = 20.0
# What a command may take beyond its budget: the interpreter and imports before the clock
# starts, and writing the config; a search that ignored its budget would take far longer.
SLACK_S = 10.0


def _ml100k_log() -> tuple[Path, str]:
    from recsys_tools.data.fetch import fetch

    path = fetch(["ml-100k"], progress=False)["ml-100k"] / "ml-100k.inter"
    return path, "user=user_id:token,item=item_id:token,time=timestamp:float"


def _retail_log(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "retail.csv"
    synthetic_logs.retail(path, users=800, items=600, seed=1)
    return path, synthetic_logs.COLUMNS["retail"]


@pytest.mark.parametrize("which", ["ml-100k", "retail"])
def test_tune_keeps_its_time_box_and_train_config_reproduces_the_choice(
    which: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, columns = _ml100k_log() if which == "ml-100k" else _retail_log(tmp_path)
    norm = tmp_path / "log.csv"
    assert main(["import", "interactions", str(raw), "--columns", columns, "--out", str(norm),
                 "--no-progress"]) == 0  # fmt: skip
    config_path = tmp_path / "config.json"
    started = time.monotonic()
    rc = main(["tune", "--data", str(norm), "--time-budget", str(BUDGET_S), "--out",
               str(config_path), "--no-progress"])  # fmt: skip
    elapsed = time.monotonic() - started
    assert rc == 0
    assert elapsed <= BUDGET_S + SLACK_S
    config = json.loads(config_path.read_text())
    assert config["family"] in families.FAMILIES
    assert config["validation"]["trials"] >= 1
    best = max(config["trials"], key=lambda t: t["ndcg@10"])
    assert (best["family"], best["params"]) == (config["family"], config["params"])
    capsys.readouterr()

    store = tmp_path / "models"
    argv = ["train", "--source", "log", "--data", str(norm), "--config", str(config_path),
            "--model-dir", str(store), "--no-forgotten-check", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    published = json.loads(capsys.readouterr().out.splitlines()[-1])
    model = load_model(store / published["version"])
    assert model.config["family"] == config["family"]
    if config["family"] == "als":
        want = families.als_train_config(config["params"]).to_dict()
        got = {k: model.config[k] for k in ("factors", "regularization", "iterations")}
        assert got == {k: want[k] for k in got}
        assert model.config["weighting"] == want["weighting"]
    else:
        assert model.config["params"] == config["params"]


def test_train_config_refuses_a_config_without_a_known_family(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"family": "svd", "params": {}}))
    log = tmp_path / "log.csv"
    log.write_text("user,item,time,weight\nu,i,1,1\n")
    rc = main(["train", "--source", "log", "--data", str(log), "--config", str(bad),
               "--model-dir", str(tmp_path / "m"), "--no-forgotten-check"])  # fmt: skip
    assert rc == 2
