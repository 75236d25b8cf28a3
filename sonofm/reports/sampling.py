"""Random but realistic structured studies over every region and organ of the taxonomy.

Lesion attributes follow the diagnosis (a simple cyst is anechoic, circumscribed, with posterior
enhancement and no flow; a suspicious solid lesion is hypoechoic, irregular, often shadowing and
vascular), with explicit negatives and the occasional uncertain feature, as reports have them.
Echo studies draw measurements around and across the guideline cut-offs and take their findings
from `sonofm.taxonomy.evaluate_guidelines`, negatives included. Used by the round-trip tests, the
negated-caption generator and as ground truth by other modules. Randomness only from `rng`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sonofm import taxonomy as tx
from sonofm.reports.attributes import study_attributes
from sonofm.reports.schema import Finding, Status, Study
from sonofm.taxonomy.tables import frozen, load

# The sampling policy is data (sampling.toml beside this module): organ -> (lesion profile,
# weight); profile -> diagnosis choices and, per dimension, (choices, probability the dimension is
# stated); echo measurement -> (low, high) of its sampled span.
_DATA = frozen(load("sampling", Path(__file__).parent))
ORGAN_PROFILES: dict[str, tuple[tuple[str, float], ...]] = _DATA["organ_profiles"]
_PROFILES: dict[str, dict] = _DATA["profile"]
# tags that only make sense in the thyroid / thyroid and breast (TI-RADS / BI-RADS orientation)
_THYROID_ONLY = {"very_hypoechoic", "extrathyroidal_extension", "spongiform", "comet_tail"}
_ORIENTATION = {"taller_than_wide", "wider_than_tall"}
_ORIENTATION_ORGANS = {"thyroid", "breast"}
_NEG_DIM = {
    "septations": "internal",
    "debris": "internal",
    "microcalcifications": "internal",
    "shadowing": "posterior",
    "enhancement": "posterior",
    "extrathyroidal_extension": "margin",
}


def _allowed(tag: str, organ: str) -> bool:
    if tag in _THYROID_ONLY and organ != "thyroid":
        return False
    return not (tag in _ORIENTATION and organ not in _ORIENTATION_ORGANS)


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def all_organs() -> tuple[str, ...]:
    return tuple(o.id for r in tx.REGIONS for o in tx.organs_in(r))


def random_study(
    rng: np.random.Generator | int | None = None, region: str | None = None, organ: str | None = None
) -> Study:
    """One random study; `region` (or `organ`) restricts where, otherwise uniform over organs."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if organ is None:
        if region is not None and region not in tx.REGIONS:
            raise ValueError(f"region {region!r} is not one of: {', '.join(tx.REGIONS)}")
        pool = [o.id for o in tx.organs_in(region)] if region else list(all_organs())
        organ = _pick(rng, pool)
    if organ == "heart":
        return random_echo_study(rng)
    return random_lesion_study(rng, organ)


def random_lesion_study(rng: np.random.Generator, organ: str) -> Study:
    """A non-cardiac study of `organ`: one lesion (or a normal organ) with attributes and sizes."""
    region = tx.region_of(organ)
    profiles = ORGAN_PROFILES.get(organ, (("benign_solid", 1), ("normal", 1)))
    names = [p for p, _ in profiles]
    w = np.array([x for _, x in profiles], dtype=float)
    profile = names[int(rng.choice(len(names), p=w / w.sum()))]
    study = Study(region=region, organ=organ)
    if organ == "kidney" and rng.random() < 0.7:
        study.measurements["kidney_length_mm"] = float(rng.integers(85, 131))
    if organ == "carotid_artery":
        # normal studies only: IMT within the normal range (sonofm has no "thickened intima" finding)
        study.measurements["imt_mm"] = tx.round_measurement("imt_mm", float(rng.uniform(0.4, 0.9)))
    if profile == "normal":
        study.findings.append(Finding("diagnosis", "normal"))
        return study
    spec = _PROFILES[profile]
    diag = _pick(rng, spec["diagnosis"])
    if organ == "thyroid" and diag == "mass":
        diag = "nodule"
    if organ == "breast" and diag == "nodule":
        diag = "mass"
    study.findings.append(Finding("diagnosis", diag))
    present: set[str] = set()
    for dim in ("shape", "margin", "echogenicity", "internal", "posterior", "vascularity"):
        choices, p = spec.get(dim, ((), 0.0))
        choices = tuple(c for c in choices if _allowed(c, organ))
        if choices and rng.random() < p:
            tag = _pick(rng, choices)
            study.findings.append(Finding(dim, tag))
            present.add(tag)
    if (
        "internal" in [f.dimension for f in study.findings]
        and any(f.tag in ("septations", "debris") for f in study.findings)
        and rng.random() < 0.5
    ):
        study.findings.append(Finding("internal", "cystic"))
        present.add("cystic")
    # an anechoic lesion holds no echoes: debris or a solid part makes it (at most) hypoechoic
    echoes_inside = {"debris", "mixed_cystic_solid", "solid", "spongiform"}
    if "anechoic" in present and present & echoes_inside:
        i = next(i for i, f in enumerate(study.findings) if f.key() == ("echogenicity", "anechoic"))
        study.findings[i] = Finding("echogenicity", "hypoechoic")
        present = (present - {"anechoic"}) | {"hypoechoic"}
    extra, p = spec.get("extra", ((), 0.0))
    extra = tuple(c for c in extra if _allowed(c, organ))
    if extra and rng.random() < p:
        tag = _pick(rng, extra)
        study.findings.append(Finding("internal", tag))
        present.add(tag)
    if organ == "thyroid" and profile == "suspicious_solid" and rng.random() < 0.15:
        study.findings.append(Finding("margin", "extrathyroidal_extension"))
        present.add("extrathyroidal_extension")
    # explicit negatives, as reports state them
    for neg in spec.get("negatives", ()):
        if rng.random() < 0.45:
            if neg == "internal_vasc":
                if not any(f.dimension == "vascularity" for f in study.findings):
                    study.findings.append(Finding("vascularity", "internal", Status.ABSENT))
            elif neg not in present and _allowed(neg, organ):
                study.findings.append(Finding(_NEG_DIM[neg], neg, Status.ABSENT))
    # an occasional hedged feature
    unc = tuple(
        u
        for u in spec.get("uncertain", ())
        if u not in present and _allowed(u, organ) and not any(f.tag == u for f in study.findings)
    )
    if unc and rng.random() < 0.15:
        u = _pick(rng, unc)
        study.findings.append(Finding(_NEG_DIM.get(u, "internal"), u, Status.UNCERTAIN))
    # sizes (integer mm; width x height [x length])
    big = diag == "fluid_collection" or profile == "tubular"
    lo, hi = (15, 90) if big else (4, 45)
    wdt = float(rng.integers(lo, hi))
    hgt = float(max(2, round(wdt * rng.uniform(0.45, 1.0))))
    if "taller_than_wide" in present:
        wdt, hgt = max(3.0, min(wdt, hgt)), max(wdt, hgt) + 1
    if "wider_than_tall" in present and hgt >= wdt:
        hgt = max(2.0, wdt - 1)
    study.measurements["lesion_width_mm"] = wdt
    study.measurements["lesion_height_mm"] = hgt
    if rng.random() < 0.6:
        study.measurements["lesion_length_mm"] = float(max(2, round(wdt * rng.uniform(0.7, 1.4))))
    study.assessment.update(risk_assessment(study))
    return study


def risk_assessment(study: Study) -> dict[str, str]:
    """TI-RADS level (thyroid) / BI-RADS category (breast) of a lesion study, from its attributes."""
    attrs = study_attributes(study)
    if study.organ == "thyroid" and attrs.get("diagnosis") and "normal" not in attrs["diagnosis"]:
        return {"TI-RADS": tx.tirads(attrs).level}
    if study.organ == "breast" and attrs.get("diagnosis") and "normal" not in attrs["diagnosis"]:
        return {"BI-RADS": tx.birads(attrs).category}
    return {}


_ECHO_SPAN: dict[str, tuple[float, float]] = _DATA["echo_span"]
_RULE_OF = {m: f for f, r in tx.GUIDELINE_RULES.items() for m in r.measurements}


def _echo_value(rng: np.random.Generator, m: str, sex: str) -> float:
    lo, hi = _ECHO_SPAN[m]
    mdef = tx.MEASUREMENTS[m]
    u = rng.random()
    finding = _RULE_OF.get(m)
    if finding is not None and u < 0.35:
        # near the cut-off: within a few reporting steps either side
        thr = tx.threshold_for(finding, m, sex)
        step = 10.0**-mdef.decimals
        v = thr + step * float(rng.integers(-6, 7)) * (1.0 if mdef.decimals else 1.0)
    elif u < 0.7 and mdef.normal_range(sex) is not None:
        nlo, nhi = mdef.normal_range(sex)
        v = float(rng.uniform(nlo, nhi)) if nhi > nlo else float(rng.uniform(lo, hi))
    else:
        v = float(rng.uniform(lo, hi))
    if rng.random() < 0.7:
        v = float(round(v))
    floor = {"lvef_pct": 5.0, "pe_size_mm": 2.0}.get(m, 0.1)
    return tx.round_measurement(m, max(v, floor))


def random_echo_study(rng: np.random.Generator) -> Study:
    """An echo image study: view, frame, sex, measurements, guideline-derived findings."""
    sex = _pick(rng, ("F", "M"))
    study = Study(
        region="heart", organ="heart", view=_pick(rng, tx.ECHO_VIEWS), frame=_pick(rng, tx.FRAMES), sex=sex
    )
    ms = ["lvef_pct"]
    for m in ("lvidd_mm", "ivsd_mm", "lvpwd_mm", "tapse_mm", "e_e_prime_ratio", "lvids_mm", "lv_edv_ml"):
        if rng.random() < 0.55:
            ms.append(m)
    if rng.random() < 0.6:
        ms.append("lavi_ml_m2" if rng.random() < 0.6 else "la_diameter_mm")
    has_pe = rng.random() < 0.3
    if has_pe:
        ms.append("pe_size_mm")
    for m in ms:
        study.measurements[m] = _echo_value(rng, m, sex)
    if "lv_edv_ml" in study.measurements and "lvef_pct" in study.measurements:
        edv, ef = study.measurements["lv_edv_ml"], study.measurements["lvef_pct"]
        study.measurements["lv_esv_ml"] = tx.round_measurement("lv_esv_ml", edv * (1 - ef / 100.0))
    study.findings = echo_findings(study.measurements, sex)
    if not has_pe and rng.random() < 0.7:
        study.findings.append(Finding("echo", "pericardial_effusion", Status.ABSENT))
    study.findings = with_echo_diagnosis(study.findings)
    return study


def with_echo_diagnosis(findings: list[Finding]) -> list[Finding]:
    """Echo findings plus the T1 diagnosis as the echo simulator states it.

    A pericardial effusion is a fluid collection; a study without abnormal findings is normal.
    Any previous diagnosis finding is replaced.
    """
    rest = [f for f in findings if f.dimension != "diagnosis"]
    if any(f.tag == "pericardial_effusion" and f.status is Status.PRESENT for f in rest):
        return [Finding("diagnosis", "fluid_collection"), *rest]
    if not any(f.status is Status.PRESENT for f in rest):
        return [Finding("diagnosis", "normal"), *rest]
    return rest


def echo_findings(measurements: dict[str, float], sex: str | None) -> list[Finding]:
    """Guideline-derived echo findings (present with grade, or explicitly absent)."""
    return [
        Finding(
            "echo", r.finding, Status.PRESENT if r.present else Status.ABSENT, r.grade if r.present else None
        )
        for r in tx.evaluate_guidelines(measurements, sex)
    ]
