"""Process-level tuning shared by the long-running services."""

from __future__ import annotations

import gc

# Young-generation threshold (the default is 700 allocations). A consumed record or a
# served request allocates many short-lived containers and almost no cycles, so the
# default ran a collection every few records or requests for nothing. Measured with
# `python -m bench.events_throughput --quick` (both loops under these settings): service
# CPU per event 33-51 -> 27-36 µs, the bare poll loop 22-29 -> 20-23 µs; and with
# `python -m bench.recommend_load --quick`: Recommend 1,073-1,283 -> 1,334-1,647 QPS.
GC_THRESHOLDS = (20_000, 50, 50)


def settle_heap() -> None:
    """Freeze everything alive now out of the cyclic GC's reach, then collect the young
    generation less often.

    Call it once start-up (or a model load) is done. What is frozen (clients, modules, a
    loaded model's id maps: ~10^5-10^6 objects for a large catalog, whose full collection
    took ~90 ms) is never traversed again, yet still freed by reference counting when its
    last reference goes (a swapped-out model after its last request).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
