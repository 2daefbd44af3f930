"""The Keras sentiment classifier: build, train, export as a TF Serving SavedModel.

One model for Chinese and English, taking raw strings: all text processing
(Unicode repair, lower-casing, URL/mention folding, character and word
vectorisation) is inside the exported graph, so TensorFlow Serving, the
in-process backend and the evaluation all score exactly the same function.

Architecture (wide and deep, both halves character-based so Chinese needs no
word segmenter):

* deep: characters -> embedding -> parallel 1-D convolutions (widths 2, 3, 5)
  -> global max pooling -> dropout -> dense;
* wide: sublinear, L2-normalised bags of character 1-4-grams and of whitespace words/bigrams
  (the latter only matter for English) -> dropout -> linear;

their logits are summed before the softmax. The wide half captures the cue
words a linear baseline sees, the convolutional half the context (negation,
"not bad") a bag of n-grams cannot.

The export layout is TensorFlow Serving's: ``<base>/<integer version>/``
holding ``saved_model.pb`` and ``variables/``, plus ``recsys_sentiment.json``
(labels, training metadata), which TF Serving ignores.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.sentiment.core import LABELS

log = logging.getLogger(__name__)

SIGNATURE_NAME = "serving_default"
INPUT_KEY = "text"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_CLASS_IDS = "class_ids"
METADATA_FILE = "recsys_sentiment.json"


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters; the defaults are what ``recsys sentiment train`` uses."""

    max_chars: int = 160  # characters the convolutional half sees (longer texts truncated)
    char_vocab: int = 6000
    embedding_dim: int = 32
    filters: int = 64
    kernel_sizes: tuple[int, ...] = (2, 3, 5)
    dense_units: int = 64
    char_ngrams: int = 4  # the wide half sees character 1..char_ngrams-grams
    ngram_vocab: int = 150_000  # character n-grams kept for the wide half
    word_vocab: int = 50_000  # whitespace words and word bigrams kept for the wide half
    dropout: float = 0.4
    wide_dropout: float = 0.2
    learning_rate: float = 2e-3
    batch_size: int = 128
    epochs: int = 8
    patience: int = 2
    seed: int = 13

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    model: Any  # keras.Model
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    train_s: float
    config: ModelConfig
    extra: dict[str, Any] = field(default_factory=dict)


def _tf() -> Any:
    import tensorflow as tf

    return tf


def limit_threads(threads: int) -> None:
    """Size TensorFlow's intra- and inter-op pools: a benchmark pinned to a few cores
    measures those cores, not TensorFlow's default of one thread per machine core."""
    tf = _tf()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def standardize(texts: Any) -> Any:
    """Graph-side text cleanup shared by training and serving.

    Invalid UTF-8 (possible through TF Serving's raw bytes) is repaired first,
    so no byte sequence can make a later op fail.
    """
    tf = _tf()
    x = tf.strings.unicode_transcode(
        texts, input_encoding="UTF-8", output_encoding="UTF-8", errors="replace"
    )
    x = tf.strings.lower(x, encoding="utf-8")
    x = tf.strings.regex_replace(x, r"https?://\S+|www\.\S+", " http ")
    x = tf.strings.regex_replace(x, r"@\w+", " @user ")
    x = tf.strings.regex_replace(x, r"\s+", " ")
    return tf.strings.strip(x)


def split_punctuation(texts: Any) -> Any:
    """Space out punctuation for the word bag: ``great!!`` -> ``great ! !``, ``:)`` -> ``: )``.

    Tweets glue punctuation and emoticons to words; split, "great" is one
    feature however it is punctuated, and "! !" or ": )" become bigrams of their own.
    """
    tf = _tf()
    x = tf.strings.regex_replace(texts, r"([^\w\s])", r" \1 ")
    return tf.strings.strip(tf.strings.regex_replace(x, r"\s+", " "))


def build_model(train_texts: Sequence[str], config: ModelConfig) -> tuple[Any, dict[str, Any]]:
    """The classifier (string input -> 3 probabilities), vocabularies adapted on ``train_texts``."""
    tf = _tf()
    import keras
    from keras import layers

    keras.utils.set_random_seed(config.seed)
    cleaned = standardize(tf.constant(list(train_texts)))
    adapt_ds = tf.data.Dataset.from_tensor_slices(cleaned).batch(1024)

    chars = layers.TextVectorization(
        max_tokens=config.char_vocab,
        standardize=None,
        split="character",
        output_mode="int",
        output_sequence_length=config.max_chars,
        name="chars",
    )
    ngrams = layers.TextVectorization(
        max_tokens=config.ngram_vocab,
        standardize=None,
        split="character",
        ngrams=config.char_ngrams,
        output_mode="count",
        sparse=True,
        name="char_ngrams",
    )
    words = layers.TextVectorization(
        max_tokens=config.word_vocab,
        standardize=None,
        split="whitespace",
        ngrams=2,
        output_mode="count",
        sparse=True,
        name="words",
    )
    t0 = time.perf_counter()
    for layer in (chars, ngrams):
        layer.adapt(adapt_ds)
    words.adapt(adapt_ds.map(split_punctuation))
    adapt_s = time.perf_counter() - t0

    # The model proper takes the three vectorised views; the vectorisers are
    # applied in the input pipeline while training (cheaper) and folded into
    # the exported serving function.
    seq_in = keras.Input(shape=(config.max_chars,), dtype="int64", name="char_ids")
    ngram_in = keras.Input(shape=(ngrams.vocabulary_size(),), sparse=True, name="ngram_tfidf")
    word_in = keras.Input(shape=(words.vocabulary_size(),), sparse=True, name="word_tfidf")

    emb = layers.Embedding(chars.vocabulary_size(), config.embedding_dim, name="char_embedding")(
        seq_in
    )
    pooled = [
        layers.GlobalMaxPooling1D()(
            layers.Conv1D(config.filters, k, padding="same", activation="relu", name=f"conv{k}")(
                emb
            )
        )
        for k in config.kernel_sizes
    ]
    deep = layers.Concatenate()(pooled)
    deep = layers.Dropout(config.dropout)(deep)
    deep = layers.Dense(config.dense_units, activation="relu", name="deep_dense")(deep)
    deep = layers.Dropout(config.dropout)(deep)
    deep_logits = layers.Dense(len(LABELS), name="deep_logits")(deep)

    wide_ngrams = layers.Dense(len(LABELS), name="wide_ngram_logits")(ngram_in)
    wide_words = layers.Dense(len(LABELS), name="wide_word_logits")(word_in)
    logits = layers.Add()([deep_logits, wide_ngrams, wide_words])
    probs = layers.Softmax(name=OUTPUT_PROBABILITIES)(logits)
    core = keras.Model([seq_in, ngram_in, word_in], probs, name="sentiment_core")
    core.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    vectorizers = {"chars": chars, "ngrams": ngrams, "words": words, "adapt_s": adapt_s}
    return core, vectorizers


def _sublinear_l2(counts: Any) -> Any:
    """log(1 + count), each row scaled to unit L2 norm (sparse in, sparse out).

    Done here rather than with ``output_mode="tf_idf"`` because Keras' sparse
    TF-IDF path fails to trace (GatherNd rank error); the row normalisation
    keeps long reviews and short tweets on one scale, and the linear layer
    learns the per-n-gram weighting that IDF would have supplied.
    """
    tf = _tf()
    values = tf.math.log1p(tf.cast(counts.values, tf.float32))
    rows = counts.indices[:, 0]
    sq = tf.math.unsorted_segment_sum(
        tf.square(values), rows, tf.cast(counts.dense_shape[0], tf.int32)
    )
    norms = tf.gather(tf.sqrt(tf.maximum(sq, 1e-12)), rows)
    return tf.SparseTensor(counts.indices, values / norms, counts.dense_shape)


def _vectorize_fn(vectorizers: dict[str, Any], wide_dropout: float = 0.0) -> Callable[..., Any]:
    tf = _tf()
    chars, ngrams, words = vectorizers["chars"], vectorizers["ngrams"], vectorizers["words"]

    def vectorize(texts: Any) -> tuple[Any, Any, Any]:
        clean = standardize(texts)
        return (
            chars(clean),
            _sublinear_l2(ngrams(clean)),
            _sublinear_l2(words(split_punctuation(clean))),
        )

    def vectorize_train(texts: Any) -> tuple[Any, Any, Any]:
        seq, ng, wd = vectorize(texts)
        if wide_dropout > 0:
            # Feature dropout on the sparse bags: the wide half cannot lean on
            # a handful of rare n-grams it has memorised.
            ng = tf.sparse.retain(ng, tf.random.uniform(tf.shape(ng.values)) >= wide_dropout)
            wd = tf.sparse.retain(wd, tf.random.uniform(tf.shape(wd.values)) >= wide_dropout)
        return seq, ng, wd

    return vectorize_train if wide_dropout > 0 else vectorize


def balanced_weights(labels: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """Per-example weights that balance the classes within each group (language).

    ``n_group / (k_group * count(group, class))``: every class of a language
    weighs the same in the loss, which is what macro-F1 rewards (the English
    positive class is under a fifth of the tweets); each language keeps its
    total weight, so the larger corpus still counts for more.
    """
    labels = np.asarray(labels)
    group_arr = np.asarray(list(groups))
    weights = np.ones(len(labels), dtype=np.float32)
    for g in np.unique(group_arr):
        in_group = group_arr == g
        classes, counts = np.unique(labels[in_group], return_counts=True)
        for c, n in zip(classes, counts, strict=True):
            weights[in_group & (labels == c)] = in_group.sum() / (len(classes) * n)
    return weights


def _dataset(
    texts: Sequence[str],
    labels: np.ndarray,
    vectorize: Callable[..., Any],
    batch_size: int,
    shuffle_seed: int | None,
    weights: np.ndarray | None = None,
) -> Any:
    tf = _tf()
    y = labels.astype(np.int32)
    w = np.ones(len(y), dtype=np.float32) if weights is None else weights.astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((list(texts), y, w))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(texts), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y, w: (vectorize(x), y, w), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


class SentimentClassifier:
    """A trained core model plus its vectorisers: predicts from raw strings, exports."""

    def __init__(self, core: Any, vectorizers: dict[str, Any], config: ModelConfig) -> None:
        self.core = core
        self.vectorizers = vectorizers
        self.config = config
        self._predict = self._make_predict()

    def _make_predict(self) -> Any:
        tf = _tf()
        vectorize = _vectorize_fn(self.vectorizers)
        core = self.core

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])  # type: ignore[untyped-decorator]
        def serve(text: Any) -> dict[str, Any]:
            probs = core(vectorize(text), training=False)
            return {
                OUTPUT_PROBABILITIES: probs,
                OUTPUT_CLASS_IDS: tf.argmax(probs, axis=-1, output_type=tf.int64),
            }

        return serve

    def predict_proba(self, texts: Sequence[str], batch_size: int = 512) -> np.ndarray:
        tf = _tf()
        out = [np.zeros((0, len(LABELS)), dtype=np.float32)]
        for i in range(0, len(texts), batch_size):
            batch = tf.constant([t.encode("utf-8", "replace") for t in texts[i : i + batch_size]])
            out.append(self._predict(batch)[OUTPUT_PROBABILITIES].numpy())
        return np.concatenate(out)

    def export(self, base_dir: Path, version: int, metadata: dict[str, Any]) -> Path:
        """Write ``<base_dir>/<version>/`` for TF Serving; return that directory.

        Written to a temporary sibling and renamed, so a serving process that
        polls the base directory never loads a half-written version.
        """
        tf = _tf()
        import keras

        target = Path(base_dir).expanduser() / str(int(version))
        if target.exists():
            raise FileExistsError(f"{target} already exists; pick a new version")
        tmp = target.with_name(f".{target.name}.tmp-{int(time.time() * 1000)}")
        archive = keras.export.ExportArchive()
        archive.track(self.core)
        for layer in ("chars", "ngrams", "words"):
            archive.track(self.vectorizers[layer])
        archive.add_endpoint(SIGNATURE_NAME, self._predict, input_signature=None)
        tf.io.gfile.makedirs(str(tmp.parent))
        archive.write_out(str(tmp), verbose=False)
        meta = {
            "labels": list(LABELS),
            "version": int(version),
            "signature": SIGNATURE_NAME,
            "input": INPUT_KEY,
            "outputs": [OUTPUT_PROBABILITIES, OUTPUT_CLASS_IDS],
            "config": self.config.to_json(),
            **metadata,
        }
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        tmp.rename(target)
        return target


def train(
    train_texts: Sequence[str],
    train_labels: np.ndarray,
    val_texts: Sequence[str],
    val_labels: np.ndarray,
    config: ModelConfig | None = None,
    *,
    steps_per_epoch: int | None = None,
    verbose: int = 2,
    train_weights: np.ndarray | None = None,
    val_weights: np.ndarray | None = None,
) -> tuple[SentimentClassifier, TrainResult]:
    """Fit with early stopping on validation loss (best weights restored).

    ``train_weights``/``val_weights`` are per-example loss weights (see
    :func:`balanced_weights`); validation loss is weighted the same way so that
    early stopping optimises what training does.
    """
    import keras

    config = config or ModelConfig()
    t0 = time.perf_counter()
    core, vectorizers = build_model(train_texts, config)
    train_ds = _dataset(
        train_texts,
        train_labels,
        _vectorize_fn(vectorizers, config.wide_dropout),
        config.batch_size,
        config.seed,
        train_weights,
    )
    val_ds = _dataset(val_texts, val_labels, _vectorize_fn(vectorizers), 512, None, val_weights)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    if steps_per_epoch is not None:
        train_ds = train_ds.repeat()
    hist = core.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=[stop],
        shuffle=False,  # the dataset shuffles itself, once per epoch
        verbose=verbose,
    )
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    val_loss = history.get("val_loss", [0.0])
    result = TrainResult(
        model=core,
        history=history,
        epochs_run=len(val_loss),
        best_epoch=int(np.argmin(val_loss)) + 1,
        train_s=time.perf_counter() - t0,
        config=config,
        extra={"adapt_s": vectorizers["adapt_s"]},
    )
    return SentimentClassifier(core, vectorizers, config), result


def read_metadata(version_dir: Path) -> dict[str, Any]:
    path = Path(version_dir) / METADATA_FILE
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data
