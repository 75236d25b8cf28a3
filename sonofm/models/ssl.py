"""Self-supervised image model: SimMIM masked image modelling + a hierarchical anatomy classifier.

EchoCare's recipe as sonofm implements it (docs/methods.md section 3): the image tower sees images
whose masked patches were replaced by a learnable mask token right after the patch embedding;
a light decoder (SimMIM: one 1x1 convolution + pixel shuffle from the last feature map) predicts
the pixels, and the loss counts masked patches only (:mod:`sonofm.losses.mim`). Beside it,
classifiers on the pooled feature predict region -> organ (and the view of echo images).

How each tower is masked (the mask is drawn on a grid of ``mask_patch`` pixels, a multiple of the
tower's patch size, then repeated onto the token grid):

- ViT / DINOv2 (transformers): ``bool_masked_pos`` of the HF model, with this model's mask token;
- Swin / SwinV2 (transformers): ``bool_masked_pos`` likewise (``mask_patch`` defaults to 32 px,
  the last stage's stride, so a masked cell stays fully masked through every patch merging);
- MONAI SwinV2 (EchoCare's encoder): a forward hook on MONAI's ``patch_embed`` swaps in the mask
  token before the first stage.

The mask token lives on this model, not inside ``.visual``, so the tower's weights are exactly an
``ImageTower``'s: ``sonofm.models.load_image_tower(ssl_dir)`` and
``ImageTowerConfig(pretrained=ssl_dir)`` give a plain tower for ``pretrain`` and ``finetune``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from sonofm.errors import UserError
from sonofm.losses.mim import (
    IGNORE_INDEX,
    conditional_organ_loss,
    hierarchical_organ_log_probs,
    masked_cross_entropy,
    mim_loss,
    patchify,
    random_patch_mask,
    upsample_mask,
)
from sonofm.models.config import ImageTowerConfig
from sonofm.models.image_towers import ImageTower
from sonofm.models.io import validated_config, with_weights
from sonofm.taxonomy import ECHO_VIEWS, ORGAN_IDS, REGIONS, region_of

log = logging.getLogger(__name__)

LEVELS = ("region", "organ", "view")
MIM_KINDS = ("vit", "dinov2", "swin", "swinv2", "monai_swin")


class SSLModelConfig(BaseModel):
    """What an SSL model directory's config.json holds (the architecture and the label sets)."""

    model_config = ConfigDict(extra="forbid")

    image: ImageTowerConfig
    mask_ratio: float = Field(0.6, gt=0, lt=1)
    mask_patch: int | None = Field(None, ge=1, description="mask cell side in pixels; default: see SSLModel")
    norm_pix: bool = True  # per-patch normalised reconstruction targets
    recon_loss: Literal["l1", "l2"] = "l1"  # SimMIM uses L1
    decoder: Literal["linear", "mlp"] = "linear"  # linear = SimMIM's 1x1 conv + pixel shuffle
    decoder_hidden: int = Field(256, ge=1)
    # conditional: organ = P(region) * P(organ | region) (softmax within the region's organs);
    # flat: one softmax over all organs, independent of the region head.
    hierarchy: Literal["conditional", "flat"] = "conditional"
    # masked: classify from the masked pass (one forward); clean: a second, unmasked forward.
    cls_input: Literal["masked", "clean"] = "masked"
    levels: list[Literal["region", "organ", "view"]] = Field(default_factory=lambda: list(LEVELS))
    regions: list[str] = Field(default_factory=lambda: list(REGIONS))
    organs: list[str] = Field(default_factory=lambda: list(ORGAN_IDS))
    views: list[str] = Field(default_factory=lambda: list(ECHO_VIEWS))

    @model_validator(mode="after")
    def _check(self) -> SSLModelConfig:
        if self.image.kind not in MIM_KINDS:
            raise ValueError(
                f"masked image modelling needs a ViT, DINOv2, Swin, SwinV2 or MONAI SwinV2 tower, "
                f"not image.kind={self.image.kind!r}"
            )
        bad = [o for o in self.organs if o not in ORGAN_IDS]
        if bad:
            raise ValueError(f"unknown organ ids {bad}; valid: {list(ORGAN_IDS)}")
        missing = sorted({region_of(o) for o in self.organs} - set(self.regions))
        if "organ" in self.levels and self.hierarchy == "conditional" and missing:
            raise ValueError(f"regions {missing} of the listed organs are missing from `regions`")
        return self

    @property
    def preprocess(self) -> dict[str, Any]:
        return self.image.preprocess


def _tower_geometry(tower: ImageTower) -> tuple[int, int, int, int]:
    """(patch size, stride of the last feature map, its channels, mask-token width) of a tower."""
    if tower.kind == "monai_swin":
        p = tower.arch["patch_size"]
        p = int(p[0] if isinstance(p, list | tuple) else p)
        c0 = int(tower.arch["embed_dim"])
        return p, p * 2 ** len(tower.arch["depths"]), tower.width, c0
    hc = tower.backbone.config
    p = int(hc.patch_size if isinstance(hc.patch_size, int) else hc.patch_size[0])
    if tower.kind in ("vit", "dinov2"):
        return p, p, int(hc.hidden_size), int(hc.hidden_size)
    n_stages = len(hc.depths)
    return p, p * 2 ** (n_stages - 1), int(tower.backbone.num_features), int(hc.embed_dim)


def default_mask_patch(image_size: int, patch: int) -> int:
    """SimMIM's 32 px mask cells where the image holds at least 4x4 of them, else the patch size."""
    if image_size % 32 == 0 and 32 % patch == 0 and image_size // 32 >= 4:
        return 32
    return patch


@contextlib.contextmanager
def _bound_mask_token(embeddings: nn.Module, token: nn.Parameter) -> Iterator[None]:
    """Let a transformers embeddings module use ``token`` as its ``mask_token`` for one call.

    HF ViT/Swin embeddings read ``self.mask_token`` when ``bool_masked_pos`` is given, but the
    tower is built without one (``use_mask_token=False``). Binding ours in the instance dict for
    the duration of the forward pass uses the model's own masking code while keeping the mask
    token out of the tower's state dict (DINOv2's own frozen token is shadowed the same way).
    """
    d = embeddings.__dict__
    had, old = "mask_token" in d, d.get("mask_token")
    d["mask_token"] = token
    try:
        yield
    finally:
        if had:
            d["mask_token"] = old
        else:
            del d["mask_token"]


class SSLModel(nn.Module):
    """Image tower + mask token + pixel decoder + region/organ/view heads (model_type "ssl_image_model")."""

    model_type = "ssl_image_model"

    def __init__(self, config: SSLModelConfig, *, load_pretrained: bool = True) -> None:
        super().__init__()
        self.visual = ImageTower(config.image, load_pretrained=load_pretrained)
        self.patch, self.stride, feat_ch, token_dim = _tower_geometry(self.visual)
        size = self.visual.image_size
        mask_patch = config.mask_patch or default_mask_patch(size, self.patch)
        if mask_patch % self.patch or size % mask_patch:
            raise UserError(
                f"mask_patch={mask_patch} must be a multiple of the tower's patch size {self.patch} and "
                f"divide image_size={size}"
            )
        if size % self.stride:
            raise UserError(
                f"image_size={size} must be a multiple of the tower's output stride {self.stride}"
            )
        resolved = config.model_copy(deep=True)
        resolved.image.arch = self.visual.arch
        resolved.mask_patch = mask_patch
        self.config = resolved
        self.mask_grid = size // mask_patch

        self.mask_token = nn.Parameter(torch.zeros(1, 1, token_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        out_ch = self.stride * self.stride * self.visual.in_chans
        if config.decoder == "linear":
            head: nn.Module = nn.Conv2d(feat_ch, out_ch, kernel_size=1)
        else:
            head = nn.Sequential(
                nn.Conv2d(feat_ch, config.decoder_hidden, kernel_size=1),
                nn.GELU(),
                nn.Conv2d(config.decoder_hidden, out_ch, kernel_size=1),
            )
        self.decoder = nn.Sequential(head, nn.PixelShuffle(self.stride))

        sizes = {"region": len(config.regions), "organ": len(config.organs), "view": len(config.views)}
        self.heads = nn.ModuleDict({lv: nn.Linear(self.visual.width, sizes[lv]) for lv in config.levels})
        region_index = {r: i for i, r in enumerate(config.regions)}
        organ_region = [region_index.get(region_of(o), 0) for o in config.organs]
        self.register_buffer("organ_region", torch.tensor(organ_region, dtype=torch.long), persistent=False)

    # ----- masking -----
    def random_mask(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """(B, G, G) bool mask at ``config.mask_ratio`` on the mask-cell grid (global RNG by default)."""
        device = self.mask_token.device
        return random_patch_mask(
            batch, (self.mask_grid, self.mask_grid), self.config.mask_ratio, generator, device=device
        )

    def token_mask(self, mask: Tensor) -> Tensor:
        """Mask-cell grid (B, G, G) -> the tower's patch grid (B, S/p, S/p)."""
        return upsample_mask(mask, self.config.mask_patch // self.patch)

    def _check_mask(self, mask: Tensor, batch: int) -> Tensor:
        want = (batch, self.mask_grid, self.mask_grid)
        if tuple(mask.shape) != want:
            raise ValueError(f"mask must be a bool tensor of shape {want}, got {tuple(mask.shape)}")
        return mask.to(device=self.mask_token.device, dtype=torch.bool)

    # ----- forward -----
    def _encode_masked(self, x: Tensor, token_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised input + patch-grid mask -> (pooled features (B, width), last map (B, C, h, w))."""
        tower = self.visual
        b = x.shape[0]
        if tower.kind == "monai_swin":
            token = self.mask_token.view(1, -1, 1, 1)

            def swap(_module: nn.Module, _inputs: Any, out: Tensor) -> Tensor:
                m = token_mask.unsqueeze(1).to(out.dtype)
                return out * (1.0 - m) + token.to(out.dtype) * m

            handle = tower.backbone.net.patch_embed.register_forward_hook(swap)
            try:
                last = tower.backbone(x)[-1]
            finally:
                handle.remove()
            return last.mean(dim=(2, 3)), last
        flat = token_mask.flatten(1)
        kw: dict[str, Any] = {"bool_masked_pos": flat}
        if tower.kind == "vit" and tower.backbone.config.image_size != tower.image_size:
            kw["interpolate_pos_encoding"] = True
        with _bound_mask_token(tower.backbone.embeddings, self.mask_token):
            out = tower.backbone(pixel_values=x, **kw)
        tokens = out.last_hidden_state
        if tower.kind in ("vit", "dinov2"):
            patches = tokens[:, 1:]
            pooled = patches.mean(dim=1) if tower.pool == "mean" else tokens[:, 0]
        else:
            patches, pooled = tokens, out.pooler_output
        side = int(round(patches.shape[1] ** 0.5))
        return pooled, patches.transpose(1, 2).reshape(b, -1, side, side)

    def _logits(self, features: Tensor) -> dict[str, Tensor]:
        out = {lv: head(features) for lv, head in self.heads.items()}
        if "organ" in out:
            out["organ_scores"] = out["organ"]
            if self.config.hierarchy == "conditional" and "region" in out:
                out["organ"] = hierarchical_organ_log_probs(out["organ"], out["region"], self.organ_region)
        return out

    def forward(self, images: Tensor, mask: Tensor | None = None) -> dict[str, Any]:
        """Masked pass: images (B, 1|3, S, S) in [0, 1]; mask (B, G, G) bool or None (random).

        Returns ``recon`` and ``target`` (B, in_chans, S, S) in the tower's normalised input space,
        ``mask`` (B, G, G), pooled ``features`` and ``logits`` {region, organ, view} (with
        ``hierarchy="conditional"``, ``logits["organ"]`` are joint log-probabilities and
        ``logits["organ_scores"]`` the raw within-region scores).
        """
        x = self.visual.preprocess(images)
        b = x.shape[0]
        mask = self.random_mask(b) if mask is None else self._check_mask(mask, b)
        pooled, last = self._encode_masked(x, self.token_mask(mask))
        recon = self.decoder(last)
        features = self.visual(images) if self.config.cls_input == "clean" else pooled
        return {
            "recon": recon,
            "target": x,
            "mask": mask,
            "features": features,
            "logits": self._logits(features),
        }

    @torch.no_grad()
    def classify(self, images: Tensor) -> dict[str, Tensor]:
        """Anatomy logits of unmasked images (what a user of the tower would see)."""
        return self._logits(self.visual(images))

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        """Pooled tower features of unmasked images (for probes and retrieval)."""
        f = self.visual(images)
        return F.normalize(f, dim=-1) if normalize else f

    def image_feature_maps(self, images: Tensor) -> list[Tensor]:
        return self.visual.feature_maps(images)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)

    # ----- losses -----
    def loss_terms(
        self, out: dict[str, Any], labels: dict[str, Tensor], weights: dict[str, float]
    ) -> dict[str, Tensor]:
        """Weighted terms: ``mim_loss`` and ``{level}_loss`` for every head (see losses.mim)."""
        mp = self.config.mask_patch
        terms = {
            "mim_loss": weights.get("mim", 1.0)
            * mim_loss(
                patchify(out["recon"], mp),
                patchify(out["target"], mp),
                out["mask"],
                norm_pix=self.config.norm_pix,
                loss=self.config.recon_loss,
            )
        }
        logits = out["logits"]
        for level in self.config.levels:
            y = labels[level].to(self.mask_token.device)
            if level == "organ" and self.config.hierarchy == "conditional":
                term = conditional_organ_loss(
                    logits["organ_scores"], y, self.organ_region, len(self.config.regions)
                )
            else:
                term = masked_cross_entropy(logits[level], y)
            terms[f"{level}_loss"] = weights.get(level, 1.0) * term
        return terms

    def labels_for(
        self, regions: Sequence[Any], organs: Sequence[Any], views: Sequence[Any]
    ) -> dict[str, Tensor]:
        return anatomy_labels(regions, organs, views, self.config)


def _name(value: Any) -> str | None:
    """A manifest label as a clean string, or None when missing (None, NaN, pd.NA, "")."""
    if value is None or not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def anatomy_labels(
    regions: Sequence[Any],
    organs: Sequence[Any],
    views: Sequence[Any],
    vocab: SSLModelConfig | dict[str, Sequence[str]],
) -> dict[str, Tensor]:
    """Class indices per level (IGNORE_INDEX where unknown) from manifest columns.

    A known organ implies its region (``region_of``); a row whose region and organ disagree keeps
    the region and ignores the organ. Views count only when they are one of the listed views.
    """
    lists = (
        vocab
        if isinstance(vocab, dict)
        else {"regions": vocab.regions, "organs": vocab.organs, "views": vocab.views}
    )
    r_idx = {r: i for i, r in enumerate(lists["regions"])}
    o_idx = {o: i for i, o in enumerate(lists["organs"])}
    v_idx = {v: i for i, v in enumerate(lists["views"])}
    out: dict[str, list[int]] = {"region": [], "organ": [], "view": []}
    for region, organ, view in zip(regions, organs, views, strict=True):
        region, organ, view = _name(region), _name(organ), _name(view)
        organ_i = o_idx.get(organ, IGNORE_INDEX) if organ else IGNORE_INDEX
        implied = region_of(organ) if organ_i != IGNORE_INDEX else None
        if region is None:
            region = implied
        elif implied is not None and implied != region:
            organ_i = IGNORE_INDEX
        out["region"].append(r_idx.get(region, IGNORE_INDEX) if region else IGNORE_INDEX)
        out["organ"].append(organ_i)
        out["view"].append(v_idx.get(view, IGNORE_INDEX) if view else IGNORE_INDEX)
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


def load_ssl_model(
    model_dir: Path, cfg_json: dict[str, Any], device: str | torch.device | None = None
) -> SSLModel:
    """Loader for ``model_type == "ssl_image_model"`` (no pretrained sources are touched)."""
    config = validated_config(SSLModelConfig, model_dir, cfg_json, "image.arch")
    return with_weights(SSLModel(config, load_pretrained=False), model_dir, device)
