"""SonoVLM: image tower -> projector -> causal LM with dual-path MoE (EchoVLM, docs/methods.md section 5).

Data flow (LLaVA-style):

    images (N_img, C, S, S) in [0, 1]
      -> patch_grid(tower, images)                 final normalised patch grid (N_img, D_v, h, w)
      -> adaptive average pool to g x g            g*g = num_image_tokens (a square number)
      -> projector (mlp2x_gelu: Linear-GELU-Linear, or linear)   (N_img, g*g, d_lm)
      -> scattered, in order, into the LM's token embeddings at the positions where
         input_ids == id of "<image>" (each <image> placeholder was expanded by
         `vlm_prompt.render_conversation` to num_image_tokens image tokens)
      -> transformers AutoModelForCausalLM (default: a small Qwen2 trained from scratch, or any
         pretrained causal LM via `lm_pretrained`) whose decoder MLPs are wrapped by `DualPathMoE`.

Images are given flat across the batch in order of appearance, so multi-image studies need no
extra structure: sample b's k-th <image> block takes the next image in `pixel_values`.

Generation goes through Hugging Face `generate` (greedy, beam, sampling, KV cache on/off) with
token ids, not `inputs_embeds`: a forward hook on the LM's input embedding replaces the
embeddings of image tokens by the image features on every call. Why not `inputs_embeds`:
transformers silently forces `use_cache=True` for decoder-only models given `inputs_embeds`
(generation/utils.py, "decoder-only models with inputs_embeds forwarding must use caching"), so a
cache-off run (the KV-cache benchmark and the cache-equivalence test) would be impossible, and
repetition penalties would not see the prompt. The hook is correct with and without the cache
and for beams (row r of the expanded batch belongs to sample r // num_beams). The image token
is suppressed during decoding so it can never be generated.

Parts beside this module: `vlm_config` (the architecture as data and the dense twin), `vlm_lm`
(the language model and its tokenizer), `vlm_generate` (generation and chat, a mixin of
`SonoVLM`), `vlm_prompt` (prompt rendering, tokenizer training) and `vlm_confidence`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import UnidentifiedImageError
from torch import nn

from sonofm.data.dataset import read_grayscale
from sonofm.errors import DataError, UserError
from sonofm.models import vlm_prompt
from sonofm.models.config import ImageTowerConfig
from sonofm.models.image_towers import ImageTower
from sonofm.models.io import load_image_tower, load_model, validated_config, with_weights
from sonofm.models.moe import (
    DualPathMoE,
    aux_loss,
    insert_moe,
    moe_blocks,
    reset_routing_stats,
    routing_context,
    routing_stats,
)
from sonofm.models.text_towers import load_tokenizer, set_hf_checkpointing
from sonofm.models.vlm_confidence import GeneratedText
from sonofm.models.vlm_config import (  # noqa: F401 (MODEL_TYPE, VLMConfig, dense_equivalent_config re-exported)
    MODEL_TYPE,
    VLMConfig,
    dense_equivalent_config,
)
from sonofm.models.vlm_findings import FindingsHead, FindingsVocab
from sonofm.models.vlm_generate import VLMGeneration
from sonofm.models.vlm_lm import _build_lm, build_tokenizer  # noqa: F401 (build_tokenizer re-exported)
from sonofm.models.vlm_prompt import IGNORE_INDEX, IMAGE_TOKEN, train_tokenizer  # noqa: F401 (re-exported)

# ---------------------------------------------------------------- building blocks


def patch_grid(tower: ImageTower, images: torch.Tensor) -> torch.Tensor:
    """The tower's final, normalised patch features as a grid (N, D, h, w).

    ViT/DINOv2: `last_hidden_state` without CLS (final LayerNorm applied); Swin/SwinV2:
    `last_hidden_state` (final LayerNorm); ConvNeXt/V2: last stage with the model's final
    LayerNorm applied per position; MONAI SwinV2: the last (normalised) pyramid level. Using the
    final norms means every tower weight is trained (no unused parameters under DDP).
    """
    kind = tower.kind
    if kind == "monai_swin":
        return tower.feature_maps(images)[-1]
    x = tower.preprocess(images)
    out = tower._hf_forward(x, hidden=False)
    if kind in ("convnext", "convnextv2"):
        f = out.last_hidden_state  # (N, C, h, w), before the pooled-output LayerNorm
        return tower.backbone.layernorm(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    t = out.last_hidden_state
    if kind in ("vit", "dinov2"):
        t = t[:, 1:]
    n, hw, d = t.shape
    side = math.isqrt(hw)
    if side * side != hw:
        raise UserError(f"{kind} tower gave {hw} patch tokens, not a square grid")
    return t.transpose(1, 2).reshape(n, d, side, side)


def tower_config(tower: ImageTower) -> ImageTowerConfig:
    """The resolved config that rebuilds `tower` without its original pretrained source."""
    return ImageTowerConfig(
        kind=tower.kind,
        image_size=tower.image_size,
        in_chans=tower.in_chans,
        mean=[float(v) for v in tower.mean.flatten()],
        std=[float(v) for v in tower.std.flatten()],
        pool=tower.pool,
        arch=tower.arch,
    )


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


# ---------------------------------------------------------------- the model


class SonoVLM(nn.Module, VLMGeneration):
    """Image tower + projector + causal LM (+ dual-path MoE); see the module docstring."""

    model_type = MODEL_TYPE

    def __init__(
        self,
        config: VLMConfig,
        tokenizer: Any,
        *,
        visual: ImageTower | None = None,
        load_pretrained: bool = True,
    ) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.visual = (
            visual if visual is not None else ImageTower(config.image, load_pretrained=load_pretrained)
        )
        self.lm = _build_lm(config, tokenizer)
        self.moe_blocks: list[DualPathMoE] = insert_moe(self.lm, config.moe) if config.moe is not None else []
        d_lm = int(self.lm.config.get_text_config().hidden_size)
        self.projector = build_projector(config.projector, self.visual.width, d_lm)
        self.findings: FindingsHead | None = None
        if config.findings is not None:
            self.findings = FindingsHead(self.visual.width, FindingsVocab.from_config(config.findings))
        self.image_token_id = vlm_prompt.image_token_id(tokenizer)
        self.grid = math.isqrt(config.num_image_tokens)

    # ----- images -----
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N_img, C, S, S) in [0, 1] -> (N_img, num_image_tokens, d_lm) LM-space image tokens."""
        return self.encode_with_findings(pixel_values)[0]

    def encode_with_findings(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Image tokens and the findings head's logits (N_img, K; None without a head), one tower pass."""
        fmap = patch_grid(self.visual, pixel_values)  # (N, D, h, w)
        logits = self._findings_logits(fmap)
        if fmap.shape[-1] != self.grid or fmap.shape[-2] != self.grid:
            fmap = F.adaptive_avg_pool2d(fmap, (self.grid, self.grid))
        tokens = fmap.flatten(2).transpose(1, 2)  # (N, g*g, D), row-major patch order
        return self.projector(tokens), logits

    @torch.no_grad()
    def findings_probabilities(self, pixel_values: torch.Tensor) -> torch.Tensor | None:
        """(N, K) probabilities of the findings head (`FindingsHead.probabilities`); None without one."""
        if self.findings is None or pixel_values is None or not len(pixel_values):
            return None
        was = self.training
        self.eval()
        try:
            logits = self._findings_logits(patch_grid(self.visual, pixel_values))
        finally:
            self.train(was)
        return self.findings.probabilities(logits)

    def predict_findings(self, pixel_values: torch.Tensor) -> list[dict[str, Any]]:
        """Per image, the labels the findings head decides (`FindingsVocab.decide`); [] without a head."""
        probs = self.findings_probabilities(pixel_values)
        return [] if probs is None else self.findings.vocab.decide(probs, self.config.findings.threshold)

    def _findings_logits(self, fmap: torch.Tensor) -> torch.Tensor | None:
        """The head on the mean of the patch grid (N, D, h, w) -> (N, K); None without a head."""
        return None if self.findings is None else self.findings(fmap.mean(dim=(2, 3)))

    def _check_image_tokens(self, input_ids: torch.Tensor, n_images: int) -> None:
        n_tok = int((input_ids == self.image_token_id).sum())
        want = n_images * self.config.num_image_tokens
        if n_tok != want:
            raise UserError(
                f"input_ids hold {n_tok} image tokens but {n_images} images x num_image_tokens="
                f"{self.config.num_image_tokens} = {want} were expected; render prompts with "
                "sonofm.models.vlm_prompt using this model's num_image_tokens"
            )

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with image features scattered in at the image-token positions."""
        return self._embed(input_ids, pixel_values)[0]

    def _embed(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        emb = self.lm.get_input_embeddings()(input_ids)
        n_images = 0 if pixel_values is None else int(pixel_values.shape[0])
        self._check_image_tokens(input_ids, n_images)
        if n_images == 0:
            return emb, None
        feats, findings = self.encode_with_findings(pixel_values)
        feats = feats.to(emb.dtype).reshape(-1, emb.shape[-1])
        mask = (input_ids == self.image_token_id).unsqueeze(-1).expand_as(emb)
        return emb.masked_scatter(mask, feats), findings

    # ----- training forward -----
    def forward(
        self,
        pixel_values: torch.Tensor | None,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        regions: Sequence[str] | None = None,
        findings_targets: torch.Tensor | None = None,
        findings_known: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Returns dict(loss, lm_loss, aux_loss, findings_loss, logits).

        `loss` = lm_loss + moe.aux_weight * aux_loss when the aux loss is enabled, else lm_loss
        (None without labels). `aux_loss` (mean over layers of the load-balancing loss) is always
        reported for MoE models, detached when disabled. `regions` (one per sample) label the
        routing statistics. Positions come from the attention mask, so left or right padding
        give the same result as the unpadded sequence. With a findings head and
        ``findings_targets`` / ``findings_known`` (per image, `FindingsVocab.targets`),
        `findings_loss` is the head's loss and `loss` adds ``findings.weight`` times it.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeds, findings_logits = self._embed(input_ids, pixel_values)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        with routing_context(self.moe_blocks, attention_mask.bool(), regions):
            out = self.lm(
                inputs_embeds=embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
            )
        logits = out.logits
        lm_loss = None
        if labels is not None:
            lm_loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
            )
        aux = aux_loss(self.moe_blocks)
        loss = lm_loss
        if aux is not None:
            if self.config.moe is not None and self.config.moe.aux_loss:
                loss = None if lm_loss is None else lm_loss + self.config.moe.aux_weight * aux
            else:
                aux = aux.detach()
        findings_loss = None
        if findings_logits is not None and findings_targets is not None and findings_known is not None:
            findings_loss = self.findings.loss(findings_logits, findings_targets, findings_known)
            if loss is not None and self.config.findings.weight:
                loss = loss + self.config.findings.weight * findings_loss
        return {
            "loss": loss,
            "lm_loss": lm_loss,
            "aux_loss": aux,
            "findings_loss": findings_loss,
            "logits": logits,
        }

    # ----- utilities -----
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing in the image tower and every LM decoder layer (the trainer's switch)."""
        self.visual.set_grad_checkpointing(enable)
        lm = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        set_hf_checkpointing(lm, enable)

    def routing_stats(self) -> dict[str, Any]:
        """Per-layer and per-region expert load since the last `reset_routing_stats` (moe.routing_stats)."""
        return routing_stats(self.moe_blocks)

    def reset_routing_stats(self) -> None:
        reset_routing_stats(self.moe_blocks)

    def set_fixed_mix(self, mix: tuple[float, float] | None) -> None:
        """Force every layer's (c0, c1): (0, 1) = dense path only, (1, 0) = MoE only, None = learned."""
        for b in self.moe_blocks:
            b.fixed_mix = mix

    def fresh_lm_parameters(self) -> list[nn.Parameter]:
        """LM parameters a pretrained encoder checkpoint does not hold (BERT's next-token head
        transform and output bias); empty for causal LMs and from-scratch LMs."""
        if self.config.lm_pretrained is None:
            return []
        lm = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        head = getattr(getattr(lm, "cls", None), "predictions", None)
        if head is None:
            return []
        return list(head.transform.parameters()) + [head.bias]

    def moe_parameters(self) -> list[nn.Parameter]:
        """Router, experts, shared expert + gate and mix of every layer (stage 1 trains these + projector)."""
        return [p for b in self.moe_blocks for p in b.moe_parameters()]

    def parameter_counts(self) -> dict[str, int]:
        """Total and per-token active parameter counts (active: only top-k of the routed experts)."""
        n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        lm_total = n(self.lm)
        idle = sum((b.num_experts - b.top_k) * n(b.experts[0]) for b in self.moe_blocks)
        out = {
            "visual": n(self.visual),
            "findings_head": n(self.findings) if self.findings is not None else 0,
            "projector": n(self.projector),
            "lm_total": lm_total,
            "lm_active": lm_total - idle,
        }
        image_side = out["visual"] + out["findings_head"] + out["projector"]
        out["total"] = image_side + lm_total
        out["active"] = image_side + out["lm_active"]
        return out

    def merge_adapters(self) -> None:
        """Fold a peft LoRA on the LM into its weights (before `save_model`, so load_vlm can rebuild)."""
        if hasattr(self.lm, "merge_and_unload"):
            self.lm = self.lm.merge_and_unload()
            self.moe_blocks = moe_blocks(self.lm)


# ---------------------------------------------------------------- construction / IO


def _resolve_image(config: VLMConfig) -> ImageTower | None:
    if config.image_from is None:
        return None
    tower = load_image_tower(config.image_from)
    config.image = tower_config(tower).model_copy(update={"freeze": config.image.freeze})
    if config.image.freeze:
        tower.requires_grad_(False)
    else:
        tower.requires_grad_(True)
    return tower


def build_vlm(config: VLMConfig, tokenizer: Any) -> SonoVLM:
    """A new SonoVLM (image tower from `image_from` / `image`, LM from `lm` or `lm_pretrained`).

    `config` is copied and its `image` / `lm_arch` fields are resolved, so `model.config` rebuilds
    the same architecture without the original sources.
    """
    config = config.model_copy(deep=True)
    config.lm_arch = None
    visual = _resolve_image(config)
    model = SonoVLM(config, tokenizer, visual=visual, load_pretrained=True)
    if config.image.arch is None:
        config.image = config.image.model_copy(update={"arch": model.visual.arch})
    return model


def load_vlm(model_dir: Path, cfg_json: dict[str, Any], device: str | torch.device | None = None) -> SonoVLM:
    """Loader for `model_type == "sono_vlm"` (no pretrained sources are touched)."""
    config = validated_config(VLMConfig, model_dir, cfg_json, "image.arch", "lm_arch")
    model = SonoVLM(config, load_tokenizer(str(model_dir)), load_pretrained=False)
    return with_weights(model, model_dir, device)


# ---------------------------------------------------------------- files -> text (CLI)


def read_image_file(path: str | Path) -> np.ndarray:
    """uint8 grayscale (H, W) from a PNG/JPEG, or the first frame of a DICOM file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"image file {p} does not exist")
    with p.open("rb") as fh:
        head = fh.read(132)
    if p.suffix.lower() in (".dcm", ".dicom") or head[128:132] == b"DICM":
        from sonofm.data.dicom.read import read_dicom  # lazy: pydicom (~0.25 s) only for DICOM inputs

        return np.ascontiguousarray(read_dicom(p).frames[0])
    try:
        return read_grayscale(p)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{p}: not a readable PNG/JPEG/DICOM image ({e})") from e


def generate_from_files(
    model_dir: str | Path,
    images: Sequence[str | Path],
    question: str | None = None,
    device: str | None = None,
    checked: bool = False,
    context: dict[str, Any] | None = None,
    **gen: Any,
) -> str | GeneratedText:
    """Load a VLM directory, read the image files and answer (question None = write the report).

    `checked`: return a `GeneratedText` (text + mean token log-prob + low-confidence flag).
    `context`: the study's measurements and sex (`sonofm.models.vlm_context`).
    """
    model = load_model(model_dir, device=device)
    if not isinstance(model, SonoVLM):
        raise UserError(f"{model_dir} holds a {type(model).__name__}, not a generative VLM (sono_vlm)")
    arrays = [read_image_file(p) for p in images]
    if checked:
        return model.chat_checked(arrays, question, context=context, **gen)
    return model.chat(arrays, question, context=context, **gen)
