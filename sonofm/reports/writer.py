"""Structured `Study` -> report text ("Findings: ... Impression: ...") with varied phrasing.

Variation (seeded by the rng): taxonomy synonyms, several sentence templates, sentence order,
mm vs cm, explicit negatives and hedges in several forms. Every surface form the writer may use
is checked once against the parser (a synonym is only used if `parse_report` maps it back to the
same tag on its own), so captions stay parseable however the taxonomy grows. The impression is
derived from the findings: diagnosis and organ, the TI-RADS level / BI-RADS category from the
taxonomy's risk rules, graded echo findings ("moderately reduced LV systolic function").
"""

from __future__ import annotations

import numpy as np

from sonofm import taxonomy as tx
from sonofm.reports.attributes import study_attributes
from sonofm.reports.measurements import format_dims
from sonofm.reports.schema import Finding, Status, Study
from sonofm.reports.writer_echo import (  # noqa: F401 (every name writer.py had is re-exported)
    _echo_absent_text,
    _echo_present_text,
    _view_text,
    _write_echo,
)
from sonofm.reports.writer_phrases import (  # noqa: F401 (every name writer.py had is re-exported)
    _ABBREV,
    _ADJ_DIMS,
    _ADJ_END,
    _COMPOSITION,
    _HEAD,
    _NOUNISH,
    _adjectival,
    _cap,
    _echo_forms,
    _echo_normal_forms,
    _fitting,
    _fix_case,
    _forms,
    _measure_name,
    _measure_names,
    _measure_sentence,
    _measure_sentence_raw,
    _noun_forms,
    _parses_to,
    _pick,
    _rng,
    _value_text,
    clinical_phrase,
    finding_phrase,
)

__all__ = ["write_report", "study_attributes", "finding_phrase"]


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


def _location(
    organ: str, rng: np.random.Generator, stated: str | None = None, side: str | None = None
) -> str:
    """Where the lesion is: the study's own location and side when it has them (a parsed draft or
    report: grounding must not move a right-lobe nodule to the left lobe), else a plausible one."""
    o = tx.get_organ(organ)
    name = _organ_name(organ, rng)
    if side in ("right", "left") and not (stated and side in stated):
        name = f"{side} {name}"
    if stated:
        return f"the {stated}" if organ in stated or name in stated else f"the {stated} of the {name}"
    if side in ("right", "left"):
        return f"the {name}"
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
    loc = (
        _location(study.organ, rng, study.location, study.laterality) if study.organ else "the scanned region"
    )
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


def _clinical_present(study: Study) -> list[Finding]:
    """Present clinical findings outside the 9 dimensions (`sonofm.taxonomy.findings`); simulated
    studies hold none, a parsed draft or a user's report can."""
    return [f for f in study.findings if f.dimension == "finding" and f.status is Status.PRESENT]


def _clinical_sentence(f: Finding, organ_txt: str, rng: np.random.Generator) -> str:
    phrase = clinical_phrase(f)
    return _pick(
        rng, (f"There is {phrase} in the {organ_txt}.", f"{_cap(phrase)} of the {organ_txt} is noted.")
    )


def _impression_lesion(study: Study, rng: np.random.Generator) -> str:
    pres = {f.dimension: f.tag for f in study.findings if f.status is Status.PRESENT}
    organ = tx.get_organ(study.organ).phrase if study.organ else "region"
    diag = pres.get("diagnosis")
    clinical = _clinical_present(study)
    if (diag == "normal" or diag is None) and clinical:
        named = ", ".join(clinical_phrase(f) for f in clinical)
        return f"{_cap(named)} ({organ})."
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
    clinical = _clinical_present(study)
    if (diag == "normal" or diag is None) and clinical:  # no lesion, but a finding (hydronephrosis)
        sided = f"{study.laterality} {organ_txt}" if study.laterality in ("right", "left") else organ_txt
        sents += [_clinical_sentence(f, sided, rng) for f in clinical] + meas
        sents += [
            f"{'No' if f.status is Status.ABSENT else 'Possible'} "
            f"{_pick(rng, _fitting(_noun_forms(f), study.organ, set()))}."
            for f in study.findings
            if f.status is not Status.PRESENT and f.dimension != "echo"
        ]
    elif diag == "normal" or diag is None:
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


def write_report(study: Study, rng: np.random.Generator | int | None = None) -> str:
    """Report text for `study` ("Findings: ...\\nImpression: ..."), deterministic for a given rng/seed."""
    g = _rng(rng)
    if study.organ == "heart" or study.region == "heart" or study.view is not None:
        return _write_echo(study, g)
    return _write_lesion(study, g)
