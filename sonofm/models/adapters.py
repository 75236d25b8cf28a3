"""Parameter-efficient adaptation of an image tower: hybrid tuning (NextGen-UIA), LoRA, linear, full.

`apply_adapter(tower, kind)` freezes what must stay frozen and inserts what trains:

- ``ht``: a :class:`HybridTuningAdapter` after every transformer block of a ViT/DINOv2 tower
  (docs/methods.md section 4), tower frozen. The adapters are inserted with forward hooks on the
  Hugging Face encoder layers, registered with ``prepend=True`` so they run before the
  hidden-state capture hooks of transformers: ``feature_maps`` (which reads the per-block hidden
  states) and the pooled ``forward`` both see the adapted tokens. The adapter modules live in
  ``tower.adapters`` so they are saved with the tower's state dict; the backbone's own keys are
  unchanged, which keeps pretrained weights loadable.
- ``lora``: LoRA (peft ``LoraConfig`` + ``inject_adapter_in_model``) on the attention query and
  value projections, everything else frozen.
- ``linear``: the whole tower frozen; only the task head trains (a linear/decoder probe).
- ``full``: everything trains.

The hybrid-tuning math (per block, tokens x (B, N, D), P prefix tokens (CLS + registers)):

    x̂   = LN(x)·γ + x·γ_x                           γ init 1e-6, γ_x init 1 (starts at x̂ ≈ x)
    z   = W1 x̂                                        bottleneck b (64)
    spatial tokens of z -> grid (B, b, H, W); prefix tokens bypass the grid operations
    z_f = irfft2(rfft2(z) ⊙ f)                        f: learnable gain per channel (init 1)
    w   = softmax(MLP(GAP(z_f)))                      one weight per depthwise kernel k ∈ {3, 5, 7}
    u   = Σ_k w_k · DWConv_k(z_f) + z                 (prefix tokens: u = z)
    u   = u + Conv1x1(u)                              (a per-token linear map, prefix tokens too)
    out = x + W2(Dropout(GELU(u)))                    W2 zero-initialised: the adapted tower starts
                                                      out equal to the pretrained one

Note on f: a real gain per channel commutes with the 2-D FFT, so ``fft_gain="channel"`` (the
docs/methods.md form, the default) is a learnable per-channel scale computed in the frequency domain.
``fft_gain="frequency"`` learns one gain per channel *and* frequency (GFNet-style global filter,
needs the grid size), which makes the spectral branch a learnable global convolution.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sonofm.errors import UserError

log = logging.getLogger(__name__)

AdapterKind = Literal["ht", "lora", "linear", "full"]
ADAPTER_KINDS: tuple[str, ...] = ("ht", "lora", "linear", "full")
_TOKEN_KINDS = ("vit", "dinov2")


class HybridTuningAdapter(nn.Module):
    """The NextGen-UIA hybrid-tuning adapter for one transformer block (see module docstring)."""

    def __init__(
        self,
        dim: int,
        bottleneck: int = 64,
        *,
        kernel_sizes: tuple[int, ...] = (3, 5, 7),
        dropout: float = 0.1,
        num_prefix_tokens: int = 1,
        fft_gain: Literal["channel", "frequency"] = "channel",
        grid_size: tuple[int, int] | None = None,
        gamma_init: float = 1e-6,
    ) -> None:
        super().__init__()
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"depthwise kernel sizes must be odd (same padding), got {kernel_sizes}")
        self.dim = dim
        self.bottleneck = bottleneck
        self.num_prefix_tokens = num_prefix_tokens
        self.fft_gain_kind = fft_gain
        self.norm = nn.LayerNorm(dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(gamma_init)))
        self.gamma_x = nn.Parameter(torch.ones(dim))
        self.down = nn.Linear(dim, bottleneck)
        if fft_gain == "channel":
            self.fft_gain = nn.Parameter(torch.ones(bottleneck))
        elif fft_gain == "frequency":
            if grid_size is None:
                raise ValueError("fft_gain='frequency' needs grid_size=(H, W) of the patch grid")
            h, w = grid_size
            self.fft_gain = nn.Parameter(torch.ones(bottleneck, h, w // 2 + 1))
        else:
            raise ValueError(f"fft_gain must be 'channel' or 'frequency', got {fft_gain!r}")
        hidden = max(bottleneck // 4, 8)
        self.kernel_mlp = nn.Sequential(
            nn.Linear(bottleneck, hidden), nn.GELU(), nn.Linear(hidden, len(kernel_sizes))
        )
        self.dwconvs = nn.ModuleList(
            nn.Conv2d(bottleneck, bottleneck, k, padding=k // 2, groups=bottleneck) for k in kernel_sizes
        )
        self.pwconv = nn.Conv2d(bottleneck, bottleneck, 1)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def spectral(self, z: Tensor) -> Tensor:
        """z_f = irfft2(rfft2(z) ⊙ f) over the grid (B, b, H, W); half precision is lifted to float32."""
        h, w = z.shape[-2:]
        zf = z if z.dtype in (torch.float32, torch.float64) else z.float()
        spec = torch.fft.rfft2(zf, dim=(-2, -1), norm="ortho")
        gain = self.fft_gain.to(zf.dtype)
        spec = spec * (gain[:, None, None] if gain.ndim == 1 else gain)
        return torch.fft.irfft2(spec, s=(h, w), dim=(-2, -1), norm="ortho").to(z.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) tokens (P prefix tokens first, then an H x W grid in row-major order) -> same shape."""
        b, n, d = x.shape
        p = self.num_prefix_tokens
        side = math.isqrt(n - p)
        if side * side != n - p:
            raise ValueError(f"expected {p} prefix tokens + a square grid, got {n} tokens")
        x_hat = self.norm(x) * self.gamma + x * self.gamma_x
        z = self.down(x_hat)  # (B, N, b)
        z_prefix, z_grid = z[:, :p], z[:, p:]
        z_grid = z_grid.transpose(1, 2).reshape(b, self.bottleneck, side, side)
        z_f = self.spectral(z_grid)
        weights = torch.softmax(self.kernel_mlp(z_f.mean(dim=(2, 3))), dim=-1)  # (B, K)
        u_grid = z_grid
        for k, conv in enumerate(self.dwconvs):
            u_grid = u_grid + weights[:, k, None, None, None] * conv(z_f)
        u = torch.cat([z_prefix, u_grid.flatten(2).transpose(1, 2)], dim=1)  # (B, N, b)
        # Conv1x1 over the grid == the same linear map per token; applied to prefix tokens as well.
        u = u + F.linear(u, self.pwconv.weight.view(self.bottleneck, self.bottleneck), self.pwconv.bias)
        return x + self.up(self.drop(self.act(u)))

    def hook(self, module: nn.Module, args: Any, output: Any) -> Any:
        """Forward hook on a transformer block: adapt its output tokens."""
        if isinstance(output, tuple):
            return (self(output[0]), *output[1:])
        return self(output)


# ---------------------------------------------------------------------------------------- helpers
def transformer_blocks(tower: nn.Module) -> nn.ModuleList:
    """The encoder-layer list of a ViT/DINOv2 tower's Hugging Face backbone."""
    backbone = tower.backbone
    n = int(getattr(backbone.config, "num_hidden_layers", -1))
    for name in ("layers", "encoder.layer", "encoder.layers"):
        mod: Any = backbone
        for part in name.split("."):
            mod = getattr(mod, part, None)
            if mod is None:
                break
        if isinstance(mod, nn.ModuleList) and len(mod) == n:
            return mod
    raise UserError(f"cannot find the transformer blocks of a {type(backbone).__name__} image tower")


def _num_prefix_tokens(tower: nn.Module) -> int:
    return 1 + int(getattr(tower.backbone.config, "num_register_tokens", 0) or 0)


def _lora_targets(tower: nn.Module) -> list[str]:
    """Attention query/value Linear modules (by suffix) of any supported tower."""
    names = [n for n, m in tower.backbone.named_modules() if isinstance(m, nn.Linear)]
    for pair in (("q_proj", "v_proj"), ("query", "value")):
        if any(n.endswith(pair[0]) for n in names) and any(n.endswith(pair[1]) for n in names):
            return list(pair)
    if any(n.endswith("qkv") for n in names):  # MONAI Swin: fused qkv projection
        return ["qkv"]
    raise UserError(
        f"adapter 'lora' needs attention projections; a {tower.kind!r} tower has none "
        "(use --adapter linear or full, or pass lora target_modules=[...])"
    )


def count_parameters(module: nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts (reported in training.json and logs)."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"total": int(total), "trainable": int(trainable)}


def apply_adapter(tower: nn.Module, kind: str, **opts: Any) -> nn.Module:
    """Prepare ``tower`` (an `ImageTower`) for fine-tuning with adapter ``kind``; returns it (modified).

    Options: ``ht``: bottleneck (64), dropout (0.1), kernel_sizes ((3, 5, 7)), fft_gain
    ("channel"); ``lora``: r (8), alpha (16), dropout (0.0), target_modules (auto: q/v projections).
    The choice is recorded on the tower (``adapter_kind``, ``adapter_options``) so a saved task
    model rebuilds the same structure before its weights are loaded.
    """
    if kind not in ADAPTER_KINDS:
        raise UserError(f"unknown adapter {kind!r}; choose one of {', '.join(ADAPTER_KINDS)}")
    if getattr(tower, "adapter_kind", None) not in (None, "linear", "full"):
        raise UserError(f"the image tower already has a {tower.adapter_kind!r} adapter")
    opts = dict(opts)
    if kind == "full":
        tower.requires_grad_(True)
        if tower.kind == "dinov2":  # used only for masked image modelling
            tower.backbone.embeddings.mask_token.requires_grad_(False)
    elif kind == "linear":
        tower.requires_grad_(False)
    elif kind == "ht":
        _insert_hybrid_tuning(tower, opts)
    else:
        _insert_lora(tower, opts)
    tower.adapter_kind = kind
    tower.adapter_options = opts
    stats = count_parameters(tower)
    log.info("adapter %s: %d of %d tower parameters train", kind, stats["trainable"], stats["total"])
    return tower


def _insert_hybrid_tuning(tower: nn.Module, opts: dict[str, Any]) -> None:
    if tower.kind not in _TOKEN_KINDS:
        raise UserError(
            f"adapter 'ht' (hybrid tuning) needs a ViT/DINOv2 tower, got kind={tower.kind!r}; "
            "use --adapter lora, linear or full"
        )
    unknown = set(opts) - {"bottleneck", "dropout", "kernel_sizes", "fft_gain", "gamma_init"}
    if unknown:
        raise UserError(f"unknown ht adapter options {sorted(unknown)}")
    if "kernel_sizes" in opts:
        opts["kernel_sizes"] = tuple(int(k) for k in opts["kernel_sizes"])
    tower.requires_grad_(False)
    blocks = transformer_blocks(tower)
    width = int(tower.backbone.config.hidden_size)
    patch = int(tower.backbone.config.patch_size)
    grid = (tower.image_size // patch, tower.image_size // patch)
    tower.adapters = nn.ModuleList(
        HybridTuningAdapter(width, num_prefix_tokens=_num_prefix_tokens(tower), grid_size=grid, **opts)
        for _ in blocks
    )
    # prepend=True: run before transformers' hidden-state capture hooks (see module docstring).
    tower._adapter_handles = [
        block.register_forward_hook(adapter.hook, prepend=True)
        for block, adapter in zip(blocks, tower.adapters, strict=True)
    ]


def _insert_lora(tower: nn.Module, opts: dict[str, Any]) -> None:
    from peft import LoraConfig, inject_adapter_in_model  # lazy: peft takes ~3 s to import; LoRA only

    unknown = set(opts) - {"r", "alpha", "dropout", "target_modules"}
    if unknown:
        raise UserError(f"unknown lora adapter options {sorted(unknown)}")
    targets = list(opts.get("target_modules") or _lora_targets(tower))
    opts["target_modules"] = targets
    config = LoraConfig(
        r=int(opts.get("r", 8)),
        lora_alpha=int(opts.get("alpha", 16)),
        lora_dropout=float(opts.get("dropout", 0.0)),
        target_modules=targets,
        bias="none",
    )
    tower.requires_grad_(False)
    inject_adapter_in_model(config, tower.backbone)
    n = 0
    for name, p in tower.backbone.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
            n += 1
    if n == 0:
        raise UserError(f"lora: no module of the tower matched target_modules={targets}")
