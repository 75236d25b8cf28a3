"""The opt-in realism knob ``domain_randomization``: off it changes nothing, on it is reproducible,
varies the rendering nuisances per image, and never changes a label.

Labels are checked on rendered images, not only on the drawn parameters: echogenicity keeps its
sign against the surrounding parenchyma, the orientation class holds in the mask while the lesion
turns, shadowing darkens and enhancement brightens what lies below, microcalcifications stay
visible punctate echoes.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from sonofm.data.card import read_card
from sonofm.data.manifest import read_manifest
from sonofm.errors import UserError
from sonofm.sim import domain_randomization as dr
from sonofm.sim.dataset_params import REALISM_KNOBS
from sonofm.sim.generator import simulate_dataset
from sonofm.sim.imaging import ImagingParams, label_map, sample_imaging_params, world_to_pixel
from sonofm.sim.phantoms import lesion_randomization as lr
from sonofm.sim.phantoms.base import render_patient
from sonofm.sim.phantoms.lesion_section import Parenchyma, build_section
from sonofm.sim.phantoms.lesions import ECHO_DB, LesionSpec, lesion_catalogue
from sonofm.sim.phantoms.placement import paint_lesion
from sonofm.sim.phantoms.plan import PatientPlan, Scene
from sonofm.sim.physics import render_bmode
from sonofm.sim.registry import simulate_patient
from sonofm.sim.tissue import Tissue, TissueModel
from tests.sim.hashes import dataset_hashes

KNOB = "domain_randomization"
REGIONS = ("thyroid", "breast", "heart")
LESION_REGIONS = (
    "breast",
    "thyroid",
    "liver",
    "kidney",
    "vessel",
    "abdomen",
    "superficial",
    "urology",
    "gynaecology",
    "obstetric",
)
SIZE = 64
PAR = Parenchyma(0.0, 0.6)  # the phantom below: parenchyma at 0 dB, soft-tissue attenuation
ORGAN = 2  # its mask label (the lesion is 1)


def _sim(out: Path, n: int = 10, **kw) -> Path:
    kw.setdefault("regions", REGIONS)
    kw.setdefault("size", SIZE)
    kw.setdefault("progress", False)
    return simulate_dataset(out, n, **kw)


@pytest.fixture(scope="module")
def dataset_on(tmp_path_factory) -> Path:
    return _sim(tmp_path_factory.mktemp("dr") / "on", realism=[KNOB])


@pytest.fixture(scope="module")
def dataset_off(tmp_path_factory) -> Path:
    return _sim(tmp_path_factory.mktemp("dr") / "off")


# --------------------------------------------------------------------------------------------- the knob


def test_knob_is_a_documented_realism_knob_and_unknown_knobs_still_fail(tmp_path):
    assert KNOB in REALISM_KNOBS and REALISM_KNOBS[KNOB].strip()
    with pytest.raises(UserError, match="domain_randomization"):
        _sim(tmp_path / "x", realism=["domain_randomisation"])  # British spelling: not a knob


def test_knob_off_is_byte_identical_to_the_knob_absent(tmp_path, dataset_off):
    """Off (the default) the simulator runs exactly as before: same files, manifest and card."""
    explicit_off = _sim(tmp_path / "explicit", realism={KNOB: False, "burned_in_text": False})
    assert dataset_hashes(explicit_off) == dataset_hashes(dataset_off)
    df = read_manifest(dataset_off)
    for imaging in df["imaging"]:
        assert imaging["realism"] == {"burned_in_text": False, "doppler_box": False}
        assert "scatterers_per_cell" not in imaging and "lesion_randomization" not in imaging
    card = read_card(dataset_off)
    assert KNOB not in card["created_by"]["parameters"]["realism"]
    assert "--domain-randomization" not in card["created_by"]["command"]
    # and at the simulator level: no randomisation context = an explicit "off" context
    for region in ("thyroid", "heart"):
        plain = simulate_patient(region, np.random.default_rng([3, 1]), SIZE)
        with dr.active(None):
            off = simulate_patient(region, np.random.default_rng([3, 1]), SIZE)
        assert [im.image.tobytes() for im in plain] == [im.image.tobytes() for im in off]
        assert [im.imaging for im in plain] == [im.imaging for im in off]


def test_knob_on_is_accepted_recorded_and_reproducible_whatever_the_workers(tmp_path, dataset_on):
    card = read_card(dataset_on)
    assert card["created_by"]["parameters"]["realism"][KNOB] is True
    assert card["created_by"]["command"].endswith("--domain-randomization")
    df = read_manifest(dataset_on, check_files=True)
    assert all(imaging["realism"][KNOB] for imaging in df["imaging"])
    again = _sim(tmp_path / "again", realism={KNOB: True}, workers=2)  # mapping form, a process pool
    assert dataset_hashes(again) == dataset_hashes(dataset_on)


def test_knob_on_changes_the_images_not_the_labels(tmp_path, dataset_on, dataset_off):
    on, off = read_manifest(dataset_on), read_manifest(dataset_off)
    assert list(on["id"]) == list(off["id"])  # same patients, same scan planes
    differ = sum(
        (dataset_on / a).read_bytes() != (dataset_off / b).read_bytes()
        for a, b in zip(on["image"], off["image"], strict=True)
    )
    assert differ == len(on)
    for col in ("attributes", "diagnosis", "malignant", "region", "organ", "view", "frame"):
        assert list(on[col]) == list(off[col]), col
    other_seed = read_manifest(_sim(tmp_path / "seed1", realism=[KNOB], seed=1))
    assert [im["gain_db"] for im in other_seed["imaging"]] != [im["gain_db"] for im in on["imaging"]]


def test_nuisance_parameters_vary_per_image_within_their_ranges(dataset_on):
    df = read_manifest(dataset_on)
    imaging = list(df["imaging"])
    # every image draws its own scanner setting; the ED and ES frames of an echo view share one
    settings = {(row.patient_id, row.view or row.id) for row in df.itertuples()}
    for name in (
        "center_freq_mhz",
        "dynamic_range_db",
        "gain_db",
        "noise_db",
        "grey_gamma",
        "scatterers_per_cell",
    ):
        assert len({im[name] for im in imaging}) == len(settings), name
    extra = ("plane", "realism", "lesion_randomization")
    for im in imaging:
        params = ImagingParams.from_dict({k: v for k, v in im.items() if k not in extra})
        lo, hi = dr.DR_FREQ_RANGE_MHZ[params.probe]
        assert lo <= params.center_freq_mhz <= hi
        assert dr.DR_DYNAMIC_RANGE_DB[0] <= params.dynamic_range_db <= dr.DR_DYNAMIC_RANGE_DB[1]
        grey = params.gain_db / params.dynamic_range_db + 0.5  # reference parenchyma's grey level
        assert dr.DR_PARENCHYMA_GREY[0] - 1e-3 <= grey <= dr.DR_PARENCHYMA_GREY[1] + 1e-3
        assert dr.DR_NOISE_DB[0] <= params.noise_db <= dr.DR_NOISE_DB[1]
        assert dr.DR_GAMMA[0] - 1e-3 <= params.grey_gamma <= dr.DR_GAMMA[1] + 1e-3
        assert dr.DR_BANDWIDTH_RANGE[0] <= params.fractional_bandwidth <= dr.DR_BANDWIDTH_RANGE[1]
        assert dr.DR_SCATTERERS_PER_CELL[0] <= params.scatterers_per_cell <= dr.DR_SCATTERERS_PER_CELL[1]
        assert max(abs(t) for t in params.tgc_db) <= dr.DR_TGC_SLIDER_CLIP_DB
    lesions = [im["lesion_randomization"] for im in imaging if "lesion_randomization" in im]
    assert lesions, "the fixture should hold lesion images"
    for info in lesions:
        if info["kept"] != "lesion_unchanged":
            assert abs(info["rotation_deg"]) <= lr.ROTATION_JITTER_DEG
            assert lr.POSTERIOR_SCALE[0] <= info["posterior_scale"] <= lr.POSTERIOR_SCALE[1]


def test_cli_passes_the_knob(tmp_path, monkeypatch):
    """`sonofm simulate --domain-randomization` turns the knob on (the CLI lists realism knobs by name)."""
    from sonofm import cli
    from sonofm.cli import data as cli_data

    assert "domain_randomization" in inspect.signature(cli_data.simulate_cmd).parameters
    out = tmp_path / "ds"
    argv = ["sonofm", "simulate", "--out", str(out), "--n", "4", "--regions", "thyroid", "--size", "48"]
    monkeypatch.setattr(sys, "argv", [*argv, "--domain-randomization"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 0
    assert read_card(out)["created_by"]["parameters"]["realism"][KNOB] is True


# --------------------------------------------------------------------------------------------- physics


def _homogeneous_speckle(per_cell: float | None, db: float = 0.0) -> np.ndarray:
    params = ImagingParams(
        probe="linear",
        center_freq_mhz=7.5,
        depth_mm=40.0,
        focus_mm=20.0,
        width_mm=40.0,
        tgc_slope_db_cm_mhz=0.5,
        noise_db=-120.0,
        scatterers_per_cell=per_cell,
    )
    b = render_bmode(
        TissueModel(Tissue("parenchyma", db, 0.5, label=2)), params, 128, np.random.default_rng(0)
    )
    rows, cols = (b.z_mm > 5) & (b.z_mm < 35), np.abs(b.x_mm) < 18
    return b.envelope[np.ix_(rows, cols)].astype(np.float64) ** 2


def test_scatterer_density_sets_speckle_statistics_not_brightness():
    """Few scatterers per cell: K-distributed speckle, intensity contrast^2 = 1 + 2 / N; the mean
    echo (and so every contrast) is the tissue's backscatter whatever N."""
    dense = _homogeneous_speckle(None)
    assert dense.std() / dense.mean() == pytest.approx(1.0, abs=0.05)  # Rayleigh
    for n in (2.0, 5.0):
        sparse = _homogeneous_speckle(n)
        assert sparse.std() / sparse.mean() == pytest.approx(np.sqrt(1 + 2 / n), rel=0.08), n
        assert sparse.mean() == pytest.approx(dense.mean(), rel=0.05)
    # calcium, bone and walls are dense reflectors: they never thin out
    bright = _homogeneous_speckle(2.0, db=20.0)
    assert bright.std() / bright.mean() == pytest.approx(1.0, abs=0.05)


# --------------------------------------------------------------------------------------------- labels


def _spec(**kw) -> LesionSpec:
    fields = dict(
        organ="thyroid",
        kind="test",
        diagnosis="nodule",
        malignant=False,
        contour="oval",
        margins=["circumscribed"],
        echogenicity="hypoechoic",
        composition="solid",
        features=[],
        posterior_target="none",
        vascularity="avascular",
        semi_axes_mm=(6.0, 6.0, 4.0),
        solid_echo_db=-8.0,
        solid_attenuation=float("nan"),
        fluid_attenuation=0.01,
        texture_db=0.0,
        seed=3,
        orientation_tags=True,
    )
    fields.update(kw)
    return LesionSpec(**fields)


def _plan(spec: LesionSpec, n: int, cz: float = 16.0) -> PatientPlan:
    """One lesion in homogeneous parenchyma, `n` images of the same planned scene."""
    params = sample_imaging_params(np.random.default_rng(0), "linear", 34.0, width_mm=34.0, focus_mm=cz)
    model = TissueModel(Tissue("thyroid", PAR.echo_db, PAR.attenuation, label=ORGAN))
    section = paint_lesion(model, build_section(spec, "transverse", 0.0, cz, PAR), 0.0)
    scene = Scene("transverse", params, model, section)
    return PatientPlan("thyroid", "thyroid", "F", lesion_catalogue("thyroid"), spec, [scene] * n)


def _render(plan: PatientPlan, key: int = 5):
    with dr.active((key, 0, dr.DOMAIN_RANDOMIZATION_STREAM)):
        return render_patient(plan, np.random.default_rng(1), SIZE)


def _display_db(im) -> np.ndarray:
    """The displayed grey levels back in dB re reference parenchyma (exact where not clipped)."""
    p = im.imaging
    level = (im.image.astype(np.float64) / 255.0) ** (1.0 / p["grey_gamma"])
    return (level - 0.5) * p["dynamic_range_db"] - p["gain_db"]


def _present(im, dimension: str) -> list[str]:
    return [f.tag for f in im.study.findings if f.dimension == dimension and f.status.name == "PRESENT"]


@pytest.mark.parametrize(
    ("echo", "db", "check"),
    [
        ("very_hypoechoic", -17.0, lambda d: d < -3.0),
        ("hypoechoic", -8.0, lambda d: d < -3.0),
        ("isoechoic", 0.0, lambda d: abs(d) < 4.5),
        ("hyperechoic", 7.0, lambda d: d > 2.0),
    ],
)
def test_echogenicity_keeps_its_sign_against_the_parenchyma(echo, db, check):
    images = _render(_plan(_spec(echogenicity=echo, solid_echo_db=db), 24))
    drawn = []
    for im in images:
        lesion = im.mask == 1
        core = ndimage.binary_erosion(lesion)
        ring = (
            ndimage.binary_dilation(lesion, iterations=5)
            & ~ndimage.binary_dilation(lesion)
            & (im.mask == ORGAN)
        )
        d = _display_db(im)
        contrast = float(np.median(d[core]) - np.median(d[ring]))
        assert check(contrast), (echo, contrast, im.imaging["lesion_randomization"])
        assert _present(im, "echogenicity") == [echo]
        drawn.append(im.imaging["lesion_randomization"]["solid_echo_db"])
    lo, hi = ECHO_DB[echo]
    assert all(lo <= v <= hi for v in drawn) and len(set(drawn)) == len(drawn)  # per image, in the band


@pytest.mark.parametrize(
    ("axes", "tag"), [((3.5, 3.5, 5.0), "taller_than_wide"), ((6.0, 6.0, 4.2), "wider_than_tall")]
)
def test_orientation_class_holds_while_the_lesion_turns(axes, tag):
    plan = _plan(_spec(semi_axes_mm=axes, tilt_deg=6.0 if tag == "wider_than_tall" else 0.0), 24)
    before = [(layer.shape, layer.tissue) for layer in plan.scenes[0].model.layers]
    images = _render(plan)
    turns = [im.imaging["lesion_randomization"]["rotation_deg"] for im in images]
    assert min(turns) < -2.0 and max(turns) > 2.0  # the lesion does turn, both ways
    masks = set()
    for im in images:
        assert tag in _present(im, "shape")
        rows, cols = np.nonzero(im.mask == 1)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert (height > width) if tag == "taller_than_wide" else (width > height), (height, width)
        masks.add(im.mask.tobytes())
    assert len(masks) > len(images) // 2
    # the planned scene is left as it was (randomised scenes are copies)
    assert [(layer.shape, layer.tissue) for layer in plan.scenes[0].model.layers] == before


def _below_minus_beside_db(im) -> float:
    """Median displayed dB in the band just below the lesion's centre minus beside it."""
    rows, cols = np.nonzero(im.mask == 1)
    c0, c1 = cols.min(), cols.max()
    quarter = (c1 - c0) // 4
    r0, r1 = rows.max() + 2, min(rows.max() + 12, SIZE)
    d = _display_db(im)
    below = d[r0:r1, c0 + quarter : c1 - quarter + 1]
    beside = np.concatenate([d[r0:r1, : max(c0 - 3, 1)], d[r0:r1, min(c1 + 4, SIZE - 1) :]], axis=1)
    return float(np.median(below) - np.median(beside))


@pytest.mark.parametrize(
    ("spec_kw", "feature", "check"),
    [
        ({"posterior_target": "shadowing", "solid_attenuation": 2.0}, "shadowing", lambda d: d < -3.0),
        (
            {"composition": "cystic", "echogenicity": "anechoic", "posterior_target": "enhancement"},
            "enhancement",
            lambda d: d > 1.5,
        ),
    ],
)
def test_posterior_features_stay_present_and_visible(spec_kw, feature, check):
    images = _render(_plan(_spec(**spec_kw), 24))
    scales = []
    for im in images:
        assert _present(im, "posterior") == [feature]
        assert check(_below_minus_beside_db(im)), (feature, _below_minus_beside_db(im))
        scales.append(im.imaging["lesion_randomization"]["posterior_scale"])
    assert len(set(scales)) > 1
    if feature == "shadowing":
        assert min(scales) < 1.0 < max(scales)  # weaker and stronger shadows, still shadows


def test_margin_blur_stays_within_its_class():
    for margin, (lo, hi) in (("indistinct", lr.INDISTINCT_EDGE_MM), ("circumscribed", lr.SHARP_EDGE_MM)):
        for im in _render(_plan(_spec(margins=[margin]), 8)):
            assert lo <= im.imaging["lesion_randomization"]["edge_mm"] <= hi
            assert _present(im, "margin") == [margin]


@pytest.mark.parametrize(("echo", "db"), [("hypoechoic", -8.0), ("isoechoic", 0.0), ("hyperechoic", 7.0)])
def test_microcalcifications_stay_visible_punctate_echoes(echo, db):
    """At least two foci of every cluster stand 10 dB above the lesion around them (envelope, before
    the display can clip), in every draw; counts and sizes vary within the allowed ranges."""
    spec = _spec(echogenicity=echo, solid_echo_db=db, features=["microcalcifications"])
    scene = _plan(spec, 1).scenes[0]
    counts = set()
    for k in range(16):
        out = lr.randomize_scene(scene, spec, np.random.default_rng([5, 0, 4, k])).scene
        bmode = render_bmode(out.model, out.params, SIZE, 1)
        mask = label_map(out.model, out.params, SIZE)
        env_db = 20.0 * np.log10(np.maximum(bmode.envelope, 1e-6))
        around = np.median(env_db[ndimage.binary_erosion(mask == 1)])
        foci = next(layer.shape for layer in out.lesion.layers if layer.tissue.name == "microcalcification")
        assert lr.MICROCALC_COUNT[0] <= len(foci.centers) <= lr.MICROCALC_COUNT[1]
        assert np.all(foci.radii < 0.5)  # diameters below 1 mm
        col, row = (np.rint(v).astype(int) for v in world_to_pixel(out.params, SIZE, *foci.centers.T))
        peaks = [
            env_db[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].max() - around
            for c, r in zip(col, row, strict=True)
        ]
        assert sum(p > 10.0 for p in peaks) >= 2, (echo, k, peaks)
        counts.add(len(foci.centers))
    assert len(counts) > 3


@pytest.mark.parametrize("region", LESION_REGIONS)
def test_real_regions_keep_their_labels(region):
    """Every region's planned lesions: the same findings with the knob on as off, image by image
    (without the posterior guard, 4 of these 175 images would change a posterior label)."""
    for index in range(6):
        off = simulate_patient(region, np.random.default_rng([11, index]), 48)
        with dr.active((11, index, dr.DOMAIN_RANDOMIZATION_STREAM)):
            on = simulate_patient(region, np.random.default_rng([11, index]), 48)
        assert len(on) == len(off)
        for a, b in zip(on, off, strict=True):
            assert a.study.findings == b.study.findings, (region, index)
            assert (a.diagnosis, a.malignant) == (b.diagnosis, b.malignant)
            assert a.image.tobytes() != b.image.tobytes()
