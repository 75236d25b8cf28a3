"""`TaskModel`: an image tower (with its adapter) + a task head; model_type ``"task_model"``.

The model directory stores everything needed to rebuild the exact module tree before the
weights are loaded: the tower's full architecture, the adapter kind and options (hybrid-tuning
adapters / LoRA layers change the parameter set), the fine-tuning task's name and options (the
task builds the head, e.g. from its class list) and the feature-map channels and strides the
head was built for. `sonofm.load_model(dir)` returns it; `.visual` is the (adapted) tower, so
`load_image_tower(dir)` works as for every other model kind.

Multi-frame inputs (``input_frames > 1``, e.g. EF from the ED/ES pair): ``images`` is
(B, F, S, S); each frame goes through the tower separately (as a batch of B*F one-channel
images) and the per-frame maps are concatenated along channels, frame-major, so the head sees
``F * C_i`` channels at level i and ``image`` with F channels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from sonofm.models.adapters import apply_adapter
from sonofm.models.config import ImageTowerConfig
from sonofm.models.image_towers import ImageTower
from sonofm.models.io import validated_config, with_weights
from sonofm.tasks.base import get_task


class TaskModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: ImageTowerConfig
    adapter: str = "ht"
    adapter_options: dict[str, Any] = Field(default_factory=dict)
    task: str
    task_options: dict[str, Any] = Field(default_factory=dict)
    feature_channels: list[int]
    feature_strides: list[int]
    input_frames: int = 1

    @property
    def preprocess(self) -> dict[str, Any]:
        return {**self.image.preprocess, "input_frames": self.input_frames}


def tower_config(tower: nn.Module) -> ImageTowerConfig:
    """A self-contained `ImageTowerConfig` (full architecture, no pretrained source) of a built tower."""
    return ImageTowerConfig(
        kind=tower.kind,
        image_size=int(tower.image_size),
        in_chans=int(tower.in_chans),
        mean=[float(v) for v in tower.mean.flatten().tolist()],
        std=[float(v) for v in tower.std.flatten().tolist()],
        pool=tower.pool,
        arch=dict(tower.arch),
    )


@torch.no_grad()
def feature_geometry(tower: nn.Module) -> tuple[list[int], list[int]]:
    """Channels and strides of `tower.feature_maps` (one dry run on a blank image)."""
    was = tower.training
    tower.eval()
    device = next(tower.parameters()).device
    s = int(tower.image_size)
    maps = tower.feature_maps(torch.zeros(1, 1, s, s, device=device))
    tower.train(was)
    return [int(m.shape[1]) for m in maps], [max(1, round(s / m.shape[-1])) for m in maps]


class TaskModel(nn.Module):
    """Image tower (adapted per ``config.adapter``) + the head of ``config.task``."""

    model_type = "task_model"

    def __init__(self, config: TaskModelConfig, *, tower: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.visual = tower if tower is not None else ImageTower(config.image, load_pretrained=False)
        apply_adapter(self.visual, config.adapter, **config.adapter_options)
        if self.visual.kind in ("vit", "dinov2") and config.adapter in ("full", "lora"):
            # feature_maps never reads the final LayerNorm: keep it out of the optimizer (and DDP).
            self.visual.backbone.layernorm.requires_grad_(False)
        self.task = get_task(config.task, **config.task_options)
        self.input_frames = int(config.input_frames)
        f = self.input_frames
        self.head = self.task.build_head(
            [c * f for c in config.feature_channels], list(config.feature_strides), config.image.image_size
        )

    def features(self, images: Tensor) -> list[Tensor]:
        """Tower feature maps; multi-frame inputs are run per frame and concatenated on channels."""
        f = self.input_frames
        if f == 1:
            return self.visual.feature_maps(images)
        b, c, h, w = images.shape
        if c % f:
            raise ValueError(f"images have {c} channels, not a multiple of input_frames={f}")
        maps = self.visual.feature_maps(images.reshape(b * f, c // f, h, w))
        return [m.reshape(b, f * m.shape[1], *m.shape[-2:]) for m in maps]

    def forward(self, images: Tensor) -> Any:
        maps = self.features(images)
        if getattr(self.head, "wants_image", False):
            return self.head(maps, image=images)
        return self.head(maps)


def freeze_unused(model: TaskModel) -> list[str]:
    """Freeze trainable parameters that cannot affect the output; returns their names.

    Example: the HT classification head reads the blocks at 1/4, 1/2 and 3/4 depth, so with full
    fine-tuning the last ViT block gets no gradient. Leaving such parameters trainable would make
    DDP wait for gradients that never come (and AdamW decay them for nothing). Found with one
    forward/backward pass on a blank batch: a parameter outside the autograd graph has no grad.
    """
    s = int(model.config.image.image_size)
    x = torch.zeros(2, model.input_frames, s, s, device=next(model.parameters()).device)
    was = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    out = model(x)
    tensors = list(out.values()) if isinstance(out, dict) else [out]
    total = sum(t.float().sum() for t in tensors if isinstance(t, Tensor) and t.requires_grad)
    if isinstance(total, Tensor):
        total.backward()
    names = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    for n, p in model.named_parameters():
        if n in names:
            p.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    model.train(was)
    return names


def load_task_model(
    model_dir: Path, cfg_json: dict[str, Any], device: str | torch.device | None = None
) -> TaskModel:
    """Loader for ``model_type == "task_model"`` (registered in `sonofm.models.io`)."""
    config = validated_config(TaskModelConfig, model_dir, cfg_json, "image.arch")
    return with_weights(TaskModel(config), model_dir, device)
