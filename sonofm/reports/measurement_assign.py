"""Which measurement a number in a report gives, for the parser.

A number expression is attached to the nearest measurement name, sized finding, organ or lesion
around it (:func:`_assign_quantity`) and stored with its unit normalised; nipple distances and
bounds ("<50%") are recognised here too.
"""

from __future__ import annotations

import re

from sonofm import taxonomy as tx
from sonofm.reports import lexicon as lx
from sonofm.reports.measurements import Quantity, normalise_value, unit_of_measurement
from sonofm.reports.phrases import _Match
from sonofm.reports.schema import Study
from sonofm.reports.text import Token
from sonofm.reports.unknown_terms import _STOP


def _tok_at(tokens: list[Token], char: int) -> int:
    for i, t in enumerate(tokens):
        if t.end > char:
            return i
    return len(tokens)


_DIAG_LESION = {"nodule", "cyst", "mass", "fluid_collection", "plaque", "thrombus", "calculus"}


def _is_lesion(e: lx.Entry) -> bool:
    if e.kind == "finding":
        return e.id in lx.CLINICAL and lx.CLINICAL[e.id].lesion
    return e.kind == "lesion" or (e.kind == "tag" and e.dimension == "diagnosis" and e.id in _DIAG_LESION)


def _assign_quantity(
    q: Quantity,
    qi: int,
    qj: int,
    resolved: list[tuple[_Match, lx.Entry]],
    qtoks: list[tuple[int, int]],
    lesion_before: bool = False,
    measure_cue: bool = False,
) -> tuple[str, list[float]] | None:
    """Which measurement(s) a number expression gives, from the phrases around it."""

    def blocked(a: int, b: int) -> bool:
        return any(a <= s < b for s, _ in qtoks if s != qi)

    # a lesion size is a length ("12 mm", "1.2 x 0.8 cm") or an unlabelled pair/triple, never "BI-RADS 3"
    sizeable = q.unit == "mm" or (q.unit is None and len(q.values) >= 2)

    # 1. nearest preceding measurement name (or sized finding / organ) within 7 tokens
    where = {
        i for mm, x in resolved if x.kind in ("location", "place", "organ") for i in range(mm.start, mm.end)
    }
    for m, e in reversed(resolved):
        if m.end > qi:
            continue
        gap = sum(
            1 for i in range(m.end, qi) if i not in where
        )  # "cyst in the left lobe of the liver, 14 mm"
        if gap > 7 or blocked(m.end, qi):
            break
        if e.kind == "measurement":
            return e.id, list(q.values[:1])
        if e.kind in ("echo", "echo_normal") and e.id in tx.ECHO_FINDINGS:
            mid = lx.FINDING_SIZE_MEASUREMENT.get(e.id) or next(
                iter(tx.ECHO_FINDINGS[e.id].measurements), None
            )
            if mid is not None and _compatible(q, mid):
                return mid, list(q.values[:1])
        if e.kind == "finding":
            mid = lx.FINDING_SIZE_MEASUREMENT.get(e.id)
            if mid is not None and _compatible(q, mid) and not (_is_lesion(e) and len(q.values) > 1):
                return mid, list(q.values[:1])
        if _is_lesion(e):
            if sizeable:
                return "lesion", list(q.values)
            continue
        if e.kind == "organ" and e.id in lx.ORGAN_SIZE_MEASUREMENT and len(q.values) == 1:
            after = [x for x in resolved if x[0].start >= qj and x[0].start - qj <= 10 and _is_lesion(x[1])]
            # an organ is centimetres long: "Left kidney: 6 mm echogenic focus" is not the kidney
            plausible = (q.values[0] * (q.factor if q.unit == "mm" else 10.0)) >= 40.0
            if not after and plausible:
                return lx.ORGAN_SIZE_MEASUREMENT[e.id], list(q.values)
        if (
            e.kind in ("organ", "location")
            and len(q.values) >= 2
            and e.id != "lymph_node"
            and not any(_is_lesion(x) and mm.end <= qi for mm, x in resolved)
            and not any(_is_lesion(x) and 0 <= mm.start - qj <= 3 for mm, x in resolved)
        ):
            # "Uterus 8.2 x 4.5 x 5.1 cm", "R testis 4.2 x 2.5 x 3.0 cm": the organ's size, not a lesion
            return "organ_dims", list(q.values)
    # 2. a lesion word following the number ("a 1.2 x 0.8 cm hypoechoic nodule")
    for m, e in resolved:
        if m.start >= qj and m.start - qj <= 20 and not blocked(qj, m.start):
            if e.kind == "finding" and m.start - qj <= 1:
                mid = lx.FINDING_SIZE_MEASUREMENT.get(e.id)
                if mid is not None and _compatible(q, mid):  # "50-69% stenosis"
                    return mid, list(q.values[:1])
            if _is_lesion(e) and sizeable:
                return "lesion", list(q.values)
            if e.kind == "measurement":
                return e.id, list(q.values[:1])
    # 3. any lesion mention earlier in the sentence, for dimension triples
    if len(q.values) >= 2 and sizeable and any(_is_lesion(e) for m, e in resolved if m.end <= qi):
        return "lesion", list(q.values)
    # 3b. one length after a lesion named earlier in the sentence ("Epidermoid cyst ..., 1.6 cm")
    if len(q.values) == 1 and q.unit == "mm" and any(_is_lesion(e) for m, e in resolved if m.end <= qi):
        return "lesion", list(q.values)
    # 4. "It measures 12 x 8 mm." after a sentence that named the lesion
    if lesion_before and q.unit in ("mm", None) and (len(q.values) >= 2 or q.unit == "mm") and measure_cue:
        return "lesion", list(q.values)
    # 5. a bare "a x b (x c) cm" is a lesion size in an ultrasound report
    if len(q.values) >= 2 and q.unit == "mm":
        return "lesion_unnamed", list(q.values)
    return None


def _name_before(tokens: list[Token], qi: int) -> str:
    """The run of words right before a number ("Aortic root 32 mm" -> "Aortic root")."""
    words: list[str] = []
    for t in reversed(tokens[max(0, qi - 4) : qi]):
        if not t.text.isalpha() or t.norm in _STOP:
            if words:
                break
            continue
        words.append(t.text)
    return " ".join(reversed(words))


def _compatible(q: Quantity, mid: str) -> bool:
    unit = unit_of_measurement(mid)
    return q.unit is None or q.unit == unit


_LESION_DIMS = ("lesion_width_mm", "lesion_height_mm", "lesion_length_mm")


def _store_measurement(study: Study, mid: str, q: Quantity, value_index: int = 0) -> bool:
    mdef = tx.MEASUREMENTS.get(mid)
    unit = unit_of_measurement(mid)
    normal = None
    if mdef is not None:
        rng = mdef.normal.get("any") or next(iter(mdef.normal.values()), None) if mdef.normal else None
        normal = tuple(rng) if rng else None
    sub = Quantity(q.start, q.end, (q.values[value_index],), q.unit, q.factor, q.is_range)
    if unit in ("ratio",) and q.unit not in (None,):
        return False
    v = normalise_value(sub, unit, normal)
    if v is None:
        return False
    if mid not in study.measurements:
        study.measurements[mid] = round(v, 6)
    return True


_LARGEST = frozenset({"largest", "biggest", "dominant"})


_FN_RE = re.compile(r"(?i)\b\d+(?:[.,]\d+)?\s*(?:cm|mm)\s*(?:fn\b|from\s+(?:the\s+)?nipple)")


def _inequality(sent: str, start: int) -> bool:
    """A number after "<", ">", "≥" ... is a bound, not a value ("<50% stenosis")."""
    before = sent[:start].rstrip()
    return bool(before) and before[-1] in "<>≤≥="
