"""Closed questions read as structured queries: what a yes/no or multiple-choice question asks.

Why: a VQA model's closed answer can be checked against, or taken from, a source that knows the
fact better than free generation does: the study's own measurements ("Is the LV ejection
fraction below 50 %?" with the measured EF at hand), the guideline rules on them, or an image
classifier. That needs the question's subject as data. The report parser already maps clinical
wording (synonyms, abbreviations, units) onto the taxonomy, so a question is parsed with it and
read as one of

- a yes/no question on labels (``Is this an apical four-chamber view?``, ``Is the lesion
  hypoechoic?``; several labels mean all of them: ``Is this kidney normal?``),
- a yes/no question on a measurement against a value (``Is the LAVI above 34 mL/m2?``; ``>``,
  ``at least`` ... read too), or
- a multiple-choice question whose options are labels of one group (``Which view is this?
  Options: PLAX, A4C, subcostal view.``).

Anything else (an open question, negated or "either/or" wording, options of mixed kinds) reads as
None: the caller keeps the language model's answer.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from sonofm.reports.parser import Mention, ParseResult, parse_report
from sonofm.reports.schema import Status

# (group, value) of a mention, in the groups of the VLM's findings vocabulary
Label = tuple[str, str]

_YES_NO = re.compile(r"^\s*(is|are|does|do|did|was|were|has|have|can|could|would|will|should)\b", re.I)
_INSTRUCTION = re.compile(r"\b(?:please\s+)?answer(?:\s+with)?\s+(?:yes or no|yes/no)\b\.?", re.I)
_OPTIONS = re.compile(
    r"\b(?:options|choices|choose from)\s*:\s*(.+)$|^\s*(?:choose|select|pick)\b[^:?]*:\s*(.+)$", re.I | re.S
)
# direction words between a measurement and its value; (pattern, above, inclusive)
_DIRECTIONS: tuple[tuple[re.Pattern[str], bool, bool], ...] = (
    (re.compile(r"\b(?:at least|no less than|not less than)\b|≥|>=", re.I), True, True),
    (re.compile(r"\b(?:at most|no more than|not more than)\b|≤|<=", re.I), False, True),
    (
        re.compile(r"\b(?:above|over|greater than|more than|higher than|larger than|exceed\w*)\b|>", re.I),
        True,
        False,
    ),
    (re.compile(r"\b(?:below|under|less than|lower than|smaller than)\b|<", re.I), False, False),
)
_SYMBOLS = (
    ("≥", " at least "),
    (">=", " at least "),
    ("≤", " at most "),
    ("<=", " at most "),
    (">", " above "),
    ("<", " below "),
)


@dataclass(frozen=True)
class ClosedQuestion:
    """What a closed question asks; `kind` says which fields are set."""

    kind: str  # "labels" (yes/no: are all `labels` true?), "threshold", "choice"
    labels: tuple[Label, ...] = ()
    measurement: str | None = None
    threshold: float | None = None
    above: bool | None = None  # threshold: asks "value above" (True) or "value below" (False)
    inclusive: bool = False  # "at least" / "at most": equality counts as yes
    options: tuple[tuple[str, Label], ...] = ()  # choice: (option text as written, its label)


def _label(m: Mention) -> Label | None:
    if m.kind == "organ":
        return ("organ", m.id)
    if m.kind == "view":
        return ("view", m.id)
    if m.kind == "echo":
        return ("echo", m.id)
    if m.kind == "tag" and m.dimension:
        return (m.dimension, m.id)
    return None


def _subjects(parsed: ParseResult) -> list[Mention] | None:
    """The question's label and measurement mentions; None when one is negated (ambiguous yes/no)."""
    out = [m for m in parsed.mentions if m.kind in ("organ", "view", "echo", "tag", "measurement")]
    if any(m.status == Status.ABSENT for m in out):
        return None
    return out


def _threshold(text: str, parsed: ParseResult, m: Mention) -> ClosedQuestion | None:
    value = parsed.study.measurements.get(m.id)
    tail = text[m.end :]
    for pattern, above, inclusive in _DIRECTIONS:
        if value is not None and pattern.search(tail):
            return ClosedQuestion(
                "threshold", measurement=m.id, threshold=float(value), above=above, inclusive=inclusive
            )
    return None


def _choice(options_text: str) -> ClosedQuestion | None:
    options = [o.strip(" .?") for o in re.split(r",|\bor\b|;", options_text) if o.strip(" .?")]
    read: list[tuple[str, Label]] = []
    for option in options:
        mentions = [lab for m in (_subjects(parse_report(option)) or []) if (lab := _label(m)) is not None]
        if len(set(mentions)) != 1:
            return None
        read.append((option, mentions[0]))
    groups = {lab[0] for _, lab in read}
    if len(read) < 2 or len(groups) != 1:
        return None
    return ClosedQuestion("choice", options=tuple(read))


@functools.lru_cache(maxsize=4096)
def read_closed_question(text: str) -> ClosedQuestion | None:
    """The structured reading of a closed question, or None when it is not one this can read.

    Cached: the same wording is asked of many images (an eval split, a benchmark's seeds, a
    server's users), and each reading runs the report parser."""
    if not isinstance(text, str) or not text.strip():
        return None
    text = _INSTRUCTION.sub(" ", text)
    opts = _OPTIONS.search(text)
    if opts:
        return _choice(opts.group(1) or opts.group(2))
    if not _YES_NO.match(text) or re.search(r"\bor\b|\beither\b", text, re.I):
        return None
    for symbol, words in _SYMBOLS:
        text = text.replace(symbol, words)
    parsed = parse_report(text)
    subjects = _subjects(parsed)
    if not subjects:
        return None
    measures = [m for m in subjects if m.kind == "measurement"]
    if measures:
        return _threshold(text, parsed, measures[0]) if len(measures) == len(subjects) == 1 else None
    labels = tuple(dict.fromkeys(lab for m in subjects if (lab := _label(m)) is not None))
    return ClosedQuestion("labels", labels=labels) if labels else None
