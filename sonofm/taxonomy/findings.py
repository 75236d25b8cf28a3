"""Clinical findings, measurements and locations that ultrasound reports state beyond the 9
attribute dimensions and the echo guideline findings (issue #22).

Why a separate table: the attribute dimensions are model targets (heads, prompts, losses) and
grow only with care; these are what a report *says* ("moderate hydronephrosis", "c/w tamponade",
"CBD 4 mm", "left breast 2 o'clock") and what the parser must read so that hand-written reports
are not silently half-read. Findings parse as `Finding("finding", id)`; they are not attributes.

Written from how sonographers and radiologists phrase reports (BMUS/ASUM/SRU style, ACR
BI-RADS/TI-RADS terms, ASE echo terms, ISUOG obstetric terms), not from any test set. Phrases are
lowercase surface forms; the report parser normalises hyphens, plurals and abbreviations.

The tables are data, in findings.toml beside this module (findings, normal phrases, measurements,
locations); this module reads them into `ClinicalFinding` / `ReportMeasurement` tuples and dicts.
"""

from __future__ import annotations

from dataclasses import dataclass

from sonofm.taxonomy.tables import entries, frozen, load


@dataclass(frozen=True)
class ClinicalFinding:
    """A finding a report states. `lesion`: the finding is a lesion a size belongs to ("2 cm
    fibroid"); `size`: the measurement a number right after it gives ("stenosis 60%")."""

    id: str
    phrases: tuple[str, ...]
    organs: tuple[str, ...] = ()  # where it occurs (documentation and plausibility), () = any
    lesion: bool = False
    size: str | None = None
    grades: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportMeasurement:
    """A measurement reports give outside `taxonomy.echo.MEASUREMENTS` (id carries the unit)."""

    id: str
    phrases: tuple[str, ...]
    decimals: int = 1


_DATA = load("findings")

CLINICAL_FINDINGS: tuple[ClinicalFinding, ...] = entries(_DATA["finding"], ClinicalFinding)
# phrases that state a finding is absent or normal ("clear of the internal os": no previa)
CLINICAL_NORMAL_PHRASES: dict[str, tuple[str, ...]] = frozen(_DATA["normal_phrases"])
REPORT_MEASUREMENTS: tuple[ReportMeasurement, ...] = entries(_DATA["measurement"], ReportMeasurement)
# location phrases -> normalised location (the side, where it names a lobe, stays: "right lobe")
LOCATION_PHRASES: dict[str, tuple[str, ...]] = frozen(_DATA["locations"])

# organ -> measurement a bare "<organ> measures N cm" gives (beyond kidney length in the lexicon)
ORGAN_SIZE_MEASUREMENTS: dict[str, str] = {
    "spleen": "spleen_length_mm",
    "liver": "liver_span_mm",
}
# organ -> measurement a bare "<organ> ... volume N mL" gives
ORGAN_VOLUME_MEASUREMENTS: dict[str, str] = {"prostate": "prostate_volume_ml", "bladder": "bladder_volume_ml"}

# organs without a side: a "right"/"left" in their reports names a lobe or chamber, not a side
UNPAIRED_ORGANS: frozenset[str] = frozenset(
    {"liver", "gallbladder", "spleen", "pancreas", "bladder", "uterus", "heart"}
)
# words after "right"/"left" that make it part of a name, not the side of the finding
NOT_A_SIDE_AFTER: frozenset[str] = frozenset(
    {
        "ventricle",
        "ventricular",
        "atrium",
        "atrial",
        "heart",
        "hemidiaphragm",
        "sided",
        "bundle",
        "coronary",
        "hepatic",
        "portal",
        "pleural",
        "ventricles",
        "atria",
        "axis",
    }
)
