"""A seconds-long model for smoke tests of the serving path, never for real feedback.

Tests of the SavedModel signature, the two backends, the gRPC service and the
Kafka loop need *a* model with the production architecture and export layout,
not a good one; training the real one takes minutes and needs the data sets.
This one learns a small built-in sample (mixed Chinese and English) by heart
in a few seconds, so the sample's texts get their labels back reliably.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from services.sentiment.core import NEGATIVE, NEUTRAL, POSITIVE
from services.sentiment.model import ModelConfig, train

SMOKE_CONFIG = ModelConfig(
    max_chars=64,
    char_vocab=500,
    embedding_dim=8,
    filters=8,
    kernel_sizes=(2, 3),
    dense_units=8,
    ngram_vocab=2000,
    word_vocab=500,
    dropout=0.0,
    wide_dropout=0.0,
    learning_rate=0.05,
    batch_size=16,
    epochs=6,
    patience=6,
    seed=7,
)

SAMPLE: tuple[tuple[str, int], ...] = (
    ("terrible product, it broke after one day", NEGATIVE),
    ("awful service, I want a refund", NEGATIVE),
    ("the worst purchase I have ever made", NEGATIVE),
    ("never buying from this shop again, horrible", NEGATIVE),
    ("broken on arrival and support ignored me", NEGATIVE),
    ("质量太差了，用了一天就坏了", NEGATIVE),
    ("非常失望，不推荐购买", NEGATIVE),
    ("客服态度恶劣，要求退款", NEGATIVE),
    ("the package arrived on tuesday", NEUTRAL),
    ("I ordered the blue one", NEUTRAL),
    ("the store opens at nine", NEUTRAL),
    ("my order number is 1234", NEUTRAL),
    ("it comes in two sizes", NEUTRAL),
    ("love it, works perfectly, thank you", POSITIVE),
    ("excellent quality and fast delivery", POSITIVE),
    ("great value, highly recommended", POSITIVE),
    ("amazing product, my kids adore it", POSITIVE),
    ("wonderful support team, very helpful", POSITIVE),
    ("质量很好，非常满意", POSITIVE),
    ("物流很快，值得推荐", POSITIVE),
    ("很喜欢，下次还会再买", POSITIVE),
)


def sample() -> tuple[list[str], np.ndarray]:
    return [t for t, _ in SAMPLE], np.array([lab for _, lab in SAMPLE], dtype=np.int64)


def train_smoke_model(base_dir: Path, version: int = 1) -> Path:
    """Train on SAMPLE and export ``<base_dir>/<version>``; returns that directory."""
    texts, labels = sample()
    reps = 12  # several passes per epoch: fewer epochs, fewer per-epoch overheads
    classifier, result = train(
        texts * reps, np.tile(labels, reps), texts, labels, SMOKE_CONFIG, verbose=0
    )
    return classifier.export(
        Path(base_dir),
        version,
        {
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "train_s": round(result.train_s, 2),
            "smoke": True,
        },
    )
