"""Step functions: how a job runs its model on a batch and which loss terms it computes."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class ContrastiveStep:
    """Image-text contrastive pretraining on collated batches (``image``, ``input_ids``,
    ``attention_mask``) with a model following the DualEncoder forward contract and a loss
    such as :class:`sonofm.losses.ClipLoss`.
    """

    def __init__(self, loss: nn.Module) -> None:
        self.loss_fn = loss

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        return model(batch["image"], batch["input_ids"], batch["attention_mask"])

    def loss(self, outputs: dict[str, Any]) -> dict[str, Tensor]:
        return self.loss_fn(
            outputs["image_features"],
            outputs["text_features"],
            outputs["logit_scale"],
            outputs.get("logit_bias"),
        )
