"""A drafted report grounded in the study's measurements: the numbers, the sex and the guideline
findings a report states come from what was measured, not from what a model or a retrieved case
says.

Why: a report generator (or the report of a similar case) states plausible measurements that
belong to another patient; at demo scale the generator did not learn to copy numbers given in its
prompt (README "Report generation"). In the clinic every one of those numbers is known when the
report is drafted (the sonographer's calipers, the machine's measurement package, the header's
sex). Grounding keeps what the draft says about the image (organ, view, frame, lesion and its
descriptors) and replaces the rest:

- the measurements are exactly the study's (the draft's own numbers are dropped, those it left
  out are added);
- the sex is the study's (none when unknown: a draft never states a guessed sex);
- an echo draft's echo findings are the ASE/EACVI rules' verdicts on those measurements
  (`sonofm.reports.sampling.echo_findings`: present with grade, or explicitly absent).

The draft is parsed (`parse_report`), edited and written again by the report writer, so the
grounded text is in the corpus's own phrasing; the parser reads it back exactly (tested).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sonofm.reports.parser import parse_report
from sonofm.reports.sampling import echo_findings
from sonofm.reports.schema import Study
from sonofm.reports.writer import write_report


def ground_study(study: Study, measurements: Mapping[str, float], sex: str | None) -> Study:
    """A copy of `study` with the study's measurements, sex and (echo view) guideline findings."""
    out = Study.from_dict(study.to_dict())
    out.measurements = {str(k): float(v) for k, v in measurements.items()}
    out.sex = sex
    if out.view is not None or out.organ == "heart":
        out.findings = [f for f in out.findings if f.dimension != "echo"]
        out.findings += echo_findings(out.measurements, out.sex)
    return out


def ground_report(
    text: str,
    measurements: Mapping[str, float],
    sex: str | None,
    region: str | None = None,
    seed: int | np.random.Generator = 0,
) -> str:
    """`text` parsed, grounded (`ground_study`) and written again (deterministic for a seed).

    `region`: a hint for the parser (None: the draft must name its organ, as the benchmark reads
    generated text).
    """
    study = parse_report(text, region).study
    return write_report(ground_study(study, measurements, sex), seed)
