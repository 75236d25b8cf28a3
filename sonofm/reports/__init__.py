"""Structured findings <-> report text (imports no torch).

- `schema`: `Study`, `Finding`, `Status` (the structured form).
- `write_report`: Study -> "Findings: ... Impression: ..." with varied, seeded phrasing.
- `parse_report`: free text -> `ParseResult(study, unknown_terms)` (ConText negation/uncertainty,
  measurements with normalised units).
- `study_attributes`: Study -> the 9-dimension attribute dict.
- `sampling.random_study`: realistic random studies over every region and organ.
- `prompts`: zero-shot prompt ensembles, positive/negated pairs, negated captions, refiner.
- `metrics`: clinical-correctness micro P/R/F1 between studies or report texts.
- `consistency`: checks that a generated study and its report do not contradict each other.
- `corpus`: scores the parser on hand-written sentences (`sonofm report eval`).
"""

from __future__ import annotations

from sonofm.reports.attributes import study_attributes
from sonofm.reports.metrics import Score, clinical_f1, study_score
from sonofm.reports.negation import ConText, ContextRule
from sonofm.reports.parser import Mention, ParseResult, parse_report
from sonofm.reports.prompts import (
    PromptPair,
    all_prompt_pairs,
    attribute_prompts,
    diagnosis_prompts,
    negated_captions,
    negated_studies,
    organ_prompts,
    prompt_pair,
    refine_class_name,
    view_prompts,
)
from sonofm.reports.sampling import random_study
from sonofm.reports.schema import Finding, Status, Study
from sonofm.reports.writer import write_report

__all__ = [
    "ConText",
    "ContextRule",
    "Finding",
    "Mention",
    "ParseResult",
    "PromptPair",
    "Score",
    "Status",
    "Study",
    "all_prompt_pairs",
    "attribute_prompts",
    "clinical_f1",
    "diagnosis_prompts",
    "negated_captions",
    "negated_studies",
    "organ_prompts",
    "parse_report",
    "prompt_pair",
    "random_study",
    "refine_class_name",
    "study_attributes",
    "study_score",
    "view_prompts",
    "write_report",
]
