"""Vocabulary phrase matching for the parser: which lexicon entries a sentence's words name.

Longest match first (including inverted predicates such as "LV is mildly dilated"), one meaning per
ambiguous phrase from nearby cue words, grades, and the tags and organs named inside a longer
phrase. Works on normalised tokens of one sentence; knows nothing of statuses or numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from sonofm.reports import lexicon as lx
from sonofm.reports.unknown_terms import _STOP


@dataclass
class _Match:
    start: int
    end: int
    entries: tuple[lx.Entry, ...]
    negated: bool = False  # a "not" inside an inverted predicate ("LV is not dilated")
    grade_tokens: tuple[str, ...] = ()


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
