"""CLIP / SigLIP dual encoder: image tower + text tower, linear projections, learnable logit scale.

Follows open_clip's `CLIP`: bias-free projections into a shared space, `logit_scale` stored as a
log (init log(1/0.07)) and exponentiated then clamped at 100 in `forward`; an optional
`logit_bias` for the SigLIP sigmoid loss (init scale log(10), bias -10).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sonofm.models.config import DualEncoderConfig
from sonofm.models.image_towers import ImageTower
from sonofm.models.io import validated_config, with_weights
from sonofm.models.text_towers import TextTokenizer, TextTower, load_tokenizer


class DualEncoder(nn.Module):
    """Image-text dual encoder (docs/design.md, "Models").

    `config` is the resolved `DualEncoderConfig` (tower `arch` filled in), so
    `DualEncoder(model.config, tokenizer=model.tokenizer, load_pretrained=False)` rebuilds the
    same architecture without touching the original pretrained sources.
    """

    model_type = "dual_encoder"

    def __init__(
        self,
        config: DualEncoderConfig,
        *,
        tokenizer: Any | None = None,
        load_pretrained: bool = True,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.text.tokenizer)
        self.visual = ImageTower(config.image, load_pretrained=load_pretrained)
        self.text = TextTower(config.text, vocab_size=len(self.tokenizer), load_pretrained=load_pretrained)
        self.image_proj = nn.Linear(self.visual.width, config.embed_dim, bias=False)
        nn.init.normal_(self.image_proj.weight, std=self.visual.width**-0.5)
        self.text_proj = text_projection(config.text_projection, self.text.width, config.embed_dim)
        self.heads = (
            nn.ModuleDict({t: nn.Linear(config.embed_dim, len(c)) for t, c in config.heads.items()})
            if config.heads
            else None
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))
        self.logit_bias = (
            nn.Parameter(torch.tensor(float(config.logit_bias_init))) if config.logit_bias else None
        )
        # Record the resolved architectures so the saved config.json rebuilds this exact model.
        resolved = config.model_copy(deep=True)
        resolved.image.arch = self.visual.arch
        resolved.text.arch = self.text.arch
        self.config = resolved
        self._tokenize = TextTokenizer(self.tokenizer, config.text.max_length)

    # ----- text -----
    def get_tokenizer(self) -> TextTokenizer:
        """A picklable tokenizer callable for DataLoader collate functions (holds no weights)."""
        return self._tokenize

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """texts -> {input_ids, attention_mask} (B, L) long tensors, L <= config.text.max_length."""
        return self._tokenize(texts)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True
    ) -> torch.Tensor:
        x = self.text_proj(self.text(input_ids, attention_mask))  # (B, embed_dim)
        return F.normalize(x, dim=-1) if normalize else x

    # ----- image -----
    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """images float in [0, 1], (B, 1|3, S, S) with S = config.image.image_size -> (B, embed_dim)."""
        x = self.image_proj(self.visual(images))
        return F.normalize(x, dim=-1) if normalize else x

    def image_feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Multi-level (B, C_i, H_i, W_i) maps for dense heads; shapes per tower in `image_towers`."""
        return self.visual.feature_maps(images)

    # ----- both -----
    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor | None]:
        return self.outputs(self.encode_image(images), self.encode_text(input_ids, attention_mask))

    def outputs(self, image_features: torch.Tensor, text_features: torch.Tensor) -> dict[str, Any]:
        """The forward contract every dual encoder returns (features, scale, bias, head logits)."""
        return {
            "image_features": image_features,
            "text_features": text_features,
            "logit_scale": self.logit_scale.exp().clamp(max=self.config.max_logit_scale),
            "logit_bias": self.logit_bias,
            **self.head_logits(image_features),
        }

    def head_logits(self, image_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"head/<target>": (B, n_classes)}`` of the supervised heads (empty without heads).

        The heads read the unit-norm joint embedding scaled by sqrt(dim) (unit variance per
        coordinate), so what they learn shapes the space zero-shot prompts are matched in.
        """
        if self.heads is None:
            return {}
        x = image_features * self.config.embed_dim**0.5
        return {f"head/{t}": head(x) for t, head in self.heads.items()}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Trade compute for memory in both towers (non-reentrant activation checkpointing)."""
        self.visual.set_grad_checkpointing(enable)
        self.text.set_grad_checkpointing(enable)

    @property
    def preprocess(self) -> dict[str, Any]:
        return self.config.preprocess


def load_dual_encoder(
    model_dir: Path, cfg_json: dict[str, Any], device: str | torch.device | None = None
) -> nn.Module:
    """Loader for `model_type == "dual_encoder"`: no pretrained sources are touched."""
    config = validated_config(DualEncoderConfig, model_dir, cfg_json, "image.arch", "text.arch")
    model = DualEncoder(config, tokenizer=load_tokenizer(str(model_dir)), load_pretrained=False)
    return with_weights(model, model_dir, device)


def text_projection(kind: str, width: int, embed_dim: int) -> nn.Module:
    """Text features -> joint space: bias-free linear (CLIP) or a two-layer MLP (hidden 2 x width)."""
    if kind == "linear":
        proj = nn.Linear(width, embed_dim, bias=False)
        nn.init.normal_(proj.weight, std=width**-0.5)
        return proj
    hidden = 2 * width
    mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, embed_dim, bias=False))
    nn.init.normal_(mlp[0].weight, std=width**-0.5)
    nn.init.zeros_(mlp[0].bias)
    nn.init.normal_(mlp[2].weight, std=hidden**-0.5)
    return mlp
