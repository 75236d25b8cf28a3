"""Echocardiography vocabulary: views, measurements, and guideline rules as data.

Sources (cited again on each rule and in ``GuidelineResult.source``):
- LANG2015: Lang RM et al. Recommendations for cardiac chamber quantification by echocardiography
  in adults. J Am Soc Echocardiogr 2015;28:1-39 (ASE/EACVI). Normal ranges and severity
  partitions for LVEF, LV diameters/volumes, wall thickness, LA volume index, TAPSE.
- LANG2005: Lang RM et al. Recommendations for chamber quantification. J Am Soc Echocardiogr
  2005;18:1440-63, whose LA-diameter and wall-thickness partition values the 2015 update keeps.
- RUDSKI2010: Rudski LG et al. Guidelines for the echocardiographic assessment of the right heart
  in adults. J Am Soc Echocardiogr 2010;23:685-713 (TAPSE < 17 mm abnormal, confirmed by LANG2015).
- NAGUEH2016: Nagueh SF et al. Recommendations for the evaluation of LV diastolic function.
  J Am Soc Echocardiogr 2016;29:277-314 (average E/e' > 14).
- ADLER2015: Adler Y et al. 2015 ESC Guidelines for the diagnosis and management of pericardial
  diseases. Eur Heart J 2015;36:2921-64 (effusion size: small < 10 mm, moderate 10-20, large > 20).

Design decisions:
- Values are rounded to each measurement's reporting precision (``MeasurementDef.decimals``,
  half away from zero) *before* any rule compares them. A report states the rounded value, so
  the finding derived from the simulator's exact value always equals the finding a reader (or
  the report parser) derives from the text.
- Sex "M"/"F" selects sex-specific limits. With sex unknown (None), the **male** limit is used
  for every sex-specific upper limit (the larger one): a finding called abnormal without the sex
  is then abnormal for either sex, so unknown sex never creates a false positive for women's
  smaller normal hearts. This is applied consistently by ``threshold_for`` and
  ``evaluate_guidelines``.
- A rule whose measurements are missing produces no result (not a negative).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

ECHO_VIEWS: tuple[str, ...] = ("A4C", "A2C", "A3C", "PLAX", "PSAX_MV", "PSAX_PM", "PSAX_AP", "SC4C")
FRAMES: tuple[str, ...] = ("ED", "ES")
SEXES: tuple[str, ...] = ("M", "F")
# Limit used when sex is unknown (see module docstring).
UNKNOWN_SEX_LIMIT = "M"

LANG2015 = "Lang et al., JASE 2015;28:1-39 (ASE/EACVI chamber quantification)"
LANG2005 = "Lang et al., JASE 2005;18:1440-63 (ASE/EAE chamber quantification), partitions kept in 2015"
RUDSKI2010 = "Rudski et al., JASE 2010;23:685-713 (right heart), TAPSE < 17 mm confirmed by Lang 2015"
NAGUEH2016 = "Nagueh et al., JASE 2016;29:277-314 (ASE/EACVI diastolic function)"
ADLER2015 = "Adler et al., Eur Heart J 2015;36:2921-64 (ESC pericardial diseases guideline)"


# ---------------------------------------------------------------------------------------- views
@dataclass(frozen=True)
class ViewDef:
    """A standard transthoracic view and how reports name it."""

    id: str
    phrase: str
    synonyms: tuple[str, ...]
    definition: str


def _v(view_id: str, phrase: str, synonyms: tuple[str, ...], definition: str) -> ViewDef:
    return ViewDef(view_id, phrase, tuple(dict.fromkeys((phrase.lower(), *synonyms))), definition)


VIEWS: dict[str, ViewDef] = {
    v.id: v
    for v in (
        _v(
            "A4C",
            "apical four-chamber view",
            (
                "apical four-chamber",
                "apical four chamber",
                "apical 4-chamber",
                "apical 4 chamber",
                "a4c",
                "4-chamber view",
                "four-chamber view",
                "4 chamber view",
                "ap4",
                "apical 4ch",
            ),
            "Apical view showing all four chambers, the mitral and tricuspid valves and the septum.",
        ),
        _v(
            "A2C",
            "apical two-chamber view",
            (
                "apical two-chamber",
                "apical two chamber",
                "apical 2-chamber",
                "apical 2 chamber",
                "a2c",
                "2-chamber view",
                "two-chamber view",
                "2 chamber view",
                "ap2",
                "apical 2ch",
            ),
            "Apical view of the left ventricle and left atrium showing the anterior and inferior walls.",
        ),
        _v(
            "A3C",
            "apical three-chamber view",
            (
                "apical three-chamber",
                "apical three chamber",
                "apical 3-chamber",
                "apical 3 chamber",
                "a3c",
                "3-chamber view",
                "three-chamber view",
                "apical long-axis view",
                "apical long axis",
                "aplax",
                "ap3",
            ),
            "Apical long-axis view of the LV, LA and LV outflow tract with the aortic valve.",
        ),
        _v(
            "PLAX",
            "parasternal long-axis view",
            ("parasternal long-axis", "parasternal long axis", "plax", "parasternal long axis view", "psla"),
            "Parasternal view along the LV long axis: septum, posterior wall, mitral and aortic valves.",
        ),
        _v(
            "PSAX_MV",
            "parasternal short-axis view at the mitral valve level",
            (
                "psax at the mitral valve level",
                "parasternal short axis at the mitral valve level",
                "psax mv",
                "psax-mv",
                "psax mitral valve level",
                "basal short-axis view",
                "basal short axis",
                "short axis at the mitral valve level",
            ),
            "Basal short-axis cross-section of the LV through the mitral leaflets ('fish mouth').",
        ),
        _v(
            "PSAX_PM",
            "parasternal short-axis view at the papillary muscle level",
            (
                "psax at the papillary muscle level",
                "parasternal short axis at the papillary muscle level",
                "psax pm",
                "psax-pm",
                "psax papillary muscle level",
                "mid-ventricular short-axis view",
                "mid short axis",
                "short axis at the papillary muscle level",
            ),
            "Mid-ventricular short-axis cross-section of the LV showing both papillary muscles.",
        ),
        _v(
            "PSAX_AP",
            "parasternal short-axis view at the apical level",
            (
                "psax at the apical level",
                "parasternal short axis at the apex",
                "psax apex",
                "psax-ap",
                "psax apical level",
                "apical short-axis view",
                "apical short axis",
                "short axis at the apical level",
            ),
            "Apical short-axis cross-section of the LV below the papillary muscles.",
        ),
        _v(
            "SC4C",
            "subcostal four-chamber view",
            (
                "subcostal four-chamber",
                "subcostal four chamber",
                "subcostal 4-chamber",
                "subcostal 4 chamber",
                "subcostal",
                "subcostal view",
                "subxiphoid",
                "subxiphoid view",
                "sc4c",
            ),
            "Four-chamber view from below the xiphoid, useful for pericardial effusion and the RV.",
        ),
    )
}

FRAME_PHRASES: dict[str, tuple[str, ...]] = {
    "ED": ("end-diastole", "end diastole", "end-diastolic", "diastole", "ed"),
    "ES": ("end-systole", "end systole", "end-systolic", "systole", "es"),
}


# --------------------------------------------------------------------------------- measurements
@dataclass(frozen=True)
class MeasurementDef:
    """One measurement: unit (also encoded in the id), report phrase, parser synonyms, precision.

    ``normal`` maps "M"/"F" (sex-specific) or "any" to (lo, hi), the reference range the source
    gives (mean +/- 2 SD for LANG2015); an empty dict means no reference range (lesion sizes).
    """

    id: str
    unit: str
    phrase: str
    synonyms: tuple[str, ...]
    decimals: int
    normal: dict = field(default_factory=dict)
    definition: str = ""
    source: str = ""

    def normal_range(self, sex: str | None = None) -> tuple[float, float] | None:
        """The (lo, hi) normal range for ``sex`` (male range when sex is unknown), or None."""
        if not self.normal:
            return None
        if "any" in self.normal:
            return self.normal["any"]
        return self.normal[normalize_sex(sex) or UNKNOWN_SEX_LIMIT]


def _m(
    mid: str,
    unit: str,
    phrase: str,
    synonyms: tuple[str, ...],
    decimals: int,
    normal: dict,
    definition: str,
    source: str = "",
) -> MeasurementDef:
    return MeasurementDef(
        mid,
        unit,
        phrase,
        tuple(dict.fromkeys((phrase.lower(), *synonyms))),
        decimals,
        normal,
        definition,
        source,
    )


MEASUREMENTS: dict[str, MeasurementDef] = {
    m.id: m
    for m in (
        _m(
            "lvef_pct",
            "%",
            "LV ejection fraction",
            (
                "lvef",
                "ef",
                "ejection fraction",
                "lv ef",
                "left ventricular ejection fraction",
                "biplane ef",
                "simpson's ef",
                "lv ejection fraction",
            ),
            0,
            {"M": (52.0, 72.0), "F": (54.0, 74.0)},
            "Fraction of the end-diastolic LV volume ejected per beat.",
            LANG2015,
        ),
        _m(
            "lv_edv_ml",
            "mL",
            "LV end-diastolic volume",
            ("lvedv", "edv", "lv edv", "end-diastolic volume", "left ventricular end-diastolic volume"),
            0,
            {"M": (62.0, 150.0), "F": (46.0, 106.0)},
            "Left ventricular cavity volume at end-diastole (biplane disks).",
            LANG2015,
        ),
        _m(
            "lv_esv_ml",
            "mL",
            "LV end-systolic volume",
            ("lvesv", "esv", "lv esv", "end-systolic volume", "left ventricular end-systolic volume"),
            0,
            {"M": (21.0, 61.0), "F": (14.0, 42.0)},
            "Left ventricular cavity volume at end-systole (biplane disks).",
            LANG2015,
        ),
        _m(
            "lvidd_mm",
            "mm",
            "LV end-diastolic diameter",
            (
                "lvidd",
                "lvid d",
                "lvid(d)",
                "lvedd",
                "lv end-diastolic dimension",
                "lv internal diameter in diastole",
                "left ventricular internal diameter in diastole",
                "left ventricular end-diastolic diameter",
                "end-diastolic diameter",
            ),
            1,
            {"M": (42.0, 58.4), "F": (37.8, 52.2)},
            "Internal LV diameter at end-diastole, linear measurement in the parasternal long axis.",
            LANG2015,
        ),
        _m(
            "lvids_mm",
            "mm",
            "LV end-systolic diameter",
            (
                "lvids",
                "lvid s",
                "lvid(s)",
                "lvesd",
                "lv end-systolic dimension",
                "lv internal diameter in systole",
                "left ventricular internal diameter in systole",
                "left ventricular end-systolic diameter",
                "end-systolic diameter",
            ),
            1,
            {"M": (25.0, 39.8), "F": (21.6, 34.8)},
            "Internal LV diameter at end-systole, linear measurement in the parasternal long axis.",
            LANG2015,
        ),
        _m(
            "ivsd_mm",
            "mm",
            "interventricular septal thickness",
            (
                "ivsd",
                "ivs",
                "ivs(d)",
                "ivs d",
                "septal thickness",
                "interventricular septum",
                "interventricular septal thickness in diastole",
                "septum thickness",
                "ivs thickness",
            ),
            1,
            {"M": (6.0, 10.0), "F": (6.0, 9.0)},
            "Thickness of the interventricular septum at end-diastole.",
            LANG2015,
        ),
        _m(
            "lvpwd_mm",
            "mm",
            "LV posterior wall thickness",
            (
                "lvpwd",
                "lvpw",
                "lvpw(d)",
                "lvpw d",
                "pwd",
                "posterior wall thickness",
                "lv posterior wall",
                "left ventricular posterior wall thickness",
                "inferolateral wall thickness",
            ),
            1,
            {"M": (6.0, 10.0), "F": (6.0, 9.0)},
            "Thickness of the LV inferolateral (posterior) wall at end-diastole.",
            LANG2015,
        ),
        _m(
            "lavi_ml_m2",
            "mL/m2",
            "LA volume index",
            (
                "lavi",
                "la volume index",
                "left atrial volume index",
                "indexed la volume",
                "la volume indexed",
                "indexed left atrial volume",
                "lav index",
            ),
            1,
            {"any": (16.0, 34.0)},
            "Left atrial maximal volume divided by body surface area.",
            LANG2015,
        ),
        _m(
            "la_diameter_mm",
            "mm",
            "LA diameter",
            (
                "la diameter",
                "left atrial diameter",
                "la dimension",
                "la ap diameter",
                "left atrial dimension",
                "la size",
            ),
            1,
            {"M": (30.0, 40.0), "F": (27.0, 38.0)},
            "Antero-posterior left atrial diameter in the parasternal long axis at end-systole.",
            LANG2005,
        ),
        _m(
            "tapse_mm",
            "mm",
            "TAPSE",
            ("tapse", "tricuspid annular plane systolic excursion", "tricuspid annular excursion"),
            1,
            {"any": (17.0, 31.0)},
            "Systolic excursion of the lateral tricuspid annulus towards the apex (M-mode).",
            LANG2015,
        ),
        _m(
            "e_e_prime_ratio",
            "",
            "average E/e'",
            (
                "e/e'",
                "e/e prime",
                "e/e' ratio",
                "e to e prime ratio",
                "average e/e'",
                "mean e/e'",
                "e/e",
                "e over e prime",
            ),
            1,
            # upper limit from NAGUEH2016; the lower bound 4 is a physiological floor (healthy adults
            # average about 6-8), not a guideline limit: low E/e' is never abnormal.
            {"any": (4.0, 14.0)},
            "Mitral inflow E velocity over the average septal/lateral annular e' velocity.",
            NAGUEH2016,
        ),
        _m(
            "pe_size_mm",
            "mm",
            "pericardial effusion size",
            (
                "pericardial effusion size",
                "effusion size",
                "pericardial effusion depth",
                "pericardial fluid depth",
                "end-diastolic echo-free space",
                "pericardial separation",
            ),
            1,
            {"any": (0.0, 0.0)},
            "Largest end-diastolic echo-free pericardial space.",
            ADLER2015,
        ),
        _m(
            "lesion_width_mm",
            "mm",
            "transverse diameter",
            ("width", "transverse diameter", "transverse dimension", "transverse", "lesion width"),
            1,
            {},
            "Largest lesion diameter across the image (transverse, parallel to the skin).",
        ),
        _m(
            "lesion_height_mm",
            "mm",
            "antero-posterior diameter",
            (
                "height",
                "ap diameter",
                "anteroposterior diameter",
                "antero-posterior diameter",
                "ap dimension",
                "ap",
                "lesion height",
            ),
            1,
            {},
            "Lesion diameter along the beam (antero-posterior, perpendicular to the skin).",
        ),
        _m(
            "lesion_length_mm",
            "mm",
            "longitudinal diameter",
            (
                "length",
                "longitudinal diameter",
                "longitudinal dimension",
                "craniocaudal diameter",
                "cranio-caudal",
                "lesion length",
            ),
            1,
            {},
            "Lesion diameter in the longitudinal (sagittal) plane.",
        ),
        _m(
            "imt_mm",
            "mm",
            "intima-media thickness",
            (
                "imt",
                "cimt",
                "intima-media thickness",
                "intima media thickness",
                "carotid intima-media thickness",
            ),
            2,  # IMT is reported to 0.01 mm (Mannheim consensus; 0.1 mm would be a 10-20% step)
            {"any": (0.4, 0.9)},
            "Thickness of the intima-media complex of the far carotid wall.",
            "Mancia et al., ESH/ESC hypertension guidelines 2013 (IMT > 0.9 mm abnormal)",
        ),
        _m(
            "kidney_length_mm",
            "mm",
            "renal length",
            (
                "renal length",
                "kidney length",
                "bipolar length",
                "length of the kidney",
                "pole-to-pole length",
            ),
            0,
            {"any": (100.0, 120.0)},
            "Longest pole-to-pole length of the kidney.",
            "general radiology reference for adult kidneys (10-12 cm)",
        ),
    )
}


def round_measurement(measurement: str, value: float) -> float:
    """``value`` rounded half away from zero to the measurement's reporting precision.

    Decimal arithmetic avoids the float artefacts of ``round`` (58.45 -> 58.5, not 58.4) and the
    banker's rounding of ``round`` (40.5 -> 41, not 40). Ids outside ``MEASUREMENTS`` (a parser's
    unassigned numbers) are rounded to one decimal.
    """
    d = MEASUREMENTS[measurement].decimals if measurement in MEASUREMENTS else 1
    q = Decimal(1).scaleb(-d)
    return float(Decimal(repr(float(value))).quantize(q, rounding=ROUND_HALF_UP))


def normalize_sex(sex: str | None) -> str | None:
    """ "M"/"F"/None from the spellings manifests and reports use; ValueError for anything else."""
    if sex is None:
        return None
    s = str(sex).strip().lower()
    if s in ("m", "male", "man"):
        return "M"
    if s in ("f", "female", "woman"):
        return "F"
    if s in ("", "u", "unknown", "none", "nan", "other"):
        return None
    raise ValueError(f"sex: expected 'M', 'F' or None (unknown), got {sex!r}")


# ------------------------------------------------------------------------------ guideline rules
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class GuidelineRule:
    """A measurement-threshold rule: ``finding`` is present when ``value <op> limit``.

    ``measurements`` are tried in order; with ``combine="any"`` every available one is tested
    (LV hypertrophy: IVSd or LVPWd), with ``combine="first"`` only the first available one is used
    (LA enlargement: LAVI, else LA diameter). ``limits[m]`` maps "M"/"F" or "any" to the cut-off.
    ``grades[m]`` maps a sex key to an ordered tuple of (grade, op, edge): the first entry whose
    test passes gives the grade, and the last entry (op None) is the fall-through.
    """

    finding: str
    measurements: tuple[str, ...]
    op: str
    limits: dict[str, dict[str, float]]
    grades: dict[str, dict[str, tuple[tuple[str, str | None, float | None], ...]]]
    source: str
    combine: str = "any"


# Every cut-off below is copied from the cited guideline table; see module docstring for the keys.
GUIDELINE_RULES: dict[str, GuidelineRule] = {
    # LANG2015 severity partitions, cut-off fixed by docs/methods.md section 2: LVEF < 50%
    # is reduced; 41-49 mildly, 30-40 moderately, < 30 severely abnormal.
    "reduced_lvef": GuidelineRule(
        "reduced_lvef",
        ("lvef_pct",),
        "<",
        {"lvef_pct": {"any": 50.0}},
        {"lvef_pct": {"any": (("severe", "<", 30.0), ("moderate", "<=", 40.0), ("mild", None, None))}},
        LANG2015,
    ),
    # LANG2015 (partitions from LANG2005): septal / posterior wall thickness upper
    # normal 10 mm (men), 9 mm (women); mild 11-13 / 10-12, moderate 14-16 / 13-15, severe >= 17 / 16.
    "lv_hypertrophy": GuidelineRule(
        "lv_hypertrophy",
        ("ivsd_mm", "lvpwd_mm"),
        ">",
        {m: {"M": 10.0, "F": 9.0} for m in ("ivsd_mm", "lvpwd_mm")},
        {
            m: {
                "M": (("mild", "<=", 13.0), ("moderate", "<=", 16.0), ("severe", None, None)),
                "F": (("mild", "<=", 12.0), ("moderate", "<=", 15.0), ("severe", None, None)),
            }
            for m in ("ivsd_mm", "lvpwd_mm")
        },
        LANG2015,
    ),
    # LANG2015 normal ranges and partitions: LV end-diastolic diameter normal 42.0-58.4 mm (men),
    # 37.8-52.2 mm (women); mild 58.5-63.0 / 52.3-56.2, moderate 63.1-68.0 / 56.3-61.0, severe above.
    "lv_dilation": GuidelineRule(
        "lv_dilation",
        ("lvidd_mm",),
        ">",
        {"lvidd_mm": {"M": 58.4, "F": 52.2}},
        {
            "lvidd_mm": {
                "M": (("mild", "<=", 63.0), ("moderate", "<=", 68.0), ("severe", None, None)),
                "F": (("mild", "<=", 56.2), ("moderate", "<=", 61.0), ("severe", None, None)),
            }
        },
        LANG2015,
    ),
    # LANG2015: LA volume index normal 16-34 mL/m2; mild 35-41, moderate 42-48, severe > 48.
    # When LAVI is missing, LANG2005 LA antero-posterior diameter: normal 30-40 mm (men), 27-38 mm (women);
    # mild 41-46 / 39-42, moderate 47-52 / 43-46, severe >= 52 / >= 47.
    "la_enlargement": GuidelineRule(
        "la_enlargement",
        ("lavi_ml_m2", "la_diameter_mm"),
        ">",
        {"lavi_ml_m2": {"any": 34.0}, "la_diameter_mm": {"M": 40.0, "F": 38.0}},
        {
            "lavi_ml_m2": {"any": (("mild", "<=", 41.0), ("moderate", "<=", 48.0), ("severe", None, None))},
            "la_diameter_mm": {
                "M": (("mild", "<=", 46.0), ("moderate", "<=", 52.0), ("severe", None, None)),
                "F": (("mild", "<=", 42.0), ("moderate", "<=", 46.0), ("severe", None, None)),
            },
        },
        LANG2015 + "; LA diameter: " + LANG2005,
        combine="first",
    ),
    # RUDSKI2010 / LANG2015: TAPSE < 17 mm indicates RV systolic dysfunction. Ungraded.
    "rv_dysfunction": GuidelineRule(
        "rv_dysfunction",
        ("tapse_mm",),
        "<",
        {"tapse_mm": {"any": 17.0}},
        {},
        RUDSKI2010,
    ),
    # NAGUEH2016: average E/e' > 14 is the criterion for elevated LV filling pressure. Ungraded.
    "elevated_filling_pressure": GuidelineRule(
        "elevated_filling_pressure",
        ("e_e_prime_ratio",),
        ">",
        {"e_e_prime_ratio": {"any": 14.0}},
        {},
        NAGUEH2016,
    ),
    # ADLER2015 (ESC): any end-diastolic echo-free space is an effusion; small < 10 mm,
    # moderate 10-20 mm, large > 20 mm.
    "pericardial_effusion": GuidelineRule(
        "pericardial_effusion",
        ("pe_size_mm",),
        ">",
        {"pe_size_mm": {"any": 0.0}},
        {"pe_size_mm": {"any": (("small", "<", 10.0), ("moderate", "<=", 20.0), ("large", None, None))}},
        ADLER2015,
    ),
}


@dataclass(frozen=True)
class EchoFindingDef:
    """A guideline-derived echo finding and how reports name it."""

    id: str
    phrase: str
    synonyms: tuple[str, ...]
    definition: str
    grades: tuple[str, ...]
    measurements: tuple[str, ...]
    source: str


def _f(
    fid: str, phrase: str, synonyms: tuple[str, ...], definition: str, grades: tuple[str, ...]
) -> EchoFindingDef:
    rule = GUIDELINE_RULES[fid]
    return EchoFindingDef(
        fid,
        phrase,
        tuple(dict.fromkeys((phrase.lower(), *synonyms))),
        definition,
        grades,
        rule.measurements,
        rule.source,
    )


ECHO_FINDINGS: dict[str, EchoFindingDef] = {
    f.id: f
    for f in (
        _f(
            "reduced_lvef",
            "reduced left ventricular ejection fraction",
            (
                "reduced lvef",
                "reduced ef",
                "reduced ejection fraction",
                "reduced lv ejection fraction",
                "lv systolic dysfunction",
                "left ventricular systolic dysfunction",
                "impaired lv systolic function",
                "reduced lv systolic function",
                "impaired left ventricular systolic function",
                "depressed ejection fraction",
                "depressed lvef",
                "impaired systolic function",
            ),
            "LVEF below 50%, graded mild (41-49%), moderate (30-40%) or severe (<30%).",
            ("mild", "moderate", "severe"),
        ),
        _f(
            "lv_hypertrophy",
            "left ventricular hypertrophy",
            (
                "lvh",
                "lv hypertrophy",
                "increased lv wall thickness",
                "increased wall thickness",
                "thickened lv walls",
                "left ventricular wall thickening",
                "lv wall thickening",
            ),
            "Septal or posterior wall thickness above the sex-specific upper limit (10 mm men, 9 mm women).",
            ("mild", "moderate", "severe"),
        ),
        _f(
            "lv_dilation",
            "left ventricular dilation",
            (
                "lv dilation",
                "lv dilatation",
                "left ventricular dilatation",
                "dilated lv",
                "dilated left ventricle",
                "lv enlargement",
                "left ventricular enlargement",
                "enlarged left ventricle",
            ),
            "LV end-diastolic diameter above the sex-specific upper limit (58.4 mm men, 52.2 mm women).",
            ("mild", "moderate", "severe"),
        ),
        _f(
            "la_enlargement",
            "left atrial enlargement",
            (
                "la enlargement",
                "lae",
                "dilated la",
                "dilated left atrium",
                "enlarged left atrium",
                "la dilatation",
                "la dilation",
                "left atrial dilatation",
                "left atrial dilation",
            ),
            "LA volume index above 34 mL/m2 (or LA diameter above 40 mm men / 38 mm women).",
            ("mild", "moderate", "severe"),
        ),
        _f(
            "rv_dysfunction",
            "right ventricular systolic dysfunction",
            (
                "rv dysfunction",
                "rv systolic dysfunction",
                "right ventricular dysfunction",
                "impaired rv function",
                "reduced rv function",
                "reduced rv systolic function",
                "impaired right ventricular function",
            ),
            "TAPSE below 17 mm, indicating reduced right ventricular longitudinal function.",
            (),
        ),
        _f(
            "elevated_filling_pressure",
            "elevated left ventricular filling pressure",
            (
                "elevated filling pressure",
                "elevated filling pressures",
                "raised filling pressures",
                "raised filling pressure",
                "elevated lv filling pressure",
                "elevated lv filling pressures",
                "increased filling pressure",
                "increased filling pressures",
                "elevated left atrial pressure",
            ),
            "Average E/e' above 14, suggesting raised left ventricular filling pressure.",
            (),
        ),
        _f(
            "pericardial_effusion",
            "pericardial effusion",
            ("pericardial fluid", "pericardial collection", "fluid in the pericardial space"),
            "Fluid in the pericardial sac, graded small (<10 mm), moderate (10-20 mm) or large (>20 mm).",
            ("small", "moderate", "large"),
        ),
    )
}


@dataclass(frozen=True)
class GuidelineResult:
    """Outcome of one rule on one study. ``measurement``/``value``/``threshold`` say what decided it."""

    finding: str
    present: bool
    grade: str | None
    rule: str
    source: str
    measurement: str | None = None
    value: float | None = None
    threshold: float | None = None


def _sex_key(table: Mapping[str, object], sex: str | None) -> str:
    if "any" in table:
        return "any"
    return sex or UNKNOWN_SEX_LIMIT


def _rule(finding: str) -> GuidelineRule:
    try:
        return GUIDELINE_RULES[finding]
    except KeyError:
        raise ValueError(
            f"unknown echo finding {finding!r}; expected one of: {', '.join(GUIDELINE_RULES)}"
        ) from None


def threshold_for(finding: str, measurement: str | None = None, sex: str | None = None) -> float:
    """The cut-off of ``finding`` on ``measurement`` (default: the rule's first) for ``sex``.

    Unknown sex gives the male limit (``UNKNOWN_SEX_LIMIT``), as ``evaluate_guidelines`` uses.
    """
    rule = _rule(finding)
    m = measurement or rule.measurements[0]
    if m not in rule.limits:
        raise ValueError(
            f"echo finding {finding!r} has no rule on {m!r}; expected one of: {', '.join(rule.measurements)}"
        )
    table = rule.limits[m]
    return table[_sex_key(table, normalize_sex(sex))]


def abnormal_direction(finding: str) -> str:
    """Which side of its threshold a finding lies on: "above" (e.g. LV dilation) or "below" (LVEF)."""
    return "above" if _rule(finding).op in (">", ">=") else "below"


def is_abnormal(finding: str, measurement: str, value: float, sex: str | None = None) -> bool:
    """Whether this one (rounded) measurement value meets the finding's criterion."""
    rule = _rule(finding)
    v = round_measurement(measurement, value)
    return _OPS[rule.op](v, threshold_for(finding, measurement, sex))


def boundary_values(
    finding: str, measurement: str | None = None, sex: str | None = None
) -> tuple[float, float]:
    """(closest reportable normal value, closest reportable abnormal value) around the cut-off.

    A negated-caption generator moves a measurement across the threshold with these: the values
    differ by one unit of reporting precision and, once rounded and reported, classify differently.
    """
    rule = _rule(finding)
    m = measurement or rule.measurements[0]
    limit = threshold_for(finding, m, sex)
    step = 10.0 ** -MEASUREMENTS[m].decimals
    if rule.op == ">":
        normal, abnormal = limit, limit + step
    elif rule.op == ">=":
        normal, abnormal = limit - step, limit
    elif rule.op == "<":
        normal, abnormal = limit, limit - step
    else:  # "<="
        normal, abnormal = limit + step, limit
    return round_measurement(m, normal), round_measurement(m, abnormal)


def grade_for(finding: str, measurement: str, value: float, sex: str | None = None) -> str | None:
    """The severity grade of an abnormal value (None for ungraded findings or normal values)."""
    rule = _rule(finding)
    if not is_abnormal(finding, measurement, value, sex):
        return None
    table = rule.grades.get(measurement)
    if not table:
        return None
    v = round_measurement(measurement, value)
    for grade, op, edge in table[_sex_key(table, normalize_sex(sex))]:
        if op is None or _OPS[op](v, edge):
            return grade
    raise AssertionError(f"grade table of {finding}/{measurement} has no fall-through entry")


def _usable(measurements: Mapping[str, float], m: str) -> bool:
    v = measurements.get(m)
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _number(measurements: Mapping[str, float], m: str) -> float:
    try:
        return float(measurements[m])
    except (TypeError, ValueError):
        raise ValueError(f"measurements[{m!r}]: expected a number, got {measurements[m]!r}") from None


def _severity(finding: str, grade: str | None) -> int:
    grades = ECHO_FINDINGS[finding].grades
    return grades.index(grade) if grade in grades else -1


def evaluate_guidelines(measurements: Mapping[str, float], sex: str | None) -> list[GuidelineResult]:
    """Apply every guideline rule to a study's measurements, in ``GUIDELINE_RULES`` order.

    One result per rule with at least one usable measurement (missing or NaN measurements give
    no result, not a negative). Values are rounded to reporting precision first (module doc).
    For ``combine="any"`` rules the most abnormal measurement decides (highest grade, then the
    largest excess over its limit); a negative result names the measurement closest to its
    limit.
    """
    s = normalize_sex(sex)
    results: list[GuidelineResult] = []
    for finding, rule in GUIDELINE_RULES.items():
        avail = [m for m in rule.measurements if _usable(measurements, m)]
        if not avail:
            continue
        if rule.combine == "first":
            avail = avail[:1]
        best: GuidelineResult | None = None
        best_key: tuple[int, int, float] | None = None
        for m in avail:
            v = round_measurement(m, _number(measurements, m))
            limit = threshold_for(finding, m, s)
            present = _OPS[rule.op](v, limit)
            grade = grade_for(finding, m, v, s) if present else None
            sex_note = "" if "any" in rule.limits[m] else f" ({s or UNKNOWN_SEX_LIMIT + ', sex unknown'})"
            unit = f" {MEASUREMENTS[m].unit}" if MEASUREMENTS[m].unit else ""
            verdict = rule.op if present else {"<": ">=", ">": "<=", "<=": ">", ">=": "<"}[rule.op]
            text = f"{MEASUREMENTS[m].phrase} {v:g}{unit} {verdict} {limit:g}{unit}{sex_note}"
            res = GuidelineResult(finding, present, grade, text, rule.source, m, v, limit)
            excess = (v - limit) if rule.op in (">", ">=") else (limit - v)
            key = (int(present), _severity(finding, grade), excess)
            if best_key is None or key > best_key:
                best, best_key = res, key
        if best is not None:
            results.append(best)
    return results


def findings_present(measurements: Mapping[str, float], sex: str | None) -> dict[str, str | None]:
    """Convenience: {finding id: grade} of the findings ``evaluate_guidelines`` marks present."""
    return {r.finding: r.grade for r in evaluate_guidelines(measurements, sex) if r.present}
