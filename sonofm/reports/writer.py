"""Structured `Study` -> report text ("Findings: ... Impression: ...") with varied phrasing.

Variation (seeded by the rng): taxonomy synonyms, several sentence templates, sentence order,
mm vs cm, explicit negatives and hedges in several forms. Every surface form the writer may use
is checked once against the parser (a synonym is only used if `parse_report` maps it back to the
same tag on its own), so captions stay parseable however the taxonomy grows. The impression is
derived from the findings: diagnosis and organ, the TI-RADS level / BI-RADS category from the
taxonomy's risk rules, graded echo findings ("moderately reduced LV systolic function").
"""

from __future__ import annotations

import functools
import re

import numpy as np

from sonofm import taxonomy as tx
from sonofm.reports import lexicon as lx
from sonofm.reports.attributes import study_attributes
from sonofm.reports.consistency import word_fits
from sonofm.reports.measurements import fmt_number, format_dims, format_length, unit_of_measurement
from sonofm.reports.schema import Finding, Status, Study

__all__ = ["write_report", "study_attributes", "finding_phrase"]

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
    from sonofm.reports.parser import parse_report

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
    from sonofm.reports.parser import parse_report

    d = tx.ECHO_FINDINGS[fid]
    out = []
    for c in dict.fromkeys([d.phrase.lower(), *d.synonyms]):
        r = parse_report(f"There is {c}.")
        if {(f.dimension, f.tag, f.status) for f in r.study.findings} == {("echo", fid, Status.PRESENT)}:
            out.append(_fix_case(c))
    return tuple(out) or (d.phrase,)


@functools.cache
def _echo_normal_forms(fid: str) -> tuple[str, ...]:
    from sonofm.reports.parser import parse_report

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


# ------------------------------------------------------------------------- lesion studies
def _organ_name(organ: str, rng: np.random.Generator) -> str:
    o = tx.get_organ(organ)
    good = [
        s
        for s in dict.fromkeys([o.phrase, *o.synonyms])
        if len(s) > 3
        and not s.endswith("s")
        and not s.startswith(("right ", "left "))
        and not (" " not in s and s.endswith(("ic", "al", "ar", "ine", "ous", "an")))
    ]
    return _pick(rng, good or [o.phrase])


_LOCATED = ("thyroid", "breast", "liver", "kidney", "spleen", "pancreas", "prostate")


def _location(organ: str, rng: np.random.Generator) -> str:
    o = tx.get_organ(organ)
    name = _organ_name(organ, rng)
    locs = [x for x in o.locations if "o'clock" not in x and "segment" not in x] if organ in _LOCATED else []
    if locs and rng.random() < 0.5:
        loc = _pick(rng, locs)
        if organ in loc or name in loc:
            return f"the {loc}"
        return f"the {loc} of the {name}"
    return f"the {name}"


_LESION_DIMS = ("lesion_width_mm", "lesion_height_mm", "lesion_length_mm")


def _size_text(study: Study, rng: np.random.Generator) -> str | None:
    """ "W x H [x L] mm" when the transverse and AP diameters are both known, else None.

    The parser reads an "A x B [x C]" expression as width x height [x length], so other
    combinations (a longitudinal image: length and height) are stated by name instead
    (`_lesion_dim_sentences`).
    """
    if not all(k in study.measurements for k in _LESION_DIMS[:2]):
        return None
    dims = [study.measurements[k] for k in _LESION_DIMS if k in study.measurements]
    dec = 0 if all(float(v).is_integer() for v in dims) else 1
    use_cm = rng.random() < 0.5
    sep = _pick(rng, (" x ", " x ", " × ", "x"))
    return format_dims(dims, dec, use_cm, sep=sep)


def _lesion_dim_sentences(study: Study, rng: np.random.Generator) -> list[str]:
    """One named sentence per lesion diameter the size expression does not carry."""
    if all(k in study.measurements for k in _LESION_DIMS[:2]):
        return []
    return [_measure_sentence(k, study.measurements[k], rng) for k in _LESION_DIMS if k in study.measurements]


def _article(phrase: str) -> str:
    """ "A"/"An" for the phrase that follows (numbers read aloud: "an 8 mm", "an 11 x 8 mm")."""
    p = phrase.lower()
    vowel = (
        p[:1] in "aeiou"
        or p.startswith(("8", "11 ", "11x", "11.", "18 ", "18x", "18."))
        or (p[:2] in ("80", "81", "82", "83", "84", "85", "86", "87", "88", "89") and not p[2:3].isdigit())
    )
    return "An" if vowel else "A"


def _lesion_sentences(study: Study, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(lesion description sentences, negative/hedge sentences)."""
    pres = [f for f in study.findings if f.status is Status.PRESENT and f.dimension != "echo"]
    keys = {f.key() for f in pres}
    diag = next((f.tag for f in pres if f.dimension == "diagnosis"), None)
    diag_word = _pick(rng, _fitting(_forms("diagnosis", diag)[1], study.organ, keys)) if diag else "lesion"
    adjs: list[str] = []
    clauses: list[str] = []  # noun phrases for "with ..." / own sentences
    preds: list[str] = []  # adjectives for "It is ..." sentences
    flow_none: list[str] = []  # "No flow on colour Doppler." for an avascular lesion
    for f in pres:
        if f.dimension == "diagnosis":
            continue
        if (f.dimension, f.tag) == ("vascularity", "avascular") and rng.random() < 0.3:
            word = _pick(rng, ("flow", "vascularity", "colour flow", "Doppler flow"))
            flow_none.append(f"No {word} on colour Doppler." if "flow" in word else f"No {word} is detected.")
            continue
        adj_forms, noun_forms = (_fitting(x, study.organ, keys, True) for x in _forms(f.dimension, f.tag))
        if not adj_forms and not noun_forms:
            adj_forms, noun_forms = _forms(f.dimension, f.tag)
        inline = (f.dimension in _ADJ_DIMS or f.tag in _COMPOSITION) and adj_forms and rng.random() < 0.75
        if inline:
            adjs.append(_pick(rng, adj_forms))
        elif noun_forms and (not adj_forms or rng.random() < 0.6):
            clauses.append(_pick(rng, noun_forms))
        else:
            a = _pick(rng, adj_forms)
            if f.dimension == "margin":
                clauses.append(f"{a} margins")
            else:
                preds.append(a + (" on colour Doppler" if f.dimension == "vascularity" else ""))
    rng.shuffle(adjs)
    size = _size_text(study, rng)
    loc = _location(study.organ, rng) if study.organ else "the scanned region"
    adj_txt = ", ".join(adjs[:-1]) + (" " if len(adjs) > 1 else "") + (adjs[-1] if adjs else "")
    if len(adjs) > 1 and rng.random() < 0.5:
        adj_txt = " ".join(adjs)
    np_ = " ".join(x for x in (adj_txt, diag_word) if x)
    article = _article(np_)
    sents: list[str] = []
    tmpl = int(rng.integers(4))
    if tmpl == 0:
        size_p = f" measuring {size}" if size else ""
        sents.append(f"{article} {np_} is seen in {loc}{size_p}.")
    elif tmpl == 1:
        size_p = f"{size} " if size else ""
        sents.append(f"{_article(size_p + np_)} {size_p}{np_} is identified in {loc}.")
    elif tmpl == 2:
        size_p = f", measuring {size}" if size else ""
        sents.append(f"{_cap(loc[4:] if loc.startswith('the ') else loc)}: {np_.lower()}{size_p}.")
    else:
        size_p = f" It measures {size}." if size else ""
        sents.append(f"There is {article.lower()} {np_} in {loc}.{size_p}")
    rng.shuffle(clauses)
    while clauses:
        c = clauses.pop()
        form = int(rng.integers(4))
        if form == 0 and clauses:
            c2 = clauses.pop()
            sents.append(f"The lesion shows {c} and {c2}.")
        elif form == 1:
            sents.append(f"There is {c}.")
        elif form == 2:
            verb = "are" if c.endswith("s") and not c.endswith(("ss", "is")) else "is"
            sents.append(f"{_cap(c)} {verb} noted.")
        else:
            sents.append(f"It demonstrates {c}.")
    sents += _lesion_dim_sentences(study, rng)
    sents += flow_none
    for a in preds:
        sents.append(_pick(rng, (f"It is {a}.", f"The lesion is {a}.", f"The {diag_word} appears {a}.")))
    extra: list[str] = []
    for f in study.findings:
        if f.dimension == "echo" or f.status is Status.PRESENT:
            continue
        noun = _pick(rng, _fitting(_noun_forms(f), study.organ, keys))
        doppler = " on colour Doppler" if f.dimension == "vascularity" and rng.random() < 0.6 else ""
        if f.status is Status.ABSENT:
            extra.append(
                _pick(
                    rng,
                    (
                        f"No {noun}{doppler}.",
                        f"No evidence of {noun}{doppler}.",
                        f"There is no {noun}{doppler}.",
                        f"{_cap(noun)} not seen{doppler}.",
                        f"Without {noun}.",
                    ),
                )
            )
        else:
            extra.append(
                _pick(
                    rng,
                    (
                        f"Possible {noun}.",
                        f"{_cap(noun)} cannot be excluded.",
                        f"Questionable {noun}.",
                        f"Cannot exclude {noun}.",
                        f"Findings suspicious for {noun}.",
                    ),
                )
            )
    return sents, extra


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
    from sonofm.reports.parser import parse_report

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


def _impression_lesion(study: Study, rng: np.random.Generator) -> str:
    pres = {f.dimension: f.tag for f in study.findings if f.status is Status.PRESENT}
    organ = tx.get_organ(study.organ).phrase if study.organ else "region"
    diag = pres.get("diagnosis")
    if diag == "normal" or diag is None:
        return _pick(
            rng,
            (
                f"Normal ultrasound of the {organ}.",
                f"Unremarkable {organ}.",
                f"Normal sonographic appearance of the {organ}.",
            ),
        )
    parts = []
    for dim in ("echogenicity", "internal"):
        if dim in pres and not (
            dim == "internal" and pres[dim] not in ("solid", "mixed_cystic_solid", "spongiform")
        ):
            adj = _forms(dim, pres[dim])[0]
            if adj and rng.random() < 0.6:
                parts.append(adj[0])
    noun = _forms("diagnosis", diag)[1][0]
    s = f"{_cap(' '.join([*parts, noun]))} in the {organ}"
    a = study.assessment or {}
    if "TI-RADS" in a:
        s += _pick(
            rng,
            (
                f", ACR TI-RADS {a['TI-RADS']}",
                f" (ACR TI-RADS {a['TI-RADS']})",
                f". TI-RADS {a['TI-RADS'][-1]}",
            ),
        )
    if "BI-RADS" in a:
        s += _pick(rng, (f", BI-RADS {a['BI-RADS']}", f" (BI-RADS category {a['BI-RADS']})"))
    return s + "."


def _write_lesion(study: Study, rng: np.random.Generator) -> str:
    sents: list[str] = []
    diag = next(
        (f.tag for f in study.findings if f.dimension == "diagnosis" and f.status is Status.PRESENT), None
    )
    organ_txt = _organ_name(study.organ, rng) if study.organ else "region"
    meas = []
    if "kidney_length_mm" in study.measurements:
        v = study.measurements["kidney_length_mm"]
        vt = _value_text("kidney_length_mm", v, rng)
        meas.append(
            _pick(
                rng,
                (
                    f"The {organ_txt} measures {vt} in length.",
                    f"Renal length is {vt}.",
                    f"Bipolar length {vt}.",
                ),
            )
        )
    if "imt_mm" in study.measurements:
        meas.append(_measure_sentence("imt_mm", study.measurements["imt_mm"], rng))
    if diag == "normal" or diag is None:
        sents.append(
            _pick(
                rng,
                (
                    f"The {organ_txt} is unremarkable.",
                    f"Normal sonographic appearance of the {organ_txt}.",
                    f"The {organ_txt} appears normal. No focal lesion.",
                    f"The {organ_txt} is within normal limits.",
                ),
            )
        )
        sents += meas
        extra = [
            f"No {_pick(rng, _fitting(_noun_forms(f), study.organ, set()))}."
            for f in study.findings
            if f.status is Status.ABSENT and f.dimension != "echo"
        ]
        sents += extra
    else:
        desc, extra = _lesion_sentences(study, rng)
        rng.shuffle(extra)
        sents += meas + desc + extra
    findings = " ".join(sents)
    return f"Findings: {findings}\nImpression: {_impression_lesion(study, rng)}"


# ---------------------------------------------------------------------------- echo studies
def _echo_present_text(f: Finding, rng: np.random.Generator) -> str:
    form = _pick(rng, _echo_forms(f.tag))
    if f.grade is None:
        return form
    first = form.split()[0].lower()
    if first in lx.REPORT_SUPPLEMENT_PREDICATES and f.grade in lx.GRADE_ADVERB:
        return f"{lx.GRADE_ADVERB[f.grade]} {form}"
    return f"{f.grade} {form}"


def _echo_absent_text(f: Finding, rng: np.random.Generator) -> str:
    normals = _echo_normal_forms(f.tag)
    if normals and rng.random() < 0.5:
        n = _pick(rng, normals)
        return f"{_cap(_fix_case(n))}."
    return _pick(
        rng, (f"No {_pick(rng, _echo_forms(f.tag))}.", f"No evidence of {_pick(rng, _echo_forms(f.tag))}.")
    )


def _view_text(view: str, rng: np.random.Generator) -> str:
    v = tx.VIEWS.get(view) if hasattr(tx, "VIEWS") else None
    phrases = [v.phrase] if v else []
    phrases += list(lx.REPORT_SUPPLEMENT_VIEWS.get(view, ()))[:2]
    return _fix_case(_pick(rng, phrases or [view]))


def _write_echo(study: Study, rng: np.random.Generator) -> str:
    head: list[str] = []
    if study.view:
        vt = _view_text(study.view, rng)
        if study.frame:
            fr = {"ED": ("end-diastolic frame", "end-diastole"), "ES": ("end-systolic frame", "end-systole")}
            fp = _pick(rng, fr.get(study.frame, (study.frame,)))
            head.append(
                _pick(
                    rng,
                    (
                        f"{_cap(vt)}, {fp}.",
                        f"Image: {vt} at {fp}." if "frame" not in fp else f"Image: {vt}, {fp}.",
                    ),
                )
            )
        else:
            head.append(f"{_cap(vt)}.")
    elif study.frame:
        head.append(f"{_cap('end-diastolic frame' if study.frame == 'ED' else 'end-systolic frame')}.")
    if study.sex:
        word = {"F": "female", "M": "male"}[study.sex]
        head.append(_pick(rng, (f"{_cap(word)} patient.", f"Sex: {study.sex}.")))
    meas: list[str] = []
    pe_done = False
    present = [f for f in study.findings if f.dimension == "echo" and f.status is Status.PRESENT]
    absent = [f for f in study.findings if f.dimension == "echo" and f.status is Status.ABSENT]
    body: list[str] = []
    for f in present:
        txt = _echo_present_text(f, rng)
        if f.tag == "pericardial_effusion" and "pe_size_mm" in study.measurements and rng.random() < 0.6:
            txt += f" measuring {_value_text('pe_size_mm', study.measurements['pe_size_mm'], rng)}"
            pe_done = True
        body.append(_cap(txt) + ".")
    for f in absent:
        body.append(_echo_absent_text(f, rng))
    for mid, v in study.measurements.items():
        if mid == "pe_size_mm" and pe_done:
            continue
        meas.append(_measure_sentence(mid, v, rng))
    rng.shuffle(meas)
    rng.shuffle(body)
    order = int(rng.integers(3))
    sents = head + (meas + body if order < 2 else body + meas)
    imp: list[str] = []
    for f in present:
        imp.append(_cap(_echo_present_text(f, rng)) + ".")
    diagnoses = [f.tag for f in study.findings if f.dimension == "diagnosis" and f.status is Status.PRESENT]
    if "normal" in diagnoses or (not present and not diagnoses):
        imp.append(_pick(rng, ("Normal echocardiogram.", "Normal study.", "Normal echocardiographic study.")))
    for d in diagnoses:
        if d == "fluid_collection":
            # Stated explicitly, not folded into "pericardial effusion": the parser reads "fluid
            # collection" as the diagnosis, so parse_report(write_report(s)) recovers it exactly
            # (tests/sim/test_integration.py::test_echo_effusion_diagnosis_round_trips).
            imp.append("Pericardial fluid collection.")
        elif d != "normal":
            imp.append(f"{_cap(_forms('diagnosis', d)[1][0])} noted.")
    pe_absent = any(f.tag == "pericardial_effusion" for f in absent)
    if pe_absent and rng.random() < 0.5:
        imp.append("No pericardial effusion.")
    return f"Findings: {' '.join(sents)}\nImpression: {' '.join(imp)}"


def write_report(study: Study, rng: np.random.Generator | int | None = None) -> str:
    """Report text for `study` ("Findings: ...\\nImpression: ..."), deterministic for a given rng/seed."""
    g = _rng(rng)
    if study.organ == "heart" or study.region == "heart" or study.view is not None:
        return _write_echo(study, g)
    return _write_lesion(study, g)
