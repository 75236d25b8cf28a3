"""The open_clip anchor for ``benchmarks/pretrain.py``: open_clip's own CLIP training step at
sonofm's tower sizes, run in the same process and on the same batches as sonofm's step.

open_clip_torch needs torchvision, which must not be installed in this environment (it crashes
here). open_clip only uses torchvision for its image transforms (``open_clip.transform``) and
one import in ``open_clip.utils`` (``FrozenBatchNorm2d``); neither is on the training path of a
ViT + Hugging Face text tower. So the anchor is installed with ``pip install --no-deps --target``
into ``.sonofm-cache/bench-anchor`` (outside the project venv) next to a stub ``torchvision``
package that satisfies those imports and fails loudly if anything is ever called.

Identical towers: open_clip's ``VisionTransformer`` with sonofm's ViT width/depth/heads/patch and
a 1-channel patch embedding; open_clip's ``HFTextEncoder`` (mean pooler, bias-free linear
projection) wrapping a copy of sonofm's truncated MiniLM with the same layers frozen
(open_clip's ``lock(unlocked_layers=...)`` has no layer table for BERT, so the copy keeps
sonofm's flags). The step is open_clip's ``train_one_epoch`` body: autocast, ``ClipLoss``,
backward, ``clip_grad_norm_``, AdamW with open_clip's weight-decay groups (torch defaults
otherwise: the per-parameter loop on CPU), the logit-scale clamp; the loss is read back only at
log steps, as open_clip does.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
ANCHOR_DIR = ROOT / ".sonofm-cache" / "bench-anchor"
OPEN_CLIP_VERSION = "3.3.0"
# open_clip imports ftfy (and ftfy imports wcwidth) at module level; neither is a sonofm dependency.
_PACKAGES = (f"open_clip_torch=={OPEN_CLIP_VERSION}", "ftfy", "wcwidth")

_STUB = '''"""Stub torchvision for the open_clip benchmark anchor: imports succeed, any use fails."""


class _Missing:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision is a stub in the benchmark anchor environment")

    def __class_getitem__(cls, item):
        return cls


class _Meta(type):
    def __getattr__(cls, name):
        return name


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Meta(name, (_Missing,), {})
'''


def install(quiet: bool = True) -> Path:
    """Install open_clip (no deps) and the torchvision stub under ``ANCHOR_DIR``; idempotent."""
    marker = ANCHOR_DIR / f".open_clip-{OPEN_CLIP_VERSION}"
    if not marker.exists():
        cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps"]
        cmd += ["--target", str(ANCHOR_DIR), "--upgrade", *_PACKAGES]
        subprocess.run(cmd + (["-q"] if quiet else []), check=True)
        marker.touch()
    for mod in ("torchvision", "torchvision/transforms", "torchvision/ops"):
        pkg = ANCHOR_DIR / "stubs" / mod
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text(_STUB)
    (ANCHOR_DIR / "stubs" / "torchvision" / "transforms" / "functional.py").write_text(_STUB)
    (ANCHOR_DIR / "stubs" / "torchvision" / "ops" / "misc.py").write_text(_STUB)
    return ANCHOR_DIR


def import_open_clip() -> Any:
    """``open_clip`` from the anchor directory (installing it on first use)."""
    install()
    for p in (str(ANCHOR_DIR), str(ANCHOR_DIR / "stubs")):
        if p not in sys.path:
            sys.path.append(p)  # after the venv: torch/transformers stay the project's own
    import open_clip

    return open_clip


def build_anchor(sonofm_model: nn.Module) -> nn.Module:
    """An open_clip ``CustomTextCLIP`` with the towers of ``sonofm_model`` (a tiny-preset DualEncoder)."""
    open_clip = import_open_clip()
    from open_clip.hf_model import HFTextEncoder
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP

    img = sonofm_model.visual.backbone.config
    cfg = sonofm_model.config
    vision = CLIPVisionCfg(
        layers=img.num_hidden_layers,
        width=img.hidden_size,
        head_width=img.hidden_size // img.num_attention_heads,
        mlp_ratio=img.intermediate_size / img.hidden_size,
        patch_size=img.patch_size,
        image_size=img.image_size,
        pool_type="avg" if sonofm_model.visual.pool == "mean" else "tok",
    )
    text_encoder = sonofm_model.text.encoder
    text_path = str(getattr(text_encoder.config, "_name_or_path", "") or "bert")
    text = CLIPTextCfg(
        hf_model_name=text_path,
        hf_model_pretrained=False,
        hf_pooler_type="mean_pooler",
        hf_proj_type="linear",
    )
    model = _build_custom_clip(CustomTextCLIP, HFTextEncoder, cfg.embed_dim, vision, text, text_encoder)
    # 1-channel B-mode input, as sonofm's tower.
    width, patch = img.hidden_size, img.patch_size
    model.visual.conv1 = nn.Conv2d(img.num_channels, width, patch, patch, bias=False)
    _ = open_clip  # imported for its side effect of making the package importable
    return model


def _build_custom_clip(
    clip_cls: type, hf_cls: type, embed_dim: int, vision: Any, text: Any, text_encoder: nn.Module
) -> nn.Module:
    """CustomTextCLIP whose HF text encoder is a fresh copy of ``text_encoder`` (no hub access)."""
    original_init = hf_cls.__init__

    def init(self: Any, model_name_or_path: str, output_dim: int, **kw: Any) -> None:
        kw["config"] = copy.deepcopy(text_encoder.config)
        original_init(self, model_name_or_path, output_dim, **kw)
        self.transformer = copy.deepcopy(text_encoder)  # sonofm's modules, weights and freezing

    hf_cls.__init__ = init
    try:
        return clip_cls(embed_dim, vision, text)
    finally:
        hf_cls.__init__ = original_init


class AnchorStep:
    """open_clip's training step (``open_clip_train.train.train_one_epoch``, one accumulation)."""

    def __init__(
        self,
        model: nn.Module,
        precision: str,
        lr: float = 5e-4,
        wd: float = 0.1,
        grad_clip: float = 1.0,
        log_every: int = 10,
    ) -> None:
        open_clip = import_open_clip()
        self.model = model.train()
        self.loss = open_clip.ClipLoss()
        self.grad_clip = grad_clip
        self.log_every = log_every
        self.precision = precision
        self.steps = 0

        def exclude(n: str, p: nn.Parameter) -> bool:  # open_clip_train.main
            return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
                {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": wd},
            ],
            lr=lr,
            betas=(0.9, 0.98),
            eps=1e-6,
        )

    def _autocast(self) -> Any:
        if self.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def __call__(self, batch: dict[str, torch.Tensor]) -> float | None:
        images, texts = batch["image"], batch["input_ids"]
        self.optimizer.zero_grad()
        with self._autocast():
            out = self.model(images, texts)
            loss = self.loss(out[0], out[1], out[2])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip, norm_type=2.0)
        self.optimizer.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))
        self.steps += 1
        return loss.item() if self.steps % self.log_every == 0 else None
