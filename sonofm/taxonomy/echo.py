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

The tables (views, frame phrases, measurements, guideline rules with their cut-offs and the
findings they derive) are data, in echo.toml beside this module; this module reads them into
the dataclasses below and holds the rules' logic.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from sonofm.taxonomy.tables import Term, frozen, load, with_phrase

ECHO_VIEWS: tuple[str, ...] = ("A4C", "A2C", "A3C", "PLAX", "PSAX_MV", "PSAX_PM", "PSAX_AP", "SC4C")
FRAMES: tuple[str, ...] = ("ED", "ES")
SEXES: tuple[str, ...] = ("M", "F")
# Limit used when sex is unknown (see module docstring).
UNKNOWN_SEX_LIMIT = "M"

_DATA = load("echo")
# the guideline citations (LANG2015, LANG2005, RUDSKI2010, NAGUEH2016, ADLER2015); a source in
# echo.toml names them as {LANG2015}
SOURCES: dict[str, str] = _DATA["sources"]
LANG2015 = SOURCES["LANG2015"]
LANG2005 = SOURCES["LANG2005"]
RUDSKI2010 = SOURCES["RUDSKI2010"]
NAGUEH2016 = SOURCES["NAGUEH2016"]
ADLER2015 = SOURCES["ADLER2015"]


# ---------------------------------------------------------------------------------------- views
@dataclass(frozen=True)
class ViewDef(Term):
    """A standard transthoracic view and how reports name it."""


VIEWS: dict[str, ViewDef] = {
    key: ViewDef(key, e["phrase"], with_phrase(e["phrase"], e["synonyms"]), e["definition"])
    for key, e in _DATA["view"].items()
}

FRAME_PHRASES: dict[str, tuple[str, ...]] = frozen(_DATA["frame_phrases"])


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


MEASUREMENTS: dict[str, MeasurementDef] = {
    key: MeasurementDef(
        key,
        e["unit"],
        e["phrase"],
        with_phrase(e["phrase"], e["synonyms"]),
        e["decimals"],
        frozen(e.get("normal", {})),
        e["definition"],
        e.get("source", "").format(**SOURCES),
    )
    for key, e in _DATA["measurement"].items()
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
    if s in ("", "u", "o", "unknown", "none", "nan", "other"):  # "O": DICOM PatientSex "other"
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


def _grade_table(entries: list[list]) -> tuple[tuple[str, str | None, float | None], ...]:
    """echo.toml writes a grade as [grade, op, edge] and the fall-through as [grade]."""
    return tuple((e[0], None, None) if len(e) == 1 else (e[0], e[1], e[2]) for e in entries)


# Every cut-off in echo.toml is copied from the cited guideline table (its comments say which).
GUIDELINE_RULES: dict[str, GuidelineRule] = {
    key: GuidelineRule(
        key,
        tuple(e["measurements"]),
        e["op"],
        e["limits"],
        {m: {s: _grade_table(t) for s, t in by_sex.items()} for m, by_sex in e.get("grades", {}).items()},
        e["source"].format(**SOURCES),
        e.get("combine", "any"),
    )
    for key, e in _DATA["rule"].items()
}


@dataclass(frozen=True)
class EchoFindingDef(Term):
    """A guideline-derived echo finding and how reports name it."""

    grades: tuple[str, ...]
    measurements: tuple[str, ...]
    source: str


ECHO_FINDINGS: dict[str, EchoFindingDef] = {
    key: EchoFindingDef(
        key,
        e["phrase"],
        with_phrase(e["phrase"], e["synonyms"]),
        e["definition"],
        tuple(e["grades"]),
        GUIDELINE_RULES[key].measurements,
        GUIDELINE_RULES[key].source,
    )
    for key, e in _DATA["finding"].items()
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
