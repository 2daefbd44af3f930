"""``recsys demo`` end to end, shortened: the README's main job must run and end with its figures.

The demo runs as a user runs it (its own process, its own embedded Tansu and redis-server,
the three services as processes), with ``--quick`` (2,000 replayed events) and the
seconds-long smoke sentiment model, whose training sample holds every feedback text the
demo sends, so the labels and the suppression are deterministic. Every process the demo
starts inherits a marker in its environment; after the demo exits, none may be left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.sentiment]

ROOT = Path(__file__).resolve().parents[2]
MARK = "RECSYS_DEMO_TEST_MARK"


@pytest.fixture(scope="module")
def smoke_sentiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    from services.sentiment.smoke import train_smoke_model

    base = tmp_path_factory.mktemp("sentiment")
    train_smoke_model(base, version=1)
    return base


@pytest.fixture(scope="module")
def movielens() -> None:
    from recsys.errors import DataError
    from recsys_tools.data.movielens import load_ml100k

    try:
        load_ml100k()
    except DataError as exc:
        pytest.skip(f"ML-100K not fetched (`recsys data fetch`): {exc}")


def marked(mark: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARK) == mark:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture
def demo_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    mark = uuid.uuid4().hex
    env = {**os.environ, MARK: mark, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"):
        env.pop(name, None)  # the demo starts its own
    yield env
    for proc in marked(mark):  # a failed test must not leave servers behind either
        proc.kill()


def demo_argv(sentiment_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "recsys_tools.cli", "demo", "--sentiment-model-dir",
            str(sentiment_dir), *extra]  # fmt: skip


def last_json(out: str) -> dict[str, Any]:
    lines = [line for line in out.strip().splitlines() if line.strip()]
    assert lines, "the demo printed nothing"
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


def test_quick_demo_ends_with_its_summary_json_and_leaves_nothing_running(
    smoke_sentiment: Path, movielens: None, demo_env: dict[str, str]
) -> None:
    done = subprocess.run(demo_argv(smoke_sentiment, "--quick"), cwd=ROOT, env=demo_env,
                          capture_output=True, text=True, timeout=240, check=False)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    figures = last_json(done.stdout)
    assert figures["events"] == 2000
    assert figures["events_per_s"] > 0
    assert figures["freshness_timeouts"] == 0
    assert figures["freshness_idle_p50_ms"] is not None and figures["freshness_idle_p50_ms"] > 0
    assert figures["hr@10_asked"] > 0 and 0.0 <= figures["hr@10"] <= 1.0
    assert figures["feedback_classified"] == 8
    assert figures["feedback_as_expected"] == 8
    assert figures["suppressed_item_removed"] is True
    assert figures["interrupted"] is False
    assert "summary" in done.stdout and "because of:" in out
    assert marked(demo_env[MARK]) == []


def test_ctrl_c_during_the_replay_stops_everything_cleanly(
    smoke_sentiment: Path, movielens: None, demo_env: dict[str, str]
) -> None:
    proc = subprocess.Popen(demo_argv(smoke_sentiment, "--events", "50000"), cwd=ROOT,
                            env=demo_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 180
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("replaying"):
                break
            assert time.monotonic() < deadline, "".join(lines)[-3000:]
        time.sleep(1.0)
        # Tansu, redis-server and the three services (redis-server rewrites its environment
        # with its process title, so children are found by parentage here)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 5, children
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    out = "".join(lines) + rest
    assert proc.returncode == 130, out[-3000:]
    figures = last_json(rest)
    assert figures["interrupted"] is True
    assert "interrupted" in out
    assert marked(demo_env[MARK]) == []
    assert [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []
