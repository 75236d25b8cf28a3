"""The language-model half of SonoVLM: a transformers causal LM and its tokenizer.

From scratch (a small Qwen2 from `VLMConfig.lm`, BPE trained on the texts) or pretrained
(`lm_pretrained`, a BERT-style encoder turned into a decoder, vocabulary pruned to the corpus),
with the VLM's special tokens added and embedding rows copied by token string.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sonofm.errors import UserError
from sonofm.models import vlm_prompt
from sonofm.models.text_towers import load_tokenizer, portable_arch, quiet_transformers, resolve_source
from sonofm.models.vlm_prompt import train_tokenizer

if TYPE_CHECKING:  # vlm_config imports _hf_lm_config from here
    from sonofm.models.vlm_config import VLMConfig

log = logging.getLogger("sonofm.models.vlm")  # the model's logger, as before the split


def _hf_lm_config(arch: dict[str, Any]) -> Any:
    from transformers import CONFIG_MAPPING  # lazy: transformers takes ~1-2 s to import

    arch = dict(arch)
    mt = arch.pop("model_type", None)
    if mt not in CONFIG_MAPPING:
        raise UserError(f"lm.model_type {mt!r} is not a transformers model type (e.g. qwen2, llama)")
    try:
        return CONFIG_MAPPING[mt](**arch)
    except (TypeError, ValueError) as e:
        raise UserError(f"invalid lm settings for model_type={mt!r}: {e}") from e


def _build_lm(cfg: VLMConfig, tokenizer: Any) -> nn.Module:
    from transformers import AutoModelForCausalLM  # lazy: transformers takes ~1-2 s to import

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
    from transformers import AutoConfig, AutoModelForCausalLM  # lazy: transformers takes ~1-2 s to import

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


def build_tokenizer(config: VLMConfig, texts: Sequence[str] | None = None) -> Any:
    """The tokenizer for `config`: the pretrained LM's (+ VLM tokens), else BPE trained on `texts`."""
    if config.lm_pretrained is not None:
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
