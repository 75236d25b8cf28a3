"""Zero-shot tasks: classification with prompt ensembles, multi-label attributes, finding detection.

Classification follows CLIP / CLIP_benchmark: class weight = mean of the class's normalised
prompt embeddings, renormalised; logits = logit_scale * image . weight; acc1, balanced accuracy
(mean per-class recall) and macro one-vs-rest AUC. Finding detection follows docs/methods.md section 2:
paired positive/negated prompts, p(finding) = softmax over {pos, neg} with the model's logit scale.
A lesion attribute tag is scored the same way against its alternatives: its probability under
the zero-shot classifier of its dimension (:func:`attribute_scores`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sonofm import taxonomy as tx
from sonofm.eval.tasks.base import EvalContext, SplitTask, TaskResult, label_values, register_task, softmax
from sonofm.reports import prompts as P
from sonofm.reports.prompts import class_prompts
from sonofm.stats import metrics as M
from sonofm.stats.health import prediction_health
from sonofm.stats.metrics import n_groups

DESCRIPTOR_DIMS = ("shape", "margin", "echogenicity", "internal", "posterior", "vascularity")


def class_members(target: str, cls: str) -> list[list[str]]:
    """The prompt ensembles whose best match scores class `cls`: one per organ for a region.

    A region is a set of organs (abdomen: gallbladder, spleen, pancreas, ...). Averaging their
    prompts into one class vector points between organs, where no image lies; scoring a region
    by its best-matching organ is the hierarchy read the way it is defined.
    """
    if target == "region":
        members = [P.organ_prompts(o.id) for o in tx.organs_in(cls)]
        if cls == "heart":
            # an echocardiogram in any standard view is an image of the heart, and echo reports and
            # captions say "echocardiogram ... view" far more often than "ultrasound of the heart"
            members += [P.view_prompts(v) for v in tx.VIEWS]
        if members:
            return members
    return [class_prompts(target, cls)]


def class_logits(ctx: EvalContext, img: np.ndarray, target: str, classes: list[str]) -> np.ndarray:
    """(N, C) cosine logits: for each class, the best of its members' prompt-ensemble weights."""
    members = [class_members(target, c) for c in classes]
    w = ctx.class_weights([m for ms in members for m in ms])
    scores = img @ w.T
    out = np.empty((img.shape[0], len(classes)), dtype=scores.dtype)
    start = 0
    for j, ms in enumerate(members):
        out[:, j] = scores[:, start : start + len(ms)].max(axis=1)
        start += len(ms)
    return out


ATTRIBUTE_SCORING = ("dimension", "cosine")


def check_scoring(scoring: str) -> str:
    """``scoring`` if it names a rule of :func:`attribute_scores` (a suite typo fails at load)."""
    if scoring not in ATTRIBUTE_SCORING:
        raise ValueError(f"attribute scoring {scoring!r}: expected one of {ATTRIBUTE_SCORING}")
    return scoring


def attribute_scores(
    ctx: EvalContext, img: np.ndarray, names: list[str], scoring: str = "dimension"
) -> np.ndarray:
    """(N, len(names)) zero-shot scores of lesion tags named "dimension/tag".

    "dimension" (default): the tag's softmax probability among all tags of its dimension, at the
    model's logit scale: the CLIP zero-shot classifier of that dimension, as finding detection
    scores a finding against its negation. "cosine": image . tag weight alone. Why not the cosine:
    every tag prompt also carries what all lesion prompts share ("an ultrasound image of a ...
    lesion"), and that part's cosine with an image follows the organ more than the finding, so
    pooled over the lesions of eleven regions a tag's AUC measured mostly which organs resemble its
    prompt. The softmax over the dimension cancels what the dimension's prompts share.
    """
    if check_scoring(scoring) == "cosine":
        return img @ ctx.class_weights([P.attribute_prompts(*n.split("/")) for n in names]).T
    out = np.zeros((len(img), len(names)))
    for dim in dict.fromkeys(n.split("/")[0] for n in names):
        tags = [t.id for t in tx.tags(dim)]
        w = ctx.class_weights([P.attribute_prompts(dim, t) for t in tags])
        probs = softmax(ctx.logit_scale * (img @ w.T), axis=1)
        for k, name in enumerate(names):
            if name.split("/")[0] == dim:
                out[:, k] = probs[:, tags.index(name.split("/")[1])]
    return out


def _lesion_mask(rows) -> np.ndarray:
    """Rows with any descriptor tag: the population on which attribute AUCs are meaningful."""
    return np.array([any((a or {}).get(d) for d in DESCRIPTOR_DIMS) for a in rows["attributes"]], dtype=bool)


def mean_column_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Mean over columns of the per-column binary AUC (columns with one class are ignored)."""
    aucs = [M._auc_rank(y[:, j], s[:, j]) for j in range(y.shape[1])]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


@register_task
class ZeroShotClassification(SplitTask):
    """Single-label zero-shot classification of `target` (diagnosis, organ, region, view, ...)."""

    kind = "zeroshot_classification"

    def __init__(self, target: str = "diagnosis", split: str = "test", name: str | None = None) -> None:
        super().__init__(name or f"zeroshot/{target}", split)
        self.target = target

    def run_split(self, ctx: EvalContext, res: TaskResult, rows: pd.DataFrame) -> TaskResult:
        labels = label_values(rows, self.target)
        keep = np.array([v is not None for v in labels])
        # the class set is every label of the whole manifest, so it does not depend on the split
        classes = sorted({v for v in label_values(ctx.df, self.target) if v is not None})
        if len(classes) < 2 or not keep.any():
            res.skipped = f"needs >= 2 classes of {self.target!r} and labelled {self.split} images"
            return res
        img = ctx.embeddings[self.split].image[keep]
        probs = softmax(ctx.logit_scale * class_logits(ctx, img, self.target, classes))
        y = np.array([classes.index(v) for v in labels[keep]])
        g = ctx.groups(rows[keep])
        ctx.add_classification_metrics(res, y, probs, g)
        conf = np.zeros((len(classes), len(classes)), dtype=np.int64)
        np.add.at(conf, (y, probs.argmax(1)), 1)
        res.info.update(
            classes=classes,
            n=int(keep.sum()),
            n_patients=n_groups(g),
            confusion=conf.tolist(),
            health=prediction_health(y, probs, classes),
        )
        res.plots.update(y=y, probs=probs, classes=classes, confusion=conf)
        return res


@register_task
class ZeroShotAttributes(SplitTask):
    """Multi-label attribute recognition: per tag, AUC over lesion images of its zero-shot score
    (:func:`attribute_scores`: its probability within its dimension, or the bare cosine)."""

    kind = "zeroshot_attributes"

    def __init__(
        self,
        dimensions: list[str] | None = None,
        split: str = "test",
        min_positives: int = 1,
        scoring: str = "dimension",
        name: str | None = None,
    ) -> None:
        super().__init__(name or "zeroshot/attributes", split)
        self.dimensions = tuple(dimensions or DESCRIPTOR_DIMS)
        bad = [d for d in self.dimensions if d not in tx.DIMENSIONS]
        if bad:
            raise ValueError(f"unknown attribute dimensions {bad}; expected some of {tx.DIMENSIONS}")
        self.min_positives = min_positives
        self.scoring = check_scoring(scoring)

    def run_split(self, ctx: EvalContext, res: TaskResult, rows: pd.DataFrame) -> TaskResult:
        lesion = _lesion_mask(rows)
        if lesion.sum() < 2:
            res.skipped = "fewer than 2 lesion images with attributes"
            return res
        rows_l = rows[lesion]
        img = ctx.embeddings[self.split].image[lesion]
        g = ctx.groups(rows_l)
        per_dim: dict[str, list[str]] = {}
        ctx.encode_texts(
            [p for d in self.dimensions for t in tx.tags(d) for p in P.attribute_prompts(d, t.id)]
        )
        for dim in self.dimensions:
            tags = [t.id for t in tx.tags(dim)]
            y = np.array([[t in (a or {}).get(dim, []) for t in tags] for a in rows_l["attributes"]])
            ok = [j for j in range(len(tags)) if self.min_positives <= y[:, j].sum() < len(y)]
            if not ok:
                continue
            s = attribute_scores(ctx, img, [f"{dim}/{tags[j]}" for j in ok], self.scoring)
            per_dim[dim] = [tags[j] for j in ok]
            for k, j in enumerate(ok):
                ctx.add_metric(res, f"auc/{dim}/{tags[j]}", M.binary_auc, y[:, j], s[:, k], groups=g)
            ctx.add_metric(res, f"mean_auc/{dim}", mean_column_auc, y[:, ok], s, groups=g)
        res.info.update(n=int(lesion.sum()), tags=per_dim, scoring=self.scoring)
        if not per_dim:
            res.skipped = "no attribute tag has both positive and negative lesion images"
        return res


def _echo_label(st: object, meas: object, sex: object, tag: str) -> bool | None:
    for f in st.get("findings", []) if isinstance(st, dict) else []:
        if f.get("dimension") == "echo" and f.get("tag") == tag and f.get("status") in ("present", "absent"):
            return f["status"] == "present"
    if meas:
        # no structured ground truth: derive it from the measurements by the guideline rules
        for r in tx.evaluate_guidelines(dict(meas), sex if isinstance(sex, str) else None):
            if r.finding == tag:
                return r.present
    return None


def finding_labels(rows, dim: str, tag: str) -> np.ndarray:
    """1 present / 0 absent / -1 unknown per row, for an echo finding or a descriptor tag."""
    out = np.full(len(rows), -1, dtype=np.int64)
    if dim == "echo":
        sexes = rows["sex"] if "sex" in rows.columns else [None] * len(rows)
        for i, (st, meas, sex) in enumerate(
            zip(rows["structured"], rows["measurements"], sexes, strict=True)
        ):
            found = _echo_label(st, meas, sex, tag)
            if found is not None:
                out[i] = int(found)
        return out
    lesion = _lesion_mask(rows)
    for i, a in enumerate(rows["attributes"]):
        if lesion[i]:
            out[i] = int(tag in (a or {}).get(dim, []))
    return out


def mean_masked_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean over columns of the AUC on rows whose label is known (>= 0); undefined columns ignored."""
    aucs = []
    for j in range(labels.shape[1]):
        m = labels[:, j] >= 0
        a = M._auc_rank(labels[m, j], scores[m, j])
        if not np.isnan(a):
            aucs.append(a)
    return float(np.mean(aucs)) if aucs else float("nan")


@register_task
class ZeroShotFindings(SplitTask):
    """Finding detection with positive/negated prompt pairs: AUC per finding (echo + descriptors)."""

    kind = "zeroshot_findings"

    def __init__(
        self, echo: bool = True, tags: bool = True, split: str = "test", name: str | None = None
    ) -> None:
        super().__init__(name or "zeroshot/findings", split)
        self.echo, self.tags = echo, tags

    def run_split(self, ctx: EvalContext, res: TaskResult, rows: pd.DataFrame) -> TaskResult:
        img_all = ctx.embeddings[self.split].image
        pairs = P.all_prompt_pairs(include_tags=self.tags)
        # encode every prompt in one batched pass (per-pair calls would pay the model's call overhead)
        ctx.encode_texts([t for pr in pairs.values() for t in (*pr.positive, *pr.negative)])
        scale = ctx.logit_scale
        cols: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"echo": [], "tags": []}
        evaluated: list[str] = []
        for (dim, tag), pair in pairs.items():
            if dim == "echo" and not self.echo:
                continue
            lab = finding_labels(rows, dim, tag)
            m = lab >= 0
            if m.sum() < 2 or lab[m].min() == lab[m].max():
                continue
            w = ctx.class_weights([list(pair.positive), list(pair.negative)])  # (2, D)
            p = softmax(scale * img_all @ w.T)[:, 0]  # (N,) p(finding) for every row
            name = f"{dim}/{tag}"
            ctx.add_metric(res, f"auc/{name}", M.binary_auc, lab[m], p[m], groups=ctx.groups(rows[m]))
            res.plots.setdefault("roc", {})[name] = (lab[m], p[m])
            cols["echo" if dim == "echo" else "tags"].append((lab, p))
            evaluated.append(name)
        g = ctx.groups(rows)
        for group, parts in cols.items():
            if not parts:
                continue
            lab_mat = np.stack([c[0] for c in parts], 1)
            p_mat = np.stack([c[1] for c in parts], 1)
            ctx.add_metric(res, f"mean_auc/{group}", mean_masked_auc, lab_mat, p_mat, groups=g)
            known = lab_mat >= 0
            g_known = None if g is None else np.broadcast_to(g[:, None], lab_mat.shape)[known]
            ctx.add_metric(
                res,
                f"ece/{group}",
                M.expected_calibration_error,
                lab_mat[known],
                p_mat[known],
                groups=g_known,
                higher_is_better=False,
            )
        res.info["findings"] = evaluated
        if not evaluated:
            res.skipped = "no finding has both present and absent labels"
        return res
