"""The one global legend of segmentation label ids used in every ``masks/*.png``.

A single legend (rather than one per region) lets one segmentation head and one Dice loop serve
every region; ids are stable because mask files on disk store them.
"""

from __future__ import annotations

MASK_LABELS: dict[int, str] = {
    0: "background",
    1: "lesion",
    2: "organ",
    3: "lv",
    4: "myocardium",
    5: "la",
    6: "rv",
    7: "ra",
    8: "pericardial_effusion",
    9: "vessel_lumen",
    10: "plaque",
}
MASK_IDS: dict[str, int] = {name: i for i, name in MASK_LABELS.items()}
NUM_MASK_LABELS = len(MASK_LABELS)

# Which labels each region's masks can contain (background always). This is the single source of
# truth: the simulator's phantoms (`sonofm.sim.phantoms.base.REGION_MASK_LABELS`) re-export it and
# tests check every simulated mask against it. Vessel lumens (9) are labelled wherever they appear
# (carotid/jugular beside the thyroid, hepatic/portal veins, iliac vessels beside the ovary); in
# the vessel region a jugular thrombus or any intraluminal lesion is a lesion (1) and carotid
# plaque has its own label (10). Per-region metrics restrict to these ids.
REGION_MASK_LABELS: dict[str, tuple[int, ...]] = {
    "breast": (0, 1, 2),
    "thyroid": (0, 1, 2, 9),
    "liver": (0, 1, 2, 9),
    "kidney": (0, 1, 2),
    "gynaecology": (0, 1, 2, 9),
    "vessel": (0, 1, 2, 9, 10),
    "heart": (0, 3, 4, 5, 6, 7, 8),
    "abdomen": (0, 1, 2, 9),
    "urology": (0, 1, 2, 9),
    "superficial": (0, 1, 2, 9),
    "obstetric": (0, 1, 2, 9),
}
_LESION_REGION_LABELS = (0, 1, 2)


def mask_label_id(name: str) -> int:
    """Label id of a mask label name; ValueError naming the valid names otherwise."""
    try:
        return MASK_IDS[name]
    except KeyError:
        raise ValueError(f"unknown mask label {name!r}; expected one of: {', '.join(MASK_IDS)}") from None


def labels_for_region(region: str) -> tuple[int, ...]:
    """Mask label ids that can occur in a region's masks.

    Regions outside the taxonomy (user plug-ins) get the lesion-region default: background,
    lesion, organ.
    """
    return REGION_MASK_LABELS.get(region, _LESION_REGION_LABELS)
