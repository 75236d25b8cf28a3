"""Benchmark: report parse time against input length (issue #18 item 5: it must be linear).

Builds one report text of N sentences from simulated reports of every region (the writer's text,
several studies concatenated, so sections, negations, numbers and unknown words all occur) and
times `parse_report` on it for N = 700, 2,800, 11,200 (the sizes the issue measured at 10 / 46 /
>150 s) and 20,000 (just under the 1M-character limit). Also times text whose unknown words are
all different, a single run-on "sentence" without full stops (comma-separated findings) and the
refusal of a 10 MB text.

Prints and writes ``benchmarks/results/report_parser.json``: seconds and microseconds per sentence
for each size, and the log-log slope of time against size (1.0 = linear; the check is < 1.15).

Usage::

    python benchmarks/report_parser.py           # full run (~1 min on 2 cores)
    python benchmarks/report_parser.py --quick   # 700 / 2,800 only
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np

from sonofm import taxonomy as tx
from sonofm.reports import parse_report, random_study, write_report
from sonofm.reports.parser import MAX_REPORT_CHARS, ReportTooLarge
from sonofm.reports.text import split_sentences

RESULTS = Path(__file__).resolve().parent / "results" / "report_parser.json"


def report_text(n_sentences: int, seed: int = 0) -> str:
    """Concatenated simulated reports (all regions, round robin) with at least `n_sentences`."""
    rng = np.random.default_rng(seed)
    parts: list[str] = []
    count = 0
    k = 0
    while count < n_sentences:
        region = tx.REGIONS[k % len(tx.REGIONS)]
        text = write_report(random_study(rng, region), rng)
        parts.append(text)
        count += len(split_sentences(text))
        k += 1
    return "\n".join(parts)


def free_text(n_sentences: int) -> str:
    """Hand-written style sentences whose unknown words are all different (worst case for the
    unknown-term list): "Q17 cholangitis17osis" etc."""
    return " ".join(
        f"Moderate hydronephrosis and splenomegaly on scan Q{i} with cholangitis{i}osis. "
        f"No lymphadenopathy{i}itis."
        for i in range(n_sentences // 2)
    )


def run_on(n_clauses: int) -> str:
    """One "sentence" with no full stop: comma-separated findings (worst case for per-sentence work)."""
    clause = "no hydronephrosis, hypoechoic nodule 12 x 8 mm, no internal vascularity, possible septation"
    return ", ".join([clause] * (n_clauses // 4))


def timed(text: str, repeats: int = 1) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        parse_report(text)
        best = min(best, time.perf_counter() - t0)
    return best


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x): the exponent of a power law y ~ x^k."""
    lx, ly = np.log(xs), np.log(ys)
    return float(np.polyfit(lx, ly, 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="700 and 2,800 sentences only")
    args = ap.parse_args()
    sizes = [700, 2800] if args.quick else [700, 2800, 11200, 20000]
    parse_report("warm-up: hypoechoic nodule.")  # build the lexicon indexes outside the timing
    rows = []
    for n in sizes:
        text = report_text(n)
        n_sent = len(split_sentences(text))
        s = timed(text, repeats=2 if n <= 2800 else 1)
        us = 1e6 * s / n_sent
        rows.append({"sentences": n_sent, "chars": len(text), "seconds": s, "us_per_sentence": us})
        print(f"{n_sent:>7,} sentences {len(text):>10,} chars  {s:7.2f} s  {us:6.0f} us/sentence")
    k = slope([r["sentences"] for r in rows], [r["seconds"] for r in rows])
    print(f"log-log slope (1.0 = linear): {k:.3f}")
    free = []
    for n in sizes[:3]:
        text = free_text(n)
        s = timed(text)
        free.append({"sentences": n, "chars": len(text), "seconds": s})
        print(f"free text with unique unknown words, {n:>6,} sentences  {s:6.2f} s")
    k_free = slope([r["sentences"] for r in free], [r["seconds"] for r in free])
    print(f"free-text log-log slope: {k_free:.3f}")
    runs = []
    for clauses in (400, 1600, 6400):
        text = run_on(clauses)
        s = timed(text)
        runs.append({"clauses": clauses, "chars": len(text), "seconds": s})
        print(f"run-on sentence, {clauses:>5} clauses {len(text):>8,} chars  {s:6.2f} s")
    k_run = slope([r["clauses"] for r in runs], [r["seconds"] for r in runs])
    print(f"run-on log-log slope: {k_run:.3f}")
    big = "No hydronephrosis. " * (10_000_000 // 19)
    t0 = time.perf_counter()
    try:
        parse_report(big)
        refused, msg = False, ""
    except ReportTooLarge as err:
        refused, msg = True, str(err)
    refuse_s = time.perf_counter() - t0
    print(f"10 MB text: refused={refused} in {refuse_s * 1e3:.1f} ms: {msg}")
    out = {
        "sizes": rows,
        "slope": k,
        "free_text": free,
        "free_text_slope": k_free,
        "run_on": runs,
        "run_on_slope": k_run,
        "limit_chars": MAX_REPORT_CHARS,
        "ten_mb_refused": refused,
        "ten_mb_refuse_ms": refuse_s * 1e3,
        "linear": max(k, k_run, k_free) < 1.15,
        "machine": f"{platform.processor() or platform.machine()}, python {platform.python_version()}",
        "command": "python benchmarks/report_parser.py" + (" --quick" if args.quick else ""),
    }
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
