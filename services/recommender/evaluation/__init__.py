"""Offline evaluation: three protocols, ranking metrics, baselines and a validation search.

Protocols (documented with results in docs/evaluation.md):

``random``
    A seeded random 80/20 split of all ratings; every held-out rating is a positive. This is
    the setting of the published MovieLens-100K tables (their figures: docs/evaluation.md,
    "Protocols"), so numbers compare. With ``folds=K``
    the ratings are cut into K disjoint random test parts (K-fold cross-validation; K=5 is
    the published tables' u1..u5 setting) and the metrics are the mean over folds: one
    split's sampling noise is as large as the gaps we care about.
``temporal``
    Per user, the last 20% of their events (by time) are held out; held-out ratings ≥ 4 are
    positives. Closer to deployment: the model predicts each user's *future*.
``replay``
    Train on the first half of the global timeline, then replay the second half in time order:
    before applying each event, recommend top-10 for its user and count a hit if the event's
    item is in the list (next-item HR@10). Compares popularity, the static model, and the model
    with every event seen so far folded into the user's vector (what the service does online).

Hyperparameters are always chosen on a *validation split carved out of the training part*
with the same protocol (never on the test split); the chosen values are then refit on the whole
training part and scored once on the test part.

Modules, each depending only on those above it: :mod:`.data` (the event log and its splits),
:mod:`.metrics`, :mod:`.recommenders` (baselines and our ALS path), :mod:`.search` (grids and
the validation search), :mod:`.results`, :mod:`.offline` (``random``, ``temporal``) and
:mod:`.replay`. Pure numpy/scipy/implicit: no service clients, so all of it runs in unit
tests. The names below are re-exported so ``evaluation.X`` keeps working for callers, except
the functions ``replay.replay`` and ``search.search``: re-exported, they would hide the
submodules of the same name, so they are imported from their modules.
"""

from __future__ import annotations

from services.recommender.evaluation.data import (
    EventLog,
    event_log_from_movielens,
    kfold_parts,
    offline_splits,
    protocol_split,
    random_split,
    recency_boosted,
    temporal_user_split,
    time_split,
)
from services.recommender.evaluation.metrics import (
    METRIC_KEYS,
    K,
    Recommender,
    batch_top_k,
    evaluate,
    list_metrics,
    ranking_metrics,
)
from services.recommender.evaluation.offline import run_offline
from services.recommender.evaluation.recommenders import ALSRec, BPRRec, ItemKNNRec, PopularityRec
from services.recommender.evaluation.replay import (
    REALTIME_GRID,
    REPLAY_GRID,
    REPLAY_VARIANTS,
    RealtimeConfig,
    run_replay,
)
from services.recommender.evaluation.results import ProtocolResult, combine_folds
from services.recommender.evaluation.search import (
    ALS_GRID,
    ALS_TEMPORAL_GRID,
    BPR_GRID,
    ITEMKNN_GRID,
    SearchResult,
    grid,
)

PROTOCOLS = ("random", "temporal", "replay")

__all__ = [
    "ALS_GRID",
    "ALS_TEMPORAL_GRID",
    "BPR_GRID",
    "ITEMKNN_GRID",
    "METRIC_KEYS",
    "PROTOCOLS",
    "REALTIME_GRID",
    "REPLAY_GRID",
    "REPLAY_VARIANTS",
    "ALSRec",
    "BPRRec",
    "EventLog",
    "ItemKNNRec",
    "K",
    "PopularityRec",
    "ProtocolResult",
    "RealtimeConfig",
    "Recommender",
    "SearchResult",
    "batch_top_k",
    "combine_folds",
    "evaluate",
    "event_log_from_movielens",
    "grid",
    "kfold_parts",
    "list_metrics",
    "offline_splits",
    "protocol_split",
    "random_split",
    "ranking_metrics",
    "recency_boosted",
    "run_offline",
    "run_replay",
    "temporal_user_split",
    "time_split",
]
