# SPDX-License-Identifier: Apache-2.0
"""Image-side bounds per lesion attribute tag: is the tag in the image embeddings at all?

A zero-shot attribute AUC near 0.5 can mean the text side cannot name the tag, or that the
image tower never saw it. These bounds answer the second: a logistic-regression probe trained on
the model's own image embeddings of the train split (class-balanced) and scored on another split,
and, when the model has supervised attribute heads, the head's AUC. `sonofm diagnose` prints them
beside the zero-shot scores; `zeroshot_attributes_learnable` uses them, measured on the
validation split, to choose which tags a zero-shot headline may fairly average over.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sonofm.eval.tasks.base import EvalContext, Task, TaskResult, register_task
from sonofm.eval.tasks.zeroshot import (
    DESCRIPTOR_DIMS,
    _lesion_mask,
    attribute_scores,
    check_scoring,
    mean_column_auc,
)
from sonofm.stats import metrics as M


def tag_matrix(rows: Any) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Lesion rows' descriptor tags: (names "dim/tag", labels (N, T), lesion mask (N,))."""
    lesion = _lesion_mask(rows)
    names = sorted(
        {
            f"{d}/{t}"
            for a in rows["attributes"][lesion]
            for d in DESCRIPTOR_DIMS
            for t in ((a or {}).get(d) or ())
        }
    )
    y = np.zeros((len(rows), len(names)), dtype=np.int64)
    index = {n: j for j, n in enumerate(names)}
    for i, a in enumerate(rows["attributes"]):
        for d in DESCRIPTOR_DIMS:
            for t in (a or {}).get(d) or ():
                j = index.get(f"{d}/{t}")
                if j is not None:
                    y[i, j] = 1
    return names, y, lesion


def head_scores(ctx: EvalContext, split: str) -> tuple[list[str], np.ndarray] | None:
    """The attribute head's logits on a split's image embeddings (None without such a head)."""
    model = ctx.model
    heads = getattr(model, "heads", None)
    classes = getattr(getattr(model, "config", None), "heads", {}).get("attributes")
    if heads is None or not classes or "attributes" not in heads:
        return None
    emb = torch.from_numpy(ctx.embeddings[split].image).float()
    param = next(heads.parameters())
    with torch.no_grad():
        logits = model.head_logits(emb.to(param.device, param.dtype))["head/attributes"]
    return list(classes), logits.float().cpu().numpy()


def attribute_bounds(
    ctx: EvalContext, train_split: str = "train", test_split: str = "test"
) -> dict[str, dict[str, float]]:
    """Per tag of `test_split`'s lesions: positives, n, probe AUC (train -> test) and head AUC."""
    from sklearn.linear_model import LogisticRegression  # lazy: sklearn is slow; only this bound uses it

    out: dict[str, dict[str, float]] = {}
    if not (ctx.has_split(train_split) and ctx.has_split(test_split)):
        return out
    tr_rows, te_rows = ctx.rows(train_split), ctx.rows(test_split)
    names, y_te, les_te = tag_matrix(te_rows)
    tr_names, y_tr_all, les_tr = tag_matrix(tr_rows)
    tr_index = {n: j for j, n in enumerate(tr_names)}
    x_tr = ctx.embeddings[train_split].image[les_tr]
    x_te = ctx.embeddings[test_split].image[les_te]
    heads = head_scores(ctx, test_split)
    for j, name in enumerate(names):
        y = y_te[les_te, j]
        if y.min() == y.max() or name not in tr_index:
            continue
        y_tr = y_tr_all[les_tr, tr_index[name]]
        entry: dict[str, float] = {"positives": float(y.sum()), "n": float(len(y))}
        if y_tr.min() != y_tr.max():
            probe = LogisticRegression(max_iter=2000, C=1.0, class_weight="balanced").fit(x_tr, y_tr)
            entry["linear_probe_auc"] = float(M._auc_rank(y, probe.decision_function(x_te)))
        head_key = name.replace("/", ":")
        if heads is not None and head_key in heads[0]:
            entry["head_auc"] = float(M._auc_rank(y, heads[1][les_te, heads[0].index(head_key)]))
        out[name] = entry
    return out


def learnable(
    bounds: dict[str, dict[str, float]], *, threshold: float = 0.9, min_positives: int = 5
) -> dict[str, float]:
    """Tags whose best image-side bound reaches `threshold` on enough positives: {tag: bound}."""
    out = {}
    for name, entry in bounds.items():
        found = [entry[k] for k in ("linear_probe_auc", "head_auc") if k in entry and entry[k] == entry[k]]
        enough = min(entry["positives"], entry["n"] - entry["positives"]) >= min_positives
        if found and enough and max(found) >= threshold:
            out[name] = max(found)
    return out


@register_task
class ZeroShotLearnableAttributes(Task):
    """Zero-shot attribute AUC over the tags the model's own image side shows are learnable.

    The selection is made on `select_split` (validation), never on the split scored: a tag counts
    when its best image-side bound (probe on the image embeddings, or the supervised head)
    reaches `threshold` there with at least `min_positives` positives and negatives. The result
    names the tags, their bounds and how many there were, so a high mean over two tags reads as
    what it is.
    """

    kind = "zeroshot_attributes_learnable"

    def __init__(
        self,
        split: str = "test",
        select_split: str = "val",
        train_split: str = "train",
        threshold: float = 0.9,
        min_positives: int = 5,
        scoring: str = "dimension",
        name: str | None = None,
    ) -> None:
        super().__init__(name or "zeroshot/attributes_learnable")
        self.split, self.select_split, self.train_split = split, select_split, train_split
        self.threshold, self.min_positives = float(threshold), int(min_positives)
        self.scoring = check_scoring(scoring)
        self.splits = (train_split, select_split, split)

    def run(self, ctx: EvalContext) -> TaskResult:
        res = self.result()
        if not all(ctx.has_split(s) for s in self.splits):
            res.skipped = f"needs image embeddings of the {', '.join(self.splits)} splits"
            return res
        bounds = attribute_bounds(ctx, self.train_split, self.select_split)
        chosen = learnable(bounds, threshold=self.threshold, min_positives=self.min_positives)
        res.info.update(
            select_split=self.select_split,
            threshold=self.threshold,
            bounds={k: round(v, 4) for k, v in sorted(chosen.items())},
            n_tags=len(chosen),
            scoring=self.scoring,
        )
        rows = ctx.rows(self.split)
        names, labels, lesion = tag_matrix(rows)
        rows_l = rows[lesion]
        column = {n: j for j, n in enumerate(names)}
        y_all = {n: labels[lesion, column[n]] if n in column else np.zeros(int(lesion.sum())) for n in chosen}
        scored = [n for n in chosen if 0 < y_all[n].sum() < len(y_all[n])]
        if not scored:
            res.skipped = (
                f"no tag reaches an image-side AUC of {self.threshold} on {self.select_split} "
                f"(with >= {self.min_positives} positives) and has both classes in {self.split}"
            )
            return res
        img = ctx.embeddings[self.split].image[lesion]
        s = attribute_scores(ctx, img, scored, self.scoring)
        y = np.stack([y_all[n] for n in scored], axis=1)
        g = ctx.groups(rows_l)
        for k, name in enumerate(scored):
            ctx.add_metric(res, f"auc/{name}", M.binary_auc, y[:, k], s[:, k], groups=g)
        ctx.add_metric(res, "mean_auc", mean_column_auc, y, s, groups=g)
        res.info["tags"] = scored
        return res
