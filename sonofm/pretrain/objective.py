"""The pretraining job's objective wiring: a ``--loss`` spec turned into model, step and collate.

:func:`build_objective` wires a spec (parsed by :mod:`sonofm.losses.compose`, whose loss
building blocks it uses) into the pretraining job: the model (wrapped with the attribute-graph
fusion when asked), an :class:`ObjectiveStep` and a collate function that adds what the terms
need to every batch (attribute multi-hot rows, view/study codes, tokenised hard negatives
written from each sample's structured report). It reads the dataset, builds models and writes
report text, so it lives with the job, not among the losses.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sonofm.data.dataset import collate
from sonofm.errors import DataError
from sonofm.losses.compose import CompositeLoss, LossSpec, build_composite_loss, parse_loss_spec
from sonofm.losses.label_text import FEATURES as LABEL_TEXT_FEATURES
from sonofm.losses.label_text import TARGETS as LABEL_TEXT_TARGETS
from sonofm.losses.semantic import TagVocabulary, model_tag_similarity
from sonofm.losses.supervised import head_labels
from sonofm.losses.view import label_codes
from sonofm.models.attribute_graph import AttributeGraphConfig, AttributeGraphDualEncoder
from sonofm.pretrain.label_texts import GROUPS as LABEL_GROUPS
from sonofm.pretrain.label_texts import LabelTexts
from sonofm.reports import Study, negated_captions
from sonofm.reports.captions import contrastive_caption
from sonofm.reports.prompts import negated_studies

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ the step


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


class ObjectiveStep:
    """Train step for composite objectives (``sonofm.train.Trainer`` protocol).

    Every output the loss needs is a per-sample tensor (first dim = batch), so the trainer's
    feature-cached gradient accumulation concatenates them across micro-batches like the features;
    the exception is the label texts' features (one row per label, the same for every sample),
    named in ``shared_outputs`` so the accumulation never mistakes them for a micro-batch.
    """

    shared_outputs = (LABEL_TEXT_FEATURES,)

    def __init__(
        self, loss: CompositeLoss, spec: LossSpec, label_tokens: Mapping[str, Tensor] | None = None
    ) -> None:
        self.loss_fn = loss
        self.spec = spec
        self.label_tokens = dict(label_tokens or {})
        if spec.needs_label_text and not self.label_tokens:
            raise ValueError("loss term 'label_text' needs the tokenised label texts")

    def forward(self, model: nn.Module, batch: Mapping[str, Any]) -> dict[str, Any]:
        kwargs = {"attributes": batch["attributes"]} if self.spec.graph else {}
        out = dict(model(batch["image"], batch["input_ids"], batch["attention_mask"], **kwargs))
        for key in ("attributes_multi_hot", "view_code", "study_code", "neg_valid", LABEL_TEXT_TARGETS):
            if key in batch:
                out[key] = batch[key]
        for key in batch:
            if key.startswith("label/"):
                out[key] = batch[key]
        if self.spec.needs_negatives and "neg_input_ids" in batch:
            b, k = batch["neg_valid"].shape
            if k:
                # Hard negatives are plain text (no graph): their structure is the flipped one, not the
                # sample's, so fusing the sample's attribute graph into them would leak the answer.
                neg = _unwrap(model).encode_text(batch["neg_input_ids"], batch["neg_attention_mask"])
                out["neg_text_features"] = neg.reshape(b, k, -1)
        if self.spec.needs_label_text:
            # encoded every step: the label texts' embeddings are the zero-shot classifier this
            # term trains (with a frozen, cached text tower only the trainable top runs)
            device = batch["image"].device
            out[LABEL_TEXT_FEATURES] = _unwrap(model).encode_text(
                self.label_tokens["input_ids"].to(device), self.label_tokens["attention_mask"].to(device)
            )
        return out

    def loss(self, outputs: dict[str, Any]) -> dict[str, Tensor]:
        return self.loss_fn(outputs)


# ------------------------------------------------------------------------------ the batches


class ObjectiveCollate:
    """``sonofm.data`` collate plus what the objective needs (picklable for loader workers).

    * ``attributes_multi_hot`` (B, n_tags): the 9-dimension tag lists (soft_clip, semantic).
    * ``view_code``/``study_code`` (B,) int64 (view): crc32 codes, -1 when missing.
    * ``label_text_targets`` (B, T) (label_text): the sample's labels over the label texts.
    * ``neg_input_ids``/``neg_attention_mask`` (B*K, L) and ``neg_valid`` (B, K) (negation): K hard
      negatives per caption from the sample's structured report (``sonofm.reports.negated_captions``),
      seeded by (seed, epoch, sample id) so runs and resumed runs see the same negatives (caption
      negatives by (seed, caption) only, so a frozen text tower encodes them once).
    """

    def __init__(
        self,
        spec: LossSpec,
        tokenizer: Callable[[list[str]], dict[str, Tensor]],
        *,
        negatives: int = 3,
        structured: Mapping[str, Any] | None = None,
        dataset: Any = None,
        seed: int = 0,
        heads: Mapping[str, Sequence[str]] | None = None,
        text: str = "report",
        label_texts: LabelTexts | None = None,
    ) -> None:
        # hard negatives must be written like the positives: captions for caption training, else
        # the style alone tells them apart and the term teaches nothing about findings
        self.caption_negatives = text == "caption"
        self.spec = spec
        self.heads = {t: list(c) for t, c in (heads or {}).items()} if spec.needs_labels else {}
        self.tokenizer = tokenizer
        self.negatives = int(negatives) if spec.needs_negatives else 0
        self.structured = dict(structured or {})
        self.dataset = dataset
        self.seed = seed
        self.vocab = TagVocabulary() if spec.needs_attributes else None
        self.label_texts = label_texts if spec.needs_label_text else None
        # Caption negatives depend on (seed, caption) only: written once per caption and kept
        # (writing them was ~95 ms of a 64-sample batch, every epoch, in the loader's workers).
        # `fixed_texts` fills this in the training process, so forked workers start with it.
        self._drawn: dict[str, list[str]] = {}
        self._by_caption: dict[str, list[str]] = {}

    def fixed_texts(self) -> list[str]:
        """The hard negatives of every sample when they are drawn once per caption (caption
        training), so a frozen text tower can encode them before training; [] otherwise."""
        if not (self.negatives and self.caption_negatives):
            return []
        texts, _ = self._negatives(list(self.structured))
        return list(dict.fromkeys(texts))  # with "", the text of a sample's missing negatives

    def _negatives(self, ids: Sequence[Any]) -> tuple[list[str], Tensor]:
        epoch = int(getattr(self.dataset, "epoch", 0))
        texts: list[str] = []
        valid = torch.zeros(len(ids), self.negatives, dtype=torch.bool)
        for row, sid in enumerate(ids):
            record = self.structured.get(str(sid))
            caps: list[str] = []
            if self.caption_negatives and str(sid) in self._drawn:
                caps = self._drawn[str(sid)]
            elif record:
                try:
                    study = Study.from_dict(record)
                    if self.caption_negatives:
                        caps = self._caption_negatives(study)
                    else:
                        draw = [self.seed, epoch, zlib.crc32(str(sid).encode())]
                        caps = negated_captions(study, np.random.default_rng(draw), self.negatives)
                        caps = caps[: self.negatives]
                except (ValueError, KeyError, TypeError) as err:  # a malformed record: no negatives
                    log.warning(
                        "sample %s: cannot write hard negatives from its structured report (%s)", sid, err
                    )
                    self.structured.pop(str(sid), None)  # warn once per sample
                if self.caption_negatives:
                    self._drawn[str(sid)] = caps
            valid[row, : len(caps)] = True
            texts.extend(caps + [""] * (self.negatives - len(caps)))
        return texts, valid

    def _caption_negatives(self, study: Study) -> list[str]:
        """Caption negatives are drawn once per caption, seeded by (seed, caption): not per epoch,
        so a frozen text tower encodes them once (its cache), and not per sample, since images
        with the same caption need the same contrast (the demo's 7,000 training images have
        ~1,500 captions; per sample the negatives were 9,800 texts to encode, ~1.5 minutes)."""
        caption = contrastive_caption(study)
        if caption not in self._by_caption:
            rng = np.random.default_rng([self.seed, zlib.crc32(caption.encode())])
            self._by_caption[caption] = _negated_contrastive_captions(study, rng, self.negatives)
        return self._by_caption[caption]

    def __call__(self, batch: list[dict[str, Any] | None]) -> dict[str, Any]:
        out = collate(batch, tokenizer=self.tokenizer)
        if "image" not in out:
            return out
        if self.vocab is not None:
            out["attributes_multi_hot"] = self.vocab.multi_hot(out["attributes"])
        if self.heads:
            out.update(head_labels(out, self.heads))
        if self.label_texts is not None:
            out[LABEL_TEXT_TARGETS] = self.label_texts.targets(out)
        if self.spec.needs_views:
            out["view_code"] = label_codes(out["view"])
            out["study_code"] = label_codes(out["study_id"])
        if self.negatives:
            texts, valid = self._negatives(out["id"])
            tok = self.tokenizer(texts)
            out["neg_input_ids"] = tok["input_ids"]
            out["neg_attention_mask"] = tok["attention_mask"]
            out["neg_valid"] = valid
        return out


def _negated_contrastive_captions(study: Any, rng: np.random.Generator, k: int) -> list[str]:
    """Up to ``k`` captions of structurally negated studies that read differently from the original."""
    original = contrastive_caption(study)
    out: list[str] = []
    for new in negated_studies(study, rng, k=k * 2):
        caption = contrastive_caption(new)
        if caption != original and caption not in out:
            out.append(caption)
        if len(out) >= k:
            break
    return out


def structured_by_id(table: Any, where: str) -> dict[str, Any]:
    """``id -> Study.to_dict()`` from a manifest table's ``structured`` column (DataError if absent)."""
    if "structured" not in getattr(table, "columns", ()):
        raise DataError(
            f"{where}: the negation loss writes hard negatives from each sample's structured report, but "
            "the manifest has no 'structured' column (Study.to_dict()); simulate the data with sonofm "
            "simulate, or drop 'negation' from --loss"
        )
    out = {}
    for sid, rec in zip(table["id"], table["structured"], strict=True):
        if isinstance(rec, dict) and rec:
            out[str(sid)] = rec
    if not out:
        raise DataError(f"{where}: every 'structured' entry is empty, so no hard negatives can be written")
    missing = len(table) - len(out)
    if missing:
        log.warning(
            "%s: %d of %d rows have no structured report (no hard negatives for them)",
            where,
            missing,
            len(table),
        )
    return out


@dataclass
class Objective:
    """What :func:`build_objective` hands the pretraining job."""

    spec: LossSpec
    model: nn.Module
    step: ObjectiveStep
    collate_fn: ObjectiveCollate


def build_objective(
    loss_config: Any,
    model: nn.Module,
    dataset: Any,
    tokenizer: Callable[[list[str]], dict[str, Tensor]],
    *,
    seed: int = 0,
    where: str = "dataset",
    text: str = "report",
) -> Objective:
    """Model (graph-wrapped if asked), step and collate for ``loss_config.name`` (see module doc).

    ``loss_config`` is a :class:`sonofm.config.LossConfig` (any object with its attributes).
    """
    spec = parse_loss_spec(loss_config.name, semantic_lambda=getattr(loss_config, "semantic_lambda", 1.0))
    label_texts = label_tokens = None
    if spec.needs_label_text:
        groups = getattr(loss_config, "label_text_groups", None) or LABEL_GROUPS
        label_texts = LabelTexts.from_taxonomy(groups)
        label_tokens = tokenizer(list(label_texts.texts))
    matrices = None
    if any(n in ("soft_clip", "semantic") for n in spec.names):
        matrices = model_tag_similarity(
            model,
            cache_dir=getattr(loss_config, "similarity_cache", None),
            rescale=getattr(loss_config, "similarity_rescale", "minmax"),
        )
    if spec.graph:
        model = AttributeGraphDualEncoder.from_dual_encoder(
            model, AttributeGraphConfig(**(getattr(loss_config, "graph", None) or {}))
        )
    loss = build_composite_loss(
        spec,
        matrices=matrices,
        soft_eps=getattr(loss_config, "soft_eps", 0.3),
        soft_tau=getattr(loss_config, "soft_tau", 0.07),
        semantic_tau=getattr(loss_config, "semantic_tau", 0.07),
        gather_with_grad=getattr(loss_config, "gather_with_grad", True),
        local_loss=getattr(loss_config, "local_loss", False),
        heads=getattr(getattr(model, "config", None), "heads", None),
        label_groups=label_texts.spans if label_texts is not None else None,
    )
    structured = None
    if spec.needs_negatives:
        structured = structured_by_id(getattr(dataset, "table", None), where)
    collate_fn = ObjectiveCollate(
        spec,
        tokenizer,
        negatives=getattr(loss_config, "negatives", 3),
        structured=structured,
        dataset=dataset,
        seed=seed,
        heads=getattr(getattr(model, "config", None), "heads", None),
        text=text,
        label_texts=label_texts,
    )
    log.info("objective: %s", spec)
    return Objective(spec, model, ObjectiveStep(loss, spec, label_tokens), collate_fn)
