"""View-informed multi-positive InfoNCE (docs/methods.md section 2) against CLIP and a brute-force sum."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sonofm.losses import ClipLoss
from sonofm.losses.view import UNKNOWN, ViewNCELoss, label_codes, positive_mask, stable_code, view_nce_loss


def _features(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, 8, generator=g), dim=-1), F.normalize(
        torch.randn(n, 8, generator=g), dim=-1
    )


def test_all_views_different_is_plain_clip() -> None:
    img, txt = _features(6, 0)
    scale = torch.tensor(1 / 0.07)
    views = label_codes(["A4C", "A2C", "A3C", "PLAX", "PSAX_MV", "SC4C"])
    studies = label_codes(["s1"] * 6)  # one exam, but every view differs
    got = view_nce_loss(img, txt, scale, views, studies)
    assert got.item() == pytest.approx(ClipLoss()(img, txt, scale)["contrastive_loss"].item(), rel=1e-6)


def test_same_view_same_study_are_positives_brute_force() -> None:
    img, txt = _features(5, 1)
    scale = torch.tensor(12.0)
    views = ["A4C", "A4C", "A4C", "PLAX", None]
    studies = ["s1", "s1", "s2", "s1", "s1"]
    pos = [
        [
            i == j or (views[i] is not None and views[i] == views[j] and studies[i] == studies[j])
            for j in range(5)
        ]
        for i in range(5)
    ]
    assert pos[0][1] and pos[1][0] and not pos[0][2] and pos[4][4] and not pos[4][0]
    s = (scale * img @ txt.T).tolist()

    def direction(rows: list[list[float]]) -> float:
        total = 0.0
        for i in range(5):
            lse = math.log(sum(math.exp(v) for v in rows[i]))
            ps = [j for j in range(5) if pos[i][j]]
            total += -sum(rows[i][j] - lse for j in ps) / len(ps)
        return total / 5

    want = 0.5 * (direction(s) + direction([list(c) for c in zip(*s, strict=True)]))
    got = view_nce_loss(img, txt, scale, label_codes(views), label_codes(studies))
    assert got.item() == pytest.approx(want, rel=1e-6)
    mask = positive_mask(label_codes(views), label_codes(studies))
    assert mask.tolist() == pos


def test_unknown_view_or_study_is_only_its_own_positive() -> None:
    codes = label_codes([None, None, float("nan"), ""])
    assert codes.tolist() == [UNKNOWN] * 4
    mask = positive_mask(codes, label_codes(["s"] * 4))
    assert torch.equal(mask, torch.eye(4, dtype=torch.bool))
    assert stable_code("A4C") == stable_code("A4C") != stable_code("A2C")


def test_module_reads_codes_from_outputs_and_errors_without_them() -> None:
    img, txt = _features(4, 2)
    out = {
        "image_features": img,
        "text_features": txt,
        "logit_scale": torch.tensor(5.0),
        "view_code": label_codes(["A4C"] * 4),
        "study_code": label_codes(["a", "a", "b", "b"]),
    }
    got = ViewNCELoss()(out)["view_loss"]
    want = view_nce_loss(img, txt, torch.tensor(5.0), out["view_code"], out["study_code"])
    assert got.item() == pytest.approx(want.item())
    with pytest.raises(KeyError, match="view_code"):
        ViewNCELoss()({k: v for k, v in out.items() if k != "view_code"})
