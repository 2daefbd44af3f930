"""Seeded splits, training run, and the evaluation against TF-IDF baselines.

Splits are made per language (stratified 80/10/10, seed 13) from the cleaned
corpora of :mod:`recsys_tools.data.sentiment_corpora` (duplicates and contradicted
texts already removed there, so no test text also sits in training). The
model trains on both languages' training splits together and early-stops on
both validation splits; each baseline is fitted per language on training plus
validation (it has nothing to tune, so it gets all the data the model saw).
Every figure is computed on the test splits, which nothing else touches.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.sentiment.core import LABELS, NEGATIVE, POSITIVE

SPLIT_SEED = 13
TEST_FRACTION = 0.1
VAL_FRACTION = 0.1


@dataclass(frozen=True)
class Split:
    language: str
    train_texts: list[str]
    train_labels: np.ndarray
    val_texts: list[str]
    val_labels: np.ndarray
    test_texts: list[str]
    test_labels: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {
            "train": len(self.train_texts),
            "val": len(self.val_texts),
            "test": len(self.test_texts),
        }


def split_corpus(
    texts: Sequence[str], labels: np.ndarray, language: str, seed: int = SPLIT_SEED
) -> Split:
    """Stratified train/val/test split, the same for every run with the same seed."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(texts))
    rest, test = train_test_split(idx, test_size=TEST_FRACTION, random_state=seed, stratify=labels)
    train, val = train_test_split(
        rest,
        test_size=VAL_FRACTION / (1 - TEST_FRACTION),
        random_state=seed,
        stratify=labels[rest],
    )

    def pick(ix: np.ndarray) -> tuple[list[str], np.ndarray]:
        return [texts[i] for i in ix], labels[ix].astype(np.int64)

    (trx, trl), (vax, val_l), (tex, tel) = pick(train), pick(val), pick(test)
    return Split(language, trx, trl, vax, val_l, tex, tel)


def subsample(split: Split, n: int, seed: int = SPLIT_SEED) -> Split:
    """The first ``n`` of a shuffled training split (for quick runs); val/test capped too."""
    rng = np.random.default_rng(seed)

    def cap(texts: list[str], labels: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
        ix = rng.permutation(len(texts))[:k]
        return [texts[i] for i in ix], labels[ix]

    tr = cap(split.train_texts, split.train_labels, n)
    va = cap(split.val_texts, split.val_labels, max(n // 8, 50))
    te = cap(split.test_texts, split.test_labels, max(n // 8, 50))
    return Split(split.language, tr[0], tr[1], va[0], va[1], te[0], te[1])


def class_labels(language: str) -> list[int]:
    """Classes a language's corpus has: the Chinese corpus has no neutral texts."""
    return [NEGATIVE, POSITIVE] if language == "zh" else [0, 1, 2]


def score(y_true: np.ndarray, y_pred: np.ndarray, language: str) -> dict[str, Any]:
    """Accuracy, macro-F1 over the language's classes, per-class F1, confusion matrix.

    A neutral prediction on a Chinese review counts as an error (it is neither
    of the review's true classes); the confusion matrix is always 3x3 so it shows.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    classes = class_labels(language)
    per_class = f1_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(
            float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)), 4
        ),
        "f1_per_class": {
            LABELS[c]: round(float(f), 4) for c, f in zip(classes, per_class, strict=True)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=[0, 1, 2]).tolist(),
        "n": len(y_true),
    }


def tfidf_baselines(split: Split) -> dict[str, dict[str, Any]]:
    """TF-IDF of character 1-4-grams with logistic regression and multinomial NB.

    The regression weighs classes inversely to their frequency, as the model's loss
    does: the headline metric is macro-F1, and without the weights the minority class
    (English positive) pulls the baseline's macro-F1 down, which would flatter the model
    (both figures: docs/evaluation.md, "Sentiment classifier").
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import MultinomialNB

    t0 = time.perf_counter()
    vectorizer = TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=(1, 4),
        min_df=2,
        sublinear_tf=True,
        max_features=300_000,
        lowercase=True,
    )
    x_train = vectorizer.fit_transform(split.train_texts + split.val_texts)
    y_train = np.concatenate([split.train_labels, split.val_labels])
    x_test = vectorizer.transform(split.test_texts)
    fit_common = time.perf_counter() - t0
    out: dict[str, dict[str, Any]] = {}
    for name, clf in (
        ("tfidf_lr", LogisticRegression(C=4.0, max_iter=2000, class_weight="balanced")),
        ("tfidf_nb", MultinomialNB(alpha=0.1)),
    ):
        t1 = time.perf_counter()
        clf.fit(x_train, y_train)
        pred = clf.predict(x_test)
        result = score(split.test_labels, pred, split.language)
        result["fit_s"] = round(fit_common + time.perf_counter() - t1, 2)
        out[name] = result
    return out


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable line: accuracy and macro-F1 per language and system."""
    return {
        lang: {
            system: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}
            for system, r in report["languages"][lang].items()
        }
        for lang in report["languages"]
    }


def evaluate(
    predict_proba: Any,
    splits: dict[str, Split],
    *,
    baselines: bool = True,
    model_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score the model (``predict_proba(texts) -> [n, 3]``) and the baselines on the test splits."""
    languages: dict[str, dict[str, Any]] = {}
    for lang, split in splits.items():
        t0 = time.perf_counter()
        probs = np.asarray(predict_proba(split.test_texts))
        pred = probs.argmax(axis=1)
        model_result = score(split.test_labels, pred, lang)
        model_result["predict_s"] = round(time.perf_counter() - t0, 2)
        languages[lang] = {"model": model_result}
        if baselines:
            languages[lang].update(tfidf_baselines(split))
    return {
        "split_seed": SPLIT_SEED,
        "splits": {lang: s.sizes() for lang, s in splits.items()},
        "model_info": model_info or {},
        "languages": languages,
    }


def goals(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's two quality goals, checked against this run's figures."""
    langs = report["languages"]
    out: dict[str, Any] = {}
    if "zh" in langs:
        acc = langs["zh"]["model"]["accuracy"]
        out["zh_accuracy_ge_0.92"] = {"value": acc, "met": acc >= 0.92}
    if "en" in langs and "tfidf_lr" in langs["en"]:
        best = max(langs["en"][b]["macro_f1"] for b in ("tfidf_lr", "tfidf_nb"))
        f1 = langs["en"]["model"]["macro_f1"]
        out["en_macro_f1_ge_best_baseline_plus_0.02"] = {
            "value": f1,
            "best_baseline": best,
            "margin": round(f1 - best, 4),
            "met": f1 >= best + 0.02,
        }
    return out


def _matrix(rows: list[list[int]], language: str) -> str:
    classes = class_labels(language)
    head = "| true \\ predicted | " + " | ".join(LABELS) + " |"
    lines = [head, "|---|" + "---:|" * len(LABELS)]
    for c in classes:
        lines.append(f"| {LABELS[c]} | " + " | ".join(str(v) for v in rows[c]) + " |")
    return "\n".join(lines)


def render_card_sections(report: dict[str, Any]) -> str:
    """Markdown for the model card's generated part (metrics, confusion matrices)."""
    names = {"zh": "Chinese product reviews", "en": "English tweets"}
    systems = {
        "model": "char CNN + n-gram wide (this model)",
        "tfidf_lr": "TF-IDF char 1-4-grams + logistic regression",
        "tfidf_nb": "TF-IDF char 1-4-grams + multinomial NB",
    }
    out = [f"### Splits (seed {report['split_seed']}, stratified 80/10/10 per language)\n"]
    out.append("| language | train | val | test |\n|---|---:|---:|---:|")
    for lang, sizes in report["splits"].items():
        out.append(f"| {lang} | {sizes['train']} | {sizes['val']} | {sizes['test']} |")
    out.append("")
    for lang, results in report["languages"].items():
        out.append(f"### {names.get(lang, lang)} ({lang}), test split\n")
        out.append("| system | accuracy | macro-F1 | F1 per class |\n|---|---:|---:|---|")
        for system, r in results.items():
            per = ", ".join(f"{k} {v:.3f}" for k, v in r["f1_per_class"].items())
            out.append(
                f"| {systems.get(system, system)} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} "
                f"| {per} |"
            )
        out.append("\nConfusion matrix of the model:\n")
        out.append(_matrix(results["model"]["confusion"], lang))
        out.append("")
    out.append("### Goals\n")
    out.append("```json\n" + json.dumps(goals(report), indent=2) + "\n```")
    return "\n".join(out) + "\n"


CARD_BEGIN = "<!-- BEGIN GENERATED: recsys sentiment evaluate --card -->"
CARD_END = "<!-- END GENERATED -->"


def update_card(path: Path, report: dict[str, Any]) -> None:
    """Replace the generated block of the model card, keeping the hand-written rest."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    block = f"{CARD_BEGIN}\n{render_card_sections(report)}{CARD_END}"
    if CARD_BEGIN in text and CARD_END in text:
        head, _, rest = text.partition(CARD_BEGIN)
        _, _, tail = rest.partition(CARD_END)
        text = head + block + tail
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    path.write_text(text, encoding="utf-8")
