"""A learned abstention, measured (decision 85): logistic regression over several signals of a question's reranked
top hits, fitted on the tuning material only (the paraphrase set's tuning part + the fixed set of `bench/quality`),
its cut-off the most unanswerable declined with at most 5% of answerable refused there, reported on the held-out
part. Not the engine's decision: on held-out data it refused 5 of 32 answerable questions (the target is 5%), so
the thresholds of `search.abstention` stay. `paraphrase_run.py --fit-abstention` runs it.

The signals (`signals`): the best reranked score, its gap to the second, the best question-unit cosine and its
gap to the second best unit, the largest share of the question's content words one unit holds, the share the top
hits hold together, the best dense cosine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from contracts.messages import Hit
from models.lexical import terms, units
from models.similarity import Embed, cosine_matrix

NAMES = ("score", "score gap", "cosine", "cosine gap", "unit words", "hits words", "dense")
MAX_UNITS = 60  # the units of the top hits whose cosines are measured, the best hits' first
MAX_REFUSED = 0.05


def signals(query: str, hits: Sequence[Hit], embed: Embed) -> list[float]:
    """The `NAMES` signals of `query`'s reranked top `hits` (best first)."""
    asked = terms(query)
    texts = [m for h in hits for m, _ in units(h.text, h.modality)][:MAX_UNITS]
    cosines = np.sort(cosine_matrix(embed, [query], texts)[0])[::-1] if texts else np.zeros(1)
    scores = [h.score for h in hits] + [0.0, 0.0]
    together = set().union(*(terms(" ".join([*h.headings, h.text])) for h in hits))
    return [
        scores[0],
        scores[0] - scores[1],
        float(cosines[0]),
        float(cosines[0] - (cosines[1] if len(cosines) > 1 else 0.0)),
        max((len(asked & terms(t)) / max(len(asked), 1) for t in texts), default=0.0),
        len(asked & together) / max(len(asked), 1),
        max((h.dense_score or 0.0 for h in hits), default=0.0),
    ]


def _cutoff(p: np.ndarray, answerable: np.ndarray) -> float:
    """The highest probability cut-off that refuses at most `MAX_REFUSED` of the answerable questions."""
    allowed = MAX_REFUSED * answerable.sum()
    best = (0.0, -1)
    for c in np.unique(np.r_[p, 0.0]):
        declined = int(((p < c) & ~answerable).sum())
        if ((p < c) & answerable).sum() <= allowed and declined > best[1]:
            best = (float(c), declined)
    return best[0]


def _rate(p: np.ndarray, answerable: np.ndarray, cut: float) -> str:
    d, r = int(((p < cut) & ~answerable).sum()), int(((p < cut) & answerable).sum())
    u, a = int((~answerable).sum()), int(answerable.sum())
    return f"unanswerable declined {d}/{u} ({d / max(u, 1):.0%}), answerable refused {r}/{a} ({r / max(a, 1):.1%})"


def report(tuning: list[tuple[list[float], bool]], held_out: list[tuple[list[float], bool]]) -> list[str]:
    """Lines: the fitted weights (on the signals' own scale), the tuning figures (in-sample and 6-fold
    cross-validated), the held-out figures. Rows are (signals, answerable)."""
    x, y = np.array([s for s, _ in tuning]), np.array([a for _, a in tuning])
    xh, yh = np.array([s for s, _ in held_out]), np.array([a for _, a in held_out])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced"))
    folds = StratifiedKFold(6, shuffle=True, random_state=0)
    cv = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    model.fit(x, y)
    scaler, lr = model[0], model[1]
    weights = lr.coef_[0] / scaler.scale_
    bias = lr.intercept_[0] - float((lr.coef_[0] * scaler.mean_ / scaler.scale_).sum())
    p, ph = model.predict_proba(x)[:, 1], model.predict_proba(xh)[:, 1]
    cut = _cutoff(p, y)
    return [
        "weights: " + ", ".join(f"{n} {w:+.2f}" for n, w in zip(NAMES, weights, strict=True)) + f", bias {bias:+.2f}; "
        f"answerable when p >= {cut:.3f}",
        f"tuning, in-sample     {_rate(p, y, cut)}",
        f"tuning, 6-fold cv     {_rate(cv, y, _cutoff(cv, y))}",
        f"held-out              {_rate(ph, yh, cut)}",
    ]
