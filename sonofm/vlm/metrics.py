"""Generation metrics: report NLG scores, clinical correctness, VQA accuracy and token F1.

- BLEU-1..4: sacrebleu corpus BLEU (``max_ngram_order=n``, its default 13a tokenisation, no
  smoothing), on the 0-1 scale. Per-sentence sufficient statistics are kept so a bootstrap
  resample re-scores the corpus exactly without re-tokenising.
- ROUGE-1 / ROUGE-L: rouge-score F-measure (Porter stemming), averaged over pairs.
- METEOR / CIDEr-D: pycocoevalcap (METEOR runs its Java jar; when Java or the jar fails the
  score is left out and the reason is logged and returned in ``notes``). Both get text lower-cased
  and split into word/punctuation tokens with newlines removed, as the COCO tokenizer would.
- Clinical correctness: both reports are parsed by `sonofm.reports.parse_report`; facts are
  (dimension, tag, status, grade) findings plus organ/view/frame/sex/assessment and
  measurements within half a reporting step (`sonofm.reports.metrics.study_score`). Micro F1 sums
  counts over the corpus (= `sonofm.reports.clinical_f1`); macro F1 averages per-report F1.
- VQA: closed accuracy is exact match after normalisation (a leading yes/no decides yes/no
  questions); open answers get SQuAD token F1 and exact match (lower case, punctuation and
  articles removed).
"""

from __future__ import annotations

import collections
import logging
import re
import shutil
import string
from collections.abc import Sequence
from typing import Any

import numpy as np

from sonofm.reports import parse_report, study_score
from sonofm.reports.metrics import study_facts

log = logging.getLogger(__name__)

BLEU_ORDERS = (1, 2, 3, 4)


# ------------------------------------------------------------------ BLEU
def _bleu(order: int) -> Any:
    from sacrebleu.metrics import BLEU  # lazy: optional [eval] extra (sacrebleu)

    return BLEU(max_ngram_order=order)


def bleu_stats(preds: Sequence[str], refs: Sequence[str], order: int) -> np.ndarray:
    """(N, 2 + 2*order) int array of sacrebleu's per-sentence BLEU statistics.

    Columns: hypothesis length, reference length, matching n-grams (1..order), total n-grams.
    Summing rows and scoring gives exactly sacrebleu's corpus BLEU of the same sentences.
    """
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    if not preds:
        return np.zeros((0, 2 + 2 * order), dtype=np.int64)
    # sacrebleu exposes corpus scoring only; its per-sentence statistics are what corpus_score sums.
    stats = _bleu(order)._extract_corpus_statistics(list(preds), [list(refs)])
    return np.asarray(stats, dtype=np.int64)


def bleu_from_stats(stats: np.ndarray, order: int) -> float:
    """Corpus BLEU (0-1) from summed per-sentence statistics (see `bleu_stats`)."""
    if len(stats) == 0:
        return float("nan")
    total = [int(x) for x in np.asarray(stats).sum(0)]
    return float(_bleu(order)._compute_score_from_stats(total).score) / 100.0


def corpus_bleu(preds: Sequence[str], refs: Sequence[str], order: int = 4) -> float:
    """sacrebleu corpus BLEU-``order`` on the 0-1 scale."""
    return float(_bleu(order).corpus_score(list(preds), [list(refs)]).score) / 100.0


# ------------------------------------------------------------------ ROUGE
def rouge_scores(preds: Sequence[str], refs: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-pair ROUGE-1 and ROUGE-L F-measures (rouge-score, Porter stemmer)."""
    from rouge_score import rouge_scorer  # lazy: optional [eval] extra (rouge-score)

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    r1, rl = [], []
    for p, r in zip(preds, refs, strict=True):
        s = scorer.score(r, p)  # (target, prediction)
        r1.append(s["rouge1"].fmeasure)
        rl.append(s["rougeL"].fmeasure)
    return {"rouge1": np.asarray(r1, dtype=np.float64), "rougeL": np.asarray(rl, dtype=np.float64)}


# ------------------------------------------------------------------ METEOR / CIDEr
_TOKEN_RE = re.compile(r"\w+(?:[.']\w+)*|[^\w\s]")


def coco_tokenize(text: str) -> str:
    """Lower-cased word/punctuation tokens joined by single spaces (no newlines: METEOR's protocol
    is line-based)."""
    return " ".join(_TOKEN_RE.findall(str(text).lower()))


def cider_score(preds: Sequence[str], refs: Sequence[str]) -> tuple[float, np.ndarray]:
    """pycocoevalcap CIDEr (corpus IDF over the references), corpus value and per-pair values."""
    from pycocoevalcap.cider.cider import Cider  # lazy: optional [eval] extra (pycocoevalcap)

    gts = {i: [coco_tokenize(r)] for i, r in enumerate(refs)}
    res = {i: [coco_tokenize(p)] for i, p in enumerate(preds)}
    score, scores = Cider().compute_score(gts, res)
    return float(score), np.asarray(scores, dtype=np.float64)


def meteor_score(preds: Sequence[str], refs: Sequence[str]) -> tuple[float, np.ndarray]:
    """pycocoevalcap METEOR 1.5 (Java); raises RuntimeError when the jar cannot run."""
    if shutil.which("java") is None:
        raise RuntimeError("java is not on PATH")
    from pycocoevalcap.meteor.meteor import Meteor  # lazy: optional [eval] extra (pycocoevalcap)

    gts = {i: [coco_tokenize(r) or "."] for i, r in enumerate(refs)}
    res = {i: [coco_tokenize(p) or "."] for i, p in enumerate(preds)}
    try:
        m = Meteor()
    except OSError as err:
        raise RuntimeError(f"cannot start METEOR ({err})") from err
    try:
        score, scores = m.compute_score(gts, res)
    except (ValueError, OSError, BrokenPipeError) as err:
        raise RuntimeError(f"METEOR failed ({err})") from err
    finally:
        # stop the JVM now (Meteor.__del__ repeats close/kill harmlessly on the reaped process)
        m.meteor_p.stdin.close()
        m.meteor_p.kill()
        m.meteor_p.wait()
    return float(score), np.asarray(scores, dtype=np.float64)


# ------------------------------------------------------------------ clinical correctness
def clinical_counts(
    preds: Sequence[str],
    refs: Sequence[str],
    regions: Sequence[str | None] | str | None = None,
    *,
    measurements: bool = True,
) -> np.ndarray:
    """(N, 3) int array of per-report (tp, fp, fn) facts of the generated vs the reference report.

    An empty generated report states nothing: every reference fact is a miss (the parser would
    otherwise credit it with the region's default organ). `regions` help parse the REFERENCE only.
    ``measurements=False`` scores the categorical facts only (findings, organ, view, frame, sex,
    assessments): a measurement counts as a fact only within half a reporting step, which no
    image-reading model reaches from a 64 px image, and an echo report states about 12 of them.
    """
    regs = _regions(regions, len(refs))
    out = np.zeros((len(refs), 3), dtype=np.int64)
    for i, (p, r, g) in enumerate(zip(preds, refs, regs, strict=True)):
        ref = parse_report(r, g).study
        n_meas = len(ref.measurements) if measurements else 0
        if not str(p).strip():
            out[i] = (0, 0, len(study_facts(ref)) + n_meas)
            continue
        # the generated text is parsed without the region hint: the hint would hand it the
        # region's organ (and override a wrong one it names), crediting facts it never stated
        pred = parse_report(p).study
        if measurements:
            s = study_score(ref, pred)
            out[i] = (s.tp, s.fp, s.fn)
        else:
            a, b = study_facts(ref), study_facts(pred)
            out[i] = (len(a & b), len(b - a), len(a - b))
    return out


def _regions(regions: Sequence[str | None] | str | None, n: int) -> list[str | None]:
    if regions is None or isinstance(regions, str):
        return [regions] * n
    regs = [r if isinstance(r, str) and r else None for r in regions]
    if len(regs) != n:
        raise ValueError(f"{len(regs)} regions for {n} reports")
    return regs


def micro_f1(counts: np.ndarray) -> float:
    """F1 of summed (tp, fp, fn); 1.0 when nothing was expected and nothing predicted."""
    tp, fp, fn = (int(x) for x in np.asarray(counts).reshape(-1, 3).sum(0))
    d = 2 * tp + fp + fn
    return 2 * tp / d if d else 1.0


def per_report_f1(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64).reshape(-1, 3)
    d = 2 * c[:, 0] + c[:, 1] + c[:, 2]
    return np.where(d > 0, 2 * c[:, 0] / np.where(d > 0, d, 1), 1.0)


def _prf(counts: np.ndarray) -> tuple[float, float]:
    tp, fp, fn = (int(x) for x in np.asarray(counts).reshape(-1, 3).sum(0))
    return (tp / (tp + fp) if tp + fp else 1.0), (tp / (tp + fn) if tp + fn else 1.0)


# ------------------------------------------------------------------ report metrics
def report_metrics(
    preds: Sequence[str],
    refs: Sequence[str],
    regions: Sequence[str | None] | str | None = None,
    *,
    meteor: bool = True,
    cider: bool = True,
) -> dict[str, Any]:
    """All report-generation scores of generated ``preds`` against reference ``refs`` (0-1 scale,
    CIDEr on its usual 0-10 scale). ``notes`` lists metrics that could not be computed and why."""
    preds, refs = [str(p) for p in preds], [str(r) for r in refs]
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    out: dict[str, Any] = {"n": len(preds), "notes": []}
    if not preds:
        return out
    for n in BLEU_ORDERS:
        out[f"bleu{n}"] = corpus_bleu(preds, refs, n)
    rouge = rouge_scores(preds, refs)
    out["rouge1"] = float(rouge["rouge1"].mean())
    out["rougeL"] = float(rouge["rougeL"].mean())
    if cider:
        out["cider"] = cider_score(preds, refs)[0]
    if meteor:
        try:
            out["meteor"] = meteor_score(preds, refs)[0]
        except RuntimeError as err:
            log.warning("METEOR skipped: %s", err)
            out["notes"].append(f"meteor skipped: {err}")
    counts = clinical_counts(preds, refs, regions)
    p, r = _prf(counts)
    out["clinical_precision"] = p
    out["clinical_recall"] = r
    out["clinical_f1"] = micro_f1(counts)
    out["clinical_f1_macro"] = float(per_report_f1(counts).mean())
    return out


# ------------------------------------------------------------------ VQA
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, punctuation and articles removed, whitespace collapsed."""
    text = "".join(ch for ch in str(text).lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(pred: str, ref: str) -> float:
    """SQuAD token F1 between two answers (1.0 when both normalise to nothing)."""
    p, r = normalize_answer(pred).split(), normalize_answer(ref).split()
    if not p or not r:
        return float(p == r)
    common = collections.Counter(p) & collections.Counter(r)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(r)
    return 2 * precision * recall / (precision + recall)


def closed_correct(pred: str, ref: str) -> bool:
    """Whether a closed (yes/no or multiple-choice) answer is right.

    For a yes/no reference the prediction's first word decides ("Yes, there is ..." counts as
    yes); otherwise the normalised answers must match exactly.
    """
    r = normalize_answer(ref)
    p = normalize_answer(pred)
    if r in ("yes", "no"):
        return (p.split()[:1] or [""])[0] == r
    return p == r


def vqa_metrics(
    preds: Sequence[str], refs: Sequence[str], closed: Sequence[bool] | None = None
) -> dict[str, float]:
    """Closed accuracy and open token F1 / exact match; ``closed[i]`` marks closed questions
    (default: references that are yes/no)."""
    preds, refs = [str(p) for p in preds], [str(r) for r in refs]
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    if closed is None:
        closed = [normalize_answer(r) in ("yes", "no") for r in refs]
    closed = [bool(c) for c in closed]
    out: dict[str, float] = {"n_closed": float(sum(closed)), "n_open": float(len(closed) - sum(closed))}
    c = [closed_correct(p, r) for p, r, k in zip(preds, refs, closed, strict=True) if k]
    o = [(p, r) for p, r, k in zip(preds, refs, closed, strict=True) if not k]
    out["closed_accuracy"] = float(np.mean(c)) if c else float("nan")
    out["open_token_f1"] = float(np.mean([token_f1(p, r) for p, r in o])) if o else float("nan")
    exact = [normalize_answer(p) == normalize_answer(r) for p, r in o]
    out["open_exact_match"] = float(np.mean(exact)) if o else float("nan")
    return out
