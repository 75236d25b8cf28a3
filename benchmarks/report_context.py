"""Benchmark: sonofm's ConText against medspaCy's ConText on the hand-written corpus (issue #22).

Both detectors get the *same* targets: the phrases sonofm's parser recognised in each corpus
sentence (`ParseResult.mentions`, char spans). Only the negation/uncertainty decision differs:
sonofm's `negation.ConText` (as `parse_report` uses it) vs medspaCy 1.3.1's `medspacy_context`
with its default rules (PyRuSH sentences, ents set to the target spans; `is_negated` -> absent,
`is_uncertain` or `is_hypothetical` -> uncertain). Findings whose status comes from a target
are re-derived from the detector's decision ("normal LV size": a normal-phrase target that is not
negated states the finding absent); findings that no target carries (guideline findings derived
from numbers) keep sonofm's status in both arms. Scores are the corpus's "negated" and
"uncertain" views and the finding field (`sonofm.reports.corpus`); speed is sentences/s of the
full parse (sonofm) and of medspaCy's pipeline on the same sentences (targets given).

medspaCy cannot be installed into sonofm's environment: 1.3.1 pins spaCy < 3.8, whose wheels
(spaCy 3.7.5 / thinc 8.2) are built against numpy 1.x and fail to import under the pinned numpy
2.4.6 ("numpy.dtype size changed"). Run this benchmark with medspaCy in a separate target dir::

    pip install --target /tmp/mspkgs medspacy "numpy<2"
    PYTHONPATH=/tmp/mspkgs python benchmarks/report_context.py

Writes ``benchmarks/results/report_context.json``.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from sonofm.reports import parse_report
from sonofm.reports.corpus import CorpusItem, load_corpus
from sonofm.reports.metrics import Score
from sonofm.reports.schema import Status

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "reports" / "data" / "corpus.jsonl"
RESULTS = Path(__file__).resolve().parent / "results" / "report_context.json"
_TARGET_KINDS = ("tag", "echo", "echo_normal", "finding", "finding_normal")


def _flip(kind: str, st: Status) -> Status:
    if kind.endswith("_normal") and st is not Status.UNCERTAIN:
        return Status.PRESENT if st is Status.ABSENT else Status.ABSENT
    return st


def _facts_with(item: CorpusItem, statuses: list[Status] | None) -> set[tuple[str, str, str]]:
    """sonofm's findings for the item, target statuses replaced by `statuses` (None: sonofm's own)."""
    r = parse_report(item.text, item.region)
    facts = {f.key(): f.status for f in r.study.findings}
    targets = [m for m in r.mentions if m.kind in _TARGET_KINDS]
    if statuses is not None:
        for m, st in zip(targets, statuses, strict=True):
            for tag in m.id.split("+"):
                key = (m.dimension or m.kind, tag)
                if key in facts:
                    facts[key] = _flip(m.kind, st)
    return {(d, t, s.value) for (d, t), s in facts.items()}


def _score(items: list[CorpusItem], preds: list[set]) -> dict[str, dict]:
    out = {}
    for view, status in (("negated", "absent"), ("uncertain", "uncertain"), ("finding", None)):
        total = Score(0, 0, 0)
        for item, pred in zip(items, preds, strict=True):
            ref = item.findings
            if status is not None:
                ref = {x for x in ref if x[2] == status}
                pred = {x for x in pred if x[2] == status}
            total = total + Score(len(ref & pred), len(pred - ref), len(ref - pred))
        out[view] = total.to_dict()
    return out


def medspacy_statuses(items: list[CorpusItem]) -> tuple[list[list[Status]], float, str]:
    from loguru import logger

    logger.remove()  # PyRuSH logs every token at DEBUG
    import medspacy

    nlp = medspacy.load(medspacy_enable=["medspacy_pyrush", "medspacy_context"])
    out: list[list[Status]] = []
    t0 = time.perf_counter()
    for item in items:
        r = parse_report(item.text, item.region)
        targets = [m for m in r.mentions if m.kind in _TARGET_KINDS]
        doc = nlp.make_doc(item.text)
        spans = [doc.char_span(m.start, m.end, label="TARGET", alignment_mode="expand") for m in targets]
        ents, seen = [], set()
        for sp in spans:  # spaCy ents may not overlap; a repeated span keeps its first target
            if sp is not None and not any(i in seen for i in range(sp.start, sp.end)):
                ents.append(sp)
                seen.update(range(sp.start, sp.end))
        doc.ents = ents
        for _name, proc in nlp.pipeline:
            doc = proc(doc)
        by_span = {(e.start_char, e.end_char): e for e in doc.ents}
        sts = []
        for sp in spans:
            e = by_span.get((sp.start_char, sp.end_char)) if sp is not None else None
            if e is None:
                sts.append(Status.PRESENT)
            elif e._.is_negated:
                sts.append(Status.ABSENT)
            elif e._.is_uncertain or e._.is_hypothetical:
                sts.append(Status.UNCERTAIN)
            else:
                sts.append(Status.PRESENT)
        out.append(sts)
    seconds = time.perf_counter() - t0
    return out, seconds, medspacy.__version__


def main() -> None:
    items = load_corpus(CORPUS)
    parse_report("warm-up")
    t0 = time.perf_counter()
    for item in items:
        parse_report(item.text, item.region)
    ours_s = time.perf_counter() - t0
    ours = _score(items, [_facts_with(it, None) for it in items])
    res: dict = {
        "corpus": str(CORPUS.relative_to(ROOT)),
        "sentences": len(items),
        "sonofm": {**ours, "seconds": ours_s, "sentences_per_s": len(items) / ours_s},
    }
    try:
        sts, ms_s, version = medspacy_statuses(items)
    except ImportError as err:
        res["medspacy"] = {"error": f"medspaCy not importable here: {err}"}
    else:
        preds = [_facts_with(it, s) for it, s in zip(items, sts, strict=True)]
        # medSpaCy's time includes sonofm's parse that supplies its targets; subtract it
        res["medspacy"] = {
            **_score(items, preds),
            "version": version,
            "seconds": max(ms_s - ours_s, 1e-9),
            "sentences_per_s": len(items) / max(ms_s - ours_s, 1e-9),
        }
    res["machine"] = f"{platform.machine()}, python {platform.python_version()}"
    for name in ("sonofm", "medspacy"):
        r = res[name]
        if "error" in r:
            print(f"{name}: {r['error']}")
            continue
        print(
            f"{name:<9} negated F1 {r['negated']['f1']:.3f}  uncertain F1 {r['uncertain']['f1']:.3f}  "
            f"finding F1 {r['finding']['f1']:.3f}  {r['sentences_per_s']:.0f} sentences/s"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
