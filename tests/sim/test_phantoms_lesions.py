"""The lesion library: lexicon-following sampling, attribute coverage, and posterior features that
come from attenuation (checked analytically and on rendered images)."""

from __future__ import annotations

import numpy as np
import pytest

from sonofm import taxonomy as tx
from sonofm.sim.imaging import label_map, sample_imaging_params
from sonofm.sim.phantoms import breast, gynaecology, kidney, liver, thyroid, vessel
from sonofm.sim.phantoms.lesion_section import Parenchyma, build_section, posterior_from_model, section_extent
from sonofm.sim.phantoms.lesions import LesionKind, OrganCatalogue, findings_from_tags, sample_lesion
from sonofm.sim.physics import render_bmode
from sonofm.sim.tissue import Tissue, TissueModel

CATALOGUES = (
    breast.CATALOGUE,
    thyroid.CATALOGUE,
    liver.LIVER,
    liver.GALLBLADDER,
    kidney.KIDNEY,
    kidney.BLADDER,
    gynaecology.OVARY,
    gynaecology.UTERUS,
    vessel.CAROTID,
    vessel.JUGULAR,
)
PARENCHYMA = Parenchyma(0.0, 0.6)


def _specs(cat, n, seed=0):
    rng = np.random.default_rng(seed)
    return [sample_lesion(rng, cat) for _ in range(n)]


def test_sampled_tags_are_taxonomy_tags_and_consistent():
    for cat in CATALOGUES:
        for spec in _specs(cat, 150):
            attrs = spec.nominal_attributes()
            tx.validate_attributes(attrs)
            assert spec.organ == cat.organ
            if spec.composition == "cystic":
                # debris (internal echoes) makes fluid hypoechoic (issue #22: no "anechoic ... debris")
                want = "hypoechoic" if "debris" in spec.features else "anechoic"
                assert spec.echogenicity == want and "microcalcifications" not in spec.features
            if spec.echogenicity == "anechoic":
                assert spec.composition == "cystic"
            if spec.composition in ("cystic", "mixed_cystic_solid", "spongiform"):
                assert spec.posterior_target in ("enhancement", "combined")
            if spec.composition == "solid":
                assert not {"septations", "debris", "comet_tail"} & set(spec.features)
            if spec.contour == "round":
                assert max(spec.semi_axes_mm) / min(spec.semi_axes_mm) < 1.1


def test_every_attribute_tag_is_simulated():
    """Across the regions' catalogues, every descriptor tag of the taxonomy occurs."""
    seen: dict[str, set[str]] = {d: set() for d in tx.DIMENSIONS}
    for cat in CATALOGUES:
        for spec in _specs(cat, 300, seed=1):
            for dim, tags in spec.nominal_attributes().items():
                seen[dim] |= set(tags)
    for dim in ("shape", "margin", "echogenicity", "internal", "posterior", "vascularity"):
        wanted = {t.id for t in tx.tags(dim)} - {"tubular"}  # tubular: duct/bowel, not a lesion shape
        assert wanted <= seen[dim], (dim, wanted - seen[dim])
    # every lesion diagnosis of the taxonomy: stones, plaque and thrombus have their own tags
    assert seen["diagnosis"] == {t.id for t in tx.tags("diagnosis")} - {"normal"}


def test_malignancy_prevalence_and_lexicon_conditionals():
    specs = _specs(thyroid.CATALOGUE, 3000, seed=2)
    mal = np.array([s.malignant for s in specs])
    assert abs(mal.mean() - thyroid.CATALOGUE.malignant_prevalence) < 0.025
    attrs = [s.nominal_attributes() for s in specs]
    points = np.array([tx.tirads(a).points for a in attrs])
    taller = np.array(["taller_than_wide" in a["shape"] for a in attrs])
    micro = np.array(["microcalcifications" in a["internal"] for a in attrs])
    assert points[mal].mean() > points[~mal].mean() + 2.5
    assert taller[mal].mean() > 0.3 > 0.1 > taller[~mal].mean()
    assert micro[mal].mean() > 0.4 > 0.05 > micro[~mal].mean()
    high = np.isin([tx.tirads(a).level for a in attrs], ["TR4", "TR5"])
    assert high[mal].mean() > 0.85 and high[~mal].mean() < 0.5

    specs = _specs(breast.CATALOGUE, 2000, seed=3)
    mal = np.array([s.malignant for s in specs])
    assert abs(mal.mean() - breast.CATALOGUE.malignant_prevalence) < 0.03
    suspicious = np.array([tx.birads(s.nominal_attributes()).suspicious for s in specs])
    # benign complex cystic-solid masses, fibroadenomas with non-circumscribed margins: 4A (as in practice)
    assert suspicious[mal].mean() > 0.8 and suspicious[~mal].mean() < 0.4


def _kind(**kw) -> LesionKind:
    base = dict(
        contour={"oval": 1.0},
        margin={"circumscribed": 1.0},
        echogenicity={"hypoechoic": 1.0},
        composition={"solid": 1.0},
        posterior={"none": 1.0},
        vascularity={"avascular": 1.0},
    )
    base.update(kw)
    return LesionKind(name="t", diagnosis="nodule", malignant=False, weight=1.0, size_mm=(12.0, 12.0), **base)


def _scene(kind: LesionKind, seed: int = 0, cz: float = 14.0):
    spec = sample_lesion(np.random.default_rng(seed), OrganCatalogue("thyroid", (kind,)))
    model = TissueModel(Tissue("parenchyma", 0.0, PARENCHYMA.attenuation))
    section = build_section(spec, "transverse", 0.0, cz, PARENCHYMA)
    model.layers.extend(section.layers)
    params = sample_imaging_params(
        np.random.default_rng(1), "linear", 36.0, width_mm=40.0, center_freq_mhz=7.5
    )
    return spec, model, section, params


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (_kind(composition={"cystic": 1.0}, echogenicity={"anechoic": 1.0}), ["enhancement"]),
        (_kind(posterior={"shadowing": 1.0}), ["shadowing"]),
        (_kind(posterior={"enhancement": 1.0}), ["enhancement"]),
        (_kind(), []),
        (_kind(features={"macrocalcifications": 1.0}), ["shadowing"]),
        (_kind(features={"microcalcifications": 1.0}), []),  # too small to shadow
        (_kind(composition={"cystic": 1.0}, features={"rim_calcifications": 1.0}), ["shadowing"]),
        (_kind(posterior={"combined": 1.0}, contour={"oval": 1.0}), ["enhancement", "shadowing"]),
    ],
)
def test_posterior_comes_from_attenuation(kind, expected):
    spec, model, section, params = _scene(kind)
    prof = posterior_from_model(model, section, params)
    assert prof.labels == expected, (
        spec.features,
        spec.posterior_target,
        prof.delta_db.min(),
        prof.delta_db.max(),
    )


def test_rendered_posterior_matches_attenuation():
    """With the same scatterers, the intensity below a cyst / shadowing lesion changes by the
    round-trip attenuation the analysis predicts (within the PSF blur)."""
    for kind, sign in (
        (_kind(composition={"cystic": 1.0}, echogenicity={"anechoic": 1.0}), 1),
        (_kind(posterior={"shadowing": 1.0}), -1),
    ):
        _, model, section, params = _scene(kind, cz=12.0)
        without = TissueModel(model.background, [])
        bw = render_bmode(model, params, 96, np.random.default_rng(3))
        bo = render_bmode(without, params, 96, np.random.default_rng(3))
        prof = posterior_from_model(model, section, params)
        x0, _, x1, z1 = section_extent(section)
        centre = np.abs(bw.x_mm - 0.5 * (x0 + x1)) < 0.25 * (x1 - x0)
        rows = (bw.z_mm > z1 + 1.0) & (bw.z_mm < z1 + 8.0)
        sel = rows[:, None] & centre[None, :]
        ratio_db = 10 * np.log10(
            np.mean(bw.envelope[sel].astype(float) ** 2) / np.mean(bo.envelope[sel].astype(float) ** 2)
        )
        central = np.abs(prof.offsets_mm) < 0.25 * (x1 - x0)
        predicted = -float(np.mean(prof.delta_db[central]))
        if sign > 0:
            assert ratio_db > 3.0 and abs(ratio_db - predicted) < 2.5, (ratio_db, predicted)
        else:
            assert ratio_db < -10.0, (ratio_db, predicted)


def test_taller_than_wide_is_taller_in_the_mask():
    kind = _kind(orientation={"taller": 1.0}, contour={"irregular": 1.0})
    for seed in range(3):
        spec, model, section, params = _scene(kind, seed=seed, cz=15.0)
        assert spec.semi_axes_mm[2] > max(spec.semi_axes_mm[:2])
        mask = label_map(model, params, 128) == 1
        rows, cols = np.nonzero(mask)
        assert rows.max() - rows.min() > cols.max() - cols.min()


def test_sections_are_deterministic_and_planes_differ():
    spec = sample_lesion(np.random.default_rng(4), breast.CATALOGUE, malignant=True)
    a = build_section(spec, "transverse", 0.0, 15.0, PARENCHYMA)
    b = build_section(spec, "transverse", 0.0, 15.0, PARENCHYMA)
    c = build_section(spec, "longitudinal", 0.0, 15.0, PARENCHYMA)
    assert section_extent(a) == section_extent(b)
    xa = section_extent(a)
    xc = section_extent(c)
    assert xa != xc
    with pytest.raises(ValueError, match="plane must be one of"):
        build_section(spec, "coronal", 0.0, 15.0, PARENCHYMA)
    with pytest.raises(ValueError, match="unknown lesion kind"):
        sample_lesion(np.random.default_rng(0), breast.CATALOGUE, kind="nope")


def test_findings_state_the_negatives():
    tags = {
        "diagnosis": ["nodule"],
        "shape": ["oval"],
        "margin": ["circumscribed"],
        "echogenicity": ["isoechoic"],
        "internal": ["solid"],
        "posterior": [],
        "vascularity": ["avascular"],
    }
    absent = {(f.dimension, f.tag) for f in findings_from_tags(tags) if f.status.value == "absent"}
    assert absent == {
        ("posterior", "shadowing"),
        ("posterior", "enhancement"),
        ("vascularity", "internal"),
        ("internal", "microcalcifications"),
    }
