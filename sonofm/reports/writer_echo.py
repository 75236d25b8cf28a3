"""Echocardiography reports: present/absent findings, views, graded impressions
(see :mod:`sonofm.reports.writer`).
"""

from __future__ import annotations

import numpy as np

from sonofm import taxonomy as tx
from sonofm.reports import lexicon as lx
from sonofm.reports.schema import Finding, Status, Study
from sonofm.reports.writer_phrases import (
    _cap,
    _echo_forms,
    _echo_normal_forms,
    _fix_case,
    _forms,
    _measure_sentence,
    _pick,
    _value_text,
    clinical_phrase,
)

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
    # clinical findings outside the guideline set (mitral regurgitation, RWMA): simulated studies hold
    # none, a parsed draft or a user's report can, and grounding writes such a study again
    clinical = [
        (f, _cap(("possible " if f.status is Status.UNCERTAIN else "") + clinical_phrase(f)) + ".")
        for f in study.findings
        if f.dimension == "finding" and f.status is not Status.ABSENT
    ]
    body += [text for _, text in clinical]
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
    imp += [text for f, text in clinical if f.status is Status.PRESENT]
    if "normal" in diagnoses or (not present and not diagnoses and not clinical):
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
