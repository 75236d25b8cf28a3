"""Image<->text retrieval: R@K (a query counts if ANY relevant item is in its top K), mean/median rank.

Relevance is by report text (a query's positives are all gallery items carrying the same report)
or by study (all reports of the same acquisition). Computed on the full gallery of the split and
on a fixed seeded subset (5k by default, as Ultrasound-CLIP reports), with bootstrap CIs over
queries.

`method: exact` (default) ranks every gallery item exactly: a bf16 screening matmul with a
proven error bound, ambiguous pairs re-scored in float64 (see `sonofm.stats.exact_ranks`);
`method: fp32` is the plain chunked fp32 path (same ranks up to fp32 rounding of near-ties);
`method: ivf` uses a FAISS IVF index for very large galleries: R@K is then approximate and
mean/median rank are not reported (ranks are censored past the top 100).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from sonofm.eval.tasks.base import EvalContext, SplitTask, TaskResult, register_task
from sonofm.inference.embed import row_texts
from sonofm.stats import metrics as M


def _mean_rank(ranks: np.ndarray) -> float:
    return M.rank_summary(ranks)["mean_rank"]


def _median_rank(ranks: np.ndarray) -> float:
    return M.rank_summary(ranks)["median_rank"]


@register_task
class Retrieval(SplitTask):
    """Image->text and text->image retrieval on `split` (full gallery + fixed subset)."""

    kind = "retrieval"
    needs_texts = True

    def __init__(
        self,
        split: str = "test",
        positives: str = "report",
        ks: list[int] | tuple[int, ...] = (1, 5, 10),
        subset: int = 5000,
        examples: int = 6,
        method: str = "exact",
        name: str | None = None,
    ) -> None:
        super().__init__(name or "retrieval", split)
        if positives not in ("report", "study"):
            raise ValueError(f"positives must be 'report' or 'study', got {positives!r}")
        if method not in M.RETRIEVAL_METHODS:
            raise ValueError(f"method must be one of {M.RETRIEVAL_METHODS}, got {method!r}")
        self.method = method
        self.positives, self.ks = positives, tuple(int(k) for k in ks)
        self.subset, self.examples = int(subset), int(examples)

    def _score(
        self, ctx: EvalContext, res: TaskResult, prefix: str, idx: np.ndarray, all_texts: np.ndarray
    ) -> None:
        emb = ctx.embeddings[self.split]
        rows = ctx.rows(self.split).iloc[idx]
        texts = all_texts[idx]
        img, txt = emb.image[idx], emb.text[idx]
        if self.positives == "report":
            # gallery of unique texts; an image's positives are the entries equal to its report
            uniq, first = np.unique(texts, return_index=True)
            t_gal, t_keys = txt[first], uniq
            i_keys = texts
        else:
            t_gal, t_keys, first = txt, rows["study_id"].to_numpy(), np.arange(len(idx))
            i_keys = rows["study_id"].to_numpy()
        info_i2t, info_t2i = M.RankInfo(self.method, True), M.RankInfo(self.method, True)
        ivf_k = max(100, *self.ks)
        r_i2t = M.retrieval_ranks(
            img, t_gal, (i_keys, t_keys), method=self.method, info=info_i2t, ivf_k=ivf_k
        )
        r_t2i = M.retrieval_ranks(
            t_gal, img, (t_keys, i_keys), method=self.method, info=info_t2i, ivf_k=ivf_k
        )
        # patient of each query: the image's; a unique report text takes its first image's patient
        g_img = ctx.groups(rows)
        g_txt = None if g_img is None else (g_img[first] if self.positives == "report" else g_img)
        for direction, ranks, g in (("image_to_text", r_i2t, g_img), ("text_to_image", r_t2i, g_txt)):
            for k in self.ks:
                ctx.add_metric(
                    res, f"{prefix}{direction}/R@{k}", partial(M.recall_at_k, k=k), ranks, groups=g
                )
            if self.method != "ivf":  # censored IVF ranks have no meaningful mean/median
                ctx.add_metric(
                    res, f"{prefix}{direction}/mean_rank", _mean_rank, ranks, groups=g, higher_is_better=False
                )
                ctx.add_metric(
                    res,
                    f"{prefix}{direction}/median_rank",
                    _median_rank,
                    ranks,
                    groups=g,
                    higher_is_better=False,
                )
        res.info[f"{prefix}ranking"] = {
            "image_to_text": info_i2t.to_dict(),
            "text_to_image": info_t2i.to_dict(),
        }
        res.info[f"{prefix}n_images"] = len(idx)
        res.info["text_field"] = emb.text_field
        res.info[f"{prefix}n_texts"] = len(t_gal)
        if not prefix and self.examples:
            rng = np.random.default_rng(ctx.seed)
            q = rng.choice(len(idx), size=min(self.examples, len(idx)), replace=False)
            top = np.argsort(-(img[q] @ t_gal.T), axis=1)[:, :3]
            res.plots["examples"] = [
                {
                    "id": str(rows["id"].iloc[i]),
                    "image": str(rows["image"].iloc[i]),
                    "truth": str(texts[i]),
                    "retrieved": [
                        {
                            "text": str(uniq[j] if self.positives == "report" else texts[j]),
                            "correct": bool(t_keys[j] == i_keys[i]),
                        }
                        for j in top[n]
                    ],
                }
                for n, i in enumerate(q)
            ]

    def run_split(self, ctx: EvalContext, res: TaskResult, rows: pd.DataFrame) -> TaskResult:
        emb = ctx.embeddings[self.split]
        n = len(emb.ids)
        # the texts the embeddings are of (reports, or captions for a caption-trained model): once
        all_texts = np.asarray(row_texts(rows, emb.text_field), dtype=object)
        self._score(ctx, res, "", np.arange(n), all_texts)
        if n > self.subset:
            # fixed subset: depends only on the suite seed and the split's ids, not on the model
            idx = np.sort(np.random.default_rng(ctx.seed).choice(n, size=self.subset, replace=False))
            self._score(ctx, res, f"subset{self.subset}/", idx, all_texts)
        else:
            res.info["subset_note"] = f"split has {n} <= {self.subset} images: the subset is the full gallery"
        res.info["positives"] = self.positives
        return res
