"""Patient-level cardiac anatomy and physiology: the targets every echo view is drawn from.

One `Heart` is one patient: sex, body size, and the physiology a guideline reading depends on
(LVEF, LV diameters and walls, LA size, TAPSE, E/e', pericardial effusion). `sample_heart` draws
phenotypes (normal, dilated cardiomyopathy, hypertrophy, RV dysfunction, effusion, ...) so that
every guideline finding of `sonofm.taxonomy.evaluate_guidelines` occurs both present and absent,
with values spread around and across the cut-offs.

Contraction model (what makes the measured EF hit the target): the LV cavity of every view is
one axial profile, length ``L`` and diameter ``D`` times a fixed shape function. At end-systole the
apex stays put, the base moves towards it (length x ``k_long``) and every diameter shrinks by
``k_short``. Any disc-summation volume (single-plane or biplane Simpson) then scales by
``k_long * k_short**2``, so EF = 1 - k_long * k_short**2 holds for every method of discs. ``k_long``
is chosen so that the PLAX short axis (LVIDs = k_short * LVIDd) also gives the target EF by
Teichholz, unless that would need implausible long-axis shortening (then only Simpson is exact).
Walls thicken at ES by conservation of myocardial volume (cross-section area / k_long).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import brentq

# ASE/EACVI (Lang 2015) upper limits the phenotypes are placed around; the taxonomy holds the
# authoritative copies that decide findings, these only steer sampling.
_LVIDD_UPPER = {"M": 58.4, "F": 52.2}
_WALL_UPPER = {"M": 10.0, "F": 9.0}
_LA_DIAM_UPPER = {"M": 40.0, "F": 38.0}

# Long-axis shortening factor range (1 - MAPSE / L): 0.75 very hyperdynamic .. 0.98 akinetic base.
K_LONG_RANGE = (0.76, 0.98)


@dataclass(frozen=True)
class Heart:
    """Targets for one patient (mm, %, mL/m2); views draw their geometry from these.

    lvidd_mm: PLAX LV internal diameter at ED (also the maximal apical cavity diameter).
    lv_length_mm: ED LV long axis (annulus midpoint to endocardial apex).
    lv_ecc: A2C / A4C diameter ratio (the LV cross-section is slightly elliptical).
    k_long, k_short: ES/ED long-axis and short-axis factors (module docstring).
    la_*: LA semi-axes at ES (maximal volume): long axis, medio-lateral (A4C), antero-posterior.
    pe_mm: pericardial effusion rim thickness at ED (0 = none).
    """

    sex: str
    height_cm: float
    weight_kg: float
    bsa_m2: float
    lvef_pct: float
    lvidd_mm: float
    lv_length_mm: float
    lv_ecc: float
    k_long: float
    k_short: float
    ivsd_mm: float
    lvpwd_mm: float
    lavi_ml_m2: float
    la_long_mm: float
    la_ml_mm: float
    la_ap_mm: float
    tapse_mm: float
    rv_basal_mm: float
    e_e_prime: float
    pe_mm: float

    @property
    def lvids_mm(self) -> float:
        return self.lvidd_mm * self.k_short

    @property
    def la_volume_ml(self) -> float:
        """Ellipsoid LA volume at ES (equals the biplane area-length volume of its two cuts)."""
        return 4.0 / 3.0 * np.pi * self.la_long_mm * self.la_ml_mm * self.la_ap_mm / 1000.0

    def to_dict(self) -> dict[str, float | str]:
        d = asdict(self)
        d["lvids_mm"] = self.lvids_mm
        return d


def mosteller_bsa(height_cm: float, weight_kg: float) -> float:
    """Body surface area (m2), Mosteller 1987: sqrt(height cm * weight kg / 3600)."""
    return float(np.sqrt(height_cm * weight_kg / 3600.0))


def teichholz_volume_ml(d_mm: float | np.ndarray) -> float | np.ndarray:
    """Teichholz 1976: V = 7 D^3 / (2.4 + D), D in cm, V in mL."""
    d = np.asarray(d_mm, dtype=np.float64) / 10.0
    return 7.0 * d**3 / (2.4 + d)


def teichholz_ef(lvidd_mm: float, lvids_mm: float) -> float:
    """Ejection fraction (%) from PLAX diameters by the Teichholz volumes."""
    edv = float(teichholz_volume_ml(lvidd_mm))
    return 100.0 * (1.0 - float(teichholz_volume_ml(lvids_mm)) / edv)


def contraction_factors(lvef_pct: float, lvidd_mm: float) -> tuple[float, float]:
    """(k_long, k_short) with 1 - k_long * k_short^2 = EF exactly and, where plausible, Teichholz too."""
    ef = lvef_pct / 100.0
    target_esv = (1.0 - ef) * float(teichholz_volume_ml(lvidd_mm))
    d_s = brentq(lambda d: float(teichholz_volume_ml(d)) - target_esv, 1e-3, lvidd_mm)
    r_t = d_s / lvidd_mm
    k_long = float(np.clip((1.0 - ef) / r_t**2, *K_LONG_RANGE))
    k_short = float(np.sqrt((1.0 - ef) / k_long))
    return k_long, k_short


def es_wall_mm(cavity_radius_ed: float, wall_ed: float, cavity_radius_es: float, k_long: float) -> float:
    """ES wall thickness conserving myocardial volume: ring area x length is constant."""
    ring_ed = (cavity_radius_ed + wall_ed) ** 2 - cavity_radius_ed**2
    outer_es = np.sqrt(cavity_radius_es**2 + ring_ed / k_long)
    return float(outer_es - cavity_radius_es)


def _graded(rng: np.random.Generator, edges: tuple[float, ...], gap: float) -> float:
    """A value in one of the grade intervals [edges[i], edges[i+1]] (grade chosen uniformly), at
    least `gap` from the interval's ends, so the grade survives rounding and pixel measurement."""
    i = int(rng.integers(0, len(edges) - 1))
    return float(rng.uniform(edges[i] + gap, edges[i + 1] - gap))


# Grade partitions the sampler balances (mild | moderate | severe), per sex where they differ.
_LVIDD_GRADES = {"M": (58.4, 63.0, 68.0, 76.0), "F": (52.2, 56.2, 61.0, 69.0)}
_WALL_GRADES = {"M": (10.0, 13.0, 16.0, 19.0), "F": (9.0, 12.0, 15.0, 18.0)}
_LAVI_GRADES = (34.0, 41.0, 48.0, 62.0)
_EF_GRADES = (15.0, 30.0, 40.0, 49.5)  # severe | moderate | mild (< 50)
P_HEALTHY = 0.3


def sample_heart(rng: np.random.Generator) -> Heart:
    """Draw one patient's heart. Phenotype probabilities keep every finding common and uncommon.

    30% are healthy (every finding absent: a normal echocardiogram). The rest: LVEF normal (50%),
    hyperdynamic (10%) or reduced (40%, mild/moderate/severe balanced); reduced EF raises the odds of
    LV dilation, LA enlargement, raised E/e' and RV dysfunction; hypertrophy raises the odds of
    raised E/e'. Abnormal values are balanced over the guideline grades; all values keep a margin
    from every cut-off so measurement noise cannot move them across.
    """
    sex = "M" if rng.uniform() < 0.5 else "F"
    height = float(rng.normal(177.0 if sex == "M" else 163.0, 7.0))
    bmi = float(np.clip(rng.normal(26.0, 4.5), 17.0, 42.0))
    weight = bmi * (height / 100.0) ** 2
    bsa = mosteller_bsa(height, weight)
    healthy = rng.uniform() < P_HEALTHY
    sick = 0.0 if healthy else 1.0  # multiplies every abnormal probability

    # LV systolic function: cut-offs 50 / 40 / 30, margins 1.5 points (EF is measured within ~1.4).
    u = rng.uniform()
    if u < 1.0 - 0.4 * sick:
        lvef = float(rng.uniform(52.0, 70.0)) if rng.uniform() < 0.85 else float(rng.uniform(70.0, 78.0))
        reduced, ef_severity = False, 0
    else:
        ef_severity = int(rng.integers(1, 4))  # 1 mild, 2 moderate, 3 severe
        lo, hi = _EF_GRADES[3 - ef_severity], _EF_GRADES[4 - ef_severity]
        lvef = float(rng.uniform(lo + 1.5, hi - 1.5))
        reduced = True

    # LV size: dilation common with reduced EF.
    upper = _LVIDD_UPPER[sex]
    p_dilated = sick * (0.15, 0.35, 0.6, 0.8)[ef_severity]
    dilated = rng.uniform() < p_dilated
    if dilated:
        lvidd = _graded(rng, _LVIDD_GRADES[sex], 0.5)
    else:
        lvidd = float(np.clip(rng.normal(upper - 7.0, 3.5), upper - 15.0, upper - 1.5))
    sphericity = rng.uniform(1.45, 1.65) if dilated else rng.uniform(1.6, 1.95)
    lv_length = lvidd * float(sphericity)
    lv_ecc = float(rng.uniform(0.92, 1.08))
    k_long, k_short = contraction_factors(lvef, lvidd)

    # Walls: hypertrophy (concentric, sometimes asymmetric septal) or normal.
    wall_up = _WALL_UPPER[sex]
    hypertrophy = rng.uniform() < sick * (0.2 if dilated else 0.4)
    if hypertrophy:
        ivsd = _graded(rng, _WALL_GRADES[sex], 0.4)
        if rng.uniform() < 0.25:  # asymmetric septal hypertrophy
            lvpwd = float(rng.uniform(wall_up - 2.0, wall_up - 0.8))
        else:
            lvpwd = float(np.clip(ivsd + rng.normal(-0.5, 1.0), wall_up + 0.7, ivsd + 0.4))
    else:
        ivsd = float(rng.uniform(6.5, wall_up - 0.8))
        lvpwd = float(np.clip(ivsd + rng.normal(0.0, 0.6), 6.2, wall_up - 0.8))

    # Diastology and LA.
    high_filling = rng.uniform() < sick * (0.25 + 0.35 * reduced + 0.25 * hypertrophy)
    e_e_prime = float(rng.uniform(15.0, 26.0)) if high_filling else float(rng.uniform(5.0, 13.0))
    la_enlarged = rng.uniform() < sick * (0.2 + 0.45 * high_filling + 0.15 * reduced)
    # LAVI is measured ~1 mL/m2 above the target (area-length on masks): wider margin below 34.
    lavi = _graded(rng, _LAVI_GRADES, 1.5) if la_enlarged else float(rng.uniform(17.0, 31.0))
    # LA ellipsoid: AP diameter (PLAX) kept in the same guideline category as LAVI, so the two LA
    # measurements of one report never disagree; the long and medio-lateral axes take the rest.
    la_volume_mm3 = lavi * bsa * 1000.0
    la_ap = float((la_volume_mm3 / (4.0 / 3.0 * np.pi * 1.5 * 1.1)) ** (1.0 / 3.0))
    d_up = _LA_DIAM_UPPER[sex]
    la_ap = 0.5 * (max(2 * la_ap, d_up + 1.5) if la_enlarged else min(2 * la_ap, d_up - 1.5))
    rest = la_volume_mm3 / (4.0 / 3.0 * np.pi * la_ap)  # long * medio-lateral semi-axes
    rho = float(rng.uniform(1.25, 1.5))  # LA long / medio-lateral

    # RV longitudinal function.
    rv_dys = rng.uniform() < sick * (0.25 + 0.3 * (ef_severity >= 2))
    tapse = float(rng.uniform(8.0, 15.5)) if rv_dys else float(rng.uniform(18.5, 28.0))
    rv_basal = float(rng.uniform(30.0, 40.0) + (4.0 if rv_dys else 0.0))

    # Pericardial effusion: none / small / moderate / large (ADLER2015 cut-offs 10 and 20 mm).
    pe = 0.0
    if rng.uniform() < sick * 0.4:
        pe = _graded(rng, (2.0, 10.0, 20.0, 28.0), 1.0)

    return Heart(
        sex=sex,
        height_cm=height,
        weight_kg=weight,
        bsa_m2=bsa,
        lvef_pct=lvef,
        lvidd_mm=lvidd,
        lv_length_mm=lv_length,
        lv_ecc=lv_ecc,
        k_long=k_long,
        k_short=k_short,
        ivsd_mm=ivsd,
        lvpwd_mm=lvpwd,
        lavi_ml_m2=lavi,
        la_long_mm=float(np.sqrt(rest * rho)),
        la_ml_mm=float(np.sqrt(rest / rho)),
        la_ap_mm=la_ap,
        tapse_mm=tapse,
        rv_basal_mm=rv_basal,
        e_e_prime=e_e_prime,
        pe_mm=pe,
    )
