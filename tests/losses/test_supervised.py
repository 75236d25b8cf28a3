"""The supervised auxiliary term: labels from the manifest, CE/BCE checked by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from sonofm.losses.compose import parse_loss_spec
from sonofm.losses.supervised import SupervisedHeadsLoss, head_classes, head_labels


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "region": ["liver", "heart", "liver", "breast"],
            "view": [None, "A4C", None, None],
            "attributes": [
                {"echogenicity": ["anechoic"], "shape": ["oval"]},
                {},
                {"echogenicity": ["hyperechoic"]},
                {"echogenicity": ["anechoic"], "diagnosis": ["cyst"]},
            ],
        }
    )


def test_head_classes_come_from_the_manifest_and_skip_single_class_targets() -> None:
    heads = head_classes(_table())
    assert heads["region"] == ["breast", "heart", "liver"]
    assert "view" not in heads  # one view only: nothing to learn
    assert heads["attributes"] == ["echogenicity:anechoic", "echogenicity:hyperechoic", "shape:oval"]


def test_labels_mark_unlabelled_rows_and_build_multi_hot() -> None:
    table = _table()
    heads = {
        "region": ["breast", "heart", "liver"],
        "view": ["A2C", "A4C"],
        **{"attributes": head_classes(table)["attributes"]},
    }
    batch = {"region": list(table.region), "view": list(table.view), "attributes": list(table.attributes)}
    labels = head_labels(batch, heads)
    assert labels["label/region"].tolist() == [2, 1, 2, 0]
    assert labels["label/view"].tolist() == [-1, 1, -1, -1]
    assert labels["label/attributes"].tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 0, 0]]


def test_loss_is_the_mean_of_cross_entropy_over_labelled_rows_and_bce() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]])
    view = torch.tensor([0, -1, 1])
    attr_logits = torch.tensor([[0.0], [1.0], [-1.0]])
    attr = torch.tensor([[1.0], [0.0], [0.0]])
    out = SupervisedHeadsLoss(["view", "attributes"])(
        {"head/view": logits, "label/view": view, "head/attributes": attr_logits, "label/attributes": attr}
    )
    ce = (
        -math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.exp(-5) / (math.exp(5) + math.exp(-5)))
    ) / 2
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    bce = -(math.log(sig(0.0)) + math.log(1 - sig(1.0)) + math.log(1 - sig(-1.0))) / 3
    assert out["supervised_loss"].item() == pytest.approx((ce + bce) / 2, rel=1e-5)


def test_unlabelled_batch_gives_zero_not_nan() -> None:
    out = SupervisedHeadsLoss(["view"])({"head/view": torch.randn(3, 2), "label/view": torch.full((3,), -1)})
    assert out["supervised_loss"].item() == 0.0


def test_supervised_is_a_loss_term() -> None:
    spec = parse_loss_spec("clip+supervised:0.5")
    assert spec.needs_labels and dict(spec.terms)["supervised"] == 0.5
