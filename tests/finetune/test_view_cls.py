"""Echo view classification: labels match what the simulator drew, augmentation keeps views,
and the class-balanced loss equals a direct reference computation."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from sonofm.errors import UserError
from sonofm.finetune.classify import balanced_class_weights
from sonofm.finetune.tasks import get_task


def test_simulated_view_labels_match_the_drawn_chambers(heart_data: Path) -> None:
    """The manifest's view says which chambers the mask holds: 4-chamber views show RV and RA,
    2/3-chamber views neither, PLAX the RV outflow but no RA, short-axis views no atria."""
    from sonofm.taxonomy.masks import MASK_IDS

    df = pd.read_parquet(heart_data / "manifest.parquet")
    assert df["view"].nunique() >= 4
    expect = {  # chamber -> present?
        "A4C": {"rv": True, "ra": True, "la": True},
        "SC4C": {"rv": True, "ra": True, "la": True},
        "A2C": {"rv": False, "ra": False, "la": True},
        "A3C": {"rv": False, "ra": False, "la": True},
        "PLAX": {"rv": True, "ra": False, "la": True},
        "PSAX_MV": {"rv": True, "ra": False, "la": False},
        "PSAX_PM": {"rv": True, "ra": False, "la": False},
        "PSAX_AP": {"rv": True, "ra": False, "la": False},
    }
    for view, mask in zip(df["view"], df["mask"], strict=True):
        ids = set(np.unique(np.asarray(Image.open(heart_data / mask))).tolist())
        for chamber, present in expect[view].items():
            assert (MASK_IDS[chamber] in ids) == present, (view, chamber, mask)


def test_default_augmentation_never_mirrors_a_view() -> None:
    """Left/right carries the view (A4C: RV on the screen left; PLAX: aorta on the right), so
    the training augmentation may rotate a few degrees but must never flip."""
    from sonofm.data.augment import Sample, default_ultrasound_augment

    img = np.zeros((64, 64), np.float32)
    img[16:48, 6:22] = 1.0  # a bright structure on the left
    aug = default_ultrasound_augment(1.0)
    xs = np.arange(64, dtype=np.float64)
    for seed in range(100):
        out = aug(Sample(img.copy()), np.random.default_rng(seed)).image
        cx = float((out.sum(0) * xs).sum() / max(out.sum(), 1e-6))
        assert cx < 24.0, f"seed {seed}: the structure moved to x={cx:.1f}"


def test_balanced_class_weights_follow_n_over_k_nc() -> None:
    labels = ["A4C"] * 6 + ["A3C"] * 2 + ["PLAX"] * 4 + [None]
    w = balanced_class_weights(labels, ["A3C", "A4C", "PLAX", "SC4C"])
    n, k = 12, 3  # SC4C has no rows: weight 1 (it never enters the loss)
    assert w == pytest.approx([n / (k * 2), n / (k * 6), n / (k * 4), 1.0])


def test_balanced_loss_equals_reference_and_survives_the_saved_options() -> None:
    df = pd.DataFrame({"view": ["A4C"] * 5 + ["A2C"] * 3 + ["PSAX_MV"] * 1 + ["PLAX"] * 3})
    task = get_task("classify", target="view", class_weight="balanced")
    task.prepare(df)
    classes = task.classes
    counts = Counter(df["view"])
    w = np.array([len(df) / (len(classes) * counts[c]) for c in classes])
    assert task.options["class_weights"] == pytest.approx(w.tolist())

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, len(classes), generator=g)
    y = torch.tensor([0, 1, 2, 3, 2, -100, 1])
    got = task.loss(logits, {"label": y})["ce"]
    logp = torch.log_softmax(logits.double(), dim=1).numpy()
    keep = y.numpy() >= 0
    yk = y.numpy()[keep]
    ref = -(w[yk] * logp[keep][np.arange(keep.sum()), yk]).sum() / w[yk].sum()
    assert float(got) == pytest.approx(ref, rel=1e-5)

    # a saved task model rebuilds its task from the stored options, without the training rows
    again = get_task("classify", **task.options)
    assert float(again.loss(logits, {"label": y})["ce"]) == pytest.approx(float(got))
    plain = get_task("classify", target="view", classes=classes)
    assert float(plain.loss(logits, {"label": y})["ce"]) != pytest.approx(float(got))


def test_class_weight_rejects_unknown_values() -> None:
    with pytest.raises(UserError, match="class_weight"):
        get_task("classify", target="view", class_weight="inverse")
