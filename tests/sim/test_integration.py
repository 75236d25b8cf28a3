"""The simulator against its consumers: the taxonomy's mask legend and the report writer/parser.

Runs the real region simulators (every registered region, echo included), not `sampling.random_study`,
so a phantom that emits a label or a study shape the rest of sonofm does not expect fails here.
"""

from __future__ import annotations

import inspect
from collections import Counter

import numpy as np
import pytest

from sonofm import taxonomy as tx
from sonofm.reports import Status, parse_report, write_report
from sonofm.sim.registry import registered_regions, simulate_patient

SIZE = 64
PATIENTS = 5
LESION_DIMS = ("shape", "margin", "echogenicity", "internal", "posterior", "vascularity")


@pytest.fixture(scope="module")
def patients() -> dict[str, list[list]]:
    """PATIENTS simulated patients (lists of SimImage) of every registered taxonomy region (other
    tests register fake plug-in regions; those are not sonofm's)."""
    regions = [r for r in registered_regions() if r in tx.REGIONS]
    assert set(tx.CORE_REGIONS) <= set(regions)
    return {
        region: [simulate_patient(region, np.random.default_rng([2024, i]), SIZE) for i in range(PATIENTS)]
        for region in regions
    }


def test_every_region_has_a_taxonomy_mask_legend(patients):
    for region in patients:
        labels = tx.labels_for_region(region)
        assert 0 in labels and set(labels) <= set(tx.MASK_LABELS), region
    from sonofm.sim.phantoms.base import REGION_MASK_LABELS

    assert REGION_MASK_LABELS is tx.masks.REGION_MASK_LABELS  # one source of truth


def test_mask_ids_are_allowed_by_the_taxonomy(patients):
    for region, pats in patients.items():
        allowed = set(tx.labels_for_region(region))
        for i, ims in enumerate(pats):
            for k, im in enumerate(ims):
                if im.mask is None:
                    continue
                got = set(np.unique(im.mask).tolist())
                assert got <= allowed, f"{region} patient {i} image {k}: mask ids {sorted(got - allowed)}"


def _items(study) -> set[tuple]:
    """What a report must carry: every finding (with status and grade) and every measurement."""
    items = {("finding", f.dimension, f.tag, f.status.value, f.grade) for f in study.findings}
    items |= {("measurement", k, round(float(v), 2)) for k, v in study.measurements.items()}
    return items


def test_reports_of_simulated_patients_round_trip(patients, capsys):
    tp = fp = fn = 0
    dim_total: Counter[str] = Counter()
    dim_hit: Counter[str] = Counter()
    failures = []
    for region, pats in patients.items():
        for i, ims in enumerate(pats):
            rng = np.random.default_rng([2024, i, 1])  # as the generator: one report rng per patient
            for im in ims:
                text = write_report(im.study, rng)
                got = parse_report(text, region=region).study
                want, have = _items(im.study), _items(got)
                tp, fp, fn = tp + len(want & have), fp + len(have - want), fn + len(want - have)
                if want != have:
                    failures.append((region, sorted(want - have), sorted(have - want), text))
                # the lesion description states every attribute dimension of the ground truth
                for dim in LESION_DIMS:
                    truth = {f.tag for f in im.study.present(dim)}
                    if truth:
                        dim_total[dim] += 1
                        dim_hit[dim] += truth == {f.tag for f in got.present(dim)}
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    with capsys.disabled():
        print(f"\nsimulated-report round trip: micro-F1 {f1:.4f} (tp {tp}, fp {fp}, fn {fn})")
    assert f1 >= 0.98, failures[:5]
    assert set(dim_total) == set(LESION_DIMS)  # every dimension occurs in these patients
    for dim in LESION_DIMS:
        assert dim_hit[dim] / dim_total[dim] >= 0.98, (dim, dim_hit[dim], dim_total[dim], failures[:3])


def test_lesion_report_describes_the_lesion_not_an_echo_view():
    """A breast cyst's report names the cyst with its descriptors (once it read 'Longitudinal. Sex: F')."""
    for seed in range(40):
        ims = simulate_patient("breast", np.random.default_rng([5, seed]), SIZE)
        if ims[0].diagnosis == "cyst":
            break
    else:
        pytest.fail("no breast cyst in 40 patients")
    for k, im in enumerate(ims):
        text = write_report(im.study, k)
        assert im.study.view is None and "Sex:" not in text and "Longitudinal." not in text, text
        got = parse_report(text, region="breast").study
        for dim in ("diagnosis", *LESION_DIMS):
            assert {f.tag for f in got.present(dim)} == {f.tag for f in im.study.present(dim)}, (dim, text)


def test_echo_effusion_diagnosis_round_trips():
    """Pericardial effusion makes the exam's diagnosis fluid_collection; the report must say so."""
    found = 0
    for seed in range(30):
        ims = simulate_patient("heart", np.random.default_rng([11, seed]), 48)
        if ims[0].diagnosis != "fluid_collection":
            continue
        found += 1
        for k, im in enumerate(ims[:4]):
            for r in range(3):
                text = write_report(im.study, np.random.default_rng([seed, k, r]))
                got = parse_report(text, region="heart").study
                assert [f.tag for f in got.present("diagnosis")] == ["fluid_collection"], text
                pe = [f for f in got.findings if (f.dimension, f.tag) == ("echo", "pericardial_effusion")]
                assert len(pe) == 1 and pe[0].status is Status.PRESENT, text
        if found == 3:
            return
    pytest.fail(f"only {found} exams with pericardial effusion in 30 seeds")


@pytest.mark.parametrize(
    ("region", "diagnosis", "organs"),
    [
        ("vessel", "plaque", {"carotid_artery"}),
        ("vessel", "thrombus", {"jugular_vein"}),
        ("kidney", "calculus", {"kidney", "bladder"}),
        ("liver", "calculus", {"gallbladder"}),
    ],
)
def test_stones_plaque_and_thrombus_have_their_own_diagnosis(region, diagnosis, organs):
    """No more 'tumour in the jugular vein': these lesions carry their own taxonomy diagnosis."""
    from sonofm.sim.phantoms import kidney, liver, vessel

    planner = {"vessel": vessel.plan_vessel, "kidney": kidney.plan_kidney, "liver": liver.plan_liver}[region]
    for seed in range(300):
        plan = planner(np.random.default_rng(seed), SIZE)
        if plan.spec is not None and plan.organ in organs and plan.spec.diagnosis == diagnosis:
            break
    else:
        pytest.fail(f"no {diagnosis} in {region} in 300 plans")
    im = simulate_patient(region, np.random.default_rng(seed), SIZE)[0]
    assert im.diagnosis == diagnosis
    text = write_report(im.study, 0)
    assert tx.get_tag("diagnosis", diagnosis).phrase in text.lower() or any(
        s in text.lower() for s in tx.get_tag("diagnosis", diagnosis).synonyms
    )
    assert "mass" not in text.lower() and "tumo" not in text.lower(), text
    got = parse_report(text, region=region).study
    assert [f.tag for f in got.present("diagnosis")] == [diagnosis], text


# ----------------------------------------------------------------------------- planning and cost


def _planners():
    from sonofm.sim.phantoms import breast, gynaecology, kidney, liver, thyroid, vessel

    return {
        "breast": breast.plan_breast,
        "thyroid": thyroid.plan_thyroid,
        "liver": liver.plan_liver,
        "kidney": kidney.plan_kidney,
        "gynaecology": gynaecology.plan_gynaecology,
        "vessel": vessel.plan_vessel,
    }


def test_planning_never_fails():
    """Every plan fits its field of view (thyroid seed 30 once put an extrathyroidal bulge above
    the skin, so no fan could contain it and the whole dataset run stopped)."""
    from sonofm.sim.phantoms import thyroid

    plan = thyroid.plan_thyroid(np.random.default_rng(30), SIZE)
    assert all(sc.lesion.extent()[1] >= thyroid.MIN_TOP_MM - 1e-9 for sc in plan.scenes)
    for plan_fn in _planners().values():
        for seed in range(60):
            plan_fn(np.random.default_rng([77, seed]), SIZE)  # raises if a lesion cannot be imaged


def test_fast_extent_and_posterior_match_the_reference():
    """The strip-scanned grid extent and the bounding-box-restricted posterior integration give
    the answers of the exhaustive computations they replace."""
    from sonofm.sim.phantoms import lesion_section as L

    def full_extent(shape, step):
        x0, z0, x1, z1 = shape.bounds()
        xs, zs = np.arange(x0, x1 + step, step), np.arange(z0, z1 + step, step)
        inside = shape.inside(xs[None, :], zs[:, None])
        cols, rows = np.flatnonzero(inside.any(axis=0)), np.flatnonzero(inside.any(axis=1))
        return (float(xs[cols[0]]), float(zs[rows[0]]), float(xs[cols[-1]]), float(zs[rows[-1]]))

    def full_delta(model, section, params, n_rays, n_steps):  # every sample of the square evaluated
        shapes = {id(layer.shape) for layer in section.layers}
        others = [layer for layer in model.layers if id(layer.shape) not in shapes]
        x0, z0, x1, z1 = L.section_extent(section, 0.2)
        cx, cz, half = 0.5 * (x0 + x1), 0.5 * (z0 + z1), 0.5 * np.hypot(x1 - x0, z1 - z0) + 0.5
        dx, dz = L.beam_direction(params, cx, cz)
        off, s = np.linspace(-half, half, n_rays), np.linspace(-half, half, n_steps)
        ox = (cx + off[:, None] * dz + s[None, :] * dx).ravel()
        oz = (cz - off[:, None] * dx + s[None, :] * dz).ravel()
        without = L.attenuation_at(others, ox, oz, np.full(ox.shape, model.background.attenuation_db_cm_mhz))
        diff = (L.attenuation_at(section.layers, ox, oz, without.copy()) - without).reshape(n_rays, n_steps)
        return 2.0 * params.center_freq_mhz * diff.sum(axis=1) * (s[1] - s[0]) / 10.0

    n_steps = inspect.signature(L.posterior_from_model).parameters["n_steps"].default
    checked = 0
    for plan_fn in _planners().values():
        for seed in range(4):
            for sc in plan_fn(np.random.default_rng([78, seed]), SIZE).scenes:
                if sc.lesion is None:
                    continue
                prof = L.posterior_from_model(sc.model, sc.lesion, sc.params)
                ref = full_delta(sc.model, sc.lesion, sc.params, len(prof.offsets_mm), n_steps)
                np.testing.assert_array_equal(prof.delta_db, ref)
                for layer in sc.lesion.layers:
                    if type(layer.shape).__name__ in ("StarShape", "Polygon", "Dots", "Tube"):
                        continue  # closed forms
                    assert L._layer_extent(layer.shape, 0.1) == full_extent(layer.shape, 0.1)
                    checked += 1
    assert checked > 0
