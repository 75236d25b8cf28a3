"""Echo view-informed multi-positive InfoNCE (docs/methods.md section 2).

Positives of sample i are ``P(i) = {i} U {j : same view and same study}``: the other frames of the
same view in one exam show the same anatomy and are described by equivalent captions, so pushing
them apart as negatives (plain CLIP) fights the data.

    L_view = -(1/B) sum_i (1/|P(i)|) sum_{j in P(i)} log softmax_j(s_i. / tau)

[decision] ``1/tau`` is the model's learnt logit scale, and the loss is applied in both
directions (image->text rows and text->image rows, averaged) like CLIP, so that with every view
distinct it *is* the CLIP loss. A sample without a view (non-echo images) or without a study id
has only itself as a positive. Views and studies arrive as int64 codes (``view_code``,
``study_code``; -1 = unknown) so that they concatenate across micro-batches and ranks.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sonofm.losses.distributed import gather_pair, gather_tensor

UNKNOWN = -1


def stable_code(value: Any) -> int:
    """A process-independent non-negative int64 code for a label (crc32; -1 for missing)."""
    if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
        return UNKNOWN
    return int(zlib.crc32(str(value).encode("utf-8")))


def label_codes(values: Sequence[Any]) -> Tensor:
    """(B,) int64 codes of a list of labels (see :func:`stable_code`)."""
    return torch.tensor([stable_code(v) for v in values], dtype=torch.long)


def positive_mask(view_code: Tensor, study_code: Tensor) -> Tensor:
    """(N, N) bool: i == j, or same known view and same known study."""
    n = view_code.shape[0]
    known = (view_code != UNKNOWN) & (study_code != UNKNOWN)
    same = (view_code[:, None] == view_code[None, :]) & (study_code[:, None] == study_code[None, :])
    same = same & known[:, None] & known[None, :]
    return same | torch.eye(n, dtype=torch.bool, device=view_code.device)


def multi_positive_nce(logits: Tensor, positives: Tensor) -> Tensor:
    """``-(1/N) sum_i mean_{j in P(i)} log softmax(logits_i)_j`` (rows of ``logits``)."""
    logp = torch.log_softmax(logits.float(), dim=1)
    pos = positives.to(logp.dtype)
    per_row = -(logp * pos).sum(1) / pos.sum(1)
    return per_row.mean()


def view_nce_loss(
    image_features: Tensor, text_features: Tensor, logit_scale: Tensor, view_code: Tensor, study_code: Tensor
) -> Tensor:
    """Symmetric view-informed multi-positive InfoNCE over one (already gathered) batch."""
    logits = logit_scale.float() * image_features.float() @ text_features.float().T
    pos = positive_mask(view_code, study_code)
    return 0.5 * (multi_positive_nce(logits, pos) + multi_positive_nce(logits.T, pos.T))


class ViewNCELoss(nn.Module):
    """``{"view_loss": ...}`` from step outputs with ``view_code``/``study_code`` (gathered over ranks)."""

    def __init__(self, *, gather_with_grad: bool = True) -> None:
        super().__init__()
        self.gather_with_grad = gather_with_grad

    def forward(self, outputs: Mapping[str, Any]) -> dict[str, Tensor]:
        for key in ("view_code", "study_code"):
            if key not in outputs:
                raise KeyError(
                    f"the view loss needs {key!r} in the step outputs"
                    " (sonofm.pretrain.objective.ObjectiveStep)"
                )
        with torch.autocast(device_type=outputs["image_features"].device.type, enabled=False):
            img, txt, _ = gather_pair(
                outputs["image_features"].float(),
                outputs["text_features"].float(),
                gather_with_grad=self.gather_with_grad,
                local_loss=False,
            )
            views = gather_tensor(outputs["view_code"], gather_with_grad=False)
            studies = gather_tensor(outputs["study_code"], gather_with_grad=False)
            return {"view_loss": view_nce_loss(img, txt, outputs["logit_scale"], views, studies)}
