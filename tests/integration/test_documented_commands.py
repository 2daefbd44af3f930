"""The docs' commands for standard tools, run as a user pastes them, on the real servers.

The blocks marked ``<!-- docs-commands: NAME -->`` in docs/recommender.md, docs/sentiment.md
(their "Authentication" sections) and docs/events.md run here line by line through bash,
with the real ``grpcurl`` and ``grpc-health-probe`` (``go install``; .ci/run installs
pinned versions and sets ``RECSYS_REQUIRE_TOOLS=1``, so a missing tool fails instead of
skipping) and ``kcat`` (the system's package). A doc that drifts from what the services do
fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from recsys.kafka_io import ensure_topics
from recsys.store import open_store
from recsys_tools.harness import QUIET_ENV, Service, events_env, free_port, wait_for, wait_serving
from recsys_tools.infra.endpoints import KafkaEndpoint

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: The standard tools the docs use, and the module each is built from (.ci/run pins them).
TOOLS = {
    "grpcurl": "github.com/fullstorydev/grpcurl/cmd/grpcurl",
    "grpc-health-probe": "github.com/grpc-ecosystem/grpc-health-probe",
}


def tools_required() -> bool:
    return os.environ.get("RECSYS_REQUIRE_TOOLS", "") not in ("", "0")


def go_bin() -> Path | None:
    """``$(go env GOPATH)/bin``, where ``go install`` puts the tools (None without Go)."""
    go = shutil.which("go")
    if go is None:
        return None
    done = subprocess.run([go, "env", "GOPATH"], capture_output=True, text=True, check=False)
    first = done.stdout.strip().split(os.pathsep)[0]
    return Path(first) / "bin" if done.returncode == 0 and first else None


@pytest.fixture(scope="session")
def grpc_tools() -> Path:
    """A directory holding grpcurl and grpc-health-probe (PATH, then GOPATH/bin).

    Missing tools skip the test on a developer's machine, with the command that installs
    them; with ``RECSYS_REQUIRE_TOOLS=1`` (set by .ci/run, which installs them) they fail
    it, so CI can never pass these checks by not running them.
    """
    found: dict[str, Path] = {}
    gobin = go_bin()
    for name in TOOLS:
        on_path = shutil.which(name)
        if on_path is not None:
            found[name] = Path(on_path)
        elif gobin is not None and (gobin / name).is_file():
            found[name] = gobin / name
    missing = [name for name in TOOLS if name not in found]
    if missing:
        how = "; ".join(f"go install {TOOLS[name]}@latest" for name in missing)
        message = f"{', '.join(missing)} not found on PATH or in GOPATH/bin ({how})"
        if tools_required():
            pytest.fail(message)
        pytest.skip(message)
    directory = found["grpcurl"].parent
    if found["grpc-health-probe"].parent != directory:  # one PATH entry for both
        link_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"recsys-tools-{os.getpid()}"
        link_dir.mkdir(exist_ok=True)
        for name, path in found.items():
            link = link_dir / name
            if not link.exists():
                link.symlink_to(path)
        directory = link_dir
    return directory


def doc_commands(doc: str, name: str) -> list[str]:
    """The lines of the ``sh`` block after ``<!-- docs-commands: name -->`` in ``docs/doc``."""
    text = (ROOT / "docs" / doc).read_text()
    marker = f"<!-- docs-commands: {name} -->\n```sh\n"
    start = text.index(marker) + len(marker)
    return text[start : text.index("\n```", start)].splitlines()


def run_documented(
    lines: list[str],
    cwd: Path,
    tools: Path,
    default_port: int,
    start_server: Callable[[dict[str, str]], Service],
    replace: dict[str, str] | None = None,
) -> list[Service]:
    """Run ``lines`` as a user pastes them, in ``cwd``. The ``... &`` line is the server:
    ``start_server`` starts it with that line's variables (a relative path made absolute)
    on a free port, which the later lines are pointed at (and ``replace``'s test-owned
    names: broker, topics). A line whose comment is ``# Code: X`` must fail with that code;
    every other line must succeed, and print X where its comment is ``# prints X``."""
    env = {**os.environ, "PATH": os.pathsep.join([str(tools), str(Path(sys.executable).parent),
                                                  os.environ.get("PATH", "")])}  # fmt: skip
    for variable in ("RECSYS_TOKEN", "AUTH_MODE", "AUTH_CREDENTIALS_FILE"):
        env.pop(variable, None)
    started: list[Service] = []
    target = ""
    for line in lines:
        command, _, comment = line.partition("  #")
        command, comment = command.strip(), comment.strip()
        if command.endswith("&"):
            words = shlex.split(command[:-1])
            assigned = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))
            for key, value in assigned.items():
                if (cwd / value).exists():
                    assigned[key] = str(cwd / value)
            started.append(start_server(assigned))
            target = started[-1].target
            continue
        if target:
            command = command.replace(f"127.0.0.1:{default_port}", target)
            for old, new in (replace or {}).items():
                command = command.replace(old, new)
            if " recsys client " in f" {command} ":
                command += f" --target {target}"
        done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip
        output = done.stdout + done.stderr
        if comment.startswith("Code:"):
            assert done.returncode != 0 and comment in output, (line, output)
        else:
            assert done.returncode == 0, (line, output)
        if comment.startswith("prints "):
            assert comment.removeprefix("prints ") in output, (line, output)
    return started


@pytest.fixture(scope="module")
def movielens_like_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model over the ids the docs use (user "196", item "50")."""
    from services.recommender.training import TrainConfig, build_matrix, train

    store = tmp_path_factory.mktemp("docs-models")
    users = [str(u) for u in range(190, 210) for _ in range(5)]
    items = [str(45 + (u % 2) * 5 + i) for u in range(190, 210) for i in range(5)]
    config = TrainConfig(factors=4, iterations=5, num_threads=1)
    train(build_matrix(users, items, [1.0] * len(users)), config).save(store)
    return store


def test_recommender_authentication_commands_in_the_docs_work_as_written(
    grpc_tools: Path, redis_url: str, movielens_like_models: Path, tmp_path: Path
) -> None:
    def start_server(env: dict[str, str]) -> Service:
        service = Service("recommender-docs", ["services.recommender"], {**QUIET_ENV, **env,
                          "RECSYS_MODEL_DIR": str(movielens_like_models), "REDIS_URL": redis_url,
                          "REDIS_KEY_PREFIX": "authdocs:", "WORKERS": "1"},
                          log_path=tmp_path / "recommender.log", port=free_port())  # fmt: skip
        service.start()
        return wait_serving(service, 180)

    lines = doc_commands("recommender.md", "recommender")
    started = []
    try:
        started = run_documented(lines, tmp_path, grpc_tools, 50051, start_server)
        assert len(started) == 1
    finally:
        for service in started:
            service.stop(timeout_s=10)


@pytest.mark.sentiment
def test_sentiment_authentication_commands_in_the_docs_work_as_written(
    grpc_tools: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorflow")
    from services.sentiment.smoke import train_smoke_model

    train_smoke_model(tmp_path / "model")

    def start_server(env: dict[str, str]) -> Service:
        service = Service("sentiment-docs", ["services.sentiment", "serve"], {**QUIET_ENV, **env,
                          "SENTIMENT_BACKEND": "inprocess",
                          "SENTIMENT_MODEL_DIR": str(tmp_path / "model")},
                          log_path=tmp_path / "sentiment.log", port=free_port())  # fmt: skip
        service.start()
        return wait_serving(service, 180)

    lines = doc_commands("sentiment.md", "sentiment")
    started = []
    try:
        started = run_documented(lines, tmp_path, grpc_tools, 50052, start_server)
        assert len(started) == 1
    finally:
        for service in started:
            service.stop(timeout_s=10)


def test_events_kcat_commands_in_the_docs_work_as_written(
    grpc_tools: Path, kafka: KafkaEndpoint, redis_url: str, topic: str, key_prefix: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """kcat (from the system's packages) produces the documented JSON click and reads the
    documented dead letter; the click reaches Redis."""
    if shutil.which("kcat") is None:
        if tools_required():
            pytest.fail("kcat not on PATH (apt-get install kcat)")
        pytest.skip("kcat not on PATH (apt-get install kcat)")
    ensure_topics(kafka.bootstrap, {topic: 2, f"{topic}.dlq": 1})

    def start_server(env: dict[str, str]) -> Service:
        service = Service("events-docs", ["services.events"],
                          {**QUIET_ENV, **env, **events_env(kafka, redis_url, topic, key_prefix)},
                          log_path=tmp_path / "events.log", port=free_port())  # fmt: skip
        service.start()
        return wait_serving(service, 180)

    lines = doc_commands("events.md", "events")
    replace = {"127.0.0.1:9092": kafka.bootstrap, "recsys.clicks.dlq.v1": f"{topic}.dlq",
               "recsys.clicks.v1": topic}  # fmt: skip
    started: list[Service] = []
    try:
        started = run_documented(lines, tmp_path, grpc_tools, 50053, start_server, replace)
        assert len(started) == 1
        store = open_store(redis_url, prefix=key_prefix)
        try:
            clicked = lambda: "50" in store.get_user_state("196").weights  # noqa: E731
            wait_for(clicked, 60, "the click in Redis")
        finally:
            store.close()
    finally:
        for service in started:
            service.stop(timeout_s=10)
