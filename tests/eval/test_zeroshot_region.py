"""Zero-shot region = the best-matching organ of the region, not the mean of its organs' prompts."""

from __future__ import annotations

import numpy as np

from sonofm import taxonomy as tx
from sonofm.eval.tasks.zeroshot import class_logits, class_members
from sonofm.reports import prompts as P


class _Ctx:
    """class_weights: one orthogonal unit vector per organ (looked up by its first prompt)."""

    def __init__(self) -> None:
        self.organs = [o.id for o in tx.ORGANS]

    def class_weights(self, prompts: list[list[str]]) -> np.ndarray:
        eye = np.eye(len(self.organs))
        first = {P.organ_prompts(o)[0]: i for i, o in enumerate(self.organs)}
        return np.stack([eye[first[p[0]]] for p in prompts])


def test_region_members_are_its_organs() -> None:
    members = class_members("region", "abdomen")
    assert len(members) == len(tx.organs_in("abdomen")) >= 2
    assert class_members("view", "A4C") == [P.view_prompts("A4C")]
    heart = class_members("region", "heart")
    assert P.organ_prompts("heart") in heart and P.view_prompts("PLAX") in heart  # views are heart images


def test_an_image_of_one_organ_scores_its_region_fully() -> None:
    ctx = _Ctx()
    organ = tx.organs_in("abdomen")[1].id
    img = np.eye(len(ctx.organs))[[ctx.organs.index(organ)]]  # exactly the organ's direction
    regions = ["abdomen", "liver", "breast"]
    logits = class_logits(ctx, img, "region", regions)
    # best organ: 1.0 for abdomen; the mean of three organ vectors would give 1/sqrt(3) after renorm
    assert logits[0].tolist() == [1.0, 0.0, 0.0]
