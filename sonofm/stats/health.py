"""Detectors of models that look fine in a table but are not: collapse and anti-correlation.

Why: an untrained or broken zero-shot classifier often predicts one class for almost every image
(accuracy = that class's share, which can look respectable), or ranks classes the wrong way round
(AUC well below 0.5). Neither shows in an accuracy number alone, so every classification task
records `prediction_health` in its info and the reading turns it into a sentence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# A model "collapsed" when it puts at least this share of images in one class, and that class is
# predicted at least COLLAPSE_EXCESS more often than it truly occurs (so an imbalanced test set
# that the model follows is not called collapse).
COLLAPSE_SHARE = 0.7
COLLAPSE_EXCESS = 0.2


def prediction_health(y: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Entropy and majority share of the predicted classes, against those of the true classes.

    y: (N,) true class indices; probs: (N, C) scores. `entropy` is the normalised entropy of the
    predicted-class histogram (1 = predictions spread evenly over all C classes, 0 = one class).
    """
    y = np.asarray(y)
    pred = np.asarray(probs).argmax(1)
    c = len(classes)
    n = int(len(pred))
    if n == 0 or c < 2:
        return {"n": n, "collapsed": False}
    hist = np.bincount(pred, minlength=c) / n
    nz = hist[hist > 0]
    entropy = max(0.0, float(-(nz * np.log(nz)).sum() / math.log(c)))
    top = int(hist.argmax())
    true_share = float(np.mean(y == top))
    share = float(hist[top])
    return {
        "n": n,
        "entropy": round(entropy, 4),
        "majority_class": str(classes[top]),
        "majority_share": round(share, 4),
        "majority_true_share": round(true_share, 4),
        "n_predicted_classes": int((hist > 0).sum()),
        "n_classes": c,
        "collapsed": bool(share >= COLLAPSE_SHARE and share - true_share >= COLLAPSE_EXCESS),
    }


def chance_relation(
    value: float | None, low: float | None, high: float | None, chance: float | None, tol: float | None = None
) -> str | None:
    """ "below", "at" or "above" chance for a higher-is-better score; None if there is no chance level.

    With a CI the interval decides (below: the whole interval under chance; above: the whole
    interval over it; else at chance). Without one, the value must differ from chance by more than
    `tol` (default max(0.02, 10% of chance)).
    """
    if value is None or chance is None or (isinstance(value, float) and math.isnan(value)):
        return None
    ok_ci = low is not None and high is not None and not (math.isnan(low) or math.isnan(high))
    if ok_ci:
        if high < chance:  # type: ignore[operator]
            return "below"
        if low > chance:  # type: ignore[operator]
            return "above"
        return "at"
    t = max(0.02, 0.1 * chance) if tol is None else tol
    if value < chance - t:
        return "below"
    if value > chance + t:
        return "above"
    return "at"
