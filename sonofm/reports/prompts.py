"""Text prompts built from the taxonomy: zero-shot ensembles, positive/negated pairs, hard negatives.

- `TEMPLATES` / `attribute_prompts` / `diagnosis_prompts` / `organ_prompts` / `view_prompts`:
  prompt ensembles (CLIP-style: the class embedding is the mean over templates and synonyms).
- `prompt_pair` / `all_prompt_pairs`: paired positive/negated prompts per finding (attribute tags
  and echo findings) for the softmax-over-{pos, neg} zero-shot disease classification of
  docs/methods.md section 2.
- `negated_captions`: the negation-aware loss's hard negatives: flip one finding's polarity or move
  one measurement across its guideline threshold, re-derive the findings, re-write the text with
  the writer, and keep it only if re-parsing shows a real change of meaning.
- `class_prompts`: the prompt ensemble of one class of a classification target (organ, region,
  view, diagnosis, body system, malignancy), shared by zero-shot eval and the web app.
- `refine_class_name`: a knowledge-based refiner expanding a class name into descriptive sentences
  from the taxonomy definitions.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from sonofm import taxonomy as tx
from sonofm.reports import lexicon as lx
from sonofm.reports.parser import parse_report
from sonofm.reports.sampling import echo_findings, risk_assessment, with_echo_diagnosis
from sonofm.reports.schema import Finding, Status, Study
from sonofm.reports.writer import _adjectival, finding_phrase, write_report

# "{}" is the finding phrase; "{organ}" is filled when an organ is given (else a neutral word)
TEMPLATES: tuple[str, ...] = (
    "an ultrasound image of {}.",
    "an ultrasound image of the {organ} showing {}.",
    "B-mode ultrasound showing {}.",
    "a sonogram demonstrating {}.",
    "ultrasound of the {organ} with {}.",
    "a grayscale ultrasound scan showing {}.",
    "{} on ultrasound.",
    "an ultrasound examination revealing {}.",
    "a medical ultrasound image showing {}.",
    "sonographic image with {}.",
)
DIAGNOSIS_TEMPLATES: tuple[str, ...] = (
    "an ultrasound image of a {} in the {organ}.",
    "B-mode ultrasound showing a {}.",
    "a sonogram of the {organ} with a {}.",
    "ultrasound of the {organ} demonstrating a {}.",
    "a {} on ultrasound.",
    "a grayscale ultrasound image of a {}.",
    "an ultrasound scan revealing a {} in the {organ}.",
    "a medical ultrasound image of a {}.",
    "sonographic appearance of a {}.",
)
NORMAL_TEMPLATES: tuple[str, ...] = (
    "an ultrasound image of a normal {organ}.",
    "B-mode ultrasound of the {organ} with normal appearance.",
    "a sonogram of an unremarkable {organ}.",
    "normal sonographic appearance of the {organ}.",
    "a normal {organ} on ultrasound.",
    "a grayscale ultrasound image of a normal {organ}.",
    "an ultrasound scan of the {organ} without abnormality.",
    "a medical ultrasound image of a healthy {organ}.",
)
ORGAN_TEMPLATES: tuple[str, ...] = (
    "an ultrasound image of the {}.",
    "B-mode ultrasound of the {}.",
    "a sonogram of the {}.",
    "ultrasound scan of the {}.",
    "a grayscale ultrasound image showing the {}.",
    "{} ultrasound.",
    "a medical ultrasound image of the {}.",
    "sonographic view of the {}.",
)
VIEW_TEMPLATES: tuple[str, ...] = (
    "an echocardiogram in the {}.",
    "echocardiography, {}.",
    "a transthoracic echo image, {}.",
    "cardiac ultrasound in the {}.",
    "an ultrasound image of the heart in the {}.",
    "{} of the heart.",
    "a B-mode echocardiographic {}.",
    "echo image acquired in the {}.",
)
# paired prompt templates: "{}" = the finding phrase
POSITIVE_TEMPLATES: tuple[str, ...] = (
    "ultrasound showing {}.",
    "there is {}.",
    "{} is present.",
    "the image demonstrates {}.",
    "{} is seen.",
    "findings consistent with {}.",
    "an ultrasound image with {}.",
    "{}.",
)
NEGATIVE_TEMPLATES: tuple[str, ...] = (
    "ultrasound showing no {}.",
    "there is no {}.",
    "{} is absent.",
    "the image demonstrates no {}.",
    "no {} is seen.",
    "no evidence of {}.",
    "an ultrasound image without {}.",
    "no {}.",
)


def _phrases(dimension: str, tag: str, k: int = 3) -> list[str]:
    """Up to `k` noun phrases of a tag; adjectives get a head noun ("a hypoechoic lesion")."""
    t = tx.get_tag(dimension, tag)
    raw = [t.phrase]
    for s in t.synonyms:
        if len(raw) >= k:
            break
        if s != t.phrase.lower() and len(s) > 3 and not any(c.isdigit() for c in s):
            raw.append(s)
    if dimension == "diagnosis":
        return raw
    return [f"{_a(p)} {p} lesion" if _adjectival(p) else p for p in raw]


def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _organ_word(organ: str | None) -> str:
    return tx.get_organ(organ).phrase if organ else "body"


def attribute_prompts(dimension: str, tag: str, organ: str | None = None, synonyms: int = 1) -> list[str]:
    """Prompt ensemble for one attribute tag (>= 8 templates x up to `synonyms` surface forms)."""
    if dimension == "diagnosis":
        return diagnosis_prompts(tag, organ, synonyms)
    if dimension == "organ":
        return organ_prompts(tag)
    if dimension == "body_system":
        s = next(x for x in tx.BODY_SYSTEMS if x.id == tag)
        return [t.format(s.phrase) for t in ORGAN_TEMPLATES]
    org = _organ_word(organ)
    temps = [t for t in TEMPLATES if organ is not None or "{organ}" not in t]
    return [t.format(p, organ=org) for p in _phrases(dimension, tag, synonyms) for t in temps]


def diagnosis_prompts(diagnosis: str, organ: str | None = None, synonyms: int = 1) -> list[str]:
    """Prompt ensemble for a diagnosis tag ("normal" gets its own templates)."""
    org = _organ_word(organ)
    if diagnosis == "normal":
        return [t.format(organ=org if organ else "organ") for t in NORMAL_TEMPLATES]
    temps = [t for t in DIAGNOSIS_TEMPLATES if organ is not None or "{organ}" not in t]
    if organ is None:
        temps += ["an ultrasound image of a {}.", "a sonogram with a {}.", "ultrasound findings of a {}."]
    return [t.format(p, organ=org) for p in _phrases("diagnosis", diagnosis, synonyms) for t in temps]


def organ_prompts(organ: str) -> list[str]:
    """Prompt ensemble for an organ (organ classification)."""
    o = tx.get_organ(organ)
    return [t.format(o.phrase) for t in ORGAN_TEMPLATES]


def view_prompts(view: str) -> list[str]:
    """Prompt ensemble for an echo view (view classification)."""
    v = tx.VIEWS[view]
    return [t.format(v.phrase) for t in VIEW_TEMPLATES]


@dataclass(frozen=True)
class PromptPair:
    """Positive and negated prompts of one finding; zero-shot p = softmax over their mean scores."""

    dimension: str
    tag: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]


def class_prompts(target: str, cls: str) -> list[str]:
    """The prompt ensemble of class `cls` of a classification target (zero-shot eval and serving)."""
    if target == "diagnosis":
        return diagnosis_prompts(cls)
    if target == "organ":
        return organ_prompts(cls)
    if target == "region":
        return [p for o in tx.organs_in(cls) for p in organ_prompts(o.id)]
    if target == "view":
        return view_prompts(cls)
    if target == "body_system":
        return attribute_prompts("body_system", cls)
    if target == "malignant":
        word = "malignant" if cls == "malignant" else "benign"
        return [t.format(f"a {word} lesion") for t in TEMPLATES if "{organ}" not in t]
    return refine_class_name(cls)


def _echo_measure_phrases(fid: str) -> tuple[list[str], list[str]]:
    """Measurement-grounded statements ("LVEF is reduced" / "LVEF is normal") for an echo finding."""
    d = tx.ECHO_FINDINGS[fid]
    m = tx.MEASUREMENTS[d.measurements[0]]
    abbr = next((s for s in m.synonyms if s.isalpha() and len(s) <= 5), m.phrase)
    name = abbr.upper() if abbr.isalpha() and len(abbr) <= 5 else abbr
    direction = tx.abnormal_direction(fid)
    thr = tx.threshold_for(fid, m.id)
    unit = m.unit
    word = "increased" if direction == "above" else "reduced"
    cmp_pos = ">" if direction == "above" else "<"
    cmp_neg = "<=" if direction == "above" else ">="
    sep = "" if unit == "%" else " "
    pos = [f"{name} is {word}.", f"{name} {cmp_pos} {thr:g}{sep}{unit}".strip() + "."]
    neg = [f"{name} is normal.", f"{name} {cmp_neg} {thr:g}{sep}{unit}".strip() + "."]
    if fid == "pericardial_effusion":
        pos, neg = ["there is a pericardial effusion."], ["no pericardial effusion."]
    return pos, neg


def prompt_pair(dimension: str, tag: str) -> PromptPair:
    """Positive/negated prompts for an attribute tag or, with dimension "echo", an echo finding."""
    if dimension == "echo":
        forms = [tx.ECHO_FINDINGS[tag].phrase, *list(tx.ECHO_FINDINGS[tag].synonyms)[1:2]]
        pos = [t.format(f) for f in forms for t in POSITIVE_TEMPLATES]
        neg = [t.format(f) for f in forms for t in NEGATIVE_TEMPLATES]
        mp, mn = _echo_measure_phrases(tag)
        pos += mp
        neg += mn + [n[:1].upper() + n[1:] + "." for n in lx.REPORT_SUPPLEMENT_ECHO_NORMAL.get(tag, ())[:2]]
        return PromptPair("echo", tag, tuple(pos), tuple(neg))
    phrase = finding_phrase(Finding(dimension, tag))
    return PromptPair(
        dimension,
        tag,
        tuple(t.format(phrase) for t in POSITIVE_TEMPLATES),
        tuple(t.format(phrase) for t in NEGATIVE_TEMPLATES),
    )


def all_prompt_pairs(include_tags: bool = True) -> dict[tuple[str, str], PromptPair]:
    """Prompt pairs for every echo finding and (optionally) every descriptor tag."""
    out = {("echo", f): prompt_pair("echo", f) for f in tx.ECHO_FINDINGS}
    if include_tags:
        for dim in ("shape", "margin", "echogenicity", "internal", "posterior", "vascularity"):
            for t in tx.tags(dim):
                out[(dim, t.id)] = prompt_pair(dim, t.id)
    return out


# ------------------------------------------------------------------------ negated captions
def _meaning(study: Study) -> set[tuple[str, str, str, str | None]]:
    return {(f.dimension, f.tag, f.status.value, f.grade) for f in study.findings}


def _move_measurement(study: Study, rng: np.random.Generator) -> Study | None:
    """Move one guideline measurement across its threshold; findings re-derived by the guidelines."""
    cands = [
        (fid, m)
        for fid, rule in tx.GUIDELINE_RULES.items()
        for m in rule.measurements
        if m in study.measurements
    ]
    if not cands:
        return None
    fid, m = cands[int(rng.integers(len(cands)))]
    normal_v, abnormal_v = tx.boundary_values(fid, m, study.sex)
    now_abnormal = tx.is_abnormal(fid, m, study.measurements[m], study.sex)
    step = 10.0 ** -tx.MEASUREMENTS[m].decimals
    jump = float(rng.integers(0, 8)) * step * (1 if tx.MEASUREMENTS[m].decimals == 0 else 10)
    up = tx.abnormal_direction(fid) == "above"
    if now_abnormal:
        v = normal_v - jump if up else normal_v + jump
    else:
        v = abnormal_v + jump if up else abnormal_v - jump
    v = tx.round_measurement(m, max(v, step))
    new = copy.deepcopy(study)
    new.measurements[m] = v
    if m == "lvef_pct" and "lv_edv_ml" in new.measurements and "lv_esv_ml" in new.measurements:
        new.measurements["lv_esv_ml"] = tx.round_measurement(
            "lv_esv_ml", new.measurements["lv_edv_ml"] * (1 - v / 100)
        )
    kept = [f for f in study.findings if f.dimension not in ("echo", "diagnosis")]
    derived = echo_findings(new.measurements, new.sex)
    extra = [f for f in study.findings if f.dimension == "echo" and f.tag not in {d.tag for d in derived}]
    new.findings = with_echo_diagnosis(kept + derived + extra)
    if _guideline_sides(new) == _guideline_sides(study):
        return None  # the other measurement of an "any" rule (IVSd/LVPWd) still decides; not a negative
    return new


def _flip_finding(study: Study, rng: np.random.Generator) -> Study | None:
    """Flip the polarity of one descriptor finding (present <-> absent)."""
    cands = [
        i
        for i, f in enumerate(study.findings)
        if f.dimension not in ("diagnosis", "echo", "organ", "body_system")
        and f.status is not Status.UNCERTAIN
    ]
    if not cands:
        return None
    i = cands[int(rng.integers(len(cands)))]
    new = copy.deepcopy(study)
    f = new.findings[i]
    f.status = Status.ABSENT if f.status is Status.PRESENT else Status.PRESENT
    new.assessment = risk_assessment(new) if new.assessment else {}
    return new


def _swap_tag(study: Study, rng: np.random.Generator) -> Study | None:
    """Replace a present descriptor by another tag of its dimension (hypoechoic -> hyperechoic)."""
    cands = [
        i
        for i, f in enumerate(study.findings)
        if f.status is Status.PRESENT
        and f.dimension in ("shape", "margin", "echogenicity", "posterior", "vascularity")
    ]
    if not cands:
        return None
    i = cands[int(rng.integers(len(cands)))]
    new = copy.deepcopy(study)
    f = new.findings[i]
    used = {g.tag for g in study.findings if g.dimension == f.dimension}
    others = [t.id for t in tx.tags(f.dimension) if t.id not in used and not t.id.endswith("extension")]
    if not others:
        return None
    f.tag = others[int(rng.integers(len(others)))]
    new.assessment = risk_assessment(new) if new.assessment else {}
    return new


def _flip_diagnosis(study: Study, rng: np.random.Generator) -> Study | None:
    """Echo normal study with no measurements to move: add a pericardial effusion (or drop it)."""
    if study.organ != "heart":
        return None
    new = copy.deepcopy(study)
    size = float(rng.integers(3, 25))
    new.measurements["pe_size_mm"] = size
    new.findings = [
        f for f in new.findings if not (f.dimension == "echo" and f.tag == "pericardial_effusion")
    ]
    new.findings = with_echo_diagnosis(new.findings + echo_findings({"pe_size_mm": size}, new.sex))
    return new


def negated_studies(
    study: Study, rng: np.random.Generator | int | None = None, k: int = 3, max_tries: int = 30
) -> list[Study]:
    """Up to `k` structured hard negatives of `study`, each with a different meaning from it."""
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    base = _meaning(study)
    out: list[Study] = []
    seen: list[set] = [base]
    ops = (
        [_move_measurement, _flip_finding, _swap_tag]
        if study.organ == "heart"
        else [_flip_finding, _swap_tag]
    )
    for _ in range(max_tries):
        if len(out) >= k:
            break
        op = ops[int(g.integers(len(ops)))]
        new = op(study, g) or (_flip_diagnosis(study, g) if op is _move_measurement else None)
        if new is None:
            continue
        m = _meaning(new)
        if m in seen:
            continue
        seen.append(m)
        out.append(new)
    return out


def negated_captions(study: Study, rng: np.random.Generator | int | None = None, k: int = 3) -> list[str]:
    """`k` (or fewer) hard-negative captions: structure changed, text re-written, change re-parsed.

    Each caption differs from the original in at least one parsed finding (dimension, tag, status,
    grade) or in which side of a guideline threshold a measurement falls.
    """
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    orig = parse_report(write_report(study, g), region=study.region).study
    ref = _meaning(orig)
    ref_guides = _guideline_sides(orig)
    out: list[str] = []
    for new in negated_studies(study, g, k=k * 2):
        text = write_report(new, g)
        parsed = parse_report(text, region=study.region).study
        if _meaning(parsed) != ref or _guideline_sides(parsed) != ref_guides:
            out.append(text)
        if len(out) >= k:
            break
    return out


def _guideline_sides(study: Study) -> set[tuple[str, bool]]:
    return {(r.finding, r.present) for r in tx.evaluate_guidelines(study.measurements, study.sex)}


# ------------------------------------------------------------------------------ refiner
def refine_class_name(name: str) -> list[str]:
    """Descriptive sentences for a class name (tag id/phrase, organ, echo finding or view) from the taxonomy.

    Unknown names give a single generic sentence rather than an error, so a zero-shot label set
    can mix taxonomy classes and free-text classes.
    """
    key = name.strip().lower().replace("-", " ").replace("_", " ")
    out: list[str] = []
    for t in tx.all_tags():
        names = {
            t.id.replace("_", " "),
            t.phrase.lower().replace("-", " "),
            *(s.replace("-", " ") for s in t.synonyms),
        }
        if key in names:
            if t.dimension == "organ":
                continue
            syn = ", ".join(s for s in t.synonyms[:3] if s != t.phrase.lower())
            out.append(f"{t.phrase}: {t.definition}")
            shown = f"{_a(t.phrase)} {t.phrase} lesion" if _adjectival(t.phrase) else t.phrase
            out.append(f"An ultrasound image showing {shown}, that is, {_lower_first(t.definition)}")
            if syn:
                out.append(f"{_cap(t.phrase)}, also described as {syn}.")
            if t.lexicon not in ("general", "anatomy"):
                dim = t.dimension.replace("_", " ")
                out.append(f"{_cap(t.phrase)} is {_a(dim)} {dim} descriptor of the {t.lexicon} lexicon.")
    for o in tx.ORGANS:
        if key in {o.id.replace("_", " "), o.phrase.lower(), *o.synonyms}:
            system = next(s.phrase for s in tx.BODY_SYSTEMS if s.id == o.system)
            out.append(f"{_cap(o.phrase)}: {o.definition}")
            out.append(f"An ultrasound image of the {o.phrase}, part of the {system}.")
            if o.locations:
                out.append(f"Reports locate findings in the {o.phrase} by {', '.join(o.locations[:3])}.")
    for fid, d in tx.ECHO_FINDINGS.items():
        if key in {fid.replace("_", " "), d.phrase.lower(), *d.synonyms}:
            out.append(f"{_cap(d.phrase)}: {d.definition}")
            out.append(f"An echocardiogram showing {d.phrase}.")
            rule = tx.GUIDELINE_RULES[fid]
            for m in rule.measurements:
                md = tx.MEASUREMENTS[m]
                thr = tx.threshold_for(fid, m, "M")
                direction = "above" if tx.abnormal_direction(fid) == "above" else "below"
                out.append(
                    f"It is diagnosed when the {md.phrase} is {direction} {thr:g} {md.unit}".rstrip() + "."
                )
            if d.grades:
                out.append(f"{_cap(d.phrase)} is graded {', '.join(d.grades)}.")
    for vid, v in getattr(tx, "VIEWS", {}).items():
        if key in {vid.lower().replace("_", " "), v.phrase.lower(), *v.synonyms}:
            out.append(f"{_cap(v.phrase)}: {v.definition}")
            out.append(f"An echocardiogram acquired in the {v.phrase}.")
    if not out:
        out.append(f"An ultrasound image showing {name.replace('_', ' ')}.")
    return list(dict.fromkeys(out))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:] if s[:2] != s[:2].upper() else s
