"""The label_text term: image-label contrast within each label group, through the labels' texts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sonofm.losses.compose import build_composite_loss, parse_loss_spec
from sonofm.losses.label_text import LabelTextLoss, label_text_loss
from sonofm.pretrain.label_texts import LabelTexts
from sonofm.reports.captions import label_caption


def test_single_label_rows_give_the_cross_entropy_of_their_group() -> None:
    torch.manual_seed(0)
    img, txt = torch.randn(5, 8), torch.randn(7, 8)
    scale = torch.tensor(10.0)
    groups = [(0, 3), (3, 7)]
    y = torch.zeros(5, 7)
    first = [0, 2, 1, None, 0]  # row 3 has no label in the first group
    second = [3, 6, None, None, 5]
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        if a is not None:
            y[i, a] = 1
        if b is not None:
            y[i, b] = 1
    logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    rows_a = [i for i, a in enumerate(first) if a is not None]
    rows_b = [i for i, b in enumerate(second) if b is not None]
    ce_a = F.cross_entropy(logits[rows_a, 0:3], torch.tensor([first[i] for i in rows_a]))
    ce_b = F.cross_entropy(logits[rows_b, 3:7], torch.tensor([second[i] - 3 for i in rows_b]))
    got = label_text_loss(img, txt, y, scale, groups)
    assert got.item() == pytest.approx((ce_a + ce_b).item() / 2, rel=1e-5)


def test_several_positives_share_the_target_and_unlabelled_groups_count_nothing() -> None:
    # one image, cosines 1 and 0 to two label texts of one group, both labelled positive
    img = torch.tensor([[1.0, 0.0]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0]])  # the second group (columns 2-3) is unlabelled
    got = label_text_loss(img, txt, y, torch.tensor(2.0), [(0, 2), (2, 4)])
    logp = [2 - math.log(math.exp(2) + 1), -math.log(math.exp(2) + 1)]
    assert got.item() == pytest.approx(-(logp[0] + logp[1]) / 2, rel=1e-6)
    none = label_text_loss(img, txt, torch.zeros(1, 4), torch.tensor(2.0), [(0, 2), (2, 4)])
    assert none.item() == 0.0


def test_training_the_label_texts_makes_them_a_zero_shot_classifier() -> None:
    torch.manual_seed(0)
    centres = F.normalize(torch.randn(4, 16), dim=-1)
    labels = torch.arange(200) % 4
    img = centres[labels] + 0.3 * torch.randn(200, 16)
    txt = torch.nn.Parameter(torch.randn(4, 16))
    y = F.one_hot(labels, 4).float()
    loss_fn = LabelTextLoss([(0, 4)])
    opt = torch.optim.Adam([txt], lr=0.05)
    before = (img @ F.normalize(txt.detach(), dim=-1).T).argmax(1).eq(labels).float().mean()
    for _ in range(100):
        opt.zero_grad()
        out = loss_fn(
            {
                "image_features": img,
                "label_text_features": txt,
                "label_text_targets": y,
                "logit_scale": torch.tensor(10.0),
            }
        )
        out["label_text_loss"].backward()
        opt.step()
    after = (img @ F.normalize(txt.detach(), dim=-1).T).argmax(1).eq(labels).float().mean()
    assert before < 0.5 and after > 0.95


def test_missing_outputs_and_mismatched_columns_are_named() -> None:
    loss_fn = LabelTextLoss([(0, 2)])
    with pytest.raises(ValueError, match="label_text_features"):
        loss_fn({"image_features": torch.randn(2, 4), "logit_scale": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="3 target columns but 2 label texts"):
        loss_fn(
            {
                "image_features": torch.randn(2, 4),
                "label_text_features": torch.randn(2, 4),
                "label_text_targets": torch.zeros(2, 3),
                "logit_scale": torch.tensor(1.0),
            }
        )


def test_label_text_is_a_loss_term_that_needs_its_groups() -> None:
    spec = parse_loss_spec("clip+unicl:0.5")
    assert spec.needs_label_text and dict(spec.terms)["label_text"] == 0.5
    with pytest.raises(ValueError, match="label groups"):
        build_composite_loss(spec)
    loss = build_composite_loss(spec, label_groups=[(0, 2)])
    assert "label_text" in loss.terms


def test_label_texts_cover_the_taxonomy_and_read_a_batch() -> None:
    lt = LabelTexts.from_taxonomy(["organ", "view", "echogenicity", "internal"])
    assert [lt.labels[a][0] for a, _ in lt.spans] == ["organ", "view", "echogenicity", "internal"]
    assert all(b - a >= 2 for a, b in lt.spans) and lt.spans[-1][1] == len(lt.texts)
    batch = {
        "image": torch.zeros(3, 1, 4, 4),
        "organ": ["thyroid", "heart", "not_an_organ"],
        "view": [None, "A2C", ""],
        "attributes": [
            {"echogenicity": ["hypoechoic"], "internal": ["solid", "microcalcifications"]},
            {},
            {"echogenicity": ["no_such_tag"]},
        ],
    }
    y = lt.targets(batch)
    on = {i: sorted(lt.labels[j] for j in torch.nonzero(y[i]).flatten().tolist()) for i in range(3)}
    assert on[0] == [
        ("echogenicity", "hypoechoic"),
        ("internal", "microcalcifications"),
        ("internal", "solid"),
        ("organ", "thyroid"),
    ]
    assert on[1] == [("organ", "heart"), ("view", "A2C")]
    assert on[2] == []  # unknown organ and tag: no label, not an error
    with pytest.raises(ValueError, match="expected some of"):
        LabelTexts.from_taxonomy(["organ", "colour"])


def test_label_captions_name_the_phrase_not_the_zero_shot_templates() -> None:
    assert label_caption("organ", "thyroid") == "Ultrasound of the thyroid gland."
    assert label_caption("view", "A2C") == "Echocardiogram of the heart, apical two-chamber view."
    assert label_caption("echogenicity", "hypoechoic") == "Ultrasound: hypoechoic lesion."
    assert label_caption("internal", "comet_tail").startswith("Ultrasound: lesion with comet")


def test_config_default_groups_are_every_group() -> None:
    from sonofm.config import LossConfig
    from sonofm.pretrain.label_texts import GROUPS, LabelTexts

    assert LossConfig().label_text_groups is None  # None: every group
    assert GROUPS[:2] == ("organ", "view") and LabelTexts.from_taxonomy().groups == GROUPS
