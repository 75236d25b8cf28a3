"""What a region simulator returns: one simulated image with its exact ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sonofm.reports.schema import Study


@dataclass
class SimImage:
    """One B-mode image of one patient, with labels that are exact by construction.

    Pixel coordinates are (x=column, y=row), row 0 the shallowest. `study_key` groups images of
    one acquisition (e.g. all views of one echo exam) into one study id.
    """

    image: np.ndarray  # uint8 (H, W), or (H, W, 3) when a colour overlay is on; 0 outside the fan
    mask: np.ndarray | None  # uint8 (H, W) MASK_LABELS ids
    fan_mask: np.ndarray  # bool (H, W)
    study: Study
    region: str
    organ: str
    diagnosis: str
    malignant: bool | None
    pixel_spacing_mm: float
    imaging: dict[str, Any]
    study_key: str = "s0"
    view: str | None = None
    frame: str | None = None
    landmarks: dict[str, tuple[float, float]] = field(default_factory=dict)
    bboxes: list[tuple[float, float, float, float]] = field(default_factory=list)
