"""Scoring the parser on a corpus of hand-written report sentences (`sonofm report eval CORPUS`).

A corpus is a JSON-lines file, one sentence (or short run of sentences) per line::

    {"region": "breast",
     "text": "Left breast 2 o'clock, 3 cm FN: 1.2 x 0.8 cm irregular hypoechoic mass.",
     "f": ["diagnosis/mass", "shape/irregular", "echogenicity/hypoechoic", "posterior/shadowing-"],
     "m": {"lesion_width_mm": 12, "lesion_height_mm": 8, "distance_from_nipple_mm": 30},
     "lat": "left", "loc": "2 o'clock", "organ": "breast"}

`f` lists the findings as "dimension/tag", suffixed "-" when the text states it absent and "?"
when uncertain; `m` the measurements in the unit their id names; `lat`, `loc` and `organ` are
optional (a key given as null expects nothing; a key left out is not scored). The text is parsed
with its region, as a report of a known examination is.

Fields scored (micro precision/recall/F1): finding (dimension, tag and status must all match),
measurement (same id, value within half a reporting step), laterality, location, organ; plus two
views of the findings used to compare negation/uncertainty detectors: "negated" and "uncertain"
(the findings whose reference or predicted status is absent, resp. uncertain).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sonofm import taxonomy as tx
from sonofm.errors import DataError
from sonofm.reports.metrics import Score
from sonofm.reports.parser import parse_report
from sonofm.reports.schema import Finding, Status, Study

FIELDS = ("finding", "measurement", "laterality", "location", "organ")
VIEWS = ("negated", "uncertain")
_SUFFIX = {"-": Status.ABSENT, "?": Status.UNCERTAIN}


@dataclass
class CorpusItem:
    region: str
    text: str
    findings: set[tuple[str, str, str]]
    measurements: dict[str, float] = field(default_factory=dict)
    expected: dict[str, str | None] = field(default_factory=dict)  # laterality/location/organ given


def _finding(spec: str, where: str) -> tuple[str, str, str]:
    status = _SUFFIX.get(spec[-1:], Status.PRESENT)
    body = spec[:-1] if spec[-1:] in _SUFFIX else spec
    dim, sep, tag = body.partition("/")
    if not sep or not dim or not tag:
        raise DataError(
            f"{where}: finding {spec!r} is not 'dimension/tag' (suffix '-' absent, '?' uncertain)"
        )
    return dim, tag, status.value


def load_corpus(path: str | Path) -> list[CorpusItem]:
    """Read a corpus file; a malformed line is a DataError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"corpus {str(path)!r} does not exist (a JSON-lines file, see `sonofm report eval --help`)"
        )
    items: list[CorpusItem] = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            d = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not JSON ({err.msg})") from None
        if not isinstance(d, dict) or not isinstance(d.get("text"), str):
            raise DataError(f"{where}: expected an object with a 'text' string")
        region = d.get("region")
        if region not in tx.REGIONS:
            raise DataError(f"{where}: region {region!r} is not one of: {', '.join(tx.REGIONS)}")
        expected = {k: d[k] for k in ("lat", "loc", "organ") if k in d}
        items.append(
            CorpusItem(
                region=region,
                text=d["text"],
                findings={_finding(s, where) for s in d.get("f", [])},
                measurements={str(k): float(v) for k, v in (d.get("m") or {}).items()},
                expected={{"lat": "laterality", "loc": "location"}.get(k, k): v for k, v in expected.items()},
            )
        )
    if not items:
        raise DataError(f"corpus {str(path)!r} has no sentences")
    return items


def _facts(study: Study) -> set[tuple[str, str, str]]:
    return {(f.dimension, f.tag, f.status.value) for f in study.findings}


def _single(ref: str | None, pred: str | None) -> Score:
    if ref == pred:
        return Score(1, 0, 0) if ref is not None else Score(0, 0, 0)
    return Score(0, int(pred is not None), int(ref is not None))


def _measurements(ref: dict[str, float], pred: dict[str, float]) -> Score:
    tp = 0
    for k, v in ref.items():
        d = tx.MEASUREMENTS[k].decimals if k in tx.MEASUREMENTS else 1
        if k in pred and abs(pred[k] - v) <= 0.5 * 10.0**-d + 1e-9:
            tp += 1
    return Score(tp, len(pred) - tp, len(ref) - tp)


def _view(ref: set, pred: set, status: str) -> Score:
    r = {(d, t) for d, t, s in ref if s == status}
    p = {(d, t) for d, t, s in pred if s == status}
    return Score(len(r & p), len(p - r), len(r - p))


def score_item(item: CorpusItem, study: Study) -> dict[str, Score]:
    """Per-field counts of one parsed sentence against its annotation."""
    pred = _facts(study)
    out = {
        "finding": Score(len(item.findings & pred), len(pred - item.findings), len(item.findings - pred)),
        "measurement": _measurements(item.measurements, study.measurements),
        "negated": _view(item.findings, pred, Status.ABSENT.value),
        "uncertain": _view(item.findings, pred, Status.UNCERTAIN.value),
    }
    for key in ("laterality", "location", "organ"):
        out[key] = (
            _single(item.expected[key], getattr(study, key)) if key in item.expected else Score(0, 0, 0)
        )
    return out


@dataclass
class CorpusResult:
    fields: dict[str, Score]  # FIELDS + VIEWS
    regions: dict[str, Score]  # micro over FIELDS, per region
    total: Score  # micro over FIELDS
    n: int

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "micro": self.total.to_dict(),
            "fields": {k: v.to_dict() for k, v in self.fields.items()},
            "regions": {k: v.to_dict() for k, v in self.regions.items()},
        }


def evaluate(items: list[CorpusItem], parse: Callable[[str, str], Study] | None = None) -> CorpusResult:
    """Parse every item (with its region) and score it; `parse(text, region) -> Study` is swappable."""
    parse = parse or (lambda text, region: parse_report(text, region).study)
    fields = {k: Score(0, 0, 0) for k in (*FIELDS, *VIEWS)}
    regions: dict[str, Score] = {}
    for item in items:
        got = score_item(item, parse(item.text, item.region))
        for k, v in got.items():
            fields[k] = fields[k] + v
        s = sum((got[k] for k in FIELDS), Score(0, 0, 0))
        regions[item.region] = regions.get(item.region, Score(0, 0, 0)) + s
    total = sum((fields[k] for k in FIELDS), Score(0, 0, 0))
    ordered = {r: regions[r] for r in tx.REGIONS if r in regions}
    return CorpusResult(fields, ordered, total, len(items))


def format_result(res: CorpusResult) -> str:
    """Plain-text tables: per field (and the negation/uncertainty views), then per region."""
    lines = [f"{res.n} sentences", f"{'field':<12}{'P':>7}{'R':>7}{'F1':>7}{'tp':>6}{'fp':>5}{'fn':>5}"]

    def row(name: str, s: Score) -> str:
        return f"{name:<12}{s.precision:7.3f}{s.recall:7.3f}{s.f1:7.3f}{s.tp:6d}{s.fp:5d}{s.fn:5d}"

    lines += [row(k, res.fields[k]) for k in FIELDS]
    lines.append(row("micro", res.total))
    lines += [row(k, res.fields[k]) for k in VIEWS]
    lines.append("")
    lines.append(f"{'region':<12}{'P':>7}{'R':>7}{'F1':>7}{'tp':>6}{'fp':>5}{'fn':>5}")
    lines += [row(r, s) for r, s in res.regions.items()]
    return "\n".join(lines)


def as_finding(spec: tuple[str, str, str]) -> Finding:
    return Finding(spec[0], spec[1], Status(spec[2]))
