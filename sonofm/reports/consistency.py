"""Consistency checks for generated studies and their written reports (issue #22).

Report text is the supervision of every text-side model, so a report that contradicts itself or
its study ("an anechoic purely cystic cyst ... demonstrates septations", a bladder stone in a
kidney, a seroma in the pancreas) is label noise. Three kinds of check:

- **study**: rules on the structured study alone: at most one tag of a mutually exclusive group
  within a dimension (one composition, one echogenicity level, circumscribed *or* not), cross-
  dimension exclusions (anechoic lesions hold no debris or solid part), and plausibility of the
  organ for the region and of the diagnosis for the organ (stones in kidney, bladder, gallbladder).
- **text**: words that fix an organ or a composition ("gallstone", "seroma", "purely cystic") must
  fit the study.
- **round trip**: the report parsed back must state every finding of the study with the same
  status, and nothing the study contradicts.

`check(study, text)` returns every problem found; an empty list means consistent.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from sonofm import taxonomy as tx
from sonofm.reports.parser import parse_report
from sonofm.reports.schema import Status, Study

# groups of tags of one dimension of which at most one can be PRESENT for one lesion
EXCLUSIVE: dict[str, tuple[frozenset[str], ...]] = {
    "diagnosis": (frozenset(t.id for t in tx.tags("diagnosis")),),
    "shape": (
        frozenset({"oval", "round", "irregular", "lobulated", "tubular"}),
        frozenset({"taller_than_wide", "wider_than_tall"}),
    ),
    "echogenicity": (frozenset({"anechoic", "very_hypoechoic", "hypoechoic", "isoechoic", "hyperechoic"}),),
    "internal": (frozenset({"solid", "cystic", "mixed_cystic_solid", "spongiform"}),),
    "vascularity": (frozenset({"avascular", "minimal", "peripheral", "internal", "hypervascular"}),),
}
# (dimension, tag) present -> (dimension, tag)s that cannot be present with it
CONFLICTS: dict[tuple[str, str], frozenset[tuple[str, str]]] = {
    ("margin", "circumscribed"): frozenset(
        ("margin", t)
        for t in (
            "indistinct",
            "angular",
            "microlobulated",
            "spiculated",
            "irregular",
            "extrathyroidal_extension",
        )
    ),
    # an anechoic lesion has no echoes inside: no debris, no solid tissue, no spongiform pattern
    ("echogenicity", "anechoic"): frozenset(
        {
            ("internal", "debris"),
            ("internal", "solid"),
            ("internal", "mixed_cystic_solid"),
            ("internal", "spongiform"),
            ("echogenicity", "heterogeneous"),
        }
    ),
    ("internal", "solid"): frozenset({("internal", "septations"), ("internal", "debris")}),
    ("diagnosis", "cyst"): frozenset({("internal", "solid")}),
    ("diagnosis", "fluid_collection"): frozenset({("internal", "solid")}),
}
# diagnoses that only occur in some organs (others: any organ)
DIAGNOSIS_ORGANS: dict[str, frozenset[str]] = {
    "calculus": frozenset({"kidney", "bladder", "gallbladder"}),
    "plaque": frozenset({"carotid_artery"}),
    "thrombus": frozenset({"carotid_artery", "jugular_vein", "heart"}),
}
# surface words that name an organ-specific entity -> the organs where the word fits
_ABDOMINAL = frozenset({"liver", "gallbladder", "spleen", "pancreas", "kidney", "bladder", "ovary", "uterus"})
ORGAN_SPECIFIC_WORDS: dict[str, frozenset[str]] = {
    "gallstone": frozenset({"gallbladder"}),
    "gallstones": frozenset({"gallbladder"}),
    "cholelithiasis": frozenset({"gallbladder"}),
    "bladder stone": frozenset({"bladder"}),
    "renal calculus": frozenset({"kidney"}),
    "renal stone": frozenset({"kidney"}),
    "kidney stone": frozenset({"kidney"}),
    "nephrolithiasis": frozenset({"kidney"}),
    "urolithiasis": frozenset({"kidney", "bladder"}),
    "seroma": frozenset({"breast", "soft_tissue", "lymph_node"}),
    # peritoneal fluid is around organs, never a lesion inside one
    "ascites": frozenset(),
    "free fluid": frozenset(),
    "atheroma": frozenset({"carotid_artery"}),
    "atherosclerotic plaque": frozenset({"carotid_artery"}),
    "atheromatous plaque": frozenset({"carotid_artery"}),
    "venous thrombosis": frozenset({"jugular_vein"}),
    "intraluminal thrombus": frozenset({"carotid_artery", "jugular_vein"}),
    "abscess": _ABDOMINAL | {"breast", "soft_tissue", "lymph_node", "thyroid", "prostate", "testis"},
}
# composition words that state there is nothing but fluid
PURE_FLUID_WORDS: tuple[str, ...] = (
    "purely cystic",
    "entirely cystic",
    "completely cystic",
    "simple fluid",
    "simple cyst",
    "anechoic fluid only",
)
_NOT_PURE = frozenset(
    {("internal", t) for t in ("septations", "debris", "solid", "mixed_cystic_solid", "spongiform")}
    | {("internal", t) for t in ("microcalcifications", "macrocalcifications", "rim_calcifications")}
)


@dataclass(frozen=True)
class Problem:
    """One inconsistency: `kind` in {exclusive, conflict, organ, diagnosis, wording, status, missing}."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def _present(study: Study) -> set[tuple[str, str]]:
    return {f.key() for f in study.findings if f.status is Status.PRESENT}


def rule_problems(present: set[tuple[str, str]]) -> list[Problem]:
    """Mutually exclusive and conflicting PRESENT tags (echo findings excluded)."""
    out: list[Problem] = []
    for dim, groups in EXCLUSIVE.items():
        for g in groups:
            hit = sorted(t for d, t in present if d == dim and t in g)
            if len(hit) > 1:
                out.append(Problem("exclusive", f"{dim}: {' and '.join(hit)}"))
    for key, bad in CONFLICTS.items():
        if key in present:
            for d, t in sorted(bad & present):
                out.append(Problem("conflict", f"{key[1]} with {t} ({d})"))
    if ("diagnosis", "normal") in present:
        lesion = sorted(t for d, t in present if d not in ("diagnosis", "echo", "organ", "body_system"))
        if lesion:
            out.append(Problem("conflict", f"normal study with lesion features {', '.join(lesion)}"))
    return out


def study_problems(study: Study) -> list[Problem]:
    """Rules on the structured study: exclusive tags, conflicts, organ and diagnosis plausibility."""
    out = rule_problems(_present(study))
    if study.organ is not None:
        try:
            region = tx.region_of(study.organ)
        except ValueError:
            out.append(Problem("organ", f"unknown organ {study.organ!r}"))
        else:
            if study.region != region:
                out.append(Problem("organ", f"{study.organ} is in region {region}, not {study.region}"))
        for d, t in _present(study):
            allowed = DIAGNOSIS_ORGANS.get(t) if d == "diagnosis" else None
            if allowed is not None and study.organ not in allowed:
                out.append(Problem("diagnosis", f"{t} in the {study.organ}"))
    keys = [f.key() for f in study.findings]
    for k in sorted({k for k in keys if keys.count(k) > 1}):
        out.append(Problem("status", f"{k[0]}/{k[1]} stated twice"))
    return out


_ECHO_FREE = re.compile(r"(?i)\becho[\s-]+free\b")


@functools.cache
def _word_re(phrase: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", re.IGNORECASE)


def _has(text: str, phrase: str) -> bool:
    text = _ECHO_FREE.sub("echofree", text)  # "echo free fluid-filled" names no "free fluid"
    return _word_re(phrase).search(text) is not None


def word_fits(phrase: str, organ: str | None, present: set[tuple[str, str]]) -> bool:
    """Whether a surface form may describe a lesion of `organ` with these PRESENT tags (the writer's
    filter: no "gallstone" in a kidney, no "purely cystic" for a septated cyst)."""
    return _fits(phrase, organ, bool(present & _NOT_PURE))


@functools.cache
def _fits(phrase: str, organ: str | None, not_pure: bool) -> bool:
    for word, organs in ORGAN_SPECIFIC_WORDS.items():
        if organ is not None and organ not in organs and _has(phrase, word):
            return False
    return not (not_pure and any(_has(phrase, w) for w in PURE_FLUID_WORDS))


def wording_problems(study: Study, text: str) -> list[Problem]:
    """Organ-specific and composition words in the text that the study contradicts."""
    out: list[Problem] = []
    organ = study.organ
    for word, organs in ORGAN_SPECIFIC_WORDS.items():
        if organ is not None and organ not in organs and _has(text, word):
            where = ", ".join(sorted(organs)) or "no organ (it lies outside organs)"
            out.append(Problem("wording", f"{word!r} in a {organ} study (fits: {where})"))
    present = _present(study)
    if present & _NOT_PURE:
        for word in PURE_FLUID_WORDS:
            if _has(text, word):
                feats = ", ".join(sorted(t for _d, t in present & _NOT_PURE))
                out.append(Problem("wording", f"{word!r} for a lesion with {feats}"))
    return out


def round_trip_problems(study: Study, text: str) -> list[Problem]:
    """Parse `text` back (with the study's region) and compare it with the study."""
    region = study.region if study.region in tx.REGIONS else None
    parsed = parse_report(text, region).study
    got = {f.key(): f.status for f in parsed.findings}
    out: list[Problem] = []
    for f in study.findings:
        st = got.get(f.key())
        if st is None:
            out.append(Problem("missing", f"{f.dimension}/{f.tag} ({f.status.value}) not read back"))
        elif st is not f.status:
            out.append(Problem("status", f"{f.dimension}/{f.tag}: study {f.status.value}, text {st.value}"))
    want = {f.key() for f in study.findings}
    extra_present = {k for k, st in got.items() if st is Status.PRESENT and k not in want}
    for p in rule_problems(_present(study) | extra_present):
        if p not in rule_problems(_present(study)):
            out.append(Problem("status", f"text adds a contradiction: {p.detail}"))
    if parsed.organ is not None and study.organ is not None and parsed.organ != study.organ:
        out.append(Problem("organ", f"text names the {parsed.organ}, study is of the {study.organ}"))
    return out


def check(study: Study, text: str | None = None) -> list[Problem]:
    """Every problem of `study` and, when given, of its report `text` (empty list: consistent)."""
    out = study_problems(study)
    if text is not None:
        out += wording_problems(study, text)
        out += round_trip_problems(study, text)
    return out
