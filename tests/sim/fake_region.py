"""Two tiny region simulators for generator tests (imported as a plugin in every worker).

They register under names of their own ("fake_thyroid", "fake_heart") so they never replace the
real simulators, but return images labelled with real taxonomy regions so manifests validate.
Randomness comes only from the rng, as the registry contract requires.
"""

from __future__ import annotations

import os
import time

import numpy as np

from sonofm.reports.schema import Finding, Status, Study
from sonofm.sim.registry import register
from sonofm.sim.types import SimImage

_VASC = ("avascular", "minimal", "peripheral", "internal", "hypervascular")
# Seconds each patient takes, so a test can kill a run half way (changes no output).
_SLOW_S = float(os.environ.get("SONOFM_TEST_SLOW_PATIENT_S", "0"))


def _disk(size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


@register("fake_thyroid")
def simulate_fake_thyroid(rng: np.random.Generator, size: int) -> list[SimImage]:
    time.sleep(_SLOW_S)
    sex = "F" if rng.random() < 0.7 else "M"
    vasc = _VASC[int(rng.integers(len(_VASC)))]
    width = float(rng.uniform(5, 20))
    images = []
    for k in range(int(rng.integers(2, 5))):
        cx, cy, r = rng.uniform(0.35, 0.65) * size, rng.uniform(0.4, 0.6) * size, rng.uniform(0.1, 0.2) * size
        mask = np.zeros((size, size), np.uint8)
        mask[size // 4 :, :] = 2
        mask[_disk(size, cx, cy, r)] = 1
        image = rng.integers(40, 140, (size, size)).astype(np.uint8)
        image[mask == 1] //= 3
        study = Study(
            region="thyroid",
            organ="thyroid",
            sex=sex,
            findings=[
                Finding("diagnosis", "nodule"),
                Finding("echogenicity", "hypoechoic"),
                Finding("vascularity", vasc),
                Finding("internal", "microcalcifications", Status.ABSENT),
            ],
            measurements={"lesion_width_mm": round(width, 1)},
        )
        images.append(
            SimImage(
                image=image,
                mask=mask,
                fan_mask=np.ones((size, size), bool),
                study=study,
                region="thyroid",
                organ="thyroid",
                diagnosis="nodule",
                malignant=bool(k % 2),
                pixel_spacing_mm=40.0 / size,
                imaging={"probe": "linear", "depth_mm": 40.0, "gain_db": 50.0, "tgc_db": [0.0, 1.0]},
                study_key="s0",
                landmarks={"centre": (float(cx), float(cy))},
                bboxes=[(float(cx - r), float(cy - r), float(cx + r), float(cy + r))],
            )
        )
    return images


@register("fake_heart")
def simulate_fake_heart(rng: np.random.Generator, size: int) -> list[SimImage]:
    time.sleep(_SLOW_S)
    ef = float(rng.uniform(25, 70))
    images = []
    for view in ("A4C", "PLAX"):
        for frame in ("ED", "ES"):
            yy, xx = np.mgrid[0:size, 0:size]
            fan = (np.abs(xx - size / 2) <= yy * 0.7) & (yy < size - 1)
            mask = np.zeros((size, size), np.uint8)
            r = size * (0.2 if frame == "ED" else 0.15)
            mask[_disk(size, size / 2, size / 2, r + 2) & fan] = 4
            mask[_disk(size, size / 2, size / 2, r) & fan] = 3
            image = (rng.integers(30, 120, (size, size)) * fan).astype(np.uint8)
            study = Study(region="heart", organ="heart", view=view, frame=frame, sex="M",
                          findings=[Finding("diagnosis", "normal")], measurements={"lvef_pct": round(ef, 1)})
            images.append(
                SimImage(
                    image=image, mask=mask, fan_mask=fan, study=study, region="heart", organ="heart",
                    diagnosis="normal", malignant=None, pixel_spacing_mm=150.0 / size,
                    imaging={"probe": "phased", "depth_mm": 150.0}, study_key="echo", view=view, frame=frame,
                    landmarks={"apex": (size / 2, 2.0)},
                )
            )
    return images
