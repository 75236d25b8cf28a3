"""Numbers and units in report text: finding them, normalising them, writing them.

Conventions (documented because reports are inconsistent):
- Lesion sizes are written and read as width x height x length: transverse x antero-posterior x
  longitudinal ("1.2 x 0.8 x 0.9 cm" -> lesion_width_mm=12, lesion_height_mm=8,
  lesion_length_mm=9). Two numbers are width x height.
- A range ("EF 55-60%", "55 to 60 %") is read as its midpoint (57.5): the report commits to
  neither end, and the midpoint keeps the guideline category whenever both ends share it.
- A number without a unit takes the measurement's own unit, except that a length whose value
  only makes sense in centimetres ("LVIDd 5.1") is read as cm when the mm reading would be below
  a third of the normal range's lower limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NUM = r"\d+(?:[.,]\d+)?"
_UNIT = (
    r"(?:ml/m2|ml/m²|mL/m2|mL/m²|ml/m\^2|cm/s|m/s|mmHg|mmhg|mm Hg|bpm|beats/min|mm|cm|mls?|mL|cc|%|percent)"
    r"(?![A-Za-z])"
)
_SEP = r"\s*(?:x|×|X|\*|by)\s*"
_QTY_RE = re.compile(
    rf"(?<![\w.])(?P<a>{NUM})\s*(?P<ua>{_UNIT})?"
    rf"(?:(?P<range>\s*(?:-|–|—|to)\s*)(?P<r>{NUM}))?"
    rf"(?:{_SEP}(?P<b>{NUM})\s*(?P<ub>{_UNIT})?(?:{_SEP}(?P<c>{NUM}))?)?"
    rf"\s*(?P<unit>{_UNIT})?(?![^\W\d_])",
)

# unit spelling -> (canonical unit, factor to the canonical unit)
_UNITS: dict[str, tuple[str, float]] = {
    "mm": ("mm", 1.0),
    "cm": ("mm", 10.0),
    "ml": ("ml", 1.0),
    "mls": ("ml", 1.0),
    "cc": ("ml", 1.0),
    "%": ("pct", 1.0),
    "percent": ("pct", 1.0),
    "ml/m2": ("ml_m2", 1.0),
    "ml/m²": ("ml_m2", 1.0),
    "ml/m^2": ("ml_m2", 1.0),
    "m/s": ("m_s", 1.0),
    "cm/s": ("m_s", 0.01),
    "mmhg": ("mmhg", 1.0),
    "mm hg": ("mmhg", 1.0),
    "bpm": ("bpm", 1.0),
    "beats/min": ("bpm", 1.0),
}


def canonical_unit(unit: str | None) -> tuple[str | None, float]:
    """Map a unit spelling to (canonical unit id as used in measurement ids, factor)."""
    if unit is None:
        return None, 1.0
    return _UNITS.get(unit.lower(), (unit.lower(), 1.0))


def unit_of_measurement(measurement_id: str) -> str:
    """The canonical unit encoded in a measurement id ("lvidd_mm" -> "mm", "e_e_prime_ratio" -> "ratio")."""
    for suffix in ("ml_m2", "mmhg", "mm", "ml", "pct", "ratio", "m_s", "bpm"):
        if measurement_id.endswith("_" + suffix):
            return suffix
    return measurement_id.rsplit("_", 1)[-1]


@dataclass(frozen=True)
class Quantity:
    """A number expression in text: 1-3 values (x-separated) or a range, with its unit if written."""

    start: int
    end: int
    values: tuple[float, ...]
    unit: str | None  # canonical unit of the expression ("mm", "pct", ...) or None
    factor: float  # multiply values by this to reach `unit`
    is_range: bool = False

    def value_in(self, unit: str) -> tuple[float, ...] | None:
        """Values converted to `unit` (None when the written unit is incompatible)."""
        if self.unit is None:
            return self.values
        if self.unit != unit:
            return None
        return tuple(v * self.factor for v in self.values)


def _num(s: str) -> float:
    return float(s.replace(",", "."))


def find_quantities(text: str) -> list[Quantity]:
    """Every number expression in `text` (dimensions "1.2 x 0.8 cm", ranges "55-60%", singles)."""
    out: list[Quantity] = []
    for m in _QTY_RE.finditer(text):
        unit_s = m.group("unit") or m.group("ub") or m.group("ua")
        unit, factor = canonical_unit(unit_s)
        # a per-number unit overrides the trailing one ("12 mm x 0.8 cm" is rare but legal)
        if m.group("b") is not None:
            vals = [m.group("a"), m.group("b")] + ([m.group("c")] if m.group("c") else [])
            nums = [_num(v) for v in vals]
            if m.group("ua") and m.group("ua") != unit_s:
                ua, fa = canonical_unit(m.group("ua"))
                if ua == unit:
                    nums[0] = nums[0] * fa / factor
            out.append(Quantity(m.start(), m.end(), tuple(nums), unit, factor))
        elif m.group("r") is not None:
            lo, hi = _num(m.group("a")), _num(m.group("r"))
            if hi < lo:  # "10-5" is not a range; keep the first number
                out.append(Quantity(m.start(), m.start("range"), (lo,), unit, factor))
            else:
                out.append(Quantity(m.start(), m.end(), ((lo + hi) / 2.0,), unit, factor, is_range=True))
        else:
            out.append(Quantity(m.start(), m.end(), (_num(m.group("a")),), unit, factor))
    return out


def normalise_value(q: Quantity, target_unit: str, normal: tuple[float, float] | None = None) -> float | None:
    """First value of `q` in `target_unit`; unitless lengths that only fit as cm are read as cm."""
    vals = q.value_in(target_unit)
    if vals is None:
        return None
    v = vals[0]
    if q.unit is None and target_unit == "mm" and normal is not None and v < normal[0] / 3.0:
        v *= 10.0
    return v


def fmt_number(value: float, decimals: int) -> str:
    """Fixed decimals without a trailing '.0' when decimals == 0 ("61", "5.1", "0.75")."""
    if decimals <= 0:
        return str(int(round(value)))
    return f"{value:.{decimals}f}"


def format_length(value_mm: float, decimals_mm: int, use_cm: bool) -> str:
    """A length in mm or cm, keeping every written digit exact ("61 mm" or "6.1 cm")."""
    if use_cm:
        return f"{_strip(fmt_number(value_mm / 10.0, decimals_mm + 1))} cm"
    return f"{_strip(fmt_number(value_mm, decimals_mm))} mm"


def format_dims(values_mm: list[float], decimals_mm: int, use_cm: bool, sep: str = " x ") -> str:
    """Lesion dimensions "12 x 8 x 9 mm" / "1.2 x 0.8 x 0.9 cm" (unit written once, at the end)."""
    if use_cm:
        nums = [_strip(fmt_number(v / 10.0, decimals_mm + 1)) for v in values_mm]
        return sep.join(nums) + " cm"
    return sep.join(_strip(fmt_number(v, decimals_mm)) for v in values_mm) + " mm"


def _strip(s: str) -> str:
    """Drop trailing zeros of a fixed-decimal string ("5.10" -> "5.1", "51.0" -> "51")."""
    return s.rstrip("0").rstrip(".") if "." in s else s
