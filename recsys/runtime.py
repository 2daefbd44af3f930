"""Process-level tuning shared by the long-running services."""

from __future__ import annotations

import gc

# Young-generation threshold (the default is 700 allocations). A consumed record or a
# served request allocates many short-lived containers and almost no cycles, so the
# default ran a collection every few records or requests for nothing. The before/after
# figures: docs/benchmarks.md, History, "GC settings for the consume loop" (events) and
# "GC thresholds" (recommender).
GC_THRESHOLDS = (20_000, 50, 50)


def settle_heap() -> None:
    """Freeze everything alive now out of the cyclic GC's reach, then collect the young
    generation less often.

    Call it once start-up (or a model load) is done. What is frozen (clients, modules, a
    loaded model's id maps, whose full collection is a pause any request caught in it would
    pay: docs/recommender.md, "Concurrency model") is never traversed again, yet still freed
    by reference counting when its last reference goes (a swapped-out model after its last
    request).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
