"""Image-text contrastive losses: CLIP (symmetric InfoNCE) and SigLIP (pairwise sigmoid).

Both take L2-normalised features, the *exponentiated* logit scale the model returns, and an
optional logit bias, gather features across ranks (see :mod:`sonofm.losses.distributed`), and
return a dict of named loss terms (``{"contrastive_loss": ...}``) so a trainer can sum and log
them. The maths runs in float32 with autocast disabled: bf16/fp16 logits saturate the softmax
and the sigmoid at scales near 100.

Written here rather than imported because open_clip cannot be installed in this environment;
the formulas follow Radford et al. 2021 (CLIP) and Zhai et al. 2023 (SigLIP).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sonofm.losses.distributed import gather_pair


def _fp32(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.float()


def _autocast_off(device_type: str) -> torch.autocast:
    return torch.autocast(device_type=device_type, enabled=False)


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over the (global) batch.

    Full mode: every rank builds the (N, N) logits of the whole gathered batch, N = W * B, and
    takes the mean over rows of ``cross_entropy`` in both directions, averaged.
    ``local_loss``: a rank builds only its (B, N) rows (its images vs all texts and its texts vs
    all images) with labels offset by the rows of lower ranks; the mean over ranks equals the
    full loss when every rank holds the same number of rows (the trainer's batches do, except
    when an image failed to decode).
    """

    def __init__(self, *, gather_with_grad: bool = True, local_loss: bool = False) -> None:
        super().__init__()
        if local_loss and not gather_with_grad:
            raise ValueError("ClipLoss(local_loss=True) needs gather_with_grad=True")
        self.gather_with_grad = gather_with_grad
        self.local_loss = local_loss

    def logits(
        self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor, logit_bias: Tensor | None
    ) -> tuple[Tensor, Tensor, int]:
        """(logits_per_image, logits_per_text, label_offset) in float32."""
        img, txt = image_features.float(), text_features.float()
        all_img, all_txt, offset = gather_pair(
            img, txt, gather_with_grad=self.gather_with_grad, local_loss=self.local_loss
        )
        if self.local_loss:
            per_image = logit_scale * img @ all_txt.T  # (B, N)
            per_text = logit_scale * txt @ all_img.T  # (B, N)
        else:
            per_image = logit_scale * all_img @ all_txt.T  # (N, N)
            per_text = per_image.T
            offset = 0
        if logit_bias is not None:
            per_image = per_image + logit_bias
            per_text = per_text + logit_bias
        return per_image, per_text, offset

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor | None = None,
        **extra: object,
    ) -> dict[str, Tensor]:
        """``{"contrastive_loss": scalar}``; extra model outputs are accepted and ignored."""
        with _autocast_off(image_features.device.type):
            scale = logit_scale.float()
            per_image, per_text, offset = self.logits(image_features, text_features, scale, _fp32(logit_bias))
            labels = torch.arange(per_image.shape[0], device=per_image.device) + offset
            loss = 0.5 * (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels))
        return {"contrastive_loss": loss}


class SigLipLoss(nn.Module):
    """Pairwise sigmoid loss: ``-1/n * sum_ij log sigmoid(z_ij * (s <x_i, y_j> + b))``.

    ``z_ij`` is +1 on matching pairs and -1 elsewhere; ``n`` is the number of rows this rank is
    responsible for (the global batch in full mode, the local batch with ``local_loss``), so the
    mean over ranks of the local loss equals the full loss. Every image-text pair is one binary
    term, so one direction covers both. (open_clip streams text chunks between neighbouring ranks
    to save memory; a gather gives the same value and gradients and is simpler to verify.)
    """

    def __init__(self, *, gather_with_grad: bool = True, local_loss: bool = False) -> None:
        super().__init__()
        if local_loss and not gather_with_grad:
            raise ValueError("SigLipLoss(local_loss=True) needs gather_with_grad=True")
        self.gather_with_grad = gather_with_grad
        self.local_loss = local_loss

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor | None = None,
        **extra: object,
    ) -> dict[str, Tensor]:
        """``{"contrastive_loss": scalar}``; ``logit_bias`` defaults to 0 when the model has none."""
        with _autocast_off(image_features.device.type):
            img, txt = image_features.float(), text_features.float()
            all_img, all_txt, offset = gather_pair(
                img, txt, gather_with_grad=self.gather_with_grad, local_loss=self.local_loss
            )
            rows = img if self.local_loss else all_img
            offset = offset if self.local_loss else 0
            logits = logit_scale.float() * rows @ all_txt.T  # (n, N)
            if logit_bias is not None:
                logits = logits + logit_bias.float()
            signs = -torch.ones_like(logits)
            idx = torch.arange(rows.shape[0], device=logits.device)
            signs[idx, idx + offset] = 1.0
            loss = -F.logsigmoid(signs * logits).sum() / rows.shape[0]
        return {"contrastive_loss": loss}


def build_contrastive_loss(
    name: str, *, gather_with_grad: bool = True, local_loss: bool = False
) -> nn.Module:
    """``"clip"`` -> :class:`ClipLoss`, ``"siglip"`` -> :class:`SigLipLoss`."""
    losses = {"clip": ClipLoss, "siglip": SigLipLoss}
    if name not in losses:
        raise ValueError(f"unknown contrastive loss {name!r}; expected one of {sorted(losses)}")
    return losses[name](gather_with_grad=gather_with_grad, local_loss=local_loss)
