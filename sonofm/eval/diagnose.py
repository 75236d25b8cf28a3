"""Where is the limit: text, image or data? A model's zero-shot scores between a floor and ceilings.

A zero-shot number alone cannot say why it is low. This diagnostic runs the same zero-shot tasks
(the suite's own task classes, so the numbers are the suite's) on three embeddings of the same
test images:

* **floor**: an untrained model of the same architecture (random image tower and projections,
  the pretrained text tower as configured) -- what comes for free;
* **model**: the model itself;
* **caption oracle**: each test image replaced by the embedding of its own caption through the
  model's text tower -- the best any image tower could reach with this text side. A low oracle
  means the text side (vocabulary, pooling, prompts) is the limit, not the images.

Per lesion attribute tag it adds two image-side bounds: a logistic-regression probe on the
model's image embeddings (train split -> test AUC: is the information in this tower at all?) and,
when the model has supervised heads, the head's own AUC. A tag that no bound separates (AUC near
0.5) is not visible enough in the data to belong in a zero-shot headline.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sonofm.data.dataset import manifest_root
from sonofm.data.manifest import read_manifest
from sonofm.eval.tasks.attribute_bounds import attribute_bounds
from sonofm.eval.tasks.base import EvalContext
from sonofm.eval.tasks.zeroshot import ZeroShotAttributes, ZeroShotClassification, ZeroShotFindings
from sonofm.inference.embed import embed_split, model_hash, pick_device, training_text_field
from sonofm.models import load_model
from sonofm.reports.captions import caption_for_row

log = logging.getLogger(__name__)

TASKS = ("region", "view", "diagnosis", "attributes", "findings")
HEADLINE_METRICS = {
    "zeroshot/region": ("acc1", "macro_auc"),
    "zeroshot/view": ("acc1", "macro_auc"),
    "zeroshot/diagnosis": ("acc1", "macro_auc"),
}


def _tasks(names: Sequence[str]) -> list[Any]:
    out: list[Any] = []
    for name in names:
        if name == "attributes":
            out.append(ZeroShotAttributes())
        elif name == "findings":
            out.append(ZeroShotFindings())
        else:
            out.append(ZeroShotClassification(target=name))
    return out


def _scores(ctx: Any, tasks: list[Any]) -> dict[str, float]:
    """Flat {task/metric: value} of every task run on `ctx` (skipped tasks contribute nothing)."""
    out: dict[str, float] = {}
    for task in tasks:
        res = task.run(ctx)
        if res.skipped:
            continue
        for key, metric in res.metrics.items():
            value = metric.value if hasattr(metric, "value") else metric
            if value is not None and value == value:
                out[f"{task.name}/{key}"] = float(value)
    return out


def _mean_of(scores: dict[str, float], prefix: str) -> float | None:
    vals = [v for k, v in scores.items() if k.startswith(prefix)]
    return float(np.mean(vals)) if vals else None


def summary_rows(columns: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per headline metric with a value per column (floor / model / caption oracle)."""
    metrics: list[tuple[str, str]] = []
    for task, names in HEADLINE_METRICS.items():
        metrics += [(f"{task}/{m}", f"{task.split('/')[1]} {m}") for m in names]
    rows = []
    for key, label in metrics:
        row = {"metric": label, **{c: s.get(key) for c, s in columns.items()}}
        if any(v is not None for c, v in row.items() if c != "metric"):
            rows.append(row)
    for prefix, label in (
        ("zeroshot/attributes/auc/", "attribute AUC (mean over tags)"),
        ("zeroshot/findings/auc/", "finding AUC, pos/neg prompts (mean)"),
    ):
        row = {"metric": label, **{c: _mean_of(s, prefix) for c, s in columns.items()}}
        if any(v is not None for c, v in row.items() if c != "metric"):
            rows.append(row)
    return rows


def _caption_embeddings(ctx: Any, split: str) -> np.ndarray:
    rows = ctx.rows(split)
    texts = [caption_for_row(r) or "ultrasound image." for r in rows.to_dict("records")]
    emb = ctx.encode_texts(texts)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def diagnose(
    model_dir: str | Path,
    data: str | Path,
    *,
    tasks: Sequence[str] = TASKS,
    split: str = "test",
    device: str | None = None,
    workers: int = 0,
    seed: int = 0,
    n_boot: int = 0,
) -> dict[str, Any]:
    """Floor, model and caption-oracle scores of the zero-shot tasks, plus per-tag image bounds."""
    dev = pick_device(device)
    df = read_manifest(data)
    root = manifest_root(data)
    model = load_model(model_dir).to(dev).eval()
    splits = [s for s in ("train", split) if s in set(df["split"])]

    task_objs = _tasks(tasks)
    # zero-shot tasks and probes read image embeddings only; texts just where a task asks for them
    text_splits = {s for t in task_objs if t.needs_texts for s in t.splits}
    text_field = training_text_field(model_dir)

    def context(m: Any, mid: str) -> Any:
        embeddings = {
            s: embed_split(
                m,
                df,
                root,
                s,
                model_id=mid,
                device=dev,
                workers=workers,
                text_field=text_field,
                texts=s in text_splits,
            )
            for s in splits
        }
        return EvalContext(
            model=m, df=df, root=root, embeddings=embeddings, n_boot=n_boot, seed=seed, device=dev
        )

    ctx = context(model, model_hash(model, model_dir))
    columns = {"model": _scores(ctx, task_objs)}

    torch.manual_seed(seed)
    untrained = type(model)(model.config, tokenizer=model.tokenizer, load_pretrained=True).to(dev).eval()
    columns = {"floor (untrained)": _scores(context(untrained, f"untrained-{seed}"), task_objs), **columns}

    oracle_emb = dataclasses.replace(ctx.embeddings[split], image=_caption_embeddings(ctx, split))
    oracle = dataclasses.replace(ctx, embeddings={**ctx.embeddings, split: oracle_emb})
    columns["caption oracle"] = _scores(oracle, task_objs)
    bounds = attribute_bounds(ctx, "train", split)
    for name, entry in bounds.items():
        key = f"zeroshot/attributes/auc/{name}"
        for column, scores in columns.items():
            if key in scores:
                entry[column] = scores[key]
    return {
        "model": str(model_dir),
        "data": str(data),
        "split": split,
        "n_test": int((df["split"] == split).sum()),
        "rows": summary_rows(columns),
        "scores": columns,
        "attributes": bounds,
    }
