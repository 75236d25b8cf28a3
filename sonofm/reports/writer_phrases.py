"""Surface forms for the report writer: finding phrases and synonyms that parse back, measurement
sentences and values (see :mod:`sonofm.reports.writer`).
"""

from __future__ import annotations

import functools
import re

import numpy as np

from sonofm import taxonomy as tx
from sonofm.reports import lexicon as lx
from sonofm.reports.consistency import word_fits
from sonofm.reports.measurements import fmt_number, format_length, unit_of_measurement
from sonofm.reports.parser import parse_report
from sonofm.reports.schema import Finding, Status

_ADJ_DIMS = ("shape", "margin", "echogenicity")
_COMPOSITION = ("solid", "cystic", "mixed_cystic_solid", "spongiform")
_NOUNISH = re.compile(
    r"\b(shape|margins?|borders?|appearance|pattern|orientation|composition|component|"
    r"echotexture|relative|to|the|than it is|as|score|grade|in)\b"
)


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _pick(rng: np.random.Generator, items):
    items = list(items)
    return items[int(rng.integers(len(items)))]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def _parses_to(text: str, dim: str, tag: str) -> bool:
    r = parse_report(text)
    got = {(f.dimension, f.tag, f.status) for f in r.study.findings}
    return got == {(dim, tag, Status.PRESENT)} and not r.study.measurements


_ADJ_END = (
    "ed",
    "ic",
    "ar",
    "al",
    "ous",
    "like",
    "ent",
    "ant",
    "oid",
    "ine",
    "ive",
    "ish",
    "wide",
    "tall",
    "oval",
    "round",
    "solid",
    "free",
    "filled",
    "form",
    "distinct",
    "smooth",
    "rounded",
)


def _adjectival(c: str) -> bool:
    last = re.split(r"[\s-]", c)[-1]
    return last.endswith(_ADJ_END) and not last.endswith(("ment", "tion", "sion", "ity", "ness", "ings"))


@functools.cache
def _forms(dim: str, tag: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(adjective forms, noun-phrase forms) of a tag, each checked to parse back to the tag alone."""
    if dim == "finding":  # a clinical finding outside the 9 dimensions (parsed from free text)
        return (), _clinical_forms(tag)
    t = tx.get_tag(dim, tag)
    cands = list(dict.fromkeys([t.phrase.lower(), *t.synonyms]))
    adj: list[str] = []
    noun: list[str] = []
    for c in cands:
        if (
            any(ch.isdigit() for ch in c)
            or len(c) <= 3
            or c in ("bright", "smooth", "shadow", "parallel", "ete")
            or " in a " in c
            or " to the " in c
            or " than the " in c
            or c.count(" ") > 3
            or c.endswith("enhancing")
        ):
            continue
        if _adjectival(c):
            if not _NOUNISH.search(c) and _parses_to(f"A {c} lesion.", dim, tag):
                adj.append(c)
        elif _parses_to(f"There is {c}.", dim, tag):
            if dim == "diagnosis" and c.endswith("s") and not c.endswith("ss"):
                continue
            noun.append(c)
    if not noun and not adj:
        noun = [t.phrase.lower()]
    return tuple(adj), tuple(noun)


@functools.cache
def _clinical_forms(fid: str) -> tuple[str, ...]:
    """Noun forms of a clinical finding (`sonofm.taxonomy.findings`: hydronephrosis, malignancy,
    ...). Simulated reports never hold one, but a parsed draft or a user's text can ("suspicious for
    malignancy"), and grounding writes such a study again."""
    if fid not in lx.CLINICAL:
        raise ValueError(f"unknown clinical finding {fid!r}")
    # the first phrase that reads back: a finding's later phrases can be narrower terms
    # ("germ cell tumor" is read as malignancy, but is not what a draft saying "malignancy" meant)
    cands = list(dict.fromkeys(p.lower() for p in lx.CLINICAL[fid].phrases))
    good = [c for c in cands if _parses_to(f"There is {c}.", "finding", fid)]
    return tuple((good or cands)[:1])


def clinical_phrase(f: Finding) -> str:
    """A clinical finding's phrase with its grade ("moderate mitral regurgitation")."""
    return " ".join(x for x in (f.grade, _clinical_forms(f.tag)[0]) if x)


def finding_phrase(f: Finding, rng: np.random.Generator | None = None) -> str:
    """A noun phrase for a tag or echo finding (first/preferred form when rng is None)."""
    if f.dimension == "echo":
        syns = _echo_forms(f.tag)
        return syns[0] if rng is None else _pick(rng, syns)
    adj, noun = _forms(f.dimension, f.tag)
    if not noun:
        noun = tuple(f"{a} {_HEAD.get(f.dimension, 'appearance')}" for a in adj)
    return noun[0] if rng is None else _pick(rng, noun)


# noun a lone adjective form is attached to when a noun phrase is needed ("avascular" -> "avascular pattern")
_HEAD = {
    "shape": "shape",
    "margin": "margins",
    "echogenicity": "echotexture",
    "internal": "content",
    "posterior": "posterior features",
    "vascularity": "pattern on colour Doppler",
}


@functools.cache
def _echo_forms(fid: str) -> tuple[str, ...]:
    d = tx.ECHO_FINDINGS[fid]
    out = []
    for c in dict.fromkeys([d.phrase.lower(), *d.synonyms]):
        r = parse_report(f"There is {c}.")
        if {(f.dimension, f.tag, f.status) for f in r.study.findings} == {("echo", fid, Status.PRESENT)}:
            out.append(_fix_case(c))
    return tuple(out) or (d.phrase,)


@functools.cache
def _echo_normal_forms(fid: str) -> tuple[str, ...]:
    out = []
    for c in lx.REPORT_SUPPLEMENT_ECHO_NORMAL.get(fid, ()):
        r = parse_report(f"{c}.")
        if {(f.dimension, f.tag, f.status) for f in r.study.findings} == {("echo", fid, Status.ABSENT)}:
            out.append(c)
    return tuple(out)


_ABBREV = re.compile(
    r"\b(lv|la|rv|ra|ef|lvef|lvh|lae|edv|esv|ivs|lvpw|tapse|imt|cimt|plax|psax|ap|mv|pm|lvid|"
    r"lvedv|lvesv|pwd|psla|lav|lvidd|lvids|lvedd|lvesd|ivsd|lvpwd|lavi|a4c|a2c|a3c|sc4c|aplax|cca|"
    r"ica|eca|gb|ete|ap2|ap3|ap4)\b"
)


def _fix_case(s: str) -> str:
    """Lowercase vocabulary -> report casing for abbreviations ("lv systolic" -> "LV systolic")."""
    s = _ABBREV.sub(lambda m: m.group(0).upper(), s)
    return (
        s.replace("LVIDD", "LVIDd")
        .replace("LVIDS", "LVIDs")
        .replace("IVSD", "IVSd")
        .replace("LVPWD", "LVPWd")
        .replace("e/e'", "E/e'")
        .replace("LAVI", "LAVI")
    )


def _fitting(
    forms: tuple[str, ...], organ: str | None, present: set[tuple[str, str]], keep_empty: bool = False
) -> tuple[str, ...]:
    """The surface forms that fit this organ and lesion (`consistency.word_fits`); never empty
    unless `keep_empty` (then the caller falls back to another form kind)."""
    ok = tuple(w for w in forms if word_fits(w, organ, present))
    return ok if ok or keep_empty else forms[:1]


def _noun_forms(f: Finding) -> tuple[str, ...]:
    adj, noun = _forms(f.dimension, f.tag)
    return noun or tuple(f"{a} {_HEAD.get(f.dimension, 'appearance')}" for a in adj)


def _measure_sentence(mid: str, value: float, rng: np.random.Generator, name: str | None = None) -> str:
    return _cap(_measure_sentence_raw(mid, value, rng, name))


def _measure_sentence_raw(mid: str, value: float, rng: np.random.Generator, name: str | None = None) -> str:
    name = name or _measure_name(mid, rng)
    vtxt = _value_text(mid, value, rng)
    if mid == "lvef_pct":
        return _pick(
            rng,
            (
                f"{name} is estimated at {vtxt}.",
                f"{name} {vtxt}.",
                f"{name} is {vtxt}.",
                f"{name} measured at {vtxt}.",
                f"The {name} is visually estimated at {vtxt}.",
            ),
        )
    return _pick(
        rng,
        (
            f"The {name} measures {vtxt}.",
            f"{name} {vtxt}.",
            f"{name} is {vtxt}.",
            f"{name}: {vtxt}.",
            f"{name} measures {vtxt}.",
        ),
    )


@functools.cache
def _measure_names(mid: str) -> tuple[str, ...]:
    m = tx.MEASUREMENTS[mid]
    out = []
    probe = (
        "7"
        if unit_of_measurement(mid) == "ratio"
        else "7 " + {"pct": "%", "ml": "mL", "ml_m2": "mL/m2"}.get(unit_of_measurement(mid), "mm")
    )
    for c in dict.fromkeys([m.phrase, *m.synonyms]):
        if len(c) <= 2 or c in ("e/e", "ivs", "width", "height", "length", "transverse", "ap"):
            continue
        r = parse_report(f"{c} {probe}.")
        if set(r.study.measurements) == {mid} and not r.study.findings:
            out.append(_fix_case(c))
    return tuple(out) or (m.phrase,)


def _measure_name(mid: str, rng: np.random.Generator) -> str:
    return _pick(rng, _measure_names(mid))


def _value_text(mid: str, value: float, rng: np.random.Generator) -> str:
    unit = unit_of_measurement(mid)
    dec = tx.MEASUREMENTS[mid].decimals if mid in tx.MEASUREMENTS else 1
    if unit == "mm":
        # cm only where it reads naturally: whole millimetres ("61 mm" <-> "6.1 cm")
        use_cm = rng.random() < 0.4 and value >= 10 and float(value).is_integer()
        return format_length(value, dec, use_cm)
    num = fmt_number(value, dec)
    if "." in num:
        num = num.rstrip("0").rstrip(".")
    if unit == "pct":
        return f"{num}%"
    if unit == "ml":
        return f"{num} {_pick(rng, ('mL', 'ml'))}"
    if unit == "ml_m2":
        return f"{num} {_pick(rng, ('mL/m2', 'ml/m2', 'mL/m²'))}"
    return num
