"""What a region planner builds: one patient as a `PatientPlan` of `Scene`s (one per image).

A planner draws everything about a patient (anatomy, lesion, scan planes, imaging parameters,
probe positions) before anything is rendered, so all randomness flows from one rng in a fixed
order; `base.render_patient` then renders the scenes and measures their labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sonofm.sim.imaging import ImagingParams
from sonofm.sim.phantoms.lesion_section import LesionSection
from sonofm.sim.phantoms.lesions import LesionSpec, OrganCatalogue
from sonofm.sim.tissue import TissueModel


@dataclass
class Scene:
    """One planned image of a patient."""

    plane: str
    params: ImagingParams
    model: TissueModel
    lesion: LesionSection | None = None
    measurements: dict[str, float] = field(default_factory=dict)
    landmarks_mm: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class PatientPlan:
    """One patient: who, which organ, the lesion (or None for a normal study) and the images."""

    region: str
    organ: str
    sex: str | None
    catalogue: OrganCatalogue
    spec: LesionSpec | None
    scenes: list[Scene]
    study_key: str = "s0"


def sample_sex(rng: np.random.Generator, p_female: float) -> str:
    return "F" if rng.random() < p_female else "M"


def n_images(rng: np.random.Generator, lo: int = 2, hi: int = 4) -> int:
    return int(rng.integers(lo, hi + 1))


def plane_sequence(rng: np.random.Generator, n: int) -> list[str]:
    """Transverse and longitudinal first, then further views of either plane."""
    planes = ["transverse", "longitudinal"]
    rng.shuffle(planes)
    return [*planes, *(str(p) for p in rng.choice(["transverse", "longitudinal"], size=max(n - 2, 0)))][:n]


def image_planes(rng: np.random.Generator, lo: int = 2, hi: int = 4) -> list[str]:
    """The scan plane of each of one patient's images: `n_images` of them in `plane_sequence` order."""
    return plane_sequence(rng, n_images(rng, lo, hi))
