"""The fault-injection suite (``make faults``): registers its marker, shares one pipeline."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The cases live in bench/ (a script directory, not an installed package).
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: kills or restarts parts of the running pipeline (make faults)"
    )


@pytest.fixture(scope="session")
def fault_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Models, workload, Apache Kafka and an appendonly Redis, plus the fault-free run.

    ``FAULTS_QUICK=1`` (CI) runs 6000 events and 600 feedback records per case.
    """
    from bench.faults import run_case, suite_context

    quick = os.environ.get("FAULTS_QUICK", "1") != "0"
    work = Path(tmp_path_factory.mktemp("faults"))
    with suite_context(work, quick) as suite:
        reference = run_case(suite, "none")
        print(reference.report())
        assert reference.passed, reference.report()
        yield suite
