"""Weighted combinations of pretraining objectives, chosen by a config string.

``--loss`` accepts a preset or a ``+``-joined list of ``term[:weight]``:

* ``usclip`` = ``soft_clip + semantic:<lambda> + graph`` (Ultrasound-CLIP, docs/methods.md section 1;
  lambda = ``loss.semantic_lambda``, default 1.0)
* ``echo`` = ``clip + view + negation`` (measurement-grounded echo VLM, section 2)
* e.g. ``clip+semantic:0.5+view:1``

Terms: ``clip``, ``siglip``, ``soft_clip``, ``semantic``, ``view``, ``negation``, ``supervised``
(the model's supervised heads on region/view/attribute labels), ``label_text`` (images contrasted
with the texts of their labels, per label group: :mod:`sonofm.losses.label_text`); ``graph`` is
a model flag (fuse the attribute heterograph into the text embedding), not a loss term. Each
term's *weighted* value is returned under its own name (``contrastive_loss``,
``soft_clip_loss``, ``semantic_loss``, ``view_loss``, ``negation_loss``, ``supervised_loss``,
``label_text_loss``), so the trainer sums
them and logs each separately.

This module holds the loss building blocks only. Wiring a spec into the pretraining job (the
graph-wrapped model, the train step and the collate that adds attribute rows, view codes and
hard negatives to every batch) is the job's: :mod:`sonofm.pretrain.objective`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from sonofm.losses.contrastive import build_contrastive_loss
from sonofm.losses.label_text import LabelTextLoss
from sonofm.losses.negation import NegationNCELoss
from sonofm.losses.semantic import SemanticLoss, SoftClipLoss, TagVocabulary
from sonofm.losses.supervised import SupervisedHeadsLoss
from sonofm.losses.view import ViewNCELoss

LOSS_TERMS = ("clip", "siglip", "soft_clip", "semantic", "view", "negation", "supervised", "label_text")
FLAGS = ("graph",)
PRESETS = {"usclip": "soft_clip+semantic:{semantic_lambda}+graph", "echo": "clip+view+negation"}
_ALIASES = {
    "softclip": "soft_clip",
    "soft": "soft_clip",
    "sm": "semantic",
    "neg": "negation",
    "unicl": "label_text",
    "labeltext": "label_text",
}
PLAIN = ("clip", "siglip")  # handled by the original single-loss path of ``sonofm pretrain``


@dataclass(frozen=True)
class LossSpec:
    """A parsed ``--loss`` value: weighted terms and whether the attribute graph is fused in."""

    terms: tuple[tuple[str, float], ...]
    graph: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.terms)

    @property
    def needs_attributes(self) -> bool:
        return self.graph or any(n in ("soft_clip", "semantic") for n in self.names)

    @property
    def needs_views(self) -> bool:
        return "view" in self.names

    @property
    def needs_negatives(self) -> bool:
        return "negation" in self.names

    @property
    def needs_labels(self) -> bool:
        return "supervised" in self.names

    @property
    def needs_label_text(self) -> bool:
        return "label_text" in self.names

    def __str__(self) -> str:
        parts = [f"{n}:{w:g}" for n, w in self.terms] + (["graph"] if self.graph else [])
        return "+".join(parts)


def parse_loss_spec(spec: str, *, semantic_lambda: float = 1.0) -> LossSpec:
    """Parse ``usclip`` / ``echo`` / ``clip+semantic:0.5+graph``; ValueError naming the bad part."""
    text = str(spec).strip().lower()
    if text in PRESETS:
        text = PRESETS[text].format(semantic_lambda=semantic_lambda)
    terms: list[tuple[str, float]] = []
    graph = False
    for raw in text.split("+"):
        part = raw.strip()
        if not part:
            raise ValueError(f"loss {spec!r}: empty term (expected term[:weight] joined by '+')")
        name, _, weight_text = part.partition(":")
        name = _ALIASES.get(name.strip(), name.strip())
        if name in FLAGS:
            if weight_text:
                raise ValueError(f"loss {spec!r}: {name!r} is a model flag and takes no weight")
            graph = True
            continue
        if name not in LOSS_TERMS:
            raise ValueError(
                f"loss {spec!r}: unknown term {name!r}; expected presets {sorted(PRESETS)} or terms "
                f"{list(LOSS_TERMS)} (+ flag 'graph'), e.g. clip+semantic:0.5+view:1"
            )
        try:
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            raise ValueError(f"loss {spec!r}: weight {weight_text!r} of {name!r} is not a number") from None
        if not weight >= 0:
            raise ValueError(f"loss {spec!r}: weight of {name!r} must be >= 0, got {weight}")
        if name in dict(terms):
            raise ValueError(f"loss {spec!r}: term {name!r} given twice")
        terms.append((name, weight))
    if not terms:
        raise ValueError(f"loss {spec!r}: no loss term (graph alone trains nothing)")
    return LossSpec(tuple(terms), graph)


def is_plain(spec: str) -> bool:
    """Whether ``spec`` is a bare ``clip``/``siglip`` (the original ``sonofm pretrain`` path)."""
    return str(spec).strip().lower() in PLAIN


# ------------------------------------------------------------------------------ the loss


class _PairLoss(nn.Module):
    """Adapts ClipLoss/SigLipLoss (feature-pair signature) to the outputs-dict signature."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, outputs: Mapping[str, Any]) -> dict[str, Tensor]:
        return self.inner(
            outputs["image_features"],
            outputs["text_features"],
            outputs["logit_scale"],
            outputs.get("logit_bias"),
        )


class CompositeLoss(nn.Module):
    """Weighted sum of objective modules, each returning ``{name: value}``; values come back weighted."""

    def __init__(self, terms: Sequence[tuple[str, float, nn.Module]]) -> None:
        super().__init__()
        self.weights = {name: float(w) for name, w, _ in terms}
        self.terms = nn.ModuleDict({name: module for name, _, module in terms})

    def forward(self, outputs: Mapping[str, Any]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name, module in self.terms.items():
            for key, value in module(outputs).items():
                if key in out:
                    raise ValueError(f"two loss terms both return {key!r}")
                out[key] = self.weights[name] * value
        return out


def build_composite_loss(
    spec: LossSpec,
    *,
    matrices: Mapping[str, Tensor] | None = None,
    soft_eps: float = 0.3,
    soft_tau: float = 0.07,
    semantic_tau: float = 0.07,
    gather_with_grad: bool = True,
    local_loss: bool = False,
    heads: Mapping[str, Sequence[str]] | None = None,
    label_groups: Sequence[tuple[int, int]] | None = None,
) -> CompositeLoss:
    """The loss modules of ``spec``; ``matrices`` (tag similarity M_k) is needed by soft_clip/semantic,
    ``label_groups`` (column ranges of the label texts' groups) by label_text."""
    vocab = TagVocabulary() if spec.needs_attributes else None
    modules: list[tuple[str, float, nn.Module]] = []
    for name, weight in spec.terms:
        if name in ("soft_clip", "semantic") and matrices is None:
            raise ValueError(f"loss term {name!r} needs the tag similarity matrices")
        if name in ("clip", "siglip"):
            module: nn.Module = _PairLoss(
                build_contrastive_loss(name, gather_with_grad=gather_with_grad, local_loss=local_loss)
            )
        elif name == "soft_clip":
            module = SoftClipLoss(
                matrices, vocab, eps=soft_eps, tau=soft_tau, gather_with_grad=gather_with_grad
            )
        elif name == "semantic":
            module = SemanticLoss(matrices, vocab, tau=semantic_tau, gather_with_grad=gather_with_grad)
        elif name == "view":
            module = ViewNCELoss(gather_with_grad=gather_with_grad)
        elif name == "supervised":
            if not heads:
                raise ValueError("loss term 'supervised' needs a model with supervised heads")
            module = SupervisedHeadsLoss(list(heads))
        elif name == "label_text":
            if not label_groups:
                raise ValueError("loss term 'label_text' needs the label groups of its label texts")
            module = LabelTextLoss(label_groups)
        else:
            module = NegationNCELoss()
        modules.append((name, weight, module))
    return CompositeLoss(modules)
