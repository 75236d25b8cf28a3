"""Ultrasound-CLIP's semantic objectives: tag similarity, the batch target matrix S, L_SM, soft CLIP.

docs/methods.md section 1. Every sample carries a (possibly empty) tag list in each of the 9 attribute
dimensions. Per dimension k a tag-similarity matrix ``M_k`` (values in [0, 1], identity diagonal)
says how alike two tags are; for samples i, j

    sim_k(i, j) = mean_{a in T_i^k, b in T_j^k} M_k[a, b]      (0 if either list is empty)
    S_ij        = (1/9) sum_k sim_k(i, j),   S_ii = 1.

``M_k`` [decision] is the cosine similarity of the text encoder's embeddings of the tag phrases,
rescaled to [0, 1] per dimension by min-max over the off-diagonal pairs (the least similar pair
of tags -> 0, the most similar -> 1), with the diagonal set to 1. Min-max rather than the affine
``(1 + cos) / 2``: sentence encoders put short phrases of one domain in a narrow cone (MiniLM's
tag cosines are 0.5-0.96, so the affine map compresses every M_k into [0.75, 0.98] and S becomes
nearly constant); both are monotone in the cosine, so the order of similarities is the encoder's
either way (``rescale="affine"`` keeps the other choice). A dimension whose off-diagonal cosines
are all equal (e.g. two tags) falls back to the affine map. M_k is computed once per text
encoder (the pooled output of the text tower, before the random projection) and cached on disk
as safetensors, keyed by a hash of the tower's weights, the phrases and the rescaling.

Batches encode tag lists as a multi-hot matrix over all tags (:class:`TagVocabulary`), so S is a
few matrix products (``H_k M_k H_k^T`` divided by the tag counts) and multi-hot rows concatenate
across accumulated micro-batches and ranks like any per-sample tensor.

Losses (features L2-normalised):

* ``L_SM = 0.6 MSE(P, S) + 0.4 mean_i KL(softmax(S_i/tau) || softmax(P_i/tau))``, ``P_ij =
  cos(v_i, t_j)`` without the logit scale, tau = 0.07, image->text rows.
* Soft-label CLIP [decision]: CLIP cross-entropy against ``(1-eps) onehot + eps softmax(S_i/tau_s)``
  in both directions; ``eps = 0`` is plain CLIP.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sonofm.atomic import atomic_write
from sonofm.losses.distributed import gather_pair, gather_tensor
from sonofm.taxonomy import DIMENSIONS, tag_ids, tag_phrases

log = logging.getLogger(__name__)

MSE_WEIGHT = 0.6
KL_WEIGHT = 0.4
SEMANTIC_TAU = 0.07


def _dimensions() -> tuple[str, ...]:
    return tuple(DIMENSIONS)


class TagVocabulary:
    """All tags of the 9 dimensions laid out in one index space (dimension blocks in DIMENSIONS order)."""

    def __init__(self, dimensions: Sequence[str] | None = None) -> None:
        self.dimensions = tuple(dimensions) if dimensions is not None else _dimensions()
        self.ids: dict[str, tuple[str, ...]] = {d: tag_ids(d) for d in self.dimensions}
        self.phrases: dict[str, tuple[str, ...]] = {d: tag_phrases(d) for d in self.dimensions}
        self.offsets: dict[str, int] = {}
        start = 0
        for d in self.dimensions:
            self.offsets[d] = start
            start += len(self.ids[d])
        self.size = start
        self._index = {
            (d, t): self.offsets[d] + i for d in self.dimensions for i, t in enumerate(self.ids[d])
        }
        self._warned: set[tuple[str, str]] = set()

    def span(self, dimension: str) -> slice:
        o = self.offsets[dimension]
        return slice(o, o + len(self.ids[dimension]))

    def index(self, dimension: str, tag: str) -> int | None:
        """Global index of a tag, or None (warned once per tag) when it is not in the taxonomy."""
        idx = self._index.get((dimension, tag))
        if idx is None and (dimension, tag) not in self._warned:
            self._warned.add((dimension, tag))
            log.warning(
                "attribute %s=%r is not in the taxonomy; it is ignored by the semantic loss", dimension, tag
            )
        return idx

    def multi_hot(self, attributes: Sequence[Mapping[str, Sequence[str]] | None]) -> Tensor:
        """(B, size) float multi-hot of each sample's tag lists (missing/None dimensions are empty)."""
        out = torch.zeros(len(attributes), self.size)
        for row, attrs in enumerate(attributes):
            if not attrs:
                continue
            for dim in self.dimensions:
                for tag in attrs.get(dim) or ():
                    idx = self.index(dim, str(tag))
                    if idx is not None:
                        out[row, idx] = 1.0
        return out


# ------------------------------------------------------------------ tag similarity matrices


def cosine_to_similarity(embeddings: Tensor, rescale: str = "minmax") -> Tensor:
    """(n, D) phrase embeddings -> (n, n) similarity in [0, 1] with an identity diagonal.

    ``rescale="minmax"``: off-diagonal cosines mapped linearly onto [0, 1]; ``"affine"``:
    ``(1 + cos) / 2``. Min-max falls back to affine when the off-diagonal cosines are all equal.
    """
    if rescale not in ("minmax", "affine"):
        raise ValueError(f"rescale must be 'minmax' or 'affine', got {rescale!r}")
    e = F.normalize(embeddings.float(), dim=-1)
    cos = e @ e.T
    m = (1.0 + cos) / 2.0
    n = cos.shape[0]
    if rescale == "minmax" and n > 1:
        off = cos[~torch.eye(n, dtype=torch.bool)]
        lo, hi = off.min(), off.max()
        if float(hi - lo) > 1e-6:
            m = (cos - lo) / (hi - lo)
    m = m.clamp(0.0, 1.0)
    m.fill_diagonal_(1.0)
    return m


def encoder_hash(text_tower: nn.Module, extra: str = "") -> str:
    """sha256 of a text tower's weights (names, shapes, bytes) plus ``extra``: the cache key."""
    h = hashlib.sha256(extra.encode())
    for name, t in sorted(text_tower.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:24]


def default_cache_dir() -> Path:
    """``$SONOFM_CACHE/tag_similarity`` or ``~/.cache/sonofm/tag_similarity``."""
    root = os.environ.get("SONOFM_CACHE") or Path.home() / ".cache" / "sonofm"
    return Path(root) / "tag_similarity"


def tag_similarity_matrices(
    encode: Callable[[list[str]], Tensor],
    vocab: TagVocabulary | None = None,
    *,
    cache_key: str | None = None,
    cache_dir: str | Path | None = None,
    rescale: str = "minmax",
) -> dict[str, Tensor]:
    """``{dimension: M_k}`` from ``encode(phrases) -> (n, D)`` embeddings, cached when ``cache_key`` is given.

    The cache file is ``<cache_dir>/<cache_key>.safetensors``; it is written atomically and a
    corrupt or mismatched file is recomputed.
    """
    vocab = vocab or TagVocabulary()
    path = None
    if cache_key is not None:
        phrases_key = hashlib.sha256(repr((sorted(vocab.phrases.items()), rescale)).encode()).hexdigest()[:12]
        path = Path(cache_dir or default_cache_dir()) / f"{cache_key}-{phrases_key}.safetensors"
        if path.is_file():
            try:
                cached = load_file(str(path))
                if all(d in cached and cached[d].shape == (len(vocab.ids[d]),) * 2 for d in vocab.dimensions):
                    return {d: cached[d] for d in vocab.dimensions}
                log.warning("%s does not match the taxonomy; recomputing", path)
            except (OSError, ValueError, RuntimeError, SafetensorError) as err:
                log.warning("cannot read %s (%s); recomputing", path, err)
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for d in vocab.dimensions:
            out[d] = cosine_to_similarity(
                encode(list(vocab.phrases[d])).detach().float().cpu(), rescale
            ).contiguous()
    if path is not None:
        meta = {"format": "pt", "kind": "tag_similarity"}
        atomic_write(path, lambda tmp: save_file(out, str(tmp), metadata=meta))
        log.info("cached tag similarity matrices in %s", path)
    return out


def model_tag_similarity(
    model: nn.Module,
    vocab: TagVocabulary | None = None,
    *,
    cache_dir: str | Path | None = None,
    rescale: str = "minmax",
) -> dict[str, Tensor]:
    """M_k from a dual encoder's text tower (pooled output, before the projection), cached by its weights."""
    tower = model.text
    tokenize = model.get_tokenizer()
    if (
        getattr(getattr(model, "config", None), "text", None) is not None
        and model.config.text.pretrained is None
    ):
        log.warning(
            "the text tower is randomly initialised: its tag similarities carry no language knowledge"
        )
    device = next(tower.parameters()).device
    was_training = tower.training
    tower.eval()

    def encode(phrases: list[str]) -> Tensor:
        batch = tokenize(phrases)
        return tower(batch["input_ids"].to(device), batch["attention_mask"].to(device))

    try:
        return tag_similarity_matrices(
            encode,
            vocab,
            cache_key=encoder_hash(tower, type(tokenize.tokenizer).__name__),
            cache_dir=cache_dir,
            rescale=rescale,
        )
    finally:
        tower.train(was_training)


# ------------------------------------------------------------------ the target matrix S


def semantic_targets(
    multi_hot: Tensor, matrices: Mapping[str, Tensor], vocab: TagVocabulary, *, other: Tensor | None = None
) -> Tensor:
    """S (B, B') between the rows of ``multi_hot`` and of ``other`` (default: itself).

    ``S_ij = (1/9) sum_k sum_{a,b} H_ia M_k[a,b] H_jb / (n_i^k n_j^k)`` (0 for an empty list);
    when ``other`` is None the diagonal is set to 1 (``S_ii = 1``).
    """
    rows = multi_hot.float()
    cols = rows if other is None else other.float()
    total = rows.new_zeros(rows.shape[0], cols.shape[0])
    for d in vocab.dimensions:
        sl = vocab.span(d)
        a, b = rows[:, sl], cols[:, sl]
        m = matrices[d].to(device=rows.device, dtype=rows.dtype)
        num = a @ m @ b.T
        den = a.sum(1, keepdim=True) * b.sum(1, keepdim=True).T
        total = total + torch.where(den > 0, num / den.clamp(min=1.0), torch.zeros_like(num))
    s = total / len(vocab.dimensions)
    if other is None:
        s.fill_diagonal_(1.0)
    return s


def semantic_loss(
    image_features: Tensor, text_features: Tensor, targets: Tensor, tau: float = SEMANTIC_TAU
) -> Tensor:
    """``0.6 MSE(P, S) + 0.4 mean_i KL(softmax(S_i/tau) || softmax(P_i/tau))``, ``P = cos(v, t)``."""
    p = image_features.float() @ text_features.float().T
    s = targets.float()
    mse = F.mse_loss(p, s)
    kl = F.kl_div(
        F.log_softmax(p / tau, dim=1), F.log_softmax(s / tau, dim=1), log_target=True, reduction="batchmean"
    )
    return MSE_WEIGHT * mse + KL_WEIGHT * kl


def soft_clip_loss(logits_per_image: Tensor, targets: Tensor, eps: float, tau_s: float) -> Tensor:
    """CLIP cross-entropy, both directions, against ``(1-eps) onehot + eps softmax(S_i/tau_s)``.

    ``logits_per_image`` is (N, N) (scaled); ``targets`` is the (N, N) symmetric S matrix.
    """
    n = logits_per_image.shape[0]
    eye = torch.eye(n, device=logits_per_image.device, dtype=torch.float32)
    soft = torch.softmax(targets.float() / tau_s, dim=1)
    target_i = (1.0 - eps) * eye + eps * soft
    target_t = (1.0 - eps) * eye + eps * torch.softmax(targets.float().T / tau_s, dim=1)
    loss_i = F.cross_entropy(logits_per_image.float(), target_i)
    loss_t = F.cross_entropy(logits_per_image.float().T, target_t)
    return 0.5 * (loss_i + loss_t)


class _SemanticBase(nn.Module):
    """Holds the vocabulary and M_k (as buffers, so they follow the loss to the device)."""

    def __init__(
        self,
        matrices: Mapping[str, Tensor],
        vocab: TagVocabulary | None = None,
        *,
        gather_with_grad: bool = True,
    ) -> None:
        super().__init__()
        self.vocab = vocab or TagVocabulary()
        missing = [d for d in self.vocab.dimensions if d not in matrices]
        if missing:
            raise ValueError(f"tag similarity matrices missing for dimensions {missing}")
        self.names = list(self.vocab.dimensions)
        for i, d in enumerate(self.names):
            self.register_buffer(f"m{i}", matrices[d].float().clone(), persistent=False)
        self.gather_with_grad = gather_with_grad

    def matrices(self) -> dict[str, Tensor]:
        return {d: getattr(self, f"m{i}") for i, d in enumerate(self.names)}

    def _gathered(self, outputs: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        img, txt = outputs["image_features"].float(), outputs["text_features"].float()
        all_img, all_txt, _ = gather_pair(img, txt, gather_with_grad=self.gather_with_grad, local_loss=False)
        hot = outputs.get("attributes_multi_hot")
        if hot is None:
            raise KeyError(
                "the semantic losses need 'attributes_multi_hot' in the step outputs (use "
                "sonofm.pretrain.objective.ObjectiveStep with a collate that encodes attributes)"
            )
        all_hot = gather_tensor(hot.float(), gather_with_grad=False)
        return all_img, all_txt, semantic_targets(all_hot, self.matrices(), self.vocab)


class SemanticLoss(_SemanticBase):
    """L_SM over the (gathered) batch: ``{"semantic_loss": ...}``."""

    def __init__(
        self,
        matrices: Mapping[str, Tensor],
        vocab: TagVocabulary | None = None,
        *,
        tau: float = SEMANTIC_TAU,
        gather_with_grad: bool = True,
    ) -> None:
        super().__init__(matrices, vocab, gather_with_grad=gather_with_grad)
        self.tau = tau

    def forward(self, outputs: Mapping[str, Any]) -> dict[str, Tensor]:
        with torch.autocast(device_type=outputs["image_features"].device.type, enabled=False):
            img, txt, s = self._gathered(outputs)
            return {"semantic_loss": semantic_loss(img, txt, s, self.tau)}


class SoftClipLoss(_SemanticBase):
    """Soft-label CLIP over the (gathered) batch: ``{"soft_clip_loss": ...}``."""

    def __init__(
        self,
        matrices: Mapping[str, Tensor],
        vocab: TagVocabulary | None = None,
        *,
        eps: float = 0.3,
        tau: float = SEMANTIC_TAU,
        gather_with_grad: bool = True,
    ) -> None:
        super().__init__(matrices, vocab, gather_with_grad=gather_with_grad)
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"soft-label eps must be in [0, 1], got {eps}")
        self.eps = eps
        self.tau = tau

    def forward(self, outputs: Mapping[str, Any]) -> dict[str, Tensor]:
        with torch.autocast(device_type=outputs["image_features"].device.type, enabled=False):
            img, txt, s = self._gathered(outputs)
            logits = outputs["logit_scale"].float() * img @ txt.T
            if outputs.get("logit_bias") is not None:
                logits = logits + outputs["logit_bias"].float()
            return {"soft_clip_loss": soft_clip_loss(logits, s, self.eps, self.tau)}
