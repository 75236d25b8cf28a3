"""Generation metrics against direct library calls and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from sonofm.reports import clinical_f1
from sonofm.vlm import metrics as M

PREDS = [
    "Findings: A hypoechoic oval mass with circumscribed margins.\nImpression: Mass in the breast.",
    "the cat sat on the mat",
    "no evidence of pericardial effusion",
]
REFS = [
    "Findings: A hypoechoic irregular mass with spiculated margins.\nImpression: Mass in the breast.",
    "the cat is sitting on a mat",
    "small pericardial effusion",
]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_bleu_equals_sacrebleu(order):
    ref = BLEU(max_ngram_order=order).corpus_score(PREDS, [REFS]).score / 100
    assert M.corpus_bleu(PREDS, REFS, order) == pytest.approx(ref, abs=1e-12)
    # summed per-sentence statistics give the same corpus score (used by the bootstrap)
    assert M.bleu_from_stats(M.bleu_stats(PREDS, REFS, order), order) == pytest.approx(ref, abs=1e-12)
    # a resample (row 0 twice) equals sacrebleu on the resampled corpus
    idx = [0, 0, 2]
    sub = (
        BLEU(max_ngram_order=order).corpus_score([PREDS[i] for i in idx], [[REFS[i] for i in idx]]).score
        / 100
    )
    assert M.bleu_from_stats(M.bleu_stats(PREDS, REFS, order)[idx], order) == pytest.approx(sub, abs=1e-12)


def test_bleu_known_values():
    assert M.corpus_bleu(REFS, REFS, 4) == pytest.approx(1.0)
    assert M.corpus_bleu(["alpha beta gamma"], ["delta epsilon zeta"], 1) == 0.0
    # unigram precision 3/4 ("the cat sat" of "the cat sat down"), no brevity penalty (4 >= 3)
    assert M.corpus_bleu(["the cat sat down"], ["the cat sat"], 1) == pytest.approx(0.75)


def test_rouge_equals_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    got = M.rouge_scores(PREDS, REFS)
    for i, (p, r) in enumerate(zip(PREDS, REFS, strict=True)):
        s = scorer.score(r, p)
        assert got["rouge1"][i] == pytest.approx(s["rouge1"].fmeasure)
        assert got["rougeL"][i] == pytest.approx(s["rougeL"].fmeasure)
    same = M.rouge_scores(REFS, REFS)
    assert np.allclose(same["rouge1"], 1.0) and np.allclose(same["rougeL"], 1.0)
    assert M.rouge_scores(["alpha beta"], ["gamma delta"])["rouge1"][0] == 0.0


REF_REPORT = (
    "Findings: An oval hypoechoic solid nodule with circumscribed margins is seen in the thyroid. "
    "No posterior acoustic shadowing.\nImpression: Thyroid nodule."
)
NEGATED = (
    "Findings: An oval hypoechoic solid nodule with circumscribed margins is seen in the thyroid. "
    "There is posterior acoustic shadowing.\nImpression: Thyroid nodule."
)


def test_clinical_f1_known_answers_and_negation():
    out = M.report_metrics([REF_REPORT], [REF_REPORT], ["thyroid"], meteor=False)
    assert out["clinical_f1"] == 1.0 and out["clinical_f1_macro"] == 1.0
    assert out["bleu4"] == pytest.approx(1.0) and out["rouge1"] == pytest.approx(1.0)
    flipped = M.report_metrics([NEGATED], [REF_REPORT], ["thyroid"], meteor=False)
    # the shadowing fact flips from absent to present: one FP and one FN among the same facts
    counts = M.clinical_counts([NEGATED], [REF_REPORT], "thyroid")
    tp, fp, fn = counts[0]
    assert fp == 1 and fn == 1
    assert flipped["clinical_f1"] == pytest.approx(2 * tp / (2 * tp + 2))
    assert flipped["clinical_f1"] < 1.0
    # the flip barely moves n-gram overlap, which is why a clinical score is needed
    assert flipped["rouge1"] > 0.85
    # micro F1 equals sonofm.reports.clinical_f1 on a corpus
    preds, refs = [NEGATED, REF_REPORT], [REF_REPORT, NEGATED]
    ref_score = clinical_f1(preds, refs, "thyroid")
    assert M.micro_f1(M.clinical_counts(preds, refs, "thyroid")) == pytest.approx(ref_score.f1)


def test_clinical_f1_empty_prediction_is_zero():
    out = M.report_metrics([""], [REF_REPORT], None, meteor=False, cider=False)
    assert out["clinical_f1"] == 0.0 and out["clinical_recall"] == 0.0
    # with the region known the parser would fill in its default organ; an empty report gets no credit
    tp, fp, fn = M.clinical_counts([""], [REF_REPORT], "thyroid")[0]
    assert tp == 0 and fp == 0 and fn > 1
    tp, fp, fn = M.clinical_counts(["Impression: thyroid nodule."], [REF_REPORT], "thyroid")[0]
    assert tp >= 2 and fp == 0 and fn > 1


def test_cider_identical_beats_different():
    refs = ["a hypoechoic nodule in the thyroid", "a cyst in the kidney", "normal liver"]
    same, _ = M.cider_score(refs, refs)
    diff, _ = M.cider_score(
        ["normal liver", "a hypoechoic nodule in the thyroid", "a cyst in the kidney"], refs
    )
    assert same > 5.0 and diff < 0.5


def test_vqa_token_f1_known_values():
    assert M.token_f1("The hypoechoic nodule", "hypoechoic nodule") == 1.0  # article dropped
    # pred {12.3, mm}, ref {12.3, mm, long}: P=1, R=2/3 -> F1 = 0.8
    assert M.token_f1("12.3 mm", "12.3 mm long") == pytest.approx(0.8)
    assert M.token_f1("cyst", "mass") == 0.0
    assert M.normalize_answer("An Oval, Mass!") == "oval mass"


def test_vqa_metrics_closed_and_open():
    preds = ["Yes, there is.", "no", "isoechoic", "55 %", "apical two-chamber view"]
    refs = ["Yes", "Yes", "hypoechoic", "55 %", "apical four-chamber view"]
    closed = [True, True, True, False, False]
    out = M.vqa_metrics(preds, refs, closed)
    assert out["closed_accuracy"] == pytest.approx(1 / 3)
    # "55 %" normalises to "55" on both sides -> 1; view: {apical, twochamber, view} vs fourchamber -> 2/3
    assert out["open_token_f1"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert out["open_exact_match"] == pytest.approx(0.5)
    assert M.closed_correct("No.", "no") and not M.closed_correct("not sure", "no")


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="references"):
        M.report_metrics(["a"], ["a", "b"], meteor=False)
