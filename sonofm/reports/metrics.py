"""Clinical-correctness scores between structured studies or report texts (docs/methods.md section 5).

A study is reduced to a set of facts: (dimension, tag, status, grade) per finding, the organ,
view, frame, sex and risk categories, plus its measurements (matched within reporting precision).
Micro precision/recall/F1 over facts is the "clinical correctness" of a generated report against
its reference, and the writer->parser round-trip score.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sonofm import taxonomy as tx
from sonofm.records import pick
from sonofm.reports.parser import parse_report
from sonofm.reports.schema import Study


def study_facts(study: Study) -> set[tuple]:
    """Categorical facts of a study (measurements are scored separately, with a tolerance)."""
    out = {(f.dimension, f.tag, f.status.value, f.grade) for f in study.findings}
    if study.organ is not None:
        out.add(("organ", study.organ, "present", None))
    for key in ("view", "frame", "sex"):
        if getattr(study, key) is not None:
            out.add((key, getattr(study, key), "", None))
    out |= {("assessment", k, v, None) for k, v in study.assessment.items()}
    return out


def measurement_counts(ref: Study, pred: Study) -> tuple[int, int, int]:
    """(tp, fp, fn) of measurements; a hit is the same id within half a reporting step."""
    tp = 0
    for k, v in ref.measurements.items():
        d = tx.MEASUREMENTS[k].decimals if k in tx.MEASUREMENTS else 1
        if k in pred.measurements and abs(pred.measurements[k] - v) <= 0.5 * 10.0**-d + 1e-9:
            tp += 1
    return tp, len(pred.measurements) - tp, len(ref.measurements) - tp


@dataclass(frozen=True)
class Score:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 1.0

    def __add__(self, other: Score) -> Score:
        return Score(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def to_dict(self) -> dict[str, float]:
        return pick(self, "precision", "recall", "f1", "tp", "fp", "fn")


def study_score(ref: Study, pred: Study) -> Score:
    """Micro counts of one predicted study against its reference (facts + measurements)."""
    a, b = study_facts(ref), study_facts(pred)
    mt, mf, mn = measurement_counts(ref, pred)
    return Score(len(a & b) + mt, len(b - a) + mf, len(a - b) + mn)


def clinical_f1(preds: Iterable[str], refs: Iterable[str], region: str | None = None) -> Score:
    """Micro-averaged score of generated report texts against reference texts, both parsed."""
    total = Score(0, 0, 0)
    for p, r in zip(preds, refs, strict=True):
        total = total + study_score(parse_report(r, region).study, parse_report(p, region).study)
    return total
