"""The four extra regions (abdomen, urology, superficial, obstetric): the region-simulator contract
of `test_phantoms.py`, the special lesion geometries (wedge infarct, hydrocele, ascites, nodal
hilum, lipoma striations), posterior features against the rendered image, and report round trips."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sonofm import taxonomy as tx
from sonofm.reports import parse_report, study_attributes, write_report
from sonofm.sim.imaging import label_map, pixel_grid
from sonofm.sim.phantoms import abdomen, obstetric, superficial, urology
from sonofm.sim.phantoms.base import REGION_MASK_LABELS, render_patient
from sonofm.sim.phantoms.lesion_section import posterior_from_model, section_extent
from sonofm.sim.registry import registered_regions, simulate_patient
from sonofm.sim.tissue import TissueModel
from tests.sim.test_phantoms import _posterior_contrast_db

SIZE = 96
PLANNERS = {
    "abdomen": abdomen.plan_abdomen,
    "urology": urology.plan_urology,
    "superficial": superficial.plan_superficial,
    "obstetric": obstetric.plan_obstetric,
}
# label ids each extra region's masks may contain (lesion 1, organ 2, vessel lumen 9)
MASK_LABELS = {
    "abdomen": (0, 1, 2, 9),
    "urology": (0, 1, 2),
    "superficial": (0, 1, 2, 9),
    "obstetric": (0, 1, 2, 9),
}
ORGANS = [(r, o.id) for r in PLANNERS for o in tx.organs_in(r)]
CATALOGUES = {
    "spleen": abdomen.SPLEEN,
    "pancreas": abdomen.PANCREAS,
    "prostate": urology.PROSTATE,
    "testis": urology.TESTIS,
    "lymph_node": superficial.LYMPH_NODE,
    "soft_tissue": superficial.SOFT_TISSUE,
    "fetus": obstetric.FETUS,
}
# kinds drawn with their own geometry (not only `build_section`)
SPECIAL_KINDS = [
    ("abdomen", "infarct"),
    ("urology", "hydrocele"),
    ("superficial", "reactive_node"),
    ("superficial", "lipoma"),
    ("obstetric", "fetal_ascites"),
    ("obstetric", "choroid_plexus_cyst"),
]


def _find_seed(
    region: str,
    organ: str | None = None,
    *,
    lesion: bool | None = True,
    kind: str | None = None,
    start: int = 0,
):
    """First seed from `start` whose (cheap) plan matches; planning draws everything before rendering."""
    for seed in range(start, start + 300):
        plan = PLANNERS[region](np.random.default_rng(seed), SIZE)
        if organ is not None and plan.organ != organ:
            continue
        if lesion is not None and (plan.spec is not None) != lesion:
            continue
        if kind is not None and (plan.spec is None or plan.spec.kind != kind):
            continue
        return seed, plan
    raise AssertionError(f"no patient of {region}/{organ} lesion={lesion} kind={kind} in 300 seeds")


def _check_lesion_images(region: str, ims) -> None:
    assert 2 <= len(ims) <= 4
    assert len({im.study_key for im in ims}) == 1
    assert len({(im.organ, im.diagnosis, im.malignant) for im in ims}) == 1
    organ = ims[0].organ
    assert organ in {o.id for o in tx.organs_in(region)}
    cat = CATALOGUES[organ]
    assert (ims[0].malignant is None) == (cat.malignant_prevalence is None)
    if region != "obstetric":  # the same lesion in two planes (fetal views are all axial)
        assert {im.imaging["plane"] for im in ims} == {"transverse", "longitudinal"}
    for im in ims:
        assert im.view is None and im.study.view is None
        assert im.image.dtype == np.uint8 and im.image.shape == (SIZE, SIZE)
        assert im.mask.dtype == np.uint8 and im.mask.shape == (SIZE, SIZE)
        assert not im.image[~im.fan_mask].any() and not im.mask[~im.fan_mask].any()
        assert set(np.unique(im.mask).tolist()) <= set(MASK_LABELS[region])
        assert im.study.region == region and im.study.organ == im.organ
        for f in im.study.findings:
            assert tx.has_tag(f.dimension, f.tag), (f.dimension, f.tag)
        attrs = study_attributes(im.study)
        tx.validate_attributes(attrs)
        assert attrs["diagnosis"] == [im.diagnosis] and im.diagnosis != "normal"
        for dim in ("shape", "margin", "echogenicity", "internal", "vascularity"):
            assert attrs[dim], dim

        lesion = im.mask == 1
        assert lesion.any()
        assert not (ndimage.binary_dilation(lesion) & ~im.fan_mask).any()
        rows, cols = np.nonzero(lesion)
        assert im.bboxes == [(cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)]
        sp = im.pixel_spacing_mm
        horiz = "lesion_width_mm" if im.imaging["plane"] == "transverse" else "lesion_length_mm"
        width_px, height_px = cols.max() - cols.min() + 1, rows.max() - rows.min() + 1
        # thin tips (spicules, corners, small bumps of irregular margins and wedges) can fall between
        # pixel centres of these coarse curvilinear images
        smooth = not (set(attrs["margin"]) | set(attrs["shape"])) & {
            "spiculated",
            "angular",
            "microlobulated",
            "irregular",
        }
        w_mm, h_mm = im.study.measurements[horiz], im.study.measurements["lesion_height_mm"]
        if smooth:
            # a small lesion's narrow tips can fall between pixel centres: 2.5 px below 8 px
            tol = 1.0 + 0.15 / sp if min(width_px, height_px) >= 8 else 2.5
            assert abs(w_mm / sp - width_px) <= tol, (horiz, w_mm / sp, width_px)
            assert abs(h_mm / sp - height_px) <= tol, (h_mm / sp, height_px)
        else:  # the measurement is never smaller than the mask (see the supersampled test)
            grid = 2 * 0.15 / sp  # clipped shapes are measured on a 0.15 mm grid: a step per side
            assert width_px - 1.0 - grid <= w_mm / sp <= width_px + 4.0, (w_mm / sp, width_px)
            assert height_px - 1.0 - grid <= h_mm / sp <= height_px + 4.0, (h_mm / sp, height_px)
        for x, y in im.landmarks.values():
            assert -0.5 <= x <= SIZE - 0.5 and -0.5 <= y <= SIZE - 0.5
        cx, cy = im.landmarks["lesion_center"]
        x0, y0, x1, y1 = im.bboxes[0]
        assert x0 - 1 <= cx <= x1 and y0 - 1 <= cy <= y1


def test_extra_regions_registered_and_cover_their_organs():
    assert set(PLANNERS) <= set(registered_regions())
    for region, labels in MASK_LABELS.items():
        assert set(labels) <= set(tx.MASK_LABELS)
        if region in REGION_MASK_LABELS:  # the shared legend, once base.py lists these regions
            assert set(labels) <= set(REGION_MASK_LABELS[region])
    for region, planner in PLANNERS.items():
        organs = {planner(np.random.default_rng(s), SIZE).organ for s in range(30)}
        assert organs == {o.id for o in tx.organs_in(region)}, region


def test_catalogues_use_taxonomy_tags():
    for cat in CATALOGUES.values():
        for kind in cat.kinds:
            assert tx.has_tag("diagnosis", kind.diagnosis)
            for dim, dist in (
                ("shape", kind.contour),
                ("margin", kind.margin),
                ("echogenicity", kind.echogenicity),
                ("internal", kind.composition),
                ("internal", kind.features),
                ("vascularity", kind.vascularity),
            ):
                for tag in dist:
                    assert tx.has_tag(dim, tag), (cat.organ, kind.name, dim, tag)
            assert (kind.malignant is None) == (cat.malignant_prevalence is None)


@pytest.mark.parametrize(("region", "organ"), ORGANS)
def test_lesion_patient_contract(region, organ):
    seed, _ = _find_seed(region, organ)
    _check_lesion_images(region, simulate_patient(region, np.random.default_rng(seed), SIZE))


@pytest.mark.parametrize(
    ("region", "kind"),
    [
        ("abdomen", "neuroendocrine_tumour"),
        ("abdomen", "infarct"),
        ("urology", "hydrocele"),
        ("superficial", "sarcoma"),
    ],
)
def test_measurements_match_supersampled_mask(region, kind):
    """Caliper extents equal the lesion's extent in a label map 4x finer than the image."""
    _, plan = _find_seed(region, kind=kind)
    for scene in plan.scenes:
        fine = label_map(scene.model, scene.params, 4 * SIZE)
        _, _, sp, _ = pixel_grid(scene.params, 4 * SIZE)
        rows, cols = np.nonzero(fine == scene.lesion.label)
        x0, z0, x1, z1 = section_extent(scene.lesion)
        assert abs((x1 - x0) / sp - (cols.max() - cols.min() + 1)) <= 2.0
        assert abs((z1 - z0) / sp - (rows.max() - rows.min() + 1)) <= 2.0


@pytest.mark.parametrize(("region", "kind"), SPECIAL_KINDS)
def test_special_lesion_geometry(region, kind):
    seed, _ = _find_seed(region, kind=kind)
    ims = simulate_patient(region, np.random.default_rng(seed), SIZE)
    _check_lesion_images(region, ims)
    if kind in ("infarct", "choroid_plexus_cyst"):  # the lesion lies within its organ
        _, plan = _find_seed(region, kind=kind)
        for scene, im in zip(plan.scenes, ims, strict=True):
            lesion_ids = {id(ly.shape) for ly in scene.lesion.layers}
            others = TissueModel(
                scene.model.background, [ly for ly in scene.model.layers if id(ly.shape) not in lesion_ids]
            )
            x, z, _, _ = pixel_grid(scene.params, SIZE)
            under = others.labels(*np.meshgrid(x, z))
            assert (under[im.mask == 1] == 2).mean() > 0.97
    if kind == "hydrocele":  # the fluid surrounds the testis: the organ lies inside the lesion's bbox
        for im in ims:
            rows, cols = np.nonzero(im.mask == 2)
            x0, y0, x1, y1 = im.bboxes[0]
            assert x0 <= cols.min() and cols.max() < x1 and y0 <= rows.min() and rows.max() < y1
            assert "enhancement" in study_attributes(im.study)["posterior"]


@pytest.mark.parametrize(("region", "organ"), ORGANS)
def test_normal_patient(region, organ):
    seed, _ = _find_seed(region, organ, lesion=False)
    ims = simulate_patient(region, np.random.default_rng(seed), SIZE)
    assert 2 <= len(ims) <= 4
    for im in ims:
        assert im.diagnosis == "normal" and im.bboxes == []
        assert not (im.mask == 1).any()
        assert (im.mask == 2).any()  # the organ is in view
        assert [(f.dimension, f.tag) for f in im.study.present()] == [("diagnosis", "normal")]
        assert im.study.absent("diagnosis")
        assert set(np.unique(im.mask).tolist()) <= set(MASK_LABELS[region])


@pytest.mark.parametrize("region", list(PLANNERS))
def test_reports_round_trip(region):
    """The report written from the ground truth parses back to the same present findings."""
    seen = 0
    for seed in range(8):
        for im in simulate_patient(region, np.random.default_rng(seed), 32):
            parsed = parse_report(write_report(im.study, seed), region).study
            assert parsed.organ == im.organ
            want = {(f.dimension, f.tag) for f in im.study.present()}
            assert {(f.dimension, f.tag) for f in parsed.present()} == want
            seen += 1
    assert seen >= 16


@pytest.mark.parametrize(
    ("region", "kind", "label"),
    [
        ("abdomen", "splenic_cyst", "enhancement"),
        ("urology", "calcification", "shadowing"),
        ("urology", "testicular_cyst", "enhancement"),
        ("superficial", "ganglion_cyst", "enhancement"),
    ],
)
def test_posterior_labels_match_rendered_image(region, kind, label):
    """Where the label says enhancement/shadowing, the rendered region behind is brighter/darker."""
    checked, start = 0, 0
    for _ in range(3):  # a few patients: a lesion near the fan's edge may leave too little behind it
        seed, plan = _find_seed(region, kind=kind, start=start)
        for scene in plan.scenes:
            labels = posterior_from_model(scene.model, scene.lesion, scene.params).labels
            contrast = _posterior_contrast_db(scene, 160)  # small lesions need pixels behind them
            if label in labels and label in contrast:
                if label == "enhancement":
                    assert contrast[label] > 1.5, (seed, contrast)
                else:
                    assert contrast[label] < -4.0, (seed, contrast)
                checked += 1
        if checked:
            break
        start = seed + 1
    assert checked >= 1


def test_reactive_node_hilum_is_echogenic():
    """A reactive node keeps its fatty hilum: brighter than the cortex around it in the image."""
    seed, plan = _find_seed("superficial", kind="reactive_node")
    ims = render_patient(plan, np.random.default_rng(seed), 128)
    diffs = []
    for scene, im in zip(plan.scenes, ims, strict=True):
        hilum = next(ly for ly in scene.lesion.layers if ly.tissue.name == "fatty_hilum")
        x, z, _, _ = pixel_grid(scene.params, 128)
        inside = hilum.shape.inside(x[None, :], z[:, None]) & (im.mask == 1)
        cortex = ndimage.binary_erosion(im.mask == 1, iterations=1) & ~ndimage.binary_dilation(
            inside, iterations=2
        )
        if inside.sum() >= 6 and cortex.sum() >= 6:
            diffs.append(im.image[inside].astype(float).mean() - im.image[cortex].astype(float).mean())
    assert diffs and np.mean(diffs) > 5.0, diffs
    for kind in ("metastatic_node", "lymphoma_node"):  # malignant nodes have lost their hilum
        _, plan = _find_seed("superficial", kind=kind)
        assert plan.spec.malignant is True
        assert not any(ly.tissue.name == "fatty_hilum" for sc in plan.scenes for ly in sc.model.layers)


def test_fetal_skull_is_bright_and_labelled():
    seed, plan = _find_seed("obstetric", lesion=False)
    ims = render_patient(plan, np.random.default_rng(seed), 128)
    head = [
        (s, im)
        for s, im in zip(plan.scenes, ims, strict=True)
        if any(ly.tissue.name == "skull" for ly in s.model.layers)
    ]
    assert head
    for scene, im in head:
        skull = next(ly for ly in scene.model.layers if ly.tissue.name == "skull")
        brain = next(ly for ly in scene.model.layers if ly.tissue.name == "brain")
        x, z, _, _ = pixel_grid(scene.params, 128)
        ring = (
            skull.shape.inside(x[None, :], z[:, None])
            & ~brain.shape.inside(x[None, :], z[:, None])
            & im.fan_mask
        )
        inner = ndimage.binary_erosion(brain.shape.inside(x[None, :], z[:, None]), iterations=3) & im.fan_mask
        assert (im.mask[ring | inner] == 2).mean() > 0.95
        assert im.image[ring].mean() > im.image[inner].mean() + 10


@pytest.mark.parametrize("region", list(PLANNERS))
def test_deterministic(region):
    a = simulate_patient(region, np.random.default_rng(3), 48)
    b = simulate_patient(region, np.random.default_rng(3), 48)
    assert len(a) == len(b)
    for ia, ib in zip(a, b, strict=True):
        np.testing.assert_array_equal(ia.image, ib.image)
        np.testing.assert_array_equal(ia.mask, ib.mask)
        assert ia.study.to_dict() == ib.study.to_dict() and ia.imaging == ib.imaging
