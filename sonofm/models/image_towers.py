"""Image towers: transformers vision models (ViT, DINOv2, ConvNeXt/V2, Swin/V2) and MONAI SwinV2.

Every tower takes float images in [0, 1] of shape (B, 1|3, H, W), adapts the channel count,
normalises with the configured mean/std, and gives
- `forward(images) -> (B, width)` pooled features, and
- `feature_maps(images) -> list[(B, C_i, H_i, W_i)]` multi-level features for dense heads:
  * ViT / DINOv2: 4 maps from the blocks at 1/4, 1/2, 3/4 and full depth, patch tokens reshaped
    to the (H/p, W/p) grid, all with C = hidden_size (the ViTDet / NextGen-UIA choice);
  * ConvNeXt / ConvNeXtV2: the 4 stage outputs, strides 4, 8, 16, 32, channels `hidden_sizes`;
  * Swin / SwinV2: the 4 stage outputs before patch merging, strides p, 2p, 4p, 8p,
    channels C, 2C, 4C, 8C (C = embed_dim);
  * MONAI SwinV2: the 5-level pyramid EchoCare uses, strides p, 2p, 4p, 8p, 16p,
    channels C, 2C, 4C, 8C, 16C, each layer-normalised over channels.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sonofm.data.transforms import normalise
from sonofm.errors import UserError
from sonofm.models.config import ImageTowerConfig
from sonofm.models.io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    check_state_dict,
    load_image_tower,
    read_safetensors,
    registered_model_types,
)
from sonofm.models.text_towers import portable_arch, quiet_transformers, set_hf_checkpointing

log = logging.getLogger(__name__)

# transformers model class per kind; names resolved lazily so importing this module stays cheap.
_HF_MODEL_CLASS = {
    "vit": "ViTModel",
    "dinov2": "Dinov2Model",
    "convnext": "ConvNextModel",
    "convnextv2": "ConvNextV2Model",
    "swin": "SwinModel",
    "swinv2": "Swinv2Model",
}
# ViT's pooler is a dense layer we do not use (CLS or mean pooling instead); Swin's is a
# parameter-free average pool that we do use.
_DROP_POOLER = {"vit"}
_TOKEN_KINDS = {"vit", "dinov2"}  # plain transformers with a CLS token
_NO_IMAGE_SIZE = {"convnext", "convnextv2"}  # fully convolutional: any size works


def _hf_class(kind: str) -> type:
    import transformers  # lazy: transformers takes ~1-2 s; only HF towers need it

    return getattr(transformers, _HF_MODEL_CLASS[kind])


def _load_hf_pretrained(cls: type, source: str, kwargs: dict[str, Any]) -> nn.Module:
    """`from_pretrained` from a local dir or hub id, turning "not reachable" into a UserError."""
    local = Path(source).expanduser()
    try:
        with quiet_transformers():
            if local.is_dir():
                return cls.from_pretrained(str(local), local_files_only=True, **kwargs)
            return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        where = "local directory" if local.is_dir() else "Hugging Face hub id"
        raise UserError(
            f"could not load image tower {source!r} ({where}): {e}. Without a network, download it "
            f"elsewhere and set image.pretrained to the local directory."
        ) from e


def sonofm_model_dir(source: str | Path) -> Path | None:
    """`source` as a sonofm model directory (config.json with a registered `model_type`), else None.

    Hugging Face model directories also hold a config.json with a `model_type` ("vit", "swin",
    ...); only sonofm's own model types (dual encoders, SSL models, task models, VLMs) count here.
    """
    path = Path(source).expanduser()
    f = path / CONFIG_NAME
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("model_type") in registered_model_types():
        return path
    return None


def _tower_from_model_dir(cfg: ImageTowerConfig, model_dir: Path) -> tuple[ImageTowerConfig, nn.Module]:
    """The `.visual` tower of a sonofm model dir, and `cfg` rewritten to build the same architecture.

    The architecture comes from the source tower (as `from_pretrained` takes it from a checkpoint);
    extra keys in `cfg` still override it, so a conflicting setting shows up as a shape mismatch.
    """
    source = load_image_tower(model_dir)
    what = f"image.pretrained {str(model_dir)!r}"
    if getattr(source, "kind", None) != cfg.kind:
        raise UserError(
            f"{what} holds a {getattr(source, 'kind', type(source).__name__)!r} image tower but image.kind "
            f"is {cfg.kind!r}; set image.kind={getattr(source, 'kind', cfg.kind)}"
        )
    if source.in_chans != cfg.in_chans:
        raise UserError(
            f"{what} takes {source.in_chans}-channel input but image.in_chans is {cfg.in_chans}; "
            f"set image.in_chans={source.in_chans} and matching image.mean/image.std"
        )
    same_norm = torch.allclose(source.mean.flatten(), torch.tensor(cfg.mean)) and torch.allclose(
        source.std.flatten(), torch.tensor(cfg.std)
    )
    if not same_norm:
        log.warning(
            "%s was trained with mean %s / std %s but image.mean/image.std are %s / %s",
            what,
            source.mean.flatten().tolist(),
            source.std.flatten().tolist(),
            cfg.mean,
            cfg.std,
        )
    arch = {**(cfg.arch or source.arch), **cfg.extra}
    if cfg.kind != "monai_swin":
        arch["num_channels"] = cfg.in_chans
    return cfg.model_copy(update={"arch": arch, "pretrained": None}), source


def _basic_layer_2d(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MONAI `BasicLayer.forward` for 2-D input, (B, C, H, W) -> (B, C', H', W').

    Re-implemented because MONAI's version calls `einops.rearrange`, an optional MONAI
    dependency that is not installed here; only the two permutes differ, the blocks, masks and
    patch merging are MONAI's own modules and functions.
    """
    from monai.networks.nets.swin_unetr import compute_mask, get_window_size  # lazy: monai ~5 s; Swin only

    b, _, h, w = x.shape
    window_size, shift_size = get_window_size((h, w), layer.window_size, layer.shift_size)
    x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
    hp = int(math.ceil(h / window_size[0])) * window_size[0]
    wp = int(math.ceil(w / window_size[1])) * window_size[1]
    attn_mask = compute_mask([hp, wp], window_size, shift_size, x.device)
    for blk in layer.blocks:
        x = blk(x, attn_mask)
    x = x.view(b, h, w, -1)
    if layer.downsample is not None:
        x = layer.downsample(x)
    return x.permute(0, 3, 1, 2)  # (B, C', H', W')


def _channel_layer_norm(x: torch.Tensor) -> torch.Tensor:
    """MONAI `SwinTransformer.proj_out(normalize=True)`: layer norm over channels, no affine."""
    return F.layer_norm(x.permute(0, 2, 3, 1), [x.shape[1]]).permute(0, 3, 1, 2)


class MonaiSwinBackbone(nn.Module):
    """MONAI `SwinTransformer` (2-D) returning its 5-level pyramid; MONAI's modules and weights names."""

    def __init__(self, arch: dict[str, Any]) -> None:
        super().__init__()
        from monai.networks.nets.swin_unetr import SwinTransformer  # lazy: monai ~5 s; Swin only

        a = dict(arch)
        for key in ("window_size", "patch_size"):
            if isinstance(a[key], int):
                a[key] = (a[key], a[key])
        self.net = SwinTransformer(
            in_chans=a["in_chans"],
            embed_dim=a["embed_dim"],
            window_size=tuple(a["window_size"]),
            patch_size=tuple(a["patch_size"]),
            depths=tuple(a["depths"]),
            num_heads=tuple(a["num_heads"]),
            mlp_ratio=a.get("mlp_ratio", 4.0),
            qkv_bias=a.get("qkv_bias", True),
            drop_rate=a.get("drop_rate", 0.0),
            attn_drop_rate=a.get("attn_drop_rate", 0.0),
            drop_path_rate=a.get("drop_path_rate", 0.0),
            patch_norm=a.get("patch_norm", False),
            spatial_dims=2,
            downsample=a.get("downsample", "mergingv2"),
            use_v2=a.get("use_v2", True),
        )
        if len(a["depths"]) != 4:
            raise UserError(f"image.depths for monai_swin must have 4 stages, got {a['depths']}")
        self.width = int(a["embed_dim"]) * 2 ** len(a["depths"])

    def load_pretrained(self, source: str) -> None:
        """Weights of a MONAI `SwinTransformer` from a .safetensors file (or a dir holding model.safetensors).

        Keys are MONAI's own; a `swinViT.` prefix (SwinUNETR checkpoints) or `module.` (DDP) is
        stripped. The match is strict: any missing, unexpected or mis-shaped key is an error.
        """
        path = Path(source).expanduser()
        if path.is_dir():
            path = path / WEIGHTS_NAME
        if path.suffix != ".safetensors":
            raise UserError(
                f"image.pretrained for monai_swin must be a .safetensors file or directory, got {source}"
            )
        state = {}
        for k, v in read_safetensors(path).items():
            for prefix in ("module.", "swinViT."):
                k = k.removeprefix(prefix)
            state[k] = v
        check_state_dict(self.net.state_dict(), state, str(path))
        self.net.load_state_dict(state, strict=True)

    def set_grad_checkpointing(self, enable: bool) -> None:
        for m in self.net.modules():
            if hasattr(m, "use_checkpoint"):
                m.use_checkpoint = enable

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        net = self.net
        x = net.pos_drop(net.patch_embed(x))  # (B, C, H/p, W/p)
        outs = [_channel_layer_norm(x)]
        for i in range(1, 5):
            if net.use_v2:
                x = getattr(net, f"layers{i}c")[0](x.contiguous())
            x = _basic_layer_2d(getattr(net, f"layers{i}")[0], x.contiguous())
            outs.append(_channel_layer_norm(x))
        return outs  # strides p, 2p, 4p, 8p, 16p


class ImageTower(nn.Module):
    """One image tower behind one interface (see module docstring)."""

    def __init__(self, cfg: ImageTowerConfig, *, load_pretrained: bool = True) -> None:
        super().__init__()
        # image.pretrained may name a sonofm model dir (e.g. an SSL run): copy its `.visual` weights.
        source_dir = sonofm_model_dir(cfg.pretrained) if cfg.pretrained and load_pretrained else None
        source: nn.Module | None = None
        if source_dir is not None:
            cfg, source = _tower_from_model_dir(cfg, source_dir)
        self.kind = cfg.kind
        self.in_chans = cfg.in_chans
        self.image_size = cfg.image_size
        self.pool = cfg.pool
        # Non-persistent: preprocessing lives in config.json, not among the weights.
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, -1, 1, 1), persistent=False)
        if cfg.kind == "monai_swin":
            self.arch = self._monai_arch(cfg)
            self.backbone: nn.Module = MonaiSwinBackbone(self.arch)
            self.width = self.backbone.width
            if cfg.pretrained and load_pretrained:
                self.backbone.load_pretrained(cfg.pretrained)
        else:
            self.backbone = self._build_hf(cfg, load_pretrained)
            self.arch = portable_arch(self.backbone.config)
            hc = self.backbone.config
            self.width = int(hc.hidden_sizes[-1] if cfg.kind in _NO_IMAGE_SIZE else hc.hidden_size)
            if cfg.kind == "dinov2":
                # Only used for masked-image modelling; frozen so DDP sees no unused trainable weights.
                self.backbone.embeddings.mask_token.requires_grad_(False)
        if source is not None:
            self._copy_weights(source, source_dir)
        if cfg.freeze:
            self.requires_grad_(False)

    # ----- construction -----
    @staticmethod
    def _monai_arch(cfg: ImageTowerConfig) -> dict[str, Any]:
        defaults = {
            "embed_dim": 128,
            "depths": [2, 2, 18, 2],
            "num_heads": [4, 8, 16, 32],
            "window_size": 8,
            "patch_size": 2,
            "use_v2": True,
            "downsample": "mergingv2",
        }
        arch = {**defaults, **(cfg.arch or {}), **cfg.extra}
        arch["in_chans"] = cfg.in_chans
        if len(arch["num_heads"]) != len(arch["depths"]):
            raise UserError(f"image.num_heads {arch['num_heads']} must match image.depths {arch['depths']}")
        return arch

    def _build_hf(self, cfg: ImageTowerConfig, load_pretrained: bool) -> nn.Module:
        from transformers import CONFIG_MAPPING  # lazy: transformers takes ~1-2 s; only HF towers need it

        cls = _hf_class(cfg.kind)
        init_kw = {"add_pooling_layer": False} if cfg.kind in _DROP_POOLER else {}
        if cfg.arch is not None:
            hf_cfg = CONFIG_MAPPING[cfg.arch.get("model_type", cfg.kind)].from_dict(dict(cfg.arch))
            self._check_kind(cfg, hf_cfg.model_type, "image.arch")
            if cfg.pretrained and load_pretrained:
                return _load_hf_pretrained(cls, cfg.pretrained, {"config": hf_cfg, **init_kw})
            return cls(hf_cfg, **init_kw)
        if cfg.pretrained and load_pretrained:
            model = _load_hf_pretrained(cls, cfg.pretrained, {**cfg.extra, **init_kw})
            self._check_kind(cfg, model.config.model_type, f"image.pretrained {cfg.pretrained!r}")
            got = int(model.config.num_channels)
            if got != cfg.in_chans:
                raise UserError(
                    f"image.pretrained {cfg.pretrained!r} takes {got}-channel input but image.in_chans is "
                    f"{cfg.in_chans}; set image.in_chans={got} and matching image.mean/image.std "
                    "(1-channel images are repeated to 3 channels automatically)"
                )
            return model
        kw = {**cfg.extra, "num_channels": cfg.in_chans}
        if cfg.kind not in _NO_IMAGE_SIZE:
            kw["image_size"] = cfg.image_size
        try:
            hf_cfg = CONFIG_MAPPING[cfg.kind](**kw)
        except (TypeError, ValueError) as e:
            raise UserError(f"invalid image tower settings for kind={cfg.kind!r}: {e}") from e
        return cls(hf_cfg, **init_kw)

    def _copy_weights(self, source: nn.Module, source_dir: Path | None) -> None:
        """Strict, shape-checked copy of another tower's weights (UserError names the bad keys)."""
        state = {k: v.detach().clone() for k, v in source.state_dict().items()}
        check_state_dict(self.state_dict(), state, f"image.pretrained {str(source_dir)!r} (its image tower)")
        self.load_state_dict(state, strict=True)
        log.info("image tower weights copied from %s", source_dir)

    @staticmethod
    def _check_kind(cfg: ImageTowerConfig, got: str, what: str) -> None:
        if got != cfg.kind:
            raise UserError(f"{what} is a {got!r} model but image.kind is {cfg.kind!r}; set image.kind={got}")

    @property
    def tokens(self) -> int | None:
        """Sequence length of a plain ViT/DINOv2 tower (patches + CLS), else None."""
        if self.kind not in _TOKEN_KINDS:
            return None
        return (self.image_size // int(self.backbone.config.patch_size)) ** 2 + 1

    def set_attention(self, impl: str) -> bool:
        """Switch a ViT/DINOv2 tower between ``sdpa`` and ``eager`` attention (same maths; speed
        differs by precision and length, see ``sonofm.inference.precision.choose_attention``).
        Returns whether the tower has such a switch."""
        if self.kind not in _TOKEN_KINDS:
            return False
        if self.backbone.config._attn_implementation != impl:
            self.backbone.set_attn_implementation(impl)
        return True

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if self.kind == "monai_swin":
            self.backbone.set_grad_checkpointing(enable)
        else:
            set_hf_checkpointing(self.backbone, enable)

    # ----- forward -----
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (B, 1|3, H, W) -> normalised tower input (B, in_chans, H, W)."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be (B, 1|3, H, W), got shape {tuple(images.shape)}")
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"images must be {self.image_size}x{self.image_size} (the model's image_size), "
                f"got {tuple(images.shape[-2:])}; resize in the data pipeline"
            )
        if not images.is_floating_point():
            raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype}")
        return normalise(images, self.mean, self.std, self.in_chans)

    def _hf_forward(self, x: torch.Tensor, hidden: bool) -> Any:
        kw: dict[str, Any] = {"output_hidden_states": hidden}
        if self.kind == "vit" and self.backbone.config.image_size != self.image_size:
            kw["interpolate_pos_encoding"] = True
        return self.backbone(pixel_values=x, **kw)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1|3, S, S) in [0, 1] -> (B, width) pooled features."""
        x = self.preprocess(images)
        if self.kind == "monai_swin":
            return self.backbone(x)[-1].mean(dim=(2, 3))
        out = self._hf_forward(x, hidden=False)
        if self.kind in _TOKEN_KINDS:
            tokens = out.last_hidden_state  # (B, 1+N, D), final layer norm applied
            return tokens[:, 1:].mean(dim=1) if self.pool == "mean" else tokens[:, 0]
        return out.pooler_output  # ConvNeXt: LN(GAP); Swin: GAP(LN(tokens))

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Multi-level features (see module docstring for shapes per kind)."""
        x = self.preprocess(images)
        if self.kind == "monai_swin":
            return self.backbone(x)
        if self.kind in ("swin", "swinv2"):
            # Swinv2Model.forward does not pass `output_hidden_states_before_downsampling` on, so
            # run its embeddings + encoder directly (same modules and order as the model's forward).
            emb, dims = self.backbone.embeddings(x)
            enc = self.backbone.encoder(
                emb, dims, output_hidden_states=True, output_hidden_states_before_downsampling=True
            )
            return list(enc.reshaped_hidden_states[1:])
        out = self._hf_forward(x, hidden=True)
        if self.kind in _TOKEN_KINDS:
            depth = len(out.hidden_states) - 1
            p = self.backbone.config.patch_size
            h, w = x.shape[-2] // p, x.shape[-1] // p
            idx = [max(1, round(depth * k / 4)) for k in (1, 2, 3, 4)]
            # (B, 1+h*w, D) -> drop CLS -> (B, D, h, w)
            return [out.hidden_states[i][:, 1:].transpose(1, 2).reshape(x.shape[0], -1, h, w) for i in idx]
        return list(out.hidden_states[1:])  # ConvNeXt: stem output dropped, 4 stages
