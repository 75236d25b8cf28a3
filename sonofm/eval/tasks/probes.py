"""Probes on frozen image embeddings: linear (logistic regression), kNN, and regression (Ridge).

Linear probe protocol (CLIP / Ultrasound-CLIP): C chosen on the val split from a log grid, then
the model is refit on train+val with that C and scored once on test. k-shot probes draw whole
training *patients* (seeded) until the requested fraction of training images is reached, choose
C on val and fit on the subset only. kNN follows DINO/dinov2 (`eval/knn.py`): cosine similarity,
top-k neighbours voting with weights exp(sim / T). Every classifier reports acc1, balanced
accuracy, macro AUC and ECE (calibration) with bootstrap CIs over test images.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from sonofm.eval.tasks.base import EvalContext, Task, TaskResult, label_values, register_task
from sonofm.stats import metrics as M
from sonofm.stats.health import prediction_health

log = logging.getLogger(__name__)

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
DEFAULT_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def _labelled(ctx: EvalContext, split: str, target: str) -> tuple[np.ndarray, np.ndarray, object]:
    if not ctx.has_split(split):
        return np.zeros((0, 1), np.float32), np.zeros(0, dtype=object), None
    rows = ctx.rows(split)
    y = label_values(rows, target)
    keep = np.array([v is not None for v in y], dtype=bool)
    return ctx.embeddings[split].image[keep], y[keep], rows[keep]


def _fit_logreg(x: np.ndarray, y: np.ndarray, c: float, seed: int, max_iter: int, init=None):
    """L2 logistic regression; ``init`` (a fitted probe on the same classes) starts L-BFGS from its
    solution (the problem is convex: same optimum, far fewer iterations for weakly regularised C)."""
    from sklearn.exceptions import ConvergenceWarning  # lazy: sklearn is slow; only probes that run fit
    from sklearn.linear_model import LogisticRegression  # lazy: sklearn is slow; only probes that run fit

    clf = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    if init is not None and list(init.classes_) == sorted(set(y.tolist())):
        clf.set_params(warm_start=True)
        clf.coef_, clf.intercept_ = init.coef_.copy(), init.intercept_.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(x, y)


def _proba_full(clf, x: np.ndarray, classes: list[str]) -> np.ndarray:
    """predict_proba with columns for every class in `classes` (absent ones get 0)."""
    p = clf.predict_proba(x)
    out = np.zeros((len(x), len(classes)))
    for j, c in enumerate(clf.classes_):
        out[:, classes.index(c)] = p[:, j]
    return out


def _drop_unseen(res: TaskResult, x: np.ndarray, y: np.ndarray, rows, classes: list[str]):
    """Test rows whose class is in `classes`; the dropped classes and counts go into res.info."""
    known = np.isin(y, classes) if len(y) else np.zeros(0, dtype=bool)
    if len(y) and not known.all():
        unseen, counts = np.unique(y[~known].astype(str), return_counts=True)
        res.info["test_unseen_classes"] = {str(c): int(k) for c, k in zip(unseen, counts, strict=True)}
        res.info["test_unseen_class_dropped"] = int((~known).sum())
    return x[known], y[known], (rows[known] if rows is not None else rows)


def _no_test_left(target: str, res: TaskResult) -> str:
    unseen = res.info.get("test_unseen_classes")
    if unseen:
        names = ", ".join(sorted(unseen))
        return f"no labelled test image of {target!r} has a class seen in training (test only: {names})"
    return f"no labelled test images of {target!r}"


def _scorable_test(res: TaskResult, target: str, train_labels, classes: list[str], test: tuple):
    """The test (x, y, rows) of classes seen in training, or None (``res.skipped`` says why) when
    training has fewer than 2 classes or no test image is left.

    Test images of classes the probe never saw cannot be scored: they are dropped (and named in
    ``res.info``) before checking that something is left (the old order crashed on an empty test set).
    """
    if len(set(train_labels)) < 2:
        res.skipped = f"needs >= 2 training classes of {target!r}"
        return None
    x, y, rows = _drop_unseen(res, *test, classes)
    if len(y) == 0:
        res.skipped = _no_test_left(target, res)
        return None
    return x, y, rows


def sample_patients(patient_ids: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Row indices of whole patients drawn (seeded) until >= fraction of rows; >= 2 classes if possible."""
    rng = np.random.default_rng(seed)
    patients = np.unique(patient_ids)
    order = rng.permutation(patients)
    target = max(1, int(np.ceil(fraction * len(patient_ids))))
    chosen: list[int] = []
    for p in order:
        chosen.extend(np.flatnonzero(patient_ids == p).tolist())
        if len(chosen) >= target and len(set(labels[chosen])) >= min(2, len(set(labels))):
            break
    return np.array(sorted(chosen), dtype=np.int64)


@register_task
class LinearProbe(Task):
    """Logistic-regression probe of `target`, full data and k-shot fractions of the training set."""

    kind = "linear_probe"

    def __init__(
        self,
        target: str = "diagnosis",
        cs: list[float] | tuple[float, ...] = DEFAULT_CS,
        shots: list[float] | tuple[float, ...] = (),
        max_iter: int = 1000,
        name: str | None = None,
    ) -> None:
        super().__init__(name or f"linear_probe/{target}")
        self.target, self.cs, self.shots, self.max_iter = target, tuple(cs), tuple(shots), max_iter
        self.splits = ("train", "val", "test")

    def _select_c(self, ctx, xtr, ytr, xva, yva):
        """(best C on validation, validation scores, the probe fitted with it or None)."""
        if len(yva) == 0 or len(set(ytr)) < 2:
            return 1.0, {}, None
        scores = {}
        fitted = {}
        previous = None
        for c in sorted(self.cs):  # a regularisation path: each fit starts from the last solution
            previous = _fit_logreg(xtr, ytr, c, ctx.seed, self.max_iter, init=previous)
            fitted[c] = previous
            scores[str(c)] = float(M.balanced_accuracy(yva, previous.predict(xva)))
        best = max(self.cs, key=lambda c: (scores[str(c)], -abs(np.log10(c))))
        return float(best), scores, fitted[best]

    def run(self, ctx: EvalContext) -> TaskResult:
        res = self.result()
        xtr, ytr, rtr = _labelled(ctx, "train", self.target)
        xva, yva, _ = _labelled(ctx, "val", self.target)
        xte, yte, rte = _labelled(ctx, "test", self.target)
        classes = sorted(set(ytr) | set(yva))
        test = _scorable_test(res, self.target, ytr, classes, (xte, yte, rte))
        if test is None:
            return res
        xte, yte, rte = test
        y_idx = np.array([classes.index(v) for v in yte])
        g = ctx.groups(rte)
        c, val_scores, start = self._select_c(ctx, xtr, ytr, xva, yva)
        x_fit = np.concatenate([xtr, xva]) if len(yva) else xtr
        y_fit = np.concatenate([ytr, yva]) if len(yva) else ytr
        clf = _fit_logreg(x_fit, y_fit, c, ctx.seed, self.max_iter, init=start)
        probs = _proba_full(clf, xte, classes)
        ctx.add_classification_metrics(res, y_idx, probs, g)
        res.info.update(classes=classes, C=c, val_balanced_accuracy=val_scores, n_train=len(y_fit))
        res.info.update(n_patients=M.n_groups(g), health=prediction_health(y_idx, probs, classes))
        res.plots.update(y=y_idx, probs=probs, classes=classes)
        pids = rtr["patient_id"].to_numpy()
        for f in self.shots:
            sub = sample_patients(pids, ytr, float(f), ctx.seed)
            if len(set(ytr[sub])) < 2:
                res.info[f"shots/{f:g}"] = "skipped: fewer than 2 classes in the sampled patients"
                continue
            cf, _, clf_f = self._select_c(ctx, xtr[sub], ytr[sub], xva, yva)
            if clf_f is None:
                clf_f = _fit_logreg(xtr[sub], ytr[sub], cf, ctx.seed, self.max_iter)
            pf = _proba_full(clf_f, xte, classes)
            ctx.add_classification_metrics(res, y_idx, pf, g, prefix=f"{100 * float(f):g}pct/")
            res.info[f"shots/{f:g}"] = {"n_train": len(sub), "C": cf}
        return res


def knn_scores(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, n_classes: int, k: int, temperature: float
) -> np.ndarray:
    """(N, C) class probabilities from weighted top-k voting (dinov2 `eval/knn.py`)."""
    k = min(k, len(train_x))
    sims = test_x @ train_x.T  # (N, M) cosine: embeddings are normalised
    nn = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    w = np.exp(np.take_along_axis(sims, nn, 1) / temperature)
    votes = np.zeros((len(test_x), n_classes))
    np.add.at(votes, (np.repeat(np.arange(len(test_x)), k), train_y[nn].ravel()), w.ravel())
    return votes / votes.sum(1, keepdims=True)


@register_task
class KNNProbe(Task):
    """Weighted kNN classification of `target` with train images as the memory bank."""

    kind = "knn_probe"

    def __init__(
        self, target: str = "diagnosis", k: int = 20, temperature: float = 0.07, name: str | None = None
    ) -> None:
        super().__init__(name or f"knn/{target}")
        self.target, self.k, self.temperature = target, int(k), float(temperature)
        self.splits = ("train", "test")

    def run(self, ctx: EvalContext) -> TaskResult:
        res = self.result()
        xtr, ytr, _ = _labelled(ctx, "train", self.target)
        xte, yte, rte = _labelled(ctx, "test", self.target)
        classes = sorted(set(ytr))
        test = _scorable_test(res, self.target, ytr, classes, (xte, yte, rte))
        if test is None:
            return res
        xte, yte, rte = test
        ytr_i = np.array([classes.index(v) for v in ytr])
        y_idx = np.array([classes.index(v) for v in yte])
        probs = knn_scores(xtr, ytr_i, xte, len(classes), self.k, self.temperature)
        g = ctx.groups(rte)
        ctx.add_classification_metrics(res, y_idx, probs, g)
        res.info.update(classes=classes, k=min(self.k, len(xtr)), n_train=len(xtr))
        res.info.update(n_patients=M.n_groups(g), health=prediction_health(y_idx, probs, classes))
        res.plots.update(y=y_idx, probs=probs, classes=classes)
        return res


def _measurement(rows, name: str) -> np.ndarray:
    return np.array(
        [
            float(m[name]) if isinstance(m, dict) and m.get(name) is not None else np.nan
            for m in rows["measurements"]
        ]
    )


@register_task
class RegressionProbe(Task):
    """Ridge regression of measurements (e.g. lvef_pct) from image embeddings: MAE and R^2."""

    kind = "regression_probe"

    def __init__(
        self,
        targets: list[str] | tuple[str, ...] = ("lvef_pct",),
        alphas: list[float] | tuple[float, ...] = DEFAULT_ALPHAS,
        min_train: int = 5,
        name: str | None = None,
    ) -> None:
        super().__init__(name or "regression_probe")
        self.targets, self.alphas, self.min_train = tuple(targets), tuple(alphas), int(min_train)
        self.splits = ("train", "val", "test")

    def run(self, ctx: EvalContext) -> TaskResult:
        from sklearn.linear_model import Ridge  # lazy: sklearn is slow to import; only a run fits it

        res = self.result()
        data = {}
        for s in ("train", "val", "test"):
            if ctx.has_split(s):
                data[s] = (ctx.embeddings[s].image, ctx.rows(s))
        if "train" not in data or "test" not in data:
            res.skipped = "needs train and test splits"
            return res
        done = []
        for t in self.targets:
            parts = {}
            for s, (x, rows) in data.items():
                y = _measurement(rows, t)
                m = ~np.isnan(y)
                parts[s] = (x[m], y[m], rows[m])
            xtr, ytr, _ = parts["train"]
            xte, yte, rte = parts["test"]
            if len(ytr) < self.min_train or len(yte) < 2:
                res.info[t] = f"skipped: {len(ytr)} train / {len(yte)} test values"
                continue
            alpha = 1.0
            if "val" in parts and len(parts["val"][1]):
                xva, yva, _ = parts["val"]
                errs = {a: M.mae(yva, Ridge(alpha=a).fit(xtr, ytr).predict(xva)) for a in self.alphas}
                alpha = min(errs, key=errs.get)
                xtr, ytr = np.concatenate([xtr, xva]), np.concatenate([ytr, yva])
            pred = Ridge(alpha=alpha).fit(xtr, ytr).predict(xte)
            g = ctx.groups(rte)
            ctx.add_metric(res, f"{t}/mae", M.mae, yte, pred, groups=g, higher_is_better=False)
            ctx.add_metric(res, f"{t}/r2", M.r2, yte, pred, groups=g)
            res.info[t] = {"alpha": alpha, "n_train": len(ytr), "n_test": len(yte)}
            res.plots.setdefault("scatter", {})[t] = (yte, pred)
            done.append(t)
        if not done:
            res.skipped = "no measurement target has enough values"
        return res
