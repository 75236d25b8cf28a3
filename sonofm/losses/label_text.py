"""Image-label contrast through the label's own text (UniCL-style): labels train the zero-shot classifier.

Why: a zero-shot classifier is the text embeddings of the class names. Caption contrast teaches
them only indirectly: a caption names five findings, and the in-batch negatives are mostly told
apart by the organ, so a rarely decisive finding word ("comet-tail artifacts") is never aligned,
although the image tower encodes it (a linear probe on the image embeddings finds it at AUC 0.97
while its zero-shot AUC stays near 0.6). UniCL (Yang et al., "Unified Contrastive Learning in
Image-Text-Label Space", 2022) turns labels into text and contrasts images against the label
texts; here that contrast runs *within each label group* (one taxonomy dimension, the organ, the
echo view), i.e. against exactly the alternatives the zero-shot classifier of that group chooses
between:

    L = mean over groups g, over images i with a label in g of
        - sum_{t in g} y_it / |y_i| * log softmax_{t' in g}(s * cos(v_i, e_t'))

with ``e_t`` the text tower's embedding of the label's text, ``s`` the model's logit scale (the
same temperature as the caption contrast), and ``y`` the multi-hot labels (several positives of
one group share the target mass). The labels are the structured findings a report parser (or the
simulator) gives; they carry no information the captions lack, only a sharper training signal.

Outputs read: ``image_features`` (B, D), ``logit_scale``, ``label_text_features`` (T, D; one row
per label text, shared by the whole batch), ``label_text_targets`` (B, T) multi-hot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sonofm.losses.supervised import DESCRIPTOR_DIMS

FEATURES = "label_text_features"
TARGETS = "label_text_targets"
# the label groups a run may contrast against (config names them; the pretraining job writes texts)
GROUPS = ("organ", "view", *DESCRIPTOR_DIMS)


def label_text_loss(
    image_features: Tensor,
    label_features: Tensor,
    targets: Tensor,
    logit_scale: Tensor,
    groups: Sequence[tuple[int, int]],
) -> Tensor:
    """The loss above; ``groups`` are the (start, stop) column ranges of the label groups."""
    img = F.normalize(image_features.float(), dim=-1)
    txt = F.normalize(label_features.float(), dim=-1)
    logits = logit_scale.float() * img @ txt.T
    y = targets.to(logits.device, torch.float32)
    total = logits.new_zeros(())
    present = logits.new_zeros(())
    for start, stop in groups:
        y_g = y[:, start:stop]
        count = y_g.sum(1)
        labelled = count > 0
        logp = torch.log_softmax(logits[:, start:stop], dim=1)
        per_row = -(y_g * logp).sum(1) / count.clamp(min=1)
        n = labelled.sum()
        # mean over the labelled rows; a group with none adds nothing (no host sync to test it)
        total = total + per_row.sum() / n.clamp(min=1)
        present = present + (n > 0).float()
    return total / present.clamp(min=1)


class LabelTextLoss(nn.Module):
    """``{"label_text_loss": value}`` from the outputs named in the module docstring."""

    def __init__(self, groups: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        if not groups:
            raise ValueError("the label-text loss needs at least one label group")
        self.groups = [(int(a), int(b)) for a, b in groups]

    def forward(self, outputs: Mapping[str, Any]) -> dict[str, Tensor]:
        missing = [k for k in (FEATURES, TARGETS) if outputs.get(k) is None]
        if missing:
            raise ValueError(
                f"the label_text loss term needs the outputs {missing}; the pretraining objective adds "
                "them when --loss names label_text"
            )
        feats, targets = outputs[FEATURES], outputs[TARGETS]
        if targets.shape[1] != feats.shape[0]:
            raise ValueError(
                f"label_text: {targets.shape[1]} target columns but {feats.shape[0]} label texts"
            )
        value = label_text_loss(
            outputs["image_features"], feats, targets, outputs["logit_scale"], self.groups
        )
        return {"label_text_loss": value}
