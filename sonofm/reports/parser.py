"""Free report text -> `Study`: attributes, echo findings, measurements, negation and uncertainty.

Pipeline per sentence: tokenise -> match vocabulary phrases (longest first, including inverted
predicates such as "LV is mildly dilated") -> resolve phrases that are ambiguous across
dimensions by nearby cue words ("peripheral" + "flow" -> vascularity) -> ConText statuses
(`sonofm.reports.negation`) -> grades -> numbers attached to the nearest measurement name or to the
lesion. Words that look like findings but map to nothing are returned in `unknown_terms`.
The parser never raises on text: it is used on generated reports and on user input alike.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from sonofm import taxonomy as tx
from sonofm.errors import DataError
from sonofm.reports import lexicon as lx
from sonofm.reports.measurements import Quantity, find_quantities, normalise_value, unit_of_measurement
from sonofm.reports.negation import default_context
from sonofm.reports.schema import Finding, Status, Study
from sonofm.reports.text import Token, split_sentences, tokenize
from sonofm.taxonomy import findings as cf

log = logging.getLogger(__name__)

# A long clinical report is ~10k characters; 1M is ~100x that. Larger input is not a report (a
# pasted log, a binary file) and is refused up front rather than parsed for minutes.
MAX_REPORT_CHARS = 1_000_000
# Per-sentence work (ConText scopes, quantity assignment) is quadratic in the sentence length, so
# a run-on "sentence" is cut into pieces of at most this many characters: total time stays linear.
MAX_SENTENCE_CHARS = 1_000
# Unknown terms are a hint list for a human; beyond this many the substring de-duplication (pairwise)
# would dominate the parse time.
MAX_UNKNOWN_TERMS = 200


class ReportTooLarge(DataError, ValueError):
    """A report text over `MAX_REPORT_CHARS` (the one input `parse_report` refuses)."""


_SECTION_RE = re.compile(
    r"(?im)^\s*(findings?|impressions?|conclusions?|summary|comments?|indications?|history|"
    r"clinical (?:history|information|details)|technique|opinion|diagnosis)\s*:"
    r"|\b(findings?|impressions?|conclusions?|indications?)\s*:"
)
_IMPRESSION_HEADS = {
    "impression",
    "impressions",
    "conclusion",
    "conclusions",
    "summary",
    "opinion",
    "diagnosis",
}
_SKIP_HEADS = {
    "indication",
    "indications",
    "history",
    "clinical history",
    "clinical information",
    "clinical details",
    "technique",
}
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
_UNKNOWN_PATTERNS = (
    re.compile(r"(?i)\b[a-z]*echoic\b"),
    re.compile(r"(?i)\b[a-z]*echogenic(?:ity)?\b"),
    re.compile(r"(?i)\bcalcif[a-z]*\b"),
    re.compile(
        r"(?i)\b[a-z]{3,}(?:omas?|itis|osis|megaly|ectasia|lithiasis|cele|plasia|trophy|stenosis|pathy|emia|"
        r"uria|algia|rrhage|thrombus|thrombosis|fibroid)\b"
    ),
    re.compile(r"(?i)\b[a-z]+vascular(?:ity)?\b"),
    re.compile(r"\b[A-Z][A-Z0-9']{1,7}[a-z]?\b"),
)
# words that look like abbreviations/findings but carry no finding (section heads, units, lexicons)
_BENIGN_WORDS = frozenset(
    {
        "findings",
        "impression",
        "conclusion",
        "us",
        "ultrasound",
        "cm",
        "mm",
        "ml",
        "acr",
        "ti",
        "rads",
        "bi",
        "o",
        "tr",
        "tr1",
        "tr2",
        "tr3",
        "tr4",
        "tr5",
        "ii",
        "iii",
        "iv",
        "nb",
        "pt",
        "hx",
        "mhz",
        "doppler",
        "colour",
        "color",
        "no",
        "na",
        "n/a",
        "ok",
        "rt",
        "lt",
        "lhs",
        "rhs",
        "ap",
        "trans",
        "sag",
        "long",
        "img",
        "b",
        "d",
        "cdi",
        "i",
        "a",
        "x",
        "by",
        "mode",
        "echo",
        "echoes",
        "echogenic",
    }
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


@dataclass
class _Match:
    start: int
    end: int
    entries: tuple[lx.Entry, ...]
    negated: bool = False  # a "not" inside an inverted predicate ("LV is not dilated")
    grade_tokens: tuple[str, ...] = ()


def _sections(text: str) -> list[tuple[str, int, int]]:
    """(section kind "findings"|"impression"|"skip", start, end) char spans."""
    heads = [(m.start(), m.end(), (m.group(1) or m.group(2)).lower()) for m in _SECTION_RE.finditer(text)]
    if not heads:
        return [("findings", 0, len(text))]
    out: list[tuple[str, int, int]] = []
    if heads[0][0] > 0:
        out.append(("findings", 0, heads[0][0]))
    for k, (_s, e, name) in enumerate(heads):
        nxt = heads[k + 1][0] if k + 1 < len(heads) else len(text)
        kind = "impression" if name in _IMPRESSION_HEADS else "skip" if name in _SKIP_HEADS else "findings"
        out.append((kind, e, nxt))
    return out


def _noun_index() -> dict[tuple[str, ...], dict[str, tuple[lx.Entry, ...]]]:
    out: dict[tuple[str, ...], dict[str, tuple[lx.Entry, ...]]] = {}
    for key, (adj, ents) in lx.predicate_index().items():
        out.setdefault(key[:-1], {})[adj] = ents
    return out


_NOUNS: dict[tuple[str, ...], dict[str, tuple[lx.Entry, ...]]] | None = None
# longest key (in words) of the last index seen under each name: saves a scan of ~1k keys per call
_MAXLEN: dict[str, tuple[dict, int]] = {}


def _longest(name: str, index: dict) -> int:
    cached = _MAXLEN.get(name)
    if cached is None or cached[0] is not index:  # identity: a rebuilt index is rescanned
        cached = (index, max((len(k) for k in index), default=0))
        _MAXLEN[name] = cached
    return cached[1]


def _match_phrases(norms: list[str]) -> list[_Match]:
    global _NOUNS
    if _NOUNS is None:
        _NOUNS = _noun_index()
    index = lx.phrase_index()
    maxlen = _longest("phrases", index)
    noun_max = _longest("nouns", _NOUNS)
    n = len(norms)
    cands: list[_Match] = []
    for i in range(n):
        for L in range(min(maxlen, n - i), 0, -1):
            ents = index.get(tuple(norms[i : i + L]))
            if ents:
                cands.append(_Match(i, i + L, ents))
        for L in range(min(noun_max, n - i), 0, -1):
            adjs = _NOUNS.get(tuple(norms[i : i + L]))
            if not adjs:
                continue
            k, neg, grades = i + L, False, []
            while k < n and k - (i + L) < 5:
                w = norms[k]
                if w in ("not", "no", "non"):
                    neg = True
                elif w in lx.REPORT_SUPPLEMENT_GRADES:
                    grades.append(w)
                elif w not in lx.REPORT_SUPPLEMENT_LINKS:
                    break
                k += 1
            if k < n and norms[k] in adjs:
                cands.append(_Match(i, k + 1, adjs[norms[k]], neg, tuple(grades)))
    cands.sort(key=lambda m: (-(m.end - m.start), m.start))
    taken = [False] * n
    chosen: list[_Match] = []
    for m in cands:
        if not any(taken[m.start : m.end]):
            chosen.append(m)
            for j in range(m.start, m.end):
                taken[j] = True
    chosen.sort(key=lambda m: m.start)
    return chosen


def _resolve(m: _Match, norms: list[str]) -> lx.Entry:
    """Pick one meaning of an ambiguous phrase using dimension cue words near it."""
    if len(m.entries) == 1:
        return m.entries[0]
    window = norms[max(0, m.start - 8) : m.end + 8]
    joined = " " + " ".join(window) + " "

    def score(e: lx.Entry) -> float:
        cues = lx.REPORT_SUPPLEMENT_CUES.get(e.dimension or "", ())
        hit = any(f" {c} " in joined or f" {c}" in joined for c in cues)
        s = 2.0 if hit else (-1.0 if cues else 0.0)
        return s + (0.5 if e.kind in ("echo", "measurement") else 0.6 if e.kind == "finding" else 0.0)

    return max(m.entries, key=score)


def _sub_tags(norms: list[str], m: _Match) -> list[lx.Entry]:
    """Descriptor tags inside a diagnosis phrase ("solid mass" -> solid, "cystic lesion" -> cystic)."""
    index = lx.phrase_index()
    out: list[lx.Entry] = []
    for i in range(m.start, m.end):
        for j in range(m.end, i, -1):
            if (i, j) == (m.start, m.end):
                continue
            for e in index.get(tuple(norms[i:j]), ()):
                if e.kind == "tag" and e.dimension not in ("diagnosis",) and e not in out:
                    out.append(e)
    return out


def _grade(fid: str, norms: list[str], m: _Match) -> str | None:
    allowed = lx.grades_for(fid)
    if not allowed:
        return None
    words = list(m.grade_tokens) + list(norms[m.start : m.end]) + list(norms[max(0, m.start - 3) : m.start])
    for w in words:
        g = lx.REPORT_SUPPLEMENT_GRADES.get(w)
        if g in allowed:
            return g
    return None


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


_WHOLE_STUDY_WORDS = frozenset(
    {
        "study",
        "examination",
        "exam",
        "scan",
        "ultrasound",
        "appearance",
        "otherwise",
        "overall",
        "sonographic",
        "sonographically",
        "appear",
        "appears",
        "look",
        "looks",
        "which",
        "and",
        "in",
        "size",
        "echotexture",
    }
)


def _is_part_normal(m: _Match, e: lx.Entry, norms: list[str], resolved) -> bool:
    """Bare "normal" about a part ("RV size normal") is not a normal study; about an organ it is."""
    if not (e.kind == "tag" and e.id == "normal" and m.end - m.start == 1):
        return False
    if any(x.kind in ("organ", "location") for _m, x in resolved):
        return False
    rest = [w for i, w in enumerate(norms) if not (m.start <= i < m.end) and w.isalpha()]
    return any(
        w not in _STOP and w not in _WHOLE_STUDY_WORDS and w not in lx.REPORT_SUPPLEMENT_LINKS for w in rest
    )


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


_STOP = frozenset(
    {
        "the",
        "a",
        "an",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "and",
        "or",
        "any",
        "evidence",
        "sign",
        "definite",
        "significant",
        "focal",
        "further",
        "other",
        "obvious",
        "seen",
        "noted",
        "identified",
        "there",
        "is",
        "are",
        "wa",
        "were",
        "be",
        "been",
        "thi",
        "that",
        "it",
        "its",
        "this",
        "these",
        "those",
        "new",
        "change",
        "interval",
        "visible",
        "demonstrable",
        "detectable",
        "sonographic",
        "ultrasound",
        "also",
        "again",
        "now",
        "today",
        "right",
        "left",
        "bilateral",
        "both",
        "either",
        "side",
        "measuring",
        "measure",
        "measures",
        "approximately",
        "about",
        "around",
        "within",
        "from",
        "with",
        "by",
        "as",
        "than",
        "into",
        "mildly",
        "moderately",
        "slightly",
        "small",
        "large",
        "mild",
        "moderate",
        "severe",
        "trace",
        "tiny",
        "residual",
        "suspicious",
        "possible",
    }
)


def _unmapped_in_scope(tokens: list[Token], mods, matches: list[_Match], known: frozenset[str]) -> list[str]:
    """Words a negation/uncertainty trigger scopes over that map to nothing ("no hydronephrosis")."""
    out: list[str] = []
    for m in mods:
        lo, hi = m.scope
        lo, hi = max(lo, 0), min(hi, len(tokens))
        if any(lo <= x.start < hi for x in matches if not (x.start < m.end and x.end > m.start)):
            continue
        rng_ = range(m.end, hi) if m.rule.direction != "backward" else range(lo, m.start)
        words = []
        for i in rng_:
            t = tokens[i]
            if not t.text.isalpha():
                if words:
                    break
                continue
            if t.norm in _STOP or len(t.text) < 3:
                if words:
                    break
                continue
            words.append(t.text)
            if len(words) == 3:
                break
        if words and not all(w.lower() in known for w in words[:1]) or len(words) > 1:
            out.append(" ".join(words))
    return out


def _unknown_terms(text: str, covered: list[tuple[int, int]], known: frozenset[str]) -> list[str]:
    # one byte per character: "is this character inside a recognised span" in O(1), so the scan is
    # linear in the text (a list scan per match made long reports quadratic, issue #18)
    mask = bytearray(len(text) + 1)
    for a, b in covered:
        if b > a:
            mask[a:b] = b"\x01" * (b - a)
    out: list[str] = []
    for pat in _UNKNOWN_PATTERNS:
        for m in pat.finditer(text):
            s, e = m.start(), m.end()
            if mask[s] or mask[e - 1]:
                continue
            word = m.group(0)
            lw = word.lower()
            norm = tokenize(word)[0].norm if tokenize(word) else lw
            if lw in _BENIGN_WORDS or norm in _BENIGN_WORDS:
                continue
            if pat.pattern.startswith(r"\b[A-Z]") and norm in known:
                continue
            out.append(word)
    # measurement names not in the taxonomy: "<words> [measures|of|:|=] <number><unit>" left unassigned
    return out


_FINDING_KINDS = ("tag", "echo", "echo_normal", "finding", "finding_normal")
_LARGEST = frozenset({"largest", "biggest", "dominant"})
_FN_RE = re.compile(r"(?i)\b\d+(?:[.,]\d+)?\s*(?:cm|mm)\s*(?:fn\b|from\s+(?:the\s+)?nipple)")
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


def _inequality(sent: str, start: int) -> bool:
    """A number after "<", ">", "≥" ... is a bound, not a value ("<50% stenosis")."""
    before = sent[:start].rstrip()
    return bool(before) and before[-1] in "<>≤≥="


def _extras(norms: list[str], m: _Match, e: lx.Entry) -> list[lx.Entry]:
    """Further entries a match states: tags inside a diagnosis ("solid mass" -> solid), calcification
    inside a finding ("calcified granulomas"), and tag meanings of a finding phrase."""
    if e.kind == "tag" and e.dimension == "diagnosis":
        return _sub_tags(norms, m)
    if e.kind == "finding":
        subs = [x for x in _sub_tags(norms, m) if x.dimension == "internal"]
        return subs + [x for x in m.entries if x.kind == "tag" and x not in subs]
    return []


def _organs_inside(norms: list[str], m: _Match) -> list[str]:
    """Organs named inside a longer phrase ("renal length", "gallbladder wall thickening")."""
    index = lx.phrase_index()
    out = [x.id for x in m.entries if x.kind in ("organ", "location")]
    for i in range(m.start, m.end):
        for j in range(m.end, i, -1):
            for x in index.get(tuple(norms[i:j]), ()):
                if x.kind == "organ" and x.id not in out:
                    out.append(x.id)
    return out


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


def _bounded(spans: list[tuple[int, int]], text: str) -> list[tuple[int, int]]:
    """Sentence spans with run-ons cut at `MAX_SENTENCE_CHARS` (at a ';' or ',' or space if any)."""
    out: list[tuple[int, int]] = []
    for a, b in spans:
        while b - a > MAX_SENTENCE_CHARS:
            lim = a + MAX_SENTENCE_CHARS
            cut = max(text.rfind(";", a, lim), text.rfind(",", a, lim))
            if cut <= a:
                cut = text.rfind(" ", a, lim)
            cut = cut if cut > a else lim
            out.append((a, cut))
            a = cut
        out.append((a, b))
    return out


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
