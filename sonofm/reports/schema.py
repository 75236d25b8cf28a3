"""The structured form of one ultrasound image/study report.

This is where simulator ground truth, report text (writer and parser), manifest rows and
generated-report scoring meet, so it stays small, typed and JSON-serialisable. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sonofm.records import pick


class Status(StrEnum):
    """Polarity of a finding as a report states it."""

    PRESENT = "present"
    ABSENT = "absent"
    UNCERTAIN = "uncertain"


@dataclass
class Finding:
    """One statement about a taxonomy tag or a guideline-derived echo finding.

    `dimension` is one of `sonofm.taxonomy.DIMENSIONS` or "echo"; `tag` is the tag id within it
    (or the echo finding id such as "reduced_lvef"); `grade` carries severity or size where the
    finding has one ("mild", "moderate", "severe", "small", ...).
    """

    dimension: str
    tag: str
    status: Status = Status.PRESENT
    grade: str | None = None

    def key(self) -> tuple[str, str]:
        return (self.dimension, self.tag)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dimension": self.dimension,
            "tag": self.tag,
            "status": self.status.value,
            "grade": self.grade,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(d["dimension"], d["tag"], Status(d.get("status", "present")), d.get("grade"))


@dataclass
class Study:
    """Everything a report says about one image (or one echo view/frame).

    `measurements` maps taxonomy measurement ids (unit in the name: "lvef_pct",
    "lesion_width_mm") to values in that unit. `laterality` is the side of a paired organ or of
    the thyroid lobe ("right" | "left" | "bilateral"); `location` the place within the organ as
    a normalised phrase ("right lobe", "2 o'clock", "upper outer quadrant", "lower pole").
    Findings of dimension "finding" are clinical findings outside the 9 attribute dimensions
    (`sonofm.taxonomy.findings`: hydronephrosis, stenosis, tamponade, ...).
    """

    region: str
    organ: str | None = None
    view: str | None = None
    frame: str | None = None
    sex: str | None = None  # "F" | "M" | None; needed by sex-specific guideline limits
    findings: list[Finding] = field(default_factory=list)
    measurements: dict[str, float] = field(default_factory=dict)
    impression: str | None = None
    # risk categories a report states, lexicon -> category ({"TI-RADS": "TR4"}, {"BI-RADS": "4A"})
    assessment: dict[str, str] = field(default_factory=dict)
    laterality: str | None = None
    location: str | None = None

    def present(self, dimension: str | None = None) -> list[Finding]:
        return [
            f
            for f in self.findings
            if f.status is Status.PRESENT and (dimension is None or f.dimension == dimension)
        ]

    def absent(self, dimension: str | None = None) -> list[Finding]:
        return [
            f
            for f in self.findings
            if f.status is Status.ABSENT and (dimension is None or f.dimension == dimension)
        ]

    def to_dict(self) -> dict[str, Any]:
        return pick(
            self,
            *("region", "organ", "view", "frame", "sex"),
            findings=[f.to_dict() for f in self.findings],
            measurements=dict(self.measurements),
            impression=self.impression,
            assessment=dict(self.assessment),
            laterality=self.laterality,
            location=self.location,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Study:
        return cls(
            region=d["region"],
            organ=d.get("organ"),
            view=d.get("view"),
            frame=d.get("frame"),
            sex=d.get("sex"),
            findings=[Finding.from_dict(f) for f in d.get("findings", [])],
            measurements={k: float(v) for k, v in (d.get("measurements") or {}).items()},
            impression=d.get("impression"),
            assessment={str(k): str(v) for k, v in (d.get("assessment") or {}).items()},
            laterality=d.get("laterality"),
            location=d.get("location"),
        )
