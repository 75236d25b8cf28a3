"""The study-context prompt of the report generator: the measurements and sex a report is written from.

Why: an echo report is mostly numbers (about 12 of its 23 facts are measurements, each counted
right only within half a reporting step) plus the patient's sex and the guideline findings those
numbers imply. None of that can be read off one 64 px frame, yet none of it is unknown when the
report is written: the sonographer's calipers produced the measurements (the machine's
measurement package / DICOM SR) and the sex is in the header. The measurement-grounded echo VLM
(docs/methods.md section 2) is built on exactly this: views + measurements -> captions and
guideline-derived labels. So a generator trained with a context line gets the study's
measurements and sex as text it can copy, and the guideline findings they imply (ASE/EACVI
rules, `sonofm.taxonomy.echo.evaluate_guidelines`; the present ones with their grades, "normal"
when none) as words, instead of guessing them.

The line follows the findings line after the image tokens:

    Study measurements: lvef 32; lavi 57.1; tapse 11.4; sex M. Guideline: reduced lvef
    moderate; la enlargement severe; rv dysfunction.

(one line in the prompt; wrapped here). Training renders it from the manifest row's
measurements and sex (``meta["labels"]``), generation from what the caller passes; both go
through `context_text`, so the prompts match token for token. A fraction ``dropout`` of the
training records carry no line, so the same model still drafts from the image alone when no
measurements are at hand.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sonofm import taxonomy as tx
from sonofm.errors import UserError
from sonofm.models.vlm_findings import FindingsVocab
from sonofm.taxonomy.echo import evaluate_guidelines

CONTEXT_PREFIX = "Study measurements:"
GUIDELINE_PREFIX = "Guideline:"


class ContextConfig(BaseModel):
    """``VLMConfig.context``: prompt with the study's measurements, sex and guideline findings."""

    model_config = ConfigDict(extra="forbid")

    dropout: float = Field(
        0.2, ge=0, lt=1, description="fraction of training records rendered without the line"
    )


def _value(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def clean_context(context: Mapping[str, Any] | None, where: str = "context") -> dict[str, Any]:
    """``{"measurements": {id: float}, "sex": "M"|"F"|None}`` from a caller's or a row's mapping.

    Unknown measurement ids are an error (a typo would silently drop a number from the report);
    a missing or non-numeric value is left out, as the row has no such measurement.
    """
    if not context:
        return {"measurements": {}, "sex": None}
    raw = context.get("measurements") or {}
    if not isinstance(raw, Mapping):
        raise UserError(f"{where}: 'measurements' must be a mapping of measurement id -> number")
    unknown = sorted(str(k) for k in raw if k not in tx.MEASUREMENTS)
    if unknown:
        raise UserError(
            f"{where}: unknown measurement ids {unknown}; expected some of {list(tx.MEASUREMENTS)}"
        )
    values = {k: x for k, v in raw.items() if (x := _value(v)) is not None}
    try:  # "O"/"U" (the header's other codes) are unknown: the guidelines use sex-free limits
        sex = tx.normalize_sex(context.get("sex"))
    except ValueError as err:
        raise UserError(f"{where}: {err}") from err
    return {"measurements": values, "sex": sex}


def measurements_from_json(text: str, where: str) -> dict[str, Any]:
    """A JSON object of measurement id -> number (the CLI's --measurements, the server's field)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(
            f'{where}: not valid JSON ({err.msg} at char {err.pos}); expected {{"lvef_pct": 55, ...}}'
        ) from err
    if not isinstance(data, dict):
        raise UserError(
            f"{where}: expected a JSON object of measurement id -> number, got {type(data).__name__}"
        )
    return data


_UNIT_SUFFIX = re.compile(r"_(pct|ml_m2|ml|mm|ratio)$")


def short_name(key: str) -> str:
    """A measurement id or echo finding as a few words ("lvidd_mm" -> "lvidd", "lv_edv_ml" ->
    "lv edv", "reduced_lvef" -> "reduced lvef"). Why: an echo study's full phrases made the line
    ~200 tokens, as long as the report itself; the ids say the same in about half."""
    return _UNIT_SUFFIX.sub("", key).replace("_", " ")


def _format(mid: str, value: float) -> str:
    m = tx.MEASUREMENTS[mid]
    return f"{short_name(mid)} {tx.round_measurement(mid, value):.{m.decimals}f}"


def guideline_findings(context: Mapping[str, Any]) -> dict[str, str | None] | None:
    """Echo finding -> grade ("" when graded none) for each guideline rule the measurements decide,
    present ones only; None when no rule applies (no echo measurements)."""
    ctx = clean_context(context)
    results = evaluate_guidelines(ctx["measurements"], ctx["sex"])
    if not results:
        return None
    return {r.finding: (r.grade or "") for r in results if r.present}


def context_text(context: Mapping[str, Any] | None) -> str | None:
    """The prompt line of one study's context; None when it holds neither a measurement nor sex."""
    ctx = clean_context(context)
    parts = [_format(k, ctx["measurements"][k]) for k in tx.MEASUREMENTS if k in ctx["measurements"]]
    if ctx["sex"] is not None:
        parts.append(f"sex {ctx['sex']}")
    if not parts:
        return None
    line = f"{CONTEXT_PREFIX} {'; '.join(parts)}."
    found = guideline_findings(ctx)
    if found is not None:  # present findings only: the line is already the longest part of the prompt
        said = [f"{short_name(f)} {g}".strip() for f, g in found.items()]
        line += f" {GUIDELINE_PREFIX} {'; '.join(said) if said else 'normal'}."
    return line


def dropped(record_id: Any, config: ContextConfig) -> bool:
    """Whether a training record goes without its context line (stable: a hash of its id, so
    every epoch, worker and resumed run renders the same prompt)."""
    if config.dropout <= 0:
        return False
    h = zlib.crc32(f"context:{record_id}".encode()) / 2**32
    return h < config.dropout


def all_phrases() -> list[str]:
    """Every word a context line can hold (the pruned tokenizer's corpus must cover them)."""
    out = [f"{CONTEXT_PREFIX} sex M; sex F. {GUIDELINE_PREFIX} normal."]
    out += [f"{CONTEXT_PREFIX} {short_name(m)} 0123456789.5." for m in tx.MEASUREMENTS]
    grades = sorted({g for f in tx.ECHO_FINDINGS.values() for g in f.grades})
    out += [f"{GUIDELINE_PREFIX} {short_name(f)} {' '.join(grades)}." for f in tx.ECHO_FINDINGS]
    return out


def prompt_hint(
    vocab: FindingsVocab | None, labels: Mapping[str, Any] | None, context: Mapping[str, Any] | None
) -> str | None:
    """The prompt lines after a one-image study's image tokens: findings line, then context line.

    The one composer for training (ground-truth labels, the row's context) and generation
    (predicted labels, the caller's context). With an echo view and measurements that a
    guideline rule decides, the findings line's echo findings are the guideline's: the rule on
    the measurements is exact where the image head guesses, and the manifest's echo labels are
    derived by the same rules.
    """
    lines: list[str] = []
    if vocab is not None and labels is not None:
        lab = labels
        if context is not None and lab.get("view") is not None:
            found = guideline_findings(context)
            if found is not None:
                lab = {**lab, "echo": sorted(found)}
        lines.append(vocab.hint_text(lab))
    if context is not None and (line := context_text(context)) is not None:
        lines.append(line)
    return "\n".join(lines) or None


def grounded_report(text: str, context: Mapping[str, Any]) -> str:
    """A drafted report grounded in the study's context (`sonofm.reports.grounding`): its
    measurements, sex and echo guideline findings are the study's."""
    from sonofm.reports.grounding import ground_report  # lazy: the parser's lexicon loads on first use

    ctx = clean_context(context)
    return ground_report(text, ctx["measurements"], ctx["sex"])


def unstated(report: str, context: Mapping[str, Any]) -> list[str]:
    """The context's measurements a (grounded) report does not state: a report of another study
    type has no place for them (the writer of a breast report states no LVEF)."""
    from sonofm.reports import parse_report  # lazy: the parser's lexicon loads on first use

    stated = parse_report(report).study.measurements
    return sorted(set(clean_context(context)["measurements"]) - set(stated))
