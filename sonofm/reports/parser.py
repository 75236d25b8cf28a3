"""Free report text -> `Study`: attributes, echo findings, measurements, negation and uncertainty.

Pipeline per sentence: tokenise -> match vocabulary phrases (longest first, including inverted
predicates such as "LV is mildly dilated") -> resolve phrases that are ambiguous across
dimensions by nearby cue words ("peripheral" + "flow" -> vascularity) -> ConText statuses
(`sonofm.reports.negation`) -> grades -> numbers attached to the nearest measurement name or to the
lesion. Words that look like findings but map to nothing are returned in `unknown_terms`.
The parser never raises on text: it is used on generated reports and on user input alike.

This module assembles the `Study` sentence by sentence; the steps live beside it: section and
sentence spans (`sections`), vocabulary phrase matching (`phrases`), numbers to measurements
(`measurement_assign`), sides and places (`places`) and finding-like words that map to nothing
(`unknown_terms`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from sonofm import taxonomy as tx
from sonofm.errors import DataError
from sonofm.reports import lexicon as lx
from sonofm.reports.measurement_assign import (
    _FN_RE,
    _LARGEST,
    _LESION_DIMS,
    _assign_quantity,
    _inequality,
    _is_lesion,
    _name_before,
    _store_measurement,
    _tok_at,
)
from sonofm.reports.measurements import Quantity, find_quantities
from sonofm.reports.negation import default_context
from sonofm.reports.phrases import _extras, _grade, _is_part_normal, _match_phrases, _organs_inside, _resolve
from sonofm.reports.places import _pattern_places, _sides
from sonofm.reports.schema import Finding, Status, Study
from sonofm.reports.sections import _SECTION_RE, _bounded, _sections
from sonofm.reports.sections import MAX_SENTENCE_CHARS as MAX_SENTENCE_CHARS  # re-exported
from sonofm.reports.text import split_sentences, tokenize
from sonofm.reports.unknown_terms import _STOP, _unknown_terms, _unmapped_in_scope
from sonofm.taxonomy import findings as cf

log = logging.getLogger(__name__)

# A long clinical report is ~10k characters; 1M is ~100x that. Larger input is not a report (a
# pasted log, a binary file) and is refused up front rather than parsed for minutes.
MAX_REPORT_CHARS = 1_000_000
# Unknown terms are a hint list for a human; beyond this many the substring de-duplication (pairwise)
# would dominate the parse time.
MAX_UNKNOWN_TERMS = 200


class ReportTooLarge(DataError, ValueError):
    """A report text over `MAX_REPORT_CHARS` (the one input `parse_report` refuses)."""


_ASSESS_RES = (
    (
        "TI-RADS",
        re.compile(
            r"(?i)\b(?:ACR\s*)?TI-?RADS\s*(?:category\s*|level\s*)?(?:TR\s*)?([1-5])\b|\bTR\s?([1-5])\b"
        ),
    ),
    ("BI-RADS", re.compile(r"(?i)\bBI-?RADS\s*(?:category\s*)?([0-6](?:\s?[ABCabc](?![a-z]))?)")),
    ("O-RADS", re.compile(r"(?i)\bO-?RADS\s*(?:US\s*)?(?:category\s*)?([0-5])\b")),
)


@dataclass
class Mention:
    """One recognised phrase in the text (kept for debugging and for highlighting in the web app)."""

    kind: str
    id: str
    dimension: str | None
    status: Status
    grade: str | None
    text: str
    start: int  # char offsets in the full text
    end: int
    section: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "dimension": self.dimension,
            "status": self.status.value,
            "grade": self.grade,
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "section": self.section,
        }


@dataclass
class ParseResult:
    """`study` is the structure the text states; `unknown_terms` the finding-like words it could not map."""

    study: Study
    unknown_terms: list[str] = field(default_factory=list)
    mentions: list[Mention] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study.to_dict(),
            "unknown_terms": list(self.unknown_terms),
            "mentions": [m.to_dict() for m in self.mentions],
        }


_FINDING_KINDS = ("tag", "echo", "echo_normal", "finding", "finding_normal")


def _derive_echo_findings(study: Study) -> None:
    """Guideline findings from the measurements ("LVEF 35%" -> reduced EF) that the text left unstated."""
    stated = {f.key() for f in study.findings}
    for r in tx.evaluate_guidelines(study.measurements, study.sex):
        if ("echo", r.finding) not in stated:
            st = Status.PRESENT if r.present else Status.ABSENT
            study.findings.append(Finding("echo", r.finding, st, r.grade if r.present else None))


def _findings_from(e: lx.Entry, status: Status, grade: str | None) -> list[Finding]:
    """The findings one entry states ("ra_collapse+rv_collapse" states two)."""
    if "+" not in e.id:
        return [_finding_from(e, status, grade)]
    return [_finding_from(lx.Entry(e.kind, i, e.dimension), status, None) for i in e.id.split("+")]


def _finding_from(e: lx.Entry, status: Status, grade: str | None) -> Finding:
    if e.kind in ("echo_normal", "finding_normal"):
        st = (
            Status.UNCERTAIN
            if status is Status.UNCERTAIN
            else (Status.PRESENT if status is Status.ABSENT else Status.ABSENT)
        )
        # "LV systolic function is not normal" -> present; "normal LV size" -> absent
        return Finding(e.dimension or "echo", e.id, st, None)
    return Finding(e.dimension or e.kind, e.id, status, grade if status is Status.PRESENT else None)


def parse_report(text: str, region: str | None = None) -> ParseResult:
    """Parse free report text into a `Study` (never raises on text; see the module docstring).

    `region` (one of `sonofm.taxonomy.REGIONS`) restricts organ detection and drops sentences that
    only talk about organs of other regions; an unknown region is a caller error (ValueError).
    """
    if region is not None and region not in tx.REGIONS:
        raise ValueError(f"region {region!r} is not one of: {', '.join(tx.REGIONS)}")
    if isinstance(text, str) and len(text) > MAX_REPORT_CHARS:
        raise ReportTooLarge(
            f"report text has {len(text):,} characters, over the limit of {MAX_REPORT_CHARS:,} "
            "(a clinical report is a few thousand); split it into one report per study"
        )
    try:
        return _parse(text if isinstance(text, str) else str(text), region)
    except Exception:  # noqa: BLE001 - contract: parsing arbitrary text must not raise
        log.exception("report parser failed; returning the text as unknown")
        return ParseResult(Study(region=region or "unknown"), [text[:80]] if isinstance(text, str) else [])


def _parse(text: str, region: str | None) -> ParseResult:
    ctx = default_context()
    known = lx.known_words()
    allowed_organs = {o.id for o in tx.organs_in(region)} if region in tx.REGIONS else None
    findings: dict[tuple[str, str], Finding] = {}
    mentions: list[Mention] = []
    organs: list[tuple[str, bool]] = []  # (organ id, direct mention?)
    study = Study(region=region or "unknown")
    unknown: list[str] = []
    covered: list[tuple[int, int]] = []
    impression_parts: list[str] = []
    lesion_q: Quantity | None = None
    lesion_seen = False
    no_lesion = False  # "No focal lesion."
    places: list[tuple[int, str]] = []  # (char offset, location name)
    sides: list[tuple[int, str]] = []  # (char offset, laterality)

    for kind, s0, s1 in _sections(text):
        if kind == "skip":
            covered.append((s0, s1))  # indication/history: not findings, and not unknown findings either
            continue
        if kind == "impression":
            impression_parts.append(text[s0:s1].strip())
        for a, b in _bounded(split_sentences(text[s0:s1]), text[s0:s1]):
            a, b = a + s0, b + s0
            sent = text[a:b]
            tokens = tokenize(sent)
            if not tokens:
                continue
            norms = [t.norm for t in tokens]
            matches = _match_phrases(norms)
            resolved = [(m, _resolve(m, norms)) for m in matches]
            blocked = {i for m in matches for i in range(m.start, m.end)}
            mods = ctx.scopes(norms, ctx.match(norms, blocked))
            statuses = [ctx.status_of(mods, (m.start, m.end))[0] for m in matches]
            unknown += _unmapped_in_scope(tokens, mods, matches, known)
            named = {e.id for _m, e in resolved if e.kind == "organ"}
            named_in = {
                o for m_, e in resolved if e.kind in ("finding", "echo") for o in _organs_inside(norms, m_)
            }
            # a sentence about another organ ("The axillary lymph nodes are normal." in a breast report)
            # says nothing about this study's findings; an organ inside a finding ("prostate enlarged
            # ... into the bladder") keeps it on topic
            off_topic = (
                allowed_organs is not None
                and bool(named)
                and not (named & allowed_organs)
                and not (named_in & allowed_organs)
            )
            resolved_ok = [(m, e) for m, e in resolved if not _is_part_normal(m, e, norms, resolved)]
            if len(resolved_ok) != len(resolved):
                keep = [i for i, x in enumerate(resolved) if x in resolved_ok]
                resolved = [resolved[i] for i in keep]
                statuses = [statuses[i] for i in keep]
            for (m, e), st in zip(resolved, statuses, strict=True):
                cs, ce = a + tokens[m.start].start, a + tokens[m.end - 1].end
                covered.append((cs, ce))
                if m.negated:
                    st = Status.ABSENT if st is Status.PRESENT else st
                grade = _grade(e.id, norms, m) if e.kind in ("echo", "finding") else None
                mentions.append(Mention(e.kind, e.id, e.dimension, st, grade, text[cs:ce], cs, ce, kind))
                extra = _extras(norms, m, e)
                if len(m.entries) > 1 or m.end - m.start > 1:
                    for o in _organs_inside(norms, m):
                        if allowed_organs is None or o in allowed_organs:
                            organs.append((o, True))
                for e2 in [e, *extra]:
                    if e2.kind not in _FINDING_KINDS or off_topic:
                        continue
                    for f in _findings_from(e2, st, grade):
                        if kind == "impression" and f.key() in findings:
                            continue
                        prev = findings.get(f.key())
                        if prev is None or (
                            prev.grade is None and f.grade is not None and prev.status is f.status
                        ):
                            findings[f.key()] = f
                if e.kind in ("location", "place"):
                    name = lx.location_names().get(tuple(norms[m.start : m.end]))
                    if name and not (e.kind == "location" and e.id == "heart"):
                        places.append((cs, name))
                if e.kind in _FINDING_KINDS:
                    continue
                trig = ctx.status_of(mods, (m.start, m.end))[1]
                adjacent_neg = st is Status.ABSENT and trig is not None and trig.end == m.start
                # in a vessel "no flow" is an occlusion, not an avascular lesion (a plaque may be avascular)
                lesion_here = lesion_seen or any(_is_lesion(x) for _m, x in resolved)
                vessel_ctx = any(
                    x.kind == "finding" and x.id in ("occlusion", "stenosis") for _m, x in resolved
                ) or (
                    not lesion_here
                    and (
                        region == "vessel"
                        or any(
                            x.kind == "organ" and x.id in ("carotid_artery", "jugular_vein")
                            for _m, x in resolved
                        )
                    )
                )
                if e.kind == "flow" and adjacent_neg and not off_topic and not vessel_ctx:
                    # "no flow" / "without vascularity": an avascular lesion
                    f = Finding("vascularity", "avascular", Status.PRESENT)
                    if f.key() not in findings:
                        findings[f.key()] = f
                    continue
                if e.kind == "lesion" and adjacent_neg and not off_topic:
                    no_lesion = True
                    continue
                if e.kind in ("organ", "location"):  # "no lesion in the liver" is still about the liver
                    if allowed_organs is None or e.id in allowed_organs:
                        organs.append((e.id, e.kind == "organ"))
                elif e.kind == "view" and study.view is None:
                    study.view = e.id
                elif e.kind == "frame" and study.frame is None:
                    study.frame = e.id
                elif e.kind == "sex" and study.sex is None:
                    study.sex = e.id
            if any(_is_lesion(e) for _m, e in resolved):
                lesion_seen = True
            sides += [(a + tokens[i].start, side) for i, side in _sides(norms)]
            pat_places = _pattern_places(sent)
            places += [(a + pos, name) for pos, name, _end in pat_places]
            # numbers
            fn_spans = []
            for mfn in _FN_RE.finditer(sent):
                q_fn = find_quantities(mfn.group(0))
                if q_fn and q_fn[0].unit == "mm":
                    study.measurements.setdefault(
                        "distance_from_nipple_mm", q_fn[0].values[0] * q_fn[0].factor
                    )
                    fn_spans.append((mfn.start(), mfn.end()))
                    covered.append((a + mfn.start(), a + mfn.end()))
            qs = [
                q
                for q in find_quantities(sent)
                if not any(x <= q.start < y for x, y in fn_spans)
                and not any(x <= q.start < y for x, _n, y in pat_places)
                and not _inequality(sent, q.start)
            ]
            qtoks = [(_tok_at(tokens, q.start), _tok_at(tokens, max(q.start, q.end - 1)) + 1) for q in qs]
            for q, (qi, qj) in zip(qs, qtoks, strict=True):
                cue = any(
                    t.norm.startswith(("measur", "size", "dimension")) or t.norm in ("it", "lesion")
                    for t in tokens[max(0, qi - 4) : qi]
                )
                largest = any(t.norm in _LARGEST for t in tokens[max(0, qi - 3) : qi])
                if largest and (q.unit == "mm" or len(q.values) >= 2):
                    got: tuple[str, list[float]] | None = ("lesion", list(q.values))
                else:
                    got = _assign_quantity(q, qi, qj, resolved, qtoks, lesion_seen, cue)
                if got is not None and got[0] == "organ_dims":
                    covered.append((a + q.start, a + q.end))
                    continue
                if got is None:
                    if q.unit is not None:
                        name = _name_before(tokens, qi)
                        if name and any(w.lower() not in known for w in name.split()):
                            unknown.append(name)
                    continue
                mid, _vals = got
                covered.append((a + q.start, a + q.end))
                if mid == "lesion_unnamed":
                    # a size with no lesion word: the words before it name something we do not know
                    before = [
                        t.text
                        for t in tokens[max(0, qi - 3) : qi]
                        if t.text.isalpha() and t.norm not in known and t.norm not in _STOP
                    ]
                    if before:
                        unknown.append(" ".join(before))
                    mid = "lesion"
                if mid == "lesion":
                    if kind == "impression" and lesion_q is not None:
                        continue
                    # first size wins unless a later one has more dimensions ("3 cm FN ... 14 x 11 x 12 mm")
                    if q.unit in (None, "mm") and (lesion_q is None or len(q.values) > len(lesion_q.values)):
                        lesion_q = q
                        for k in _LESION_DIMS:
                            study.measurements.pop(k, None)
                        for k in range(min(3, len(q.values))):
                            _store_measurement(study, _LESION_DIMS[k], q, k)
                else:
                    _store_measurement(study, mid, q)

    if no_lesion and not any(k[0] == "diagnosis" for k in findings):
        findings[("diagnosis", "normal")] = Finding("diagnosis", "normal", Status.PRESENT)
    # "cystic lesion ... with a solid component": the explicit composition wins over the word "cystic"
    if ("internal", "cystic") in findings and any(
        ("internal", t) in findings and findings[("internal", t)].status is Status.PRESENT
        for t in ("mixed_cystic_solid", "solid", "spongiform")
    ):
        del findings[("internal", "cystic")]
    study.findings = list(findings.values())
    if not organs:
        # no organ named: the organ a finding belongs to ("moderate hydronephrosis" -> kidney)
        for f in study.findings:
            cands = lx.CLINICAL[f.tag].organs if f.dimension == "finding" and f.tag in lx.CLINICAL else ()
            cands = tuple(o for o in cands if allowed_organs is None or o in allowed_organs)
            if len(cands) == 1 or (cands and allowed_organs is not None):
                organs.append((cands[0], False))
                break
        if not organs and any(n.startswith("segment ") for _p, n in places):
            organs.append(("liver", False))
    if organs:
        direct = [o for o, d in organs if d]
        study.organ = (direct or [o for o, _ in organs])[0]
    elif allowed_organs is not None and len(allowed_organs) == 1:
        study.organ = next(iter(allowed_organs))
    if region is None:
        if study.organ is not None:
            study.region = tx.region_of(study.organ)
        elif study.view is not None or any(f.dimension == "echo" for f in study.findings):
            study.region = "heart"
            study.organ = "heart"
    elif study.organ is None and region == "heart":
        study.organ = "heart"
    if "organ_volume_ml" in study.measurements:
        v = study.measurements.pop("organ_volume_ml")
        study.measurements.setdefault(
            cf.ORGAN_VOLUME_MEASUREMENTS.get(study.organ or "", "organ_volume_ml"), v
        )
    if study.region == "heart":
        _derive_echo_findings(study)
    if places:
        study.location = min(places)[1]
    if sides and study.organ not in cf.UNPAIRED_ORGANS and study.region != "heart":
        study.laterality = min(sides)[1]
    for name, pat in _ASSESS_RES:
        m = pat.search(text)
        if m:
            val = next(g for g in m.groups() if g)
            val = val.replace(" ", "").upper()
            study.assessment[name] = f"TR{val}" if name == "TI-RADS" else val
    study.impression = " ".join(p for p in impression_parts if p) or None
    covered += [(m.start(), m.end()) for m in _SECTION_RE.finditer(text)]
    unknown += _unknown_terms(text, covered, known)
    seen: set[str] = set()
    uniq = [u for u in unknown if not (u.lower() in seen or seen.add(u.lower()))][:MAX_UNKNOWN_TERMS]
    # a word already reported inside a longer phrase is not repeated ("calcifications" in "no associated ...")
    uniq = [u for u in uniq if not any(u.lower() != v.lower() and u.lower() in v.lower() for v in uniq)]
    return ParseResult(study, uniq, mentions)
