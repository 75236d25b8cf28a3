"""Where in the body a report sentence points: sides, clock-face positions and liver segments.

Side words that name a side of the body (not "left ventricle"), and "2 o'clock" / "10:30" /
"segment VII" places, whose numbers are then not read as measurements.
"""

from __future__ import annotations

import re

from sonofm.taxonomy import findings as cf

_CLOCK_RE = re.compile(
    r"(?i)\b(1[0-2]|0?[1-9])(?::([0-5]\d))?\s*(?:o\s*['’]?\s*clock)|\b(1[0-2]|0?[1-9]):([0-5]\d)\b"
)


_SEGMENT_RE = re.compile(r"(?i)\bsegments?\s+([1-8]|iv[ab]?|v?i{1,3}|iv|v)\b")


_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "iva": 4, "ivb": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8}


_BOTH_OF = frozenset(
    {
        "kidney",
        "ovarie",
        "ovary",
        "teste",
        "testis",
        "lobe",
        "breast",
        "side",
        "carotid",
        "ica",
        "cca",
        "axilla",
        "groin",
        "jugular",
        "ijv",
        "thyroid",
    }
)


def _sides(norms: list[str]) -> list[tuple[int, str]]:
    """(token index, "right"|"left"|"bilateral") of the side words that name a side of the body."""
    out: list[tuple[int, str]] = []
    for i, w in enumerate(norms):
        nxt = norms[i + 1] if i + 1 < len(norms) else ""
        if w in ("right", "left") and nxt not in cf.NOT_A_SIDE_AFTER and (i == 0 or norms[i - 1] != "fetal"):
            out.append((i, w))
        elif w in ("bilateral", "bilaterally") or (w in ("both", "either") and nxt in _BOTH_OF):
            out.append((i, "bilateral"))
    return out


def _pattern_places(sent: str) -> list[tuple[int, str, int]]:
    """(start, name, end) of clock-face positions ("2 o'clock", "10:30") and liver segments
    ("segment VII" -> "segment 7"); their numbers are not measurements."""
    out: list[tuple[int, str, int]] = []
    for m in _CLOCK_RE.finditer(sent):
        h, mins = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        hour = str(int(h))
        name = f"{hour} o'clock" if mins in (None, "00") else f"{hour}:{mins} o'clock"
        out.append((m.start(), name, m.end()))
    for m in _SEGMENT_RE.finditer(sent):
        g = m.group(1).lower()
        out.append((m.start(), f"segment {g if g.isdigit() else _ROMAN.get(g, g)}", m.end()))
    return out
