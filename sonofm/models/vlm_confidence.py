"""Is a generated text fit to show? The low-confidence flag of the generative VLM.

Why: a weak or mis-matched model writes fluent-looking garbage ("Findings:::. No. No."), and a
draft report shown without a warning is worse than none. A text is flagged when

- its mean token log-probability under the model is below a threshold (the model itself is
  unsure; a well-trained model writes its reports at about -0.1, an untrained one near -log V),
- it is a report from which `sonofm.reports.parse_report` extracts neither an organ nor a
  finding, or which has no impression (the words do not say anything checkable), or
- decoding hit the length limit before the end-of-text token (the text is cut).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sonofm.reports import parse_report


@dataclass
class GeneratedText:
    """One generated answer with the evidence for trusting it."""

    text: str
    mean_logprob: float
    low_confidence: bool
    reasons: list[str] = field(default_factory=list)
    # the findings prompt the text was conditioned on ("Image findings: ..."; None without a head)
    findings: str | None = None
    # the model's own text when `text` is that draft grounded in the study's measurements
    # (`sonofm.reports.grounding`); the flag above judges the model's own text
    draft: str | None = None
    # for a closed answer taken from a source other than the language model (the study's
    # measurements, guideline rules, the findings head: `sonofm.models.vlm_answers`), its name;
    # `draft` then holds the language model's own answer
    answered_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def report_problems(text: str) -> list[str]:
    """What makes a generated report unusable, from its parsed content (empty list = none)."""
    if not text.strip():
        return ["empty text"]
    study = parse_report(text).study
    out = []
    if study.organ is None and not study.findings and not study.measurements:
        out.append("no organ or finding could be read from the text")
    if "impression" not in text.lower():
        out.append("no impression")
    return out


def assess(
    text: str, *, mean_logprob: float, is_report: bool, truncated: bool, threshold: float
) -> GeneratedText:
    """The flag for one text (see the module docstring)."""
    reasons = []
    if mean_logprob < threshold:
        reasons.append(f"mean token log-probability {mean_logprob:.2f} < {threshold:.2f}")
    if truncated:
        reasons.append("cut at the length limit")
    if is_report:
        reasons += report_problems(text)
    elif not text.strip():
        reasons.append("empty text")
    return GeneratedText(text, round(float(mean_logprob), 4), bool(reasons), reasons)
