"""The phrase index the parser matches against, built from `sonofm.taxonomy`.

Vocabulary (tags, organs, echo findings, measurements, views) comes from the taxonomy. What the
taxonomy does not own but report *phrasing* needs lives beside it (`lexicon_data`, re-exported
here), in the clearly named ``REPORT_SUPPLEMENT_*`` constants: frame and sex words, grade words,
the "normal" phrasings of echo findings, generic lesion words, and link words for predicate
inversion ("LV is mildly dilated" <- "dilated LV").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sonofm import taxonomy as tx
from sonofm.reports.lexicon_data import (  # noqa: F401 (the tables are re-exported)
    CLINICAL,
    FINDING_SIZE_MEASUREMENT,
    GRADE_ADVERB,
    ORGAN_SIZE_MEASUREMENT,
    REPORT_MEASUREMENT_DECIMALS,
    REPORT_SUPPLEMENT_CUES,
    REPORT_SUPPLEMENT_ECHO_NORMAL,
    REPORT_SUPPLEMENT_ECHO_NORMAL_COMBOS,
    REPORT_SUPPLEMENT_ECHO_SYNONYMS,
    REPORT_SUPPLEMENT_FLOW_WORDS,
    REPORT_SUPPLEMENT_FRAMES,
    REPORT_SUPPLEMENT_GRADES,
    REPORT_SUPPLEMENT_LESION_WORDS,
    REPORT_SUPPLEMENT_LINKS,
    REPORT_SUPPLEMENT_NEUTRAL,
    REPORT_SUPPLEMENT_NORMAL_STUDY,
    REPORT_SUPPLEMENT_OVERRIDES,
    REPORT_SUPPLEMENT_PREDICATES,
    REPORT_SUPPLEMENT_SEX,
    REPORT_SUPPLEMENT_TAG_SYNONYMS,
    REPORT_SUPPLEMENT_VIEWS,
)
from sonofm.reports.text import norm_tokens
from sonofm.taxonomy import findings as cf


@functools.lru_cache(maxsize=1)
def location_names() -> dict[tuple[str, ...], str]:
    """normalised location phrase -> its normalised name ("right thyroid lobe" -> "right lobe")."""
    out: dict[tuple[str, ...], str] = {}
    organ_words = {norm_tokens(s) for o in tx.ORGANS for s in (o.phrase, *o.synonyms)}
    for o in tx.ORGANS:
        for loc in o.locations:
            side, _, rest = loc.partition(" ")
            if side in ("right", "left") and norm_tokens(rest) in organ_words:
                continue  # "right testis" is a side and an organ, not a place in it
            out.setdefault(norm_tokens(loc), loc)
    for name, phrases in cf.LOCATION_PHRASES.items():
        for p in phrases:
            out[norm_tokens(p)] = name
    return out


@dataclass(frozen=True)
class Entry:
    """What a matched phrase means: kind in {tag, organ, echo, echo_normal, measurement, view, frame,
    sex, lesion, normal_study}; `dimension` for tags; `id` the tag/organ/finding/measurement id."""

    kind: str
    id: str
    dimension: str | None = None


def _add(index: dict[tuple[str, ...], list[Entry]], phrase: str, entry: Entry) -> None:
    key = norm_tokens(phrase)
    if not key:
        return
    lst = index.setdefault(key, [])
    if entry not in lst:
        lst.append(entry)


def _syns(obj) -> list[str]:
    out = [getattr(obj, "phrase", None) or ""]
    out += list(getattr(obj, "synonyms", ()) or ())
    return [s for s in out if s]


@functools.lru_cache(maxsize=1)
def phrase_index() -> dict[tuple[str, ...], tuple[Entry, ...]]:
    """normalised phrase tokens -> entries (several when a phrase is ambiguous across dimensions)."""
    index: dict[tuple[str, ...], list[Entry]] = {}
    for dim in tx.DIMENSIONS:
        if dim in ("organ", "body_system"):
            continue
        for t in tx.tags(dim):
            for s in (*_syns(t), *REPORT_SUPPLEMENT_TAG_SYNONYMS.get((dim, t.id), ())):
                _add(index, s, Entry("tag", t.id, dim))
    for region in tx.REGIONS:
        for o in tx.organs_in(region):
            for s in _syns(o):
                _add(index, s, Entry("organ", o.id, "organ"))
            for loc in getattr(o, "locations", ()) or ():
                _add(index, loc, Entry("location", o.id, "organ"))
    for fid, f in tx.ECHO_FINDINGS.items():
        for s in (*_syns(f), *REPORT_SUPPLEMENT_ECHO_SYNONYMS.get(fid, ())):
            _add(index, s, Entry("echo", fid, "echo"))
        for s in REPORT_SUPPLEMENT_ECHO_NORMAL.get(fid, ()):
            _add(index, s, Entry("echo_normal", fid, "echo"))
        for s in getattr(f, "normal_phrases", ()) or ():
            _add(index, s, Entry("echo_normal", fid, "echo"))
    for mid, m in tx.MEASUREMENTS.items():
        for s in _syns(m):
            _add(index, s, Entry("measurement", mid))
    views_tx = getattr(tx, "VIEWS", None) or {}
    for v in tx.ECHO_VIEWS:
        for s in (*REPORT_SUPPLEMENT_VIEWS.get(v, ()), *_view_phrases(v, views_tx)):
            _add(index, s, Entry("view", v))
    frames_tx = getattr(tx, "FRAME_PHRASES", None) or {}
    for fr in tx.FRAMES:
        for s in (*REPORT_SUPPLEMENT_FRAMES.get(fr, ()), *frames_tx.get(fr, ())):
            _add(index, s, Entry("frame", fr))
    for s in REPORT_SUPPLEMENT_NEUTRAL:
        _add(index, s, Entry("neutral", "neutral"))
    for sx, phrases in REPORT_SUPPLEMENT_SEX.items():
        for s in phrases:
            _add(index, s, Entry("sex", sx))
    for s in REPORT_SUPPLEMENT_LESION_WORDS:
        _add(index, s, Entry("lesion", "lesion"))
    for s in REPORT_SUPPLEMENT_FLOW_WORDS:
        _add(index, s, Entry("flow", "flow"))
    for s in REPORT_SUPPLEMENT_NORMAL_STUDY:
        _add(index, s, Entry("tag", "normal", "diagnosis"))
    for (dim, tag), phrases in REPORT_SUPPLEMENT_TAG_SYNONYMS.items():
        if "+" in tag:
            for s in phrases:
                _add(index, s, Entry("tag", tag, dim))
    for f in cf.CLINICAL_FINDINGS:
        for s in f.phrases:
            _add(index, s, Entry("finding", f.id, "finding"))
    for fid, phrases in cf.CLINICAL_NORMAL_PHRASES.items():
        for s in phrases:
            _add(index, s, Entry("finding_normal", fid, "finding"))
    for fid, phrases in REPORT_SUPPLEMENT_ECHO_NORMAL_COMBOS.items():
        for s in phrases:
            _add(index, s, Entry("echo_normal", fid, "echo"))
    for m in cf.REPORT_MEASUREMENTS:
        for s in m.phrases:
            key = norm_tokens(s)
            if not any(e.kind == "measurement" for e in index.get(key, ())):
                _add(index, s, Entry("measurement", m.id))
    for name, phrases in cf.LOCATION_PHRASES.items():
        for s in phrases:
            key = norm_tokens(s)
            if key and not index.get(key):
                _add(index, s, Entry("place", name))
    for dim, tag in REPORT_SUPPLEMENT_OVERRIDES:
        for s in REPORT_SUPPLEMENT_TAG_SYNONYMS.get((dim, tag), ()):
            index[norm_tokens(s)] = [Entry("tag", tag, dim)]
    return {k: tuple(v) for k, v in index.items()}


def _view_phrases(view: str, views_tx) -> list[str]:
    got = views_tx.get(view) if isinstance(views_tx, dict) else None
    if got is None:
        return []
    if isinstance(got, str):
        return [got]
    if hasattr(got, "phrase"):
        return _syns(got)
    return list(got)


@functools.lru_cache(maxsize=1)
def predicate_index() -> dict[tuple[str, ...], tuple[str, tuple[Entry, ...]]]:
    """noun-part tokens -> (predicate adjective, entries) for phrases like "dilated LV" / "normal LV size"."""
    out: dict[tuple[str, ...], tuple[str, tuple[Entry, ...]]] = {}
    for key, entries in phrase_index().items():
        if len(key) >= 2 and key[0] in REPORT_SUPPLEMENT_PREDICATES:
            ents = tuple(e for e in entries if e.kind in ("echo", "echo_normal", "finding"))
            if ents:
                out.setdefault(key[1:] + (key[0],), (key[0], ents))
    return out


@functools.lru_cache(maxsize=1)
def known_words() -> frozenset[str]:
    """Every normalised token of the vocabulary (used to decide what counts as an unknown term)."""
    words: set[str] = set()
    for key in phrase_index():
        words.update(key)
    words.update(REPORT_SUPPLEMENT_GRADES)
    words.update(REPORT_SUPPLEMENT_LINKS)
    return frozenset(words)


def grades_for(finding_id: str) -> tuple[str, ...]:
    """Grade ids the taxonomy allows for an echo or clinical finding (empty when ungraded)."""
    if finding_id in CLINICAL:
        return CLINICAL[finding_id].grades
    f = tx.ECHO_FINDINGS.get(finding_id)
    g = getattr(f, "grades", None) if f is not None else None
    if not g:
        return ()
    if isinstance(g, dict):
        return tuple(g.keys())
    return tuple(x if isinstance(x, str) else getattr(x, "id", getattr(x, "name", str(x))) for x in g)
