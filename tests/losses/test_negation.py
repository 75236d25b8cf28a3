"""Negation-aware contrastive loss (docs/methods.md section 2) and its report-derived hard negatives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sonofm.losses.compose import parse_loss_spec
from sonofm.losses.negation import NegationNCELoss, negation_nce_loss
from sonofm.pretrain.objective import ObjectiveCollate, structured_by_id


def _setup(b: int = 5, k: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(b, 8, generator=g), dim=-1)
    neg = F.normalize(torch.randn(b, k, 8, generator=g), dim=-1)
    return img, txt, neg, torch.tensor(1 / 0.07)


def test_zero_negatives_is_the_plain_image_to_text_loss() -> None:
    img, txt, _, scale = _setup()
    plain = F.cross_entropy(scale * img @ txt.T, torch.arange(5))
    assert negation_nce_loss(img, txt, scale).item() == pytest.approx(plain.item(), rel=1e-6)
    empty = torch.zeros(5, 0, 8)
    assert negation_nce_loss(
        img, txt, scale, empty, torch.zeros(5, 0, dtype=torch.bool)
    ).item() == pytest.approx(plain.item(), rel=1e-6)
    # every slot invalid (no structure to flip) -> the plain loss as well
    _, _, neg, _ = _setup()
    masked = negation_nce_loss(img, txt, scale, neg, torch.zeros(5, 3, dtype=torch.bool))
    assert masked.item() == pytest.approx(plain.item(), rel=1e-6)


def test_negatives_enlarge_the_loss_and_match_the_formula() -> None:
    img, txt, neg, scale = _setup()
    valid = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    got = negation_nce_loss(img, txt, scale, neg, valid).item()
    plain = negation_nce_loss(img, txt, scale).item()
    assert got > plain
    s = (scale * img @ txt.T).tolist()
    sn = (scale * torch.einsum("bd,bkd->bk", img, neg)).tolist()
    total = 0.0
    for i in range(5):
        den = sum(math.exp(v) for v in s[i]) + sum(math.exp(sn[i][k]) for k in range(3) if valid[i, k])
        total += -(s[i][i] - math.log(den))
    assert got == pytest.approx(total / 5, rel=1e-6)
    out = {
        "image_features": img,
        "text_features": txt,
        "logit_scale": scale,
        "neg_text_features": neg,
        "neg_valid": valid,
    }
    assert NegationNCELoss()(out)["negation_loss"].item() == pytest.approx(got, rel=1e-6)


def test_collate_writes_k_hard_negatives_from_the_structured_report() -> None:
    import pandas as pd

    from sonofm.reports import Study, random_study, write_report

    rng = np.random.default_rng(0)
    studies = [random_study(rng, region="thyroid"), random_study(rng, region="heart")]
    table = pd.DataFrame({"id": ["a", "b", "c"], "structured": [s.to_dict() for s in studies] + [None]})
    structured = structured_by_id(table, "test")
    assert set(structured) == {"a", "b"}
    calls: list[list[str]] = []

    def tokenizer(texts: list[str]) -> dict[str, torch.Tensor]:
        calls.append(list(texts))
        n = len(texts)
        return {
            "input_ids": torch.ones(n, 4, dtype=torch.long),
            "attention_mask": torch.ones(n, 4, dtype=torch.long),
        }

    collate = ObjectiveCollate(
        parse_loss_spec("clip+negation"), tokenizer, negatives=3, structured=structured
    )
    items = []
    for i, sid in enumerate(["a", "b", "c"]):
        items.append(
            {
                "image": torch.zeros(1, 4, 4),
                "mask": None,
                "id": sid,
                "text": "x",
                "view": None,
                "study_id": sid,
                "attributes": {},
                "index": i,
            }
        )
    batch = collate(items)
    assert batch["neg_valid"].shape == (3, 3)
    assert batch["neg_valid"][2].sum() == 0  # no structured report -> no negatives
    assert batch["neg_valid"][:2].sum() >= 4
    assert batch["neg_input_ids"].shape[0] == 9
    negs = calls[-1]
    originals = {write_report(Study.from_dict(structured[s]), 0) for s in ("a", "b")}
    assert not originals & set(negs)
    # seeded by (seed, epoch, id): the same batch gives the same negatives
    collate(items)
    assert calls[-1] == negs


def test_malformed_structured_record_gives_no_negatives_instead_of_crashing(caplog) -> None:
    def tokenizer(texts: list[str]) -> dict[str, torch.Tensor]:
        n = len(texts)
        return {
            "input_ids": torch.ones(n, 2, dtype=torch.long),
            "attention_mask": torch.ones(n, 2, dtype=torch.long),
        }

    collate = ObjectiveCollate(
        parse_loss_spec("clip+negation"), tokenizer, negatives=2, structured={"a": {"findings": "nonsense"}}
    )
    item = {
        "image": torch.zeros(1, 4, 4),
        "mask": None,
        "id": "a",
        "text": "x",
        "view": None,
        "study_id": "a",
        "attributes": {},
    }
    batch = collate([item])
    assert batch["neg_valid"].tolist() == [[False, False]]
    assert "cannot write hard negatives" in caplog.text


def test_missing_structured_column_is_a_clear_error() -> None:
    import pandas as pd

    from sonofm.errors import DataError

    with pytest.raises(DataError, match="structured"):
        structured_by_id(pd.DataFrame({"id": ["a"]}), "data/x")
