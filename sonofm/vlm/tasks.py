"""Eval task kinds for generative VLMs: ``report_generation`` and ``vqa``.

Both run ``ctx.model.chat_batch`` (a `SonoVLM`) on the images of one split, so they set
``needs_embeddings = False``; every metric gets a bootstrap CI over images (or questions).

- ``report_generation``: one report per image (the default report question), scored against the
  row's report (`sonofm.vlm.conversations.format_report`) with BLEU-1..4 (exact corpus BLEU on
  every resample, from per-sentence statistics), ROUGE-1/L, CIDEr, clinical-correctness F1
  (micro and macro, overall and per region) and METEOR (point estimate; skipped with a note when
  Java fails). Examples (thumbnail, generated vs reference text) go to ``plots["images"]``.
- ``vqa``: closed (yes/no, multiple choice) and open questions built from the split's manifest
  rows by `sonofm.vlm.conversations` (seeded), plus diagnosis questions; closed accuracy (a
  SonoVLM's answers, closed questions a source covers answered by it, and its language model's
  own: ``closed_accuracy_language_model``), open token F1 / exact match and diagnosis token F1.

Suite YAML: ``- {type: report_generation, split: test}`` / ``- {type: vqa, split: test}``.
"""

from __future__ import annotations

import logging
import textwrap
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sonofm.data.dataset import read_grayscale
from sonofm.eval.tasks.base import EvalContext, Task, TaskResult, register_task
from sonofm.figures import png_figure, pyplot
from sonofm.stats.metrics import CI
from sonofm.vlm import metrics as VM
from sonofm.vlm.conversations import conversations_from_rows, format_report

log = logging.getLogger(__name__)


def _split_rows(ctx: EvalContext, split: str, max_samples: int | None, seed: int) -> pd.DataFrame:
    df = ctx.df[ctx.df["split"] == split].sort_values("id").reset_index(drop=True)
    if max_samples is not None and len(df) > max_samples:
        idx = np.sort(np.random.default_rng(seed).choice(len(df), size=max_samples, replace=False))
        df = df.iloc[idx].reset_index(drop=True)
    return df


def _load_gray(root: Path, rel: str) -> np.ndarray:
    return read_grayscale(root / rel)


def generate_answers(
    model: Any,
    items: Sequence[tuple[Sequence[np.ndarray], str | None]],
    *,
    batch_size: int = 16,
    **gen: Any,
) -> list[str]:
    """Answers of `model.chat_batch` over (images, question) items, in batches."""
    out: list[str] = []
    for a in range(0, len(items), batch_size):
        out += model.chat_batch(list(items[a : a + batch_size]), **gen)
    return out


def _checked_answers(
    model: Any, items: Sequence[tuple[Sequence[np.ndarray], str | None]], batch_size: int, **gen: Any
) -> list[Any] | None:
    """`model.answer_batch` over the items (GeneratedText: text, source, the LM's own answer), or
    None for a model without it."""
    if not hasattr(model, "answer_batch"):
        return None
    out: list[Any] = []
    for a in range(0, len(items), batch_size):
        out += model.answer_batch(list(items[a : a + batch_size]), **gen)
    return out


def _can_chat(ctx: EvalContext) -> bool:
    return hasattr(ctx.model, "chat_batch")


def _example_figure(image: np.ndarray, generated: str, reference: str, title: str) -> str:
    """Thumbnail + generated and reference text side by side, as a PNG data URI."""
    plt = pyplot()
    fig = plt.figure(figsize=(9.5, 3.2))
    ax = fig.add_axes((0.0, 0.05, 0.24, 0.9))
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    wrap = lambda t: "\n".join(textwrap.wrap(t.replace("\n", " "), 56)[:12])  # noqa: E731
    fig.text(0.26, 0.95, "generated:", fontsize=8, weight="bold", va="top")
    fig.text(0.26, 0.88, wrap(generated) or "(empty)", fontsize=7, va="top", family="monospace")
    fig.text(0.63, 0.95, "reference:", fontsize=8, weight="bold", va="top")
    fig.text(0.63, 0.88, wrap(reference), fontsize=7, va="top", family="monospace")
    return png_figure(fig)


def _sub(groups: np.ndarray | None, mask: np.ndarray) -> np.ndarray | None:
    return None if groups is None else groups[mask]


def _gen_options(task: Any) -> dict[str, Any]:
    return {"max_new_tokens": task.max_new_tokens, "num_beams": task.num_beams}


class _GenerationTask(Task):
    """A task that has a SonoVLM answer about (up to `max_samples` of) one split's images: `run`
    skips a model that cannot generate text and hands the split's rows to `run_rows`."""

    needs_embeddings = False

    def __init__(
        self,
        name: str | None,
        split: str,
        max_samples: int | None,
        batch_size: int,
        max_new_tokens: int,
        num_beams: int,
        n_examples: int,
    ) -> None:
        super().__init__(name)
        self.split, self.max_samples, self.batch_size = split, max_samples, batch_size
        self.max_new_tokens, self.num_beams, self.n_examples = max_new_tokens, num_beams, n_examples
        self.splits = (split,)

    def run(self, ctx: EvalContext) -> TaskResult:
        res = self.result()
        if not _can_chat(ctx):
            res.skipped = f"model {type(ctx.model).__name__} cannot generate text (needs a SonoVLM)"
            return res
        return self.run_rows(ctx, res, _split_rows(ctx, self.split, self.max_samples, ctx.seed))

    @abstractmethod
    def run_rows(self, ctx: EvalContext, res: TaskResult, rows: pd.DataFrame) -> TaskResult:
        """Generate for ``rows`` (the split's sampled rows) and add the metrics to ``res``."""


@register_task
class ReportGeneration(_GenerationTask):
    """Generated report vs reference report of every image of a split (see module docstring)."""

    kind = "report_generation"

    def __init__(
        self,
        name: str | None = None,
        split: str = "test",
        question: str | None = None,
        max_samples: int | None = None,
        batch_size: int = 16,
        max_new_tokens: int = 256,
        num_beams: int = 1,
        n_examples: int = 6,
        meteor: bool = True,
        per_region: bool = True,
    ) -> None:
        super().__init__(name, split, max_samples, batch_size, max_new_tokens, num_beams, n_examples)
        self.question, self.meteor, self.per_region = question, meteor, per_region

    def run_rows(self, ctx: EvalContext, res: TaskResult, rows: pd.DataFrame) -> TaskResult:
        rows = rows[rows["report"].astype("string").fillna("").str.strip() != ""].reset_index(drop=True)
        if rows.empty:
            res.skipped = f"no {self.split} images with a report"
            return res
        images = [_load_gray(ctx.root, p) for p in rows["image"]]
        preds = generate_answers(
            ctx.model,
            [([im], self.question) for im in images],
            batch_size=self.batch_size,
            **_gen_options(self),
        )
        refs = [format_report(r) for r in rows["report"]]
        regions = [r if isinstance(r, str) else None for r in rows["region"]]
        self._score(ctx, res, preds, refs, regions, ctx.groups(rows))
        res.info["n"] = len(rows)
        res.info["examples"] = [
            {"id": i, "generated": p, "reference": r}
            for i, p, r in list(zip(rows["id"], preds, refs, strict=True))[:20]
        ]
        k = min(self.n_examples, len(rows))
        res.plots["images"] = [
            (
                _example_figure(images[i], preds[i], refs[i], str(rows["id"][i])),
                f"{rows['id'][i]}: generated vs reference",
            )
            for i in range(k)
        ]
        return res

    def _score(
        self,
        ctx: EvalContext,
        res: TaskResult,
        preds: list[str],
        refs: list[str],
        regions: list[str | None],
        groups: np.ndarray | None,
    ) -> None:
        for n in VM.BLEU_ORDERS:
            stats = VM.bleu_stats(preds, refs, n)
            ctx.add_metric(res, f"bleu{n}", lambda s, n=n: VM.bleu_from_stats(s, n), stats, groups=groups)
        rouge = VM.rouge_scores(preds, refs)
        ctx.add_metric(res, "rouge1", np.mean, rouge["rouge1"], groups=groups)
        ctx.add_metric(res, "rougeL", np.mean, rouge["rougeL"], groups=groups)
        _, cider = VM.cider_score(preds, refs)
        ctx.add_metric(res, "cider", np.mean, cider, groups=groups)
        counts = VM.clinical_counts(preds, refs, regions)
        ctx.add_metric(res, "clinical_f1", VM.micro_f1, counts, groups=groups)
        ctx.add_metric(
            res, "clinical_f1_macro", lambda c: float(VM.per_report_f1(c).mean()), counts, groups=groups
        )
        if self.per_region:
            reg = np.array([r or "unknown" for r in regions], dtype=object)
            for r in sorted(set(reg)):
                sel = reg == r
                ctx.add_metric(
                    res,
                    f"clinical_f1/{r}",
                    VM.micro_f1,
                    counts[sel],
                    groups=None if groups is None else groups[sel],
                )
        if self.meteor:
            try:
                value, _ = VM.meteor_score(preds, refs)
            except RuntimeError as err:
                log.warning("%s: METEOR skipped (%s)", res.name, err)
                res.info.setdefault("notes", []).append(f"meteor skipped: {err}")
            else:
                res.metrics["meteor"] = CI(value, float("nan"), float("nan"), len(preds))
                res.higher_is_better["meteor"] = True


@register_task
class VQA(_GenerationTask):
    """Closed/open VQA and diagnosis questions on a split's images (see module docstring)."""

    kind = "vqa"

    def __init__(
        self,
        name: str | None = None,
        split: str = "test",
        tasks: Sequence[str] = ("vqa_closed", "vqa_open", "diagnosis"),
        questions_per_image: int = 2,
        max_samples: int | None = None,
        batch_size: int = 32,
        max_new_tokens: int = 24,
        num_beams: int = 1,
        seed: int = 0,
        n_examples: int = 4,
    ) -> None:
        super().__init__(name, split, max_samples, batch_size, max_new_tokens, num_beams, n_examples)
        self.tasks, self.questions_per_image, self.seed = tuple(tasks), questions_per_image, seed

    def run_rows(self, ctx: EvalContext, res: TaskResult, rows: pd.DataFrame) -> TaskResult:
        recs = conversations_from_rows(
            rows, seed=self.seed, tasks=self.tasks, questions_per_image=self.questions_per_image
        )
        if not recs:
            res.skipped = f"no questions could be built from the {self.split} rows"
            return res
        cache: dict[str, np.ndarray] = {}

        def img(p: str) -> np.ndarray:
            if p not in cache:
                cache[p] = _load_gray(ctx.root, p)
            return cache[p]

        # the question text without its leading <image> lines (chat puts them back)
        items = [
            ([img(p) for p in r["image"]], r["conversations"][0]["value"].replace("<image>\n", ""))
            for r in recs
        ]
        checked = _checked_answers(ctx.model, items, self.batch_size, **_gen_options(self))
        if checked is None:
            preds = generate_answers(ctx.model, items, batch_size=self.batch_size, **_gen_options(self))
        else:  # a SonoVLM: closed questions a source covers are answered by it (models/vlm_answers)
            preds = [g.text for g in checked]
            sources = [g.answered_by or "language model" for g in checked]
            res.info["answered_by"] = {s: sources.count(s) for s in sorted(set(sources))}
        refs = [r["conversations"][1]["value"] for r in recs]
        task = np.array([r["meta"]["task"] for r in recs], dtype=object)
        closed = task == "vqa_closed"
        if closed.any():
            correct = np.array(
                [VM.closed_correct(p, r) for p, r, c in zip(preds, refs, closed, strict=True) if c],
                dtype=float,
            )
            ctx.add_metric(res, "closed_accuracy", np.mean, correct)
            if checked is not None:  # the language model's own answers, beside the sourced ones
                own = [g.draft if g.answered_by else g.text for g in checked]
                lm_ok = [VM.closed_correct(p, r) for p, r, c in zip(own, refs, closed, strict=True) if c]
                ctx.add_metric(res, "closed_accuracy_language_model", np.mean, np.array(lm_ok, dtype=float))
        for name, mask in (("open", task == "vqa_open"), ("diagnosis", task == "diagnosis")):
            if mask.any():
                pairs = [(p, r) for p, r, m in zip(preds, refs, mask, strict=True) if m]
                ctx.add_metric(
                    res, f"{name}_token_f1", np.mean, np.array([VM.token_f1(p, r) for p, r in pairs])
                )
                exact = np.array(
                    [VM.normalize_answer(p) == VM.normalize_answer(r) for p, r in pairs], dtype=float
                )
                ctx.add_metric(res, f"{name}_exact_match", np.mean, exact)
        res.info["n_questions"] = {str(k): int((task == k).sum()) for k in sorted(set(task))}
        res.info["examples"] = [
            {"id": r["id"], "question": q, "answer": p, "reference": ref}
            for r, (_, q), p, ref in list(zip(recs, items, preds, refs, strict=True))[:30]
        ]
        figs = []
        for r, (ims, q), p, ref in list(zip(recs, items, preds, refs, strict=True))[: self.n_examples]:
            figs.append((_example_figure(ims[0], f"Q: {q}  A: {p}", ref, r["id"]), f"{r['id']}: {q}"))
        res.plots["images"] = figs
        return res
