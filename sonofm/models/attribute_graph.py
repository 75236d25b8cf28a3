"""Ultrasound-CLIP's attribute heterograph encoder and its gated fusion into the text embedding.

docs/methods.md section 1. Per sample, a bipartite graph joins the diagnosis-tag nodes (T1) to the
descriptor-tag nodes (T2-T9: body system, organ, shape, margin, echogenicity, internal,
posterior, vascularity) with relations ``described_by`` (diagnosis -> descriptor) and
``rev_described_by`` (the reverse). Node features are learnt embeddings of the tag id
(dim 128) followed by LayerNorm; two heterogeneous ``GraphConv`` layers (relations summed),
ReLU, dropout 0.1; readout = mean over the nodes of each type, summed over the types; a Linear
to the text dimension; L2-normalised. A sample without any tag (an empty graph) gets the zero
vector.

Fusion: ``t' = LN(t + clamp(alpha, 0, 0.2) * tanh(W_o MHA(q=W_t t, k=v=W_g g)))`` with alpha
initialised to 0.05, then [decision] ``t'`` is L2-normalised again before the loss. The graph
feature is a single token, so the attention is over one key. [decision] For a sample with an
empty graph the attention term is masked to zero (t' = LN(t)): text with no structure, such as a
zero-shot prompt at inference, goes through the same LayerNorm path as in training instead of
receiving a constant learnt offset from the biases.

Graphs are built per sample as ``HeteroData`` and batched with ``Batch.from_data_list``
(PyTorch Geometric), the library's standard representation for mini-batches of graphs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from sonofm.models.config import DualEncoderConfig
from sonofm.models.dual_encoder import DualEncoder
from sonofm.models.io import register_model_type, validated_config, with_weights
from sonofm.models.text_towers import load_tokenizer
from sonofm.taxonomy import tag_ids
from sonofm.taxonomy.attributes import DIMENSIONS

DIAGNOSIS = "diagnosis"
DESCRIPTOR = "descriptor"
DESCRIBED_BY = (DIAGNOSIS, "described_by", DESCRIPTOR)
REV_DESCRIBED_BY = (DESCRIPTOR, "rev_described_by", DIAGNOSIS)
DESCRIPTOR_DIMENSIONS = tuple(d for d in DIMENSIONS if d != DIAGNOSIS)  # the 8 besides the diagnosis
MODEL_TYPE = "attribute_graph_dual_encoder"


class AttributeGraphConfig(BaseModel):
    """Graph encoder and fusion settings (docs/methods.md section 1 values by default)."""

    model_config = ConfigDict(extra="forbid")

    node_dim: int = Field(128, ge=1)
    layers: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    heads: int = Field(4, ge=1)
    alpha_init: float = Field(0.05, ge=0)
    alpha_max: float = Field(0.2, gt=0)


class GraphVocabulary:
    """Tag id -> node index, per node type (diagnosis tags; descriptor tags of T2-T9 in one table)."""

    def __init__(self) -> None:
        self.diagnosis = {t: i for i, t in enumerate(tag_ids(DIAGNOSIS))}
        self.descriptor: dict[tuple[str, str], int] = {}
        for dim in DESCRIPTOR_DIMENSIONS:
            for t in tag_ids(dim):
                self.descriptor[(dim, t)] = len(self.descriptor)

    def nodes(self, attributes: Mapping[str, Sequence[str]] | None) -> tuple[list[int], list[int]]:
        """(diagnosis node ids, descriptor node ids) of one sample; unknown tags are dropped."""
        attributes = attributes or {}
        diag = sorted({self.diagnosis[t] for t in attributes.get(DIAGNOSIS) or () if t in self.diagnosis})
        desc = sorted(
            {
                self.descriptor[(d, t)]
                for d in DESCRIPTOR_DIMENSIONS
                for t in attributes.get(d) or ()
                if (d, t) in self.descriptor
            }
        )
        return diag, desc


def sample_graph(diag: Sequence[int], desc: Sequence[int]) -> Any:
    """One sample's ``HeteroData``: every diagnosis node linked to every descriptor node, both ways."""
    from torch_geometric.data import HeteroData  # lazy: torch_geometric ~2 s; graph calls only

    data = HeteroData()
    data[DIAGNOSIS].x = torch.tensor(list(diag), dtype=torch.long)
    data[DESCRIPTOR].x = torch.tensor(list(desc), dtype=torch.long)
    src = torch.arange(len(diag)).repeat_interleave(len(desc))
    dst = torch.arange(len(desc)).repeat(len(diag))
    data[DESCRIBED_BY].edge_index = torch.stack([src, dst]).long()
    data[REV_DESCRIBED_BY].edge_index = torch.stack([dst, src]).long()
    return data


def build_graph_batch(
    attributes: Sequence[Mapping[str, Sequence[str]] | None], vocab: GraphVocabulary
) -> Any:
    """A PyG ``Batch`` of the per-sample attribute graphs (one graph per sample, empty ones included)."""
    from torch_geometric.data import Batch  # lazy: torch_geometric ~2 s; graph calls only

    return Batch.from_data_list([sample_graph(*vocab.nodes(a)) for a in attributes])


class AttributeGraphEncoder(nn.Module):
    """Heterograph of tags -> one L2-normalised vector per sample (zero for an empty graph)."""

    def __init__(self, out_dim: int, config: AttributeGraphConfig | None = None) -> None:
        super().__init__()
        from torch_geometric.nn import GraphConv, HeteroConv  # lazy: torch_geometric ~2 s; graph calls only

        cfg = config or AttributeGraphConfig()
        self.config = cfg
        self.vocab = GraphVocabulary()
        d = cfg.node_dim
        self.embed = nn.ModuleDict(
            {
                DIAGNOSIS: nn.Embedding(len(self.vocab.diagnosis), d),
                DESCRIPTOR: nn.Embedding(len(self.vocab.descriptor), d),
            }
        )
        self.embed_norm = nn.ModuleDict({DIAGNOSIS: nn.LayerNorm(d), DESCRIPTOR: nn.LayerNorm(d)})
        self.convs = nn.ModuleList(
            HeteroConv({DESCRIBED_BY: GraphConv(d, d), REV_DESCRIBED_BY: GraphConv(d, d)}, aggr="sum")
            for _ in range(cfg.layers)
        )
        self.proj = nn.Linear(d, out_dim)

    def forward(self, graphs: Any, batch_size: int | None = None) -> Tensor:
        """``graphs``: a batch from :func:`build_graph_batch` -> (B, out_dim)."""
        from torch_geometric.nn import global_mean_pool  # lazy: torch_geometric ~2 s; graph calls only

        device = self.proj.weight.device
        graphs = graphs.to(device)
        n = int(batch_size if batch_size is not None else graphs.num_graphs)
        x = {t: self.embed_norm[t](self.embed[t](graphs[t].x)) for t in (DIAGNOSIS, DESCRIPTOR)}
        edges = {rel: graphs[rel].edge_index for rel in (DESCRIBED_BY, REV_DESCRIBED_BY)}
        for conv in self.convs:
            out = conv(x, edges)
            x = {t: F.dropout(F.relu(out[t]), self.config.dropout, self.training) for t in x}
        readout = sum(global_mean_pool(x[t], graphs[t].batch, size=n) for t in (DIAGNOSIS, DESCRIPTOR))
        counts = sum(torch.bincount(graphs[t].batch, minlength=n)[:n] for t in (DIAGNOSIS, DESCRIPTOR))
        nonempty = (counts > 0).to(readout.dtype)[:, None]
        return F.normalize(self.proj(readout), dim=-1) * nonempty


class GatedGraphFusion(nn.Module):
    """``LN(t + clamp(alpha, 0, alpha_max) * tanh(W_o MHA(q=W_t t, k=v=W_g g)))``; masked for empty graphs."""

    def __init__(self, dim: int, config: AttributeGraphConfig | None = None) -> None:
        super().__init__()
        cfg = config or AttributeGraphConfig()
        heads = math.gcd(dim, cfg.heads)  # MHA needs dim % heads == 0
        self.w_t = nn.Linear(dim, dim)
        self.w_g = nn.Linear(dim, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.w_o = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.alpha = nn.Parameter(torch.tensor(float(cfg.alpha_init)))
        self.alpha_max = float(cfg.alpha_max)

    def forward(self, text: Tensor, graph: Tensor, has_graph: Tensor | None = None) -> Tensor:
        q = self.w_t(text)[:, None]
        kv = self.w_g(graph)[:, None]
        attended, _ = self.attn(q, kv, kv, need_weights=False)
        residual = self.alpha.clamp(0.0, self.alpha_max) * torch.tanh(self.w_o(attended[:, 0]))
        if has_graph is not None:
            residual = residual * has_graph.to(residual.dtype)[:, None]
        return self.norm(text + residual)


class AttributeGraphDualEncoderConfig(DualEncoderConfig):
    """A dual encoder config plus the attribute-graph settings."""

    graph: AttributeGraphConfig = Field(default_factory=AttributeGraphConfig)


class AttributeGraphDualEncoder(DualEncoder):
    """A :class:`DualEncoder` whose text embedding is fused with the sample's attribute graph.

    ``encode_text(ids, mask, attributes=None)``: with ``attributes`` (one tag dict per text) the
    graph feature is fused in; without, every graph is empty and ``t' = LN(t)`` (zero-shot
    prompts, retrieval galleries of plain text). Saved and loaded like any sonofm model
    (``model_type = "attribute_graph_dual_encoder"``).
    """

    model_type = MODEL_TYPE

    def __init__(self, config: AttributeGraphDualEncoderConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.graph_encoder = AttributeGraphEncoder(config.embed_dim, config.graph)
        self.fusion = GatedGraphFusion(config.embed_dim, config.graph)

    @classmethod
    def from_dual_encoder(
        cls, model: DualEncoder, graph: AttributeGraphConfig | None = None
    ) -> AttributeGraphDualEncoder:
        """Rebuild ``model`` (same resolved architecture and weights) with new graph modules.

        The towers are rebuilt from the resolved config (no pretrained sources are read) and the
        trained/pretrained weights copied over, so freezing and every attribute the dual encoder
        sets up stay exactly as :class:`DualEncoder` defines them.
        """
        cfg = AttributeGraphDualEncoderConfig(
            **model.config.model_dump(), graph=graph or AttributeGraphConfig()
        )
        new = cls(cfg, tokenizer=model.tokenizer, load_pretrained=False)
        missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
        stray = [k for k in missing if not k.startswith(("graph_encoder.", "fusion."))]
        if stray or unexpected:
            raise RuntimeError(
                f"cannot copy the dual encoder's weights: missing {stray}, unexpected {unexpected}"
            )
        for (_, p_new), p_old in zip(new.named_parameters(), _matching(model, new), strict=True):
            if p_old is not None:
                p_new.requires_grad_(p_old.requires_grad)
        return new.to(model.logit_scale.device)

    def graph_features(self, attributes: Sequence[Mapping[str, Sequence[str]] | None]) -> Tensor:
        """(B, embed_dim) graph features of tag dicts (zero rows for empty graphs)."""
        batch = build_graph_batch(attributes, self.graph_encoder.vocab)
        return self.graph_encoder(batch, batch_size=len(attributes))

    def encode_text(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        normalize: bool = True,
        attributes: Sequence[Mapping[str, Sequence[str]] | None] | None = None,
    ) -> Tensor:
        t = super().encode_text(input_ids, attention_mask, normalize=True)
        if attributes is None:
            g = t.new_zeros(t.shape)
            has = torch.zeros(t.shape[0], dtype=torch.bool, device=t.device)
        else:
            if len(attributes) != t.shape[0]:
                raise ValueError(f"{len(attributes)} attribute dicts for {t.shape[0]} texts")
            g = self.graph_features(attributes).to(t.dtype)
            has = g.abs().sum(-1) > 0
        fused = self.fusion(t, g, has)
        return F.normalize(fused, dim=-1) if normalize else fused

    def forward(
        self,
        images: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        attributes: Sequence[Mapping[str, Sequence[str]] | None] | None = None,
    ) -> dict[str, Tensor | None]:
        return self.outputs(
            self.encode_image(images), self.encode_text(input_ids, attention_mask, attributes=attributes)
        )


def _matching(old: nn.Module, new: nn.Module) -> list[nn.Parameter | None]:
    """For each parameter of ``new`` (in order), the same-named parameter of ``old`` or None."""
    params = dict(old.named_parameters())
    return [params.get(name) for name, _ in new.named_parameters()]


def load_attribute_graph_dual_encoder(
    model_dir: Path, cfg_json: dict[str, Any], device: str | torch.device | None = None
) -> nn.Module:
    """``load_model`` loader for ``model_type == "attribute_graph_dual_encoder"``."""
    config = validated_config(AttributeGraphDualEncoderConfig, model_dir, cfg_json)
    model = AttributeGraphDualEncoder(config, tokenizer=load_tokenizer(str(model_dir)), load_pretrained=False)
    return with_weights(model, model_dir, device)


def _register() -> None:
    register_model_type(MODEL_TYPE, f"{__name__}:load_attribute_graph_dual_encoder", overwrite=True)


_register()
