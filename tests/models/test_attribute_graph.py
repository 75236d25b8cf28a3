"""Attribute heterograph encoder and gated fusion (docs/methods.md section 1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sonofm.models.attribute_graph import (
    DESCRIBED_BY,
    REV_DESCRIBED_BY,
    AttributeGraphConfig,
    AttributeGraphEncoder,
    GatedGraphFusion,
    GraphVocabulary,
    build_graph_batch,
)

ATTRS = [
    {
        "diagnosis": ["nodule"],
        "organ": ["thyroid"],
        "body_system": ["endocrine"],
        "shape": ["taller_than_wide"],
        "echogenicity": ["very_hypoechoic"],
        "internal": ["solid", "microcalcifications"],
    },
    {d: [] for d in ("diagnosis", "organ", "shape")},  # empty graph
    {"diagnosis": ["normal"], "organ": ["heart"], "body_system": ["cardiovascular"]},
    None,  # no attributes at all: empty graph
    {"diagnosis": ["cyst", "mass"]},  # diagnosis nodes without descriptors (no edges)
]


def test_graph_structure_is_bipartite_and_complete() -> None:
    vocab = GraphVocabulary()
    batch = build_graph_batch(ATTRS, vocab)
    assert batch.num_graphs == 5
    diag_per = torch.bincount(batch["diagnosis"].batch, minlength=5).tolist()
    desc_per = torch.bincount(batch["descriptor"].batch, minlength=5).tolist()
    assert diag_per == [1, 0, 1, 0, 2] and desc_per == [6, 0, 2, 0, 0]
    e = batch[DESCRIBED_BY].edge_index
    r = batch[REV_DESCRIBED_BY].edge_index
    assert e.shape[1] == 1 * 6 + 1 * 2 and torch.equal(r, e.flip(0))
    # every edge stays inside its own sample
    assert torch.equal(batch["diagnosis"].batch[e[0]], batch["descriptor"].batch[e[1]])


def test_output_is_normalised_and_empty_graph_is_zero() -> None:
    torch.manual_seed(0)
    enc = AttributeGraphEncoder(24).eval()
    g = enc(build_graph_batch(ATTRS, enc.vocab))
    assert g.shape == (5, 24)
    norms = g.norm(dim=-1)
    assert torch.allclose(norms[[0, 2, 4]], torch.ones(3), atol=1e-5)
    assert torch.equal(g[1], torch.zeros(24)) and torch.equal(g[3], torch.zeros(24))
    # per-sample: a sample's feature does not depend on the rest of the batch
    alone = enc(build_graph_batch([ATTRS[2]], enc.vocab))
    assert torch.allclose(alone[0], g[2], atol=1e-5)
    assert not torch.allclose(g[0], g[2])


def test_architecture_follows_the_method() -> None:
    enc = AttributeGraphEncoder(16)
    assert enc.config == AttributeGraphConfig()
    assert enc.embed["diagnosis"].embedding_dim == 128 and len(enc.convs) == 2
    assert enc.config.dropout == 0.1
    from torch_geometric.nn import GraphConv, HeteroConv

    assert all(isinstance(c, HeteroConv) for c in enc.convs)
    assert all(isinstance(m, GraphConv) for c in enc.convs for m in c.convs.values())


def test_gradients_reach_every_graph_parameter_through_the_fusion() -> None:
    torch.manual_seed(1)
    enc = AttributeGraphEncoder(16)
    fusion = GatedGraphFusion(16)
    g = enc(build_graph_batch(ATTRS, enc.vocab))
    t = F.normalize(torch.randn(5, 16), dim=-1)
    fused = F.normalize(fusion(t, g, g.abs().sum(-1) > 0), dim=-1)
    target = F.normalize(torch.randn(5, 16), dim=-1)
    (fused * target).sum().neg().backward()
    for name, p in list(enc.named_parameters()) + list(fusion.named_parameters()):
        assert p.grad is not None, name
    used = [
        "embed.diagnosis.weight",
        "embed.descriptor.weight",
        "proj.weight",
        "convs.0.convs.<diagnosis___described_by___descriptor>.lin_rel.weight",
    ]
    grads = dict(enc.named_parameters())
    for name in used:
        assert grads[name].grad.abs().sum() > 0, name
    assert fusion.alpha.grad.abs() > 0


def test_fusion_gate_and_empty_graph_path() -> None:
    torch.manual_seed(2)
    fusion = GatedGraphFusion(8)
    assert fusion.alpha.item() == pytest.approx(0.05)
    t = torch.randn(3, 8)
    g = F.normalize(torch.randn(3, 8), dim=-1)
    none = torch.zeros(3, dtype=torch.bool)
    assert torch.allclose(fusion(t, g, none), fusion.norm(t))  # empty graph: t' = LN(t)
    with torch.no_grad():
        fusion.alpha.fill_(5.0)  # clamped to 0.2
        big = fusion(t, g)
        fusion.alpha.fill_(0.2)
        cap = fusion(t, g)
        fusion.alpha.fill_(-1.0)  # clamped to 0
        off = fusion(t, g)
    assert torch.allclose(big, cap) and torch.allclose(off, fusion.norm(t))
