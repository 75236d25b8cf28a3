"""Closed answers taken from the source that knows the fact, not from free generation.

Why: measured on 800 held-out closed questions (benchmarks/results/vlm.json), the generator's
2-layer language model answers yes/no questions at its prior: measurement thresholds at chance
(0.50), echo views at 0.52, organs at 0.81, while its own findings head names the organ of the
same images at 0.945 and the view at 0.93, and the study's measurements decide every threshold
question exactly. Even prompted with the true findings the LM answers only 0.69 of them: it writes
the findings line into reports but does not compare a question against it. Answering a closed
question as classification over its candidate answers is how medical VQA systems treat closed
questions; here the sources are, in order:

1. the study's measurements (``Is the LVEF below 50 %?`` with the measured EF given),
2. the ASE/EACVI guideline rules on them (``Is the left atrium enlarged?`` when the rule can be
   evaluated; `sonofm.taxonomy.echo.evaluate_guidelines`),
3. the findings head's probabilities (organ, view, diagnosis, lesion descriptors, echo findings;
   single-label groups: "yes" when the asked value is the head's top class, multiple-choice: the
   option with the highest probability; multi-label groups: "yes" from the decision threshold).

The question is read by `sonofm.reports.questions.read_closed_question`; a question it cannot
read, or whose subject no source covers, keeps the language model's answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from sonofm.models.vlm_context import clean_context
from sonofm.models.vlm_findings import NO_VIEW, SINGLE_GROUPS, FindingsVocab
from sonofm.reports.questions import ClosedQuestion, Label, read_closed_question
from sonofm.taxonomy.echo import evaluate_guidelines

SOURCE_MEASUREMENTS = "study measurements"
SOURCE_GUIDELINES = "guideline rules on the study measurements"
SOURCE_HEAD = "findings head"
# a head answer whose own probability is below this is flagged low-confidence
UNSURE_BELOW = 0.6


@dataclass(frozen=True)
class SourcedAnswer:
    """A closed answer and where it came from; `probability`: the head's for its answer (None for
    answers decided by measurements or rules)."""

    text: str
    source: str
    probability: float | None = None


def _yes(b: bool) -> str:
    return "Yes" if b else "No"


def answer_from_context(q: ClosedQuestion, context: Mapping[str, Any] | None) -> SourcedAnswer | None:
    """A threshold question on a given measurement, or a yes/no on echo findings the guideline rules
    decide from the given measurements; None otherwise."""
    if not context:
        return None
    ctx = clean_context(context)
    if q.kind == "threshold":
        v = ctx["measurements"].get(q.measurement)
        if v is None:
            return None
        t = float(q.threshold)
        if q.above:
            hit = v >= t if q.inclusive else v > t
        else:
            hit = v <= t if q.inclusive else v < t
        return SourcedAnswer(_yes(hit), SOURCE_MEASUREMENTS)
    if q.kind == "labels" and q.labels and all(g == "echo" for g, _ in q.labels):
        decided = {r.finding: r.present for r in evaluate_guidelines(ctx["measurements"], ctx["sex"])}
        if all(v in decided for _, v in q.labels):
            return SourcedAnswer(_yes(all(decided[v] for _, v in q.labels)), SOURCE_GUIDELINES)
    return None


def _column_prob(vocab: FindingsVocab, probs: Tensor, label: Label) -> tuple[float, bool] | None:
    """(probability of `label`, is it the head's decision) or None when the head has no column."""
    group, value = label
    j = vocab.column(group, value)
    if j is None:
        return None
    p = float(probs[j])
    if group in SINGLE_GROUPS:
        a, b = vocab.spans[vocab.groups.index(group)]
        return p, int(probs[a:b].argmax()) + a == j
    if group == "echo" and "view" in vocab.groups:
        # as `FindingsVocab.decide`: no echo finding is stated for an image the head sees no echo view in
        a, b = vocab.spans[vocab.groups.index("view")]
        if vocab.labels[a + int(probs[a:b].argmax())][1] == NO_VIEW:
            return 0.0, False
    return p, None  # multi-label: decided by the caller's threshold


def answer_from_head(
    q: ClosedQuestion, probs: Tensor | None, vocab: FindingsVocab | None, threshold: float
) -> SourcedAnswer | None:
    """The findings head's answer to a yes/no on labels or a choice among labels of one group."""
    if probs is None or vocab is None or q.kind == "threshold":
        return None
    if q.kind == "choice":
        scored = [(_column_prob(vocab, probs, lab), text) for text, lab in q.options]
        if any(s is None for s, _ in scored):
            return None
        (p, _), text = max(scored, key=lambda s: s[0][0])
        total = sum(s[0] for s, _ in scored) or 1.0
        return SourcedAnswer(text, SOURCE_HEAD, round(p / total, 4))  # renormalised over the options
    read = [_column_prob(vocab, probs, lab) for lab in q.labels]
    if not read or any(r is None for r in read):
        return None
    yes, p_yes = True, 1.0
    for p, top in read:
        yes = yes and (top if top is not None else p >= threshold)
        p_yes *= p
    return SourcedAnswer(_yes(yes), SOURCE_HEAD, round(p_yes if yes else 1.0 - p_yes, 4))


def sourced_answer(
    question: str | None,
    *,
    context: Mapping[str, Any] | None = None,
    probs: Tensor | None = None,
    vocab: FindingsVocab | None = None,
    threshold: float = 0.5,
) -> SourcedAnswer | None:
    """The answer of the first source that covers the closed `question` (None: keep the LM's)."""
    q = read_closed_question(question) if question else None
    if q is None:
        return None
    return answer_from_context(q, context) or answer_from_head(q, probs, vocab, threshold)
