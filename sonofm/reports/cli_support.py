"""What the `sonofm report` commands call: input checks turned into clear user errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from sonofm import taxonomy as tx
from sonofm.errors import DataError, UserError
from sonofm.reports.parser import MAX_REPORT_CHARS, ParseResult, ReportTooLarge, parse_report
from sonofm.reports.sampling import random_study
from sonofm.reports.writer import write_report


def _check_region(region: str | None) -> None:
    if region is not None and region not in tx.REGIONS:
        raise UserError(f"--region {region!r} is not a region; expected one of: {', '.join(tx.REGIONS)}")


def parse_source(source: str, region: str | None = None) -> ParseResult:
    """Parse a report file (or '-' for stdin)."""
    _check_region(region)
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise UserError(f"report file {source!r} does not exist (give a text file or '-' for stdin)")
        if path.stat().st_size > 4 * MAX_REPORT_CHARS:  # UTF-8: at most 4 bytes a character
            raise ReportTooLarge(
                f"report file {source!r} is {path.stat().st_size:,} bytes, over the limit of "
                f"{MAX_REPORT_CHARS:,} characters; split it into one report per study"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"report file {source!r} is not UTF-8 text: {err}") from None
    return parse_report(text, region=region)


def sample_reports(region: str | None, n: int, seed: int) -> list[dict]:
    """`n` random studies with their reports, deterministic for `seed`."""
    _check_region(region)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        study = random_study(rng, region)
        out.append({"study": study.to_dict(), "report": write_report(study, rng)})
    return out
