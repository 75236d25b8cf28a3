"""Negation-aware contrastive loss with report-derived hard negatives (docs/methods.md section 2).

For each caption, K hard negatives are written by ``sonofm.reports.negated_captions``: the
sample's structured report (``Study``) with one finding's polarity flipped or one measurement
moved across its guideline threshold, re-written as text. They join the image->text denominator:

    L_neg = -(1/B) sum_i log exp(s_ii/tau) / (sum_j exp(s_ij/tau) + sum_k exp(s(v_i, t~_i^k)/tau))

With K = 0 this is the image->text half of CLIP. ``1/tau`` is the model's logit scale. A sample
may have fewer than K negatives (a study with nothing to flip); ``neg_valid`` masks the missing
slots out of the denominator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sonofm.losses.distributed import gather_pair


def negation_nce_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor,
    neg_text_features: Tensor | None = None,
    neg_valid: Tensor | None = None,
    *,
    row_offset: int = 0,
) -> Tensor:
    """Image->text InfoNCE with per-sample hard negatives in the denominator.

    ``image_features`` (B, D) are the rows, ``text_features`` (N, D) all captions (row i's own
    caption at ``row_offset + i``), ``neg_text_features`` (B, K, D), ``neg_valid`` (B, K) bool.
    """
    scale = logit_scale.float()
    img = image_features.float()
    logits = scale * img @ text_features.float().T  # (B, N)
    if neg_text_features is not None and neg_text_features.shape[1] > 0:
        neg = scale * torch.einsum("bd,bkd->bk", img, neg_text_features.float())  # (B, K)
        if neg_valid is not None:
            neg = neg.masked_fill(~neg_valid.bool(), float("-inf"))
        logits = torch.cat([logits, neg], dim=1)
    labels = torch.arange(img.shape[0], device=img.device) + row_offset
    return F.cross_entropy(logits, labels)


class NegationNCELoss(nn.Module):
    """``{"negation_loss": ...}`` from step outputs with ``neg_text_features``/``neg_valid``.

    Each rank scores its own images against all gathered captions plus its own samples' hard
    negatives (local rows, like ``ClipLoss(local_loss=True)``), so the mean over ranks is the
    full-batch loss; the negatives need no gather.
    """

    def forward(self, outputs: Mapping[str, Any]) -> dict[str, Tensor]:
        with torch.autocast(device_type=outputs["image_features"].device.type, enabled=False):
            img, txt = outputs["image_features"].float(), outputs["text_features"].float()
            # local rows need the differentiable gather (see sonofm.losses.distributed)
            _, all_txt, offset = gather_pair(img, txt, gather_with_grad=True, local_loss=True)
            loss = negation_nce_loss(
                img,
                all_txt,
                outputs["logit_scale"],
                outputs.get("neg_text_features"),
                outputs.get("neg_valid"),
                row_offset=offset,
            )
        return {"negation_loss": loss}
