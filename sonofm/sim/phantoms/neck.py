"""Anterior neck anatomy shared by the thyroid and vessel regions (linear probe).

Transverse: skin, subcutaneous fat, strap muscles, the two thyroid lobes joined by the isthmus in
front of the trachea (a bright air interface that shadows everything behind it),
sternocleidomastoid, the common carotid arteries with their intima-media layers lateral to the
lobes, the internal jugular veins beside them, longus colli behind. Longitudinal: the plane
through one lobe, or along the carotid (horizontal walls, far-wall intima-media complex).
Patient frame: x = 0 at the midline, image right = patient left (radiological convention).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from sonofm.sim.phantoms.anatomy import (
    BLOOD,
    LUMEN_LABEL,
    rounded_organ,
    tissue,
    with_label,
)
from sonofm.sim.phantoms.shapes import moved
from sonofm.sim.tissue import Band, Ellipse, Shape, Tissue, TissueModel

THYROID_DB = 0.0
THYROID_ATT = 0.5


@dataclass
class Neck:
    """One patient's neck geometry (mm) and tissues."""

    skin: float
    fat: float
    strap: float
    lobe_x: float  # |x| of each lobe centre
    lobe_cz: float
    lobe_rx: float
    lobe_rz: float
    lobe_len: float  # cranio-caudal length of a lobe
    isthmus: float
    trachea_r: float
    car_x: float  # |x| of each carotid centre
    car_cz: float
    car_r: float  # lumen radius
    imt: float  # far-wall intima-media thickness
    jug_rx: float
    jug_rz: float
    seed: int
    t_skin: Tissue
    t_fat: Tissue
    t_muscle: Tissue
    t_thyroid: Tissue
    t_deep: Tissue

    @property
    def lobe_top(self) -> float:
        return self.lobe_cz - self.lobe_rz

    def jug_center(self, side: int) -> tuple[float, float]:
        return (
            side * (self.car_x + self.car_r + self.jug_rx * 0.6),
            self.car_cz - self.car_r - 0.3 * self.jug_rz,
        )


def sample_neck(rng: np.random.Generator, lobe_min: tuple[float, float, float] = (0, 0, 0)) -> Neck:
    """A neck; `lobe_min` = (rx, rz, length/2) minimum lobe size so a nodule fits inside its lobe."""
    u = rng.uniform(size=16)
    skin, fat, strap = 1.2 + 0.6 * u[0], 1.5 + 3.0 * u[1], 2.0 + 2.0 * u[2]
    lobe_rx = max(7.0 + 3.0 * u[3], lobe_min[0])
    lobe_rz = max(6.0 + 3.0 * u[4], lobe_min[1])
    lobe_len = max(38.0 + 12.0 * u[5], 2 * lobe_min[2])
    isthmus = 2.0 + 2.0 * u[6]
    trachea_r = 8.5 + 2.5 * u[7]
    lobe_top = skin + fat + strap + 0.3
    lobe_cz = lobe_top + lobe_rz
    lobe_x = trachea_r + 0.4 * lobe_rx + 2.0 * u[8] + 1.0
    car_r = 2.8 + 1.2 * u[9]
    car_x = lobe_x + lobe_rx + car_r + 1.5 + 2.0 * u[10]
    return Neck(
        skin=skin,
        fat=fat,
        strap=strap,
        lobe_x=lobe_x,
        lobe_cz=lobe_cz,
        lobe_rx=lobe_rx,
        lobe_rz=lobe_rz,
        lobe_len=lobe_len,
        isthmus=isthmus,
        trachea_r=trachea_r,
        car_x=car_x,
        car_cz=lobe_cz + 1.0 + 3.0 * u[11],
        car_r=car_r,
        imt=0.45 + 0.75 * u[12] ** 1.5,
        jug_rx=4.0 + 3.0 * u[13],
        jug_rz=2.5 + 2.5 * u[14],
        seed=int(rng.integers(0, 2**31 - 1)),
        t_skin=tissue("skin", 6.0, 0.9),
        t_fat=tissue("fat", -9.0, 0.5, rng, texture_db=1.5, texture_scale_mm=3.0),
        t_muscle=tissue("muscle", -11.0, 1.0, rng, texture_db=2.5, texture_scale_mm=1.0),
        t_thyroid=tissue("thyroid", THYROID_DB, THYROID_ATT, rng, texture_db=1.5, texture_scale_mm=1.2),
        t_deep=tissue("deep_neck", -6.0, 0.8, rng, texture_db=2.0, texture_scale_mm=2.5),
    )


def _superficial(model: TissueModel, n: Neck) -> None:
    model.add(Band.flat(-5.0, n.skin), n.t_skin)
    model.add(Band.flat(n.skin, n.skin + n.fat), n.t_fat)
    model.add(Band.flat(n.skin + n.fat, n.skin + n.fat + n.strap), n.t_muscle)


def _carotid_transverse(model: TissueModel, n: Neck, cx: float, wall_label: int | None) -> None:
    adv = tissue("adventitia", 8.0, 0.8, label=wall_label)
    media = tissue("media", -14.0, 0.6, label=wall_label)
    intima = tissue("intima", 2.0, 0.6, label=wall_label)
    r, cz = n.car_r, n.car_cz
    model.add(Ellipse(cx, cz, r + n.imt + 0.7, r + n.imt + 0.7, edge_mm=0.05), adv)
    model.add(Ellipse(cx, cz, r + n.imt, r + n.imt, edge_mm=0.05), media)
    model.add(Ellipse(cx, cz, r + 0.15, r + 0.15, edge_mm=0.05), intima)
    model.add(Ellipse(cx, cz, r, r, edge_mm=0.05), with_label(BLOOD, LUMEN_LABEL))


def _jugular_transverse(model: TissueModel, n: Neck, side: int, wall_label: int | None) -> Shape:
    jx, jz = n.jug_center(side)
    model.add(
        Ellipse(jx, jz, n.jug_rx + 0.3, n.jug_rz + 0.3, edge_mm=0.05),
        tissue("vein_wall", 4.0, 0.7, label=wall_label),
    )
    lumen = Ellipse(jx, jz, n.jug_rx, n.jug_rz, edge_mm=0.05)
    model.add(lumen, with_label(BLOOD, LUMEN_LABEL))
    return lumen


def neck_transverse(
    n: Neck,
    shift: float,
    *,
    thyroid_label: int | None,
    carotid_wall_label: int | None = None,
    jugular_wall_label: int | None = None,
) -> TissueModel:
    """Transverse neck at lateral probe offset `shift` (patient-frame x of the probe centre)."""
    model = TissueModel(n.t_deep)
    _superficial(model, n)
    rng = np.random.default_rng([n.seed, 0])
    parts = TissueModel(n.t_deep)
    thy = replace(n.t_thyroid, label=thyroid_label)
    for side in (-1, 1):
        # sternocleidomastoid over the vessels, longus colli behind the lobe
        parts.add(
            Ellipse(side * (n.car_x + 2.0), n.skin + n.fat + 3.0, 12.0, 3.5, angle_deg=side * 12.0),
            n.t_muscle,
        )
        parts.add(Ellipse(side * (n.lobe_x - 2.0), n.lobe_cz + n.lobe_rz + 4.0, 7.0, 3.5), n.t_muscle)
    # trachea: cartilage ring, then air behind a bright mucosal interface (total shadow)
    tz = n.lobe_top + n.isthmus + n.trachea_r + 0.5
    parts.add(Ellipse(0.0, tz, n.trachea_r + 1.5, n.trachea_r + 1.2), tissue("cartilage", -12.0, 1.0))
    parts.add(Ellipse(0.0, tz, n.trachea_r, n.trachea_r - 0.3), tissue("air", 14.0, 60.0))
    for side in (-1, 1):
        parts.add(
            rounded_organ(side * n.lobe_x, n.lobe_cz, n.lobe_rx, n.lobe_rz, rng, angle_deg=side * 8.0), thy
        )
    parts.add(Ellipse(0.0, n.lobe_top + n.isthmus / 2.0, n.lobe_x, n.isthmus / 2.0 + 0.2), thy)  # isthmus
    for side in (-1, 1):
        _carotid_transverse(parts, n, side * n.car_x, carotid_wall_label)
        _jugular_transverse(parts, n, side, jugular_wall_label)
    for layer in parts.layers:
        model.add(moved(layer.shape, -shift, 0.0), layer.tissue)
    return model


def thyroid_longitudinal(n: Neck, shift: float, *, thyroid_label: int | None) -> TissueModel:
    """Sagittal plane through a lobe: the elongated lobe between strap muscles and longus colli."""
    model = TissueModel(n.t_deep)
    _superficial(model, n)
    rng = np.random.default_rng([n.seed, 1])
    thy = replace(n.t_thyroid, label=thyroid_label)
    parts = TissueModel(n.t_deep)
    parts.add(Band.flat(n.lobe_cz + n.lobe_rz + 1.0, n.lobe_cz + n.lobe_rz + 7.0), n.t_muscle)  # longus colli
    parts.add(
        rounded_organ(
            0.0,
            n.lobe_cz,
            n.lobe_len / 2.0,
            n.lobe_rz,
            rng,
            angle_deg=float(rng.uniform(-6, 6)),
            lumpiness=0.03,
        ),
        thy,
    )
    for layer in parts.layers:
        model.add(moved(layer.shape, -shift, 0.0), layer.tissue)
    return model


def carotid_longitudinal(
    n: Neck, *, wall_label: int | None, jugular_wall_label: int | None = None
) -> tuple[TissueModel, float]:
    """Carotid along its length: near wall, lumen, far wall intima | media | adventitia.

    Returns the model and the depth of the far-wall lumen-intima interface at x = 0, where the
    intima-media thickness `n.imt` is measured (walls are horizontal so the IMT is exact, and a
    probe moved along the vessel sees the same picture).
    """
    model = TissueModel(n.t_deep)
    _superficial(model, n)
    model.add(Band.flat(n.skin + n.fat + n.strap, n.skin + n.fat + n.strap + 3.0), n.t_muscle)  # SCM
    r, cz = n.car_r, n.car_cz
    adv = tissue("adventitia", 8.0, 0.8, label=wall_label)
    media = tissue("media", -14.0, 0.6, label=wall_label)
    intima = tissue("intima", 2.0, 0.6, label=wall_label)
    near, far = cz - r, cz + r
    # jugular vein above the artery, compressed oval tube
    jz = near - n.imt - 0.7 - 1.0 - n.jug_rz
    model.add(
        Band.flat(jz - n.jug_rz - 0.3, jz + n.jug_rz + 0.3),
        tissue("vein_wall", 4.0, 0.7, label=jugular_wall_label),
    )
    model.add(Band.flat(jz - n.jug_rz, jz + n.jug_rz), with_label(BLOOD, LUMEN_LABEL))
    model.add(Band.flat(near - n.imt - 0.7, near - n.imt), adv)
    model.add(Band.flat(near - n.imt, near - 0.15), media)
    model.add(Band.flat(near - 0.15, near), intima)
    model.add(Band.flat(near, far), with_label(BLOOD, LUMEN_LABEL))
    model.add(Band.flat(far, far + 0.15), intima)
    model.add(Band.flat(far + 0.15, far + n.imt), media)
    model.add(Band.flat(far + n.imt, far + n.imt + 0.7), adv)
    return model, far
