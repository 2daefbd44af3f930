"""Each fault on the real pipeline: nothing lost, nothing double-counted, clients recover.

The cases and their checks live in ``bench.faults`` (also ``python -m bench.faults``, which
prints the per-case report and the JSON line); here each case is one test, after the shared
fault-free reference run.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("psutil")

from bench.faults import CASES, run_case

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow,
              pytest.mark.timeout(900)]  # fmt: skip


@pytest.mark.parametrize("case", [c for c in CASES if c != "none"])
def test_fault_loses_nothing_and_clients_see_only_unavailable(fault_suite: Any, case: str) -> None:
    result = run_case(fault_suite, case)
    print(result.report())
    assert result.error is None, result.report()
    assert result.counts["events_lost"] == 0, result.report()
    assert result.counts["events_double_counted"] == 0, result.report()
    assert result.counts["feedback_lost"] == 0, result.report()
    assert result.passed, result.report()
