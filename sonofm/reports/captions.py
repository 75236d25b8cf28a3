"""Contrastive captions: what an image shows, in the taxonomy's own words, findings first.

A full report is written for a reader: measurements, sex, sizes, run-on phrasing. Most of it is
invisible in one B-mode frame (nobody reads an E/e' ratio or the patient's sex off a PLAX view),
and every such token is noise for an image-text contrastive objective; a sentence encoder also
embeds two long reports that differ in one adjective ("anechoic" vs "hyperechoic") almost on top
of each other. A caption therefore keeps what the image can show and says it early and the same
way every time: organ, echo view and cardiac phase, diagnosis with its descriptors, present
findings, then the absent ones ("no pericardial effusion", which the negation-aware objective and
the paired zero-shot prompts rely on; optional). No numbers, no sex.

The words are the taxonomy's phrases, the same vocabulary the zero-shot prompts
(:mod:`sonofm.reports.prompts`) are built from, so a caption and a class prompt of the same
finding share their key words. Captions come from a structured study (the simulator's ground
truth, or the report parser's output for real reports), so hospital data gets them too.
"""

from __future__ import annotations

import json

from sonofm import taxonomy as tx
from sonofm.reports.parser import parse_report
from sonofm.reports.schema import Finding, Status, Study

# Order in which descriptor dimensions are said (echogenicity first: it is the most visible).
DESCRIPTOR_ORDER = ("echogenicity", "shape", "margin", "internal", "posterior", "vascularity")
# Tags whose phrase is an adjective: said before the head noun ("anechoic oval cystic cyst").
ADJECTIVE_DIMENSIONS = ("echogenicity", "shape")
ADJECTIVE_TAGS = {
    ("internal", "solid"),
    ("internal", "cystic"),
    ("internal", "mixed_cystic_solid"),
    ("internal", "spongiform"),
    ("vascularity", "avascular"),
}


def _in_taxonomy_order(dimension: str, findings: list[Finding]) -> list[Finding]:
    """Canonical order (the taxonomy's), so one study has one caption whatever wrote its report."""
    if dimension == "echo":
        order = {tag: i for i, tag in enumerate(tx.ECHO_FINDINGS)}
    else:
        try:
            order = {t.id: i for i, t in enumerate(tx.tags(dimension))}
        except (KeyError, ValueError):
            order = {}
    return sorted(findings, key=lambda f: (order.get(f.tag, len(order)), f.tag))


def _tag_phrase(dimension: str, tag: str) -> str:
    try:
        return tx.get_tag(dimension, tag).phrase
    except (KeyError, ValueError):
        return tag.replace("_", " ")


def _echo_phrase(f: Finding) -> str:
    definition = tx.ECHO_FINDINGS.get(f.tag)
    phrase = definition.phrase if definition is not None else f.tag.replace("_", " ")
    return f"{f.grade} {phrase}" if f.grade and f.status is Status.PRESENT else phrase


def _organ_phrase(study: Study) -> str:
    if study.organ:
        try:
            return tx.get_organ(study.organ).phrase
        except (KeyError, ValueError):
            return study.organ.replace("_", " ")
    return study.region.replace("_", " ")


def _lesion_phrase(study: Study, diagnosis: str) -> str:
    """ "hypoechoic, irregular shape, spiculated margins mass with microcalcifications" style."""
    descriptors: list[str] = []
    extras: list[str] = []
    for dim in DESCRIPTOR_ORDER:
        for f in _in_taxonomy_order(dim, study.present(dim)):
            phrase = _tag_phrase(dim, f.tag)
            adjective = dim in ADJECTIVE_DIMENSIONS or (dim, f.tag) in ADJECTIVE_TAGS
            (descriptors if adjective else extras).append(phrase)
    head = " ".join([*descriptors, _tag_phrase("diagnosis", diagnosis)])
    return f"{head} with {', '.join(extras)}" if extras else head


def _view_phrase(study: Study) -> str:
    parts = []
    if study.view and study.view in tx.VIEWS:
        parts.append(tx.VIEWS[study.view].phrase)
    if study.frame and study.frame in tx.FRAME_PHRASES:
        parts.append(tx.FRAME_PHRASES[study.frame][0])
    return ", ".join(parts)


def contrastive_caption(study: Study, *, absent: bool = False) -> str:
    """One deterministic caption per study (see the module docstring for what it keeps).

    ``absent`` adds the absent echo findings ("No pericardial effusion, ..."). Off by default: on a
    normal echo all seven are absent, and under mean pooling that shared tail outweighs the few
    tokens that name the view.
    """
    organ = _organ_phrase(study)
    is_echo = study.region == "heart" or bool(study.view)
    head = _caption_head(study)
    sentences: list[str] = []
    diagnosed = _in_taxonomy_order("diagnosis", study.present("diagnosis"))
    diagnoses = [f.tag for f in diagnosed if f.tag != "normal"]
    for diagnosis in diagnoses:
        sentences.append(_lesion_phrase(study, diagnosis))
    present_echo = [_echo_phrase(f) for f in _in_taxonomy_order("echo", study.present("echo"))]
    sentences.extend(present_echo)
    if not diagnoses and not present_echo:
        sentences.append("normal echocardiogram" if is_echo else f"normal {organ}")
    text = f"{head}: {'; '.join(sentences)}."
    if absent:
        negated = [_echo_phrase(f) for f in _in_taxonomy_order("echo", study.absent("echo"))]
        if negated:
            text += " No " + ", no ".join(negated) + "."
    return text[0].upper() + text[1:]


def _caption_head(study: Study) -> str:
    """ "ultrasound of the thyroid gland" / "echocardiogram of the heart, apical four-chamber view"."""
    is_echo = study.region == "heart" or bool(study.view)
    # echo reports never say "heart"; the caption does, so echo images meet the heart's prompts
    head = "echocardiogram of the heart" if is_echo else f"ultrasound of the {_organ_phrase(study)}"
    view = _view_phrase(study)
    return f"{head}, {view}" if view else head


def single_finding_captions(study: Study) -> list[str]:
    """Captions that name one finding each, worded like the full caption ("Ultrasound of the
    breast: mass with microcalcifications."): the lesion alone, the lesion with each of its
    descriptors, each present echo finding. Empty for a normal study (its caption is already short).
    """
    head = _caption_head(study)
    out: list[str] = []
    for diagnosis in (f.tag for f in _in_taxonomy_order("diagnosis", study.present("diagnosis"))):
        if diagnosis == "normal":
            continue
        noun = _tag_phrase("diagnosis", diagnosis)
        out.append(f"{head}: {noun}.")
        for dim in DESCRIPTOR_ORDER:
            for f in _in_taxonomy_order(dim, study.present(dim)):
                phrase = _tag_phrase(dim, f.tag)
                adjective = dim in ADJECTIVE_DIMENSIONS or (dim, f.tag) in ADJECTIVE_TAGS
                out.append(f"{head}: {phrase} {noun}." if adjective else f"{head}: {noun} with {phrase}.")
    for f in _in_taxonomy_order("echo", study.present("echo")):
        out.append(f"{head}: {_echo_phrase(f)}.")
    return [t[0].upper() + t[1:] for t in dict.fromkeys(out)]


class CaptionSampler:
    """Training text that is the full caption or, with probability ``p_single``, a caption naming
    one of its findings (:func:`single_finding_captions`).

    ConVIRT trains on one sampled sentence of the report; here the point is the zero-shot prompts:
    they name one finding each ("a lesion with microcalcifications"), while a full caption names
    five, and a frozen sentence encoder pools those five into one vector in which each weighs
    little. Deterministic per (seed, epoch, sample) through the dataset's generator; picklable for
    loader workers. Evaluation keeps the full caption.
    """

    def __init__(self, p_single: float) -> None:
        if not 0.0 <= p_single <= 1.0:
            raise ValueError(f"p_single must be in [0, 1], got {p_single}")
        self.p_single = float(p_single)

    def __call__(self, row: dict, rng) -> str:
        study = study_of_row(row)
        if study is None:
            return ""
        if self.p_single and rng.random() < self.p_single:
            singles = single_finding_captions(study)
            if singles:
                return singles[int(rng.integers(len(singles)))]
        return contrastive_caption(study)

    def variants(self, row: dict) -> list[str]:
        """Every text this row can get (what a frozen text tower encodes before training)."""
        study = study_of_row(row)
        if study is None:
            return [""]
        return [contrastive_caption(study), *(single_finding_captions(study) if self.p_single else [])]


def study_of_row(row: dict) -> Study | None:
    """The structured study of a manifest row: its ``structured`` record, else the parsed report."""
    record = row.get("structured")
    if isinstance(record, str) and record.strip():
        try:
            record = json.loads(record)
        except ValueError:
            record = None
    if isinstance(record, dict) and record.get("region"):
        try:
            return Study.from_dict(record)
        except (KeyError, TypeError, ValueError):
            pass
    report = row.get("report")
    if not isinstance(report, str) or not report.strip():
        return None
    region = row.get("region") if isinstance(row.get("region"), str) else None
    return parse_report(report, region=region).study


def caption_for_row(row: dict) -> str:
    """The contrastive caption of a manifest row ("" when it has neither structure nor report)."""
    study = study_of_row(row)
    return "" if study is None else contrastive_caption(study)


# Organ-free wording of one descriptor, as the single-finding captions put it, for the label texts
# of the pretraining objective's label_text term: the organ is left out because a label text is
# contrasted only with the other tags of its own dimension, which share the organ anyway.
def label_caption(group: str, value: str) -> str:
    """The text of one label: an organ, an echo view or a lesion descriptor ("dimension", tag).

    "Ultrasound of the thyroid gland." / "Echocardiogram of the heart, apical two-chamber view." /
    "Ultrasound: hypoechoic lesion." / "Ultrasound: lesion with comet-tail artifacts.". The
    zero-shot prompts (:mod:`sonofm.reports.prompts`) are other sentences around the same phrases,
    so what this text trains is the phrase, not an evaluation template.
    """
    if group == "organ":
        if value == "heart":
            return "Echocardiogram of the heart."
        try:
            phrase = tx.get_organ(value).phrase
        except (KeyError, ValueError):
            phrase = value.replace("_", " ")
        return f"Ultrasound of the {phrase}."
    if group == "view":
        view = tx.VIEWS.get(value)
        return f"Echocardiogram of the heart, {view.phrase if view else value.replace('_', ' ')}."
    phrase = _tag_phrase(group, value)
    if group in ADJECTIVE_DIMENSIONS or (group, value) in ADJECTIVE_TAGS:
        return f"Ultrasound: {phrase} lesion."
    return f"Ultrasound: lesion with {phrase}."
