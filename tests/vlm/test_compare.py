"""Generated-vs-retrieved scoring with patient-level intervals, and the retrieval baseline's answers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sonofm.vlm import compare
from sonofm.vlm.retrieval import _search, answer_from_row

REF = (
    "Findings: An oval hypoechoic solid mass is seen in the breast. Posterior acoustic shadowing is "
    "noted.\nImpression: Hypoechoic mass in the breast."
)
WRONG = "Findings: A round anechoic cyst is seen in the liver.\nImpression: Anechoic cyst in the liver."


def test_compare_reports_resamples_patients_and_scores_the_difference():
    refs = [REF] * 12
    regions = ["breast"] * 12
    patients = [f"p{i // 2}" for i in range(12)]  # 6 patients, 2 images each
    out = compare.compare_reports(
        {"gen": [REF] * 12, "ret": [WRONG] * 12}, refs, regions, patients, baseline="ret", n_boot=50
    )
    f1 = out["clinical_f1"]
    assert f1["gen"]["value"] == 1.0 and f1["ret"]["value"] < 0.5
    assert f1["gen"]["n_patients"] == 6 and f1["gen"]["n"] == 12
    delta = f1["delta/gen-ret"]
    assert delta["value"] > 0.5 and delta["ci_low"] > 0 and delta["n_patients"] == 6
    assert out["attr/organ"]["gen"]["value"] == 1.0 and out["attr/organ"]["ret"]["value"] == 0.0
    assert set(out) >= {"bleu1", "rougeL", "clinical_f1", "attr/echogenicity"}


def test_closed_vqa_accuracy_per_system():
    out = compare.closed_vqa({"a": ["Yes", "No"], "b": ["No", "No"]}, ["Yes", "No"], ["p1", "p2"], n_boot=20)
    assert out["a"]["value"] == 1.0 and out["b"]["value"] == 0.5
    # paired difference to a baseline, whole patients resampled: b is wrong on every question of
    # p1..p3 and right on p4..p6's, a right on all
    refs, pats = ["Yes", "No"] * 6, [f"p{i // 2}" for i in range(12)]
    b = ["No", "Yes"] * 3 + ["Yes", "No"] * 3
    out = compare.closed_vqa({"a": refs, "b": b}, refs, pats, n_boot=200, baseline="b")
    d = out["delta/a-b"]
    assert d["value"] == 0.5 and d["n_patients"] == 6 and 0 < d["ci_low"] <= 0.5 <= d["ci_high"] <= 1.0
    assert "delta/b-b" not in out


def test_retrieval_answers_with_the_neighbours_facts():
    row = pd.Series(
        {
            "attributes": {"shape": ["oval"], "margin": ["circumscribed"]},
            "measurements": {"lvef_pct": 55.0},
            "organ": "breast",
            "view": None,
        }
    )
    assert answer_from_row({"kind": "attribute", "dimension": "shape", "tag": "oval"}, row) == "Yes"
    assert answer_from_row({"kind": "attribute", "dimension": "shape", "tag": "round"}, row) == "No"
    assert answer_from_row({"kind": "organ", "organ": "liver"}, row) == "No"
    t = {"kind": "threshold", "measurement": "lvef_pct", "threshold": 50.0, "above": True}
    assert answer_from_row(t, row) == "Yes"


def test_exact_top1_search_matches_numpy():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 8)).astype(np.float32)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    query = train[[3, 17]] + 0.01
    idx, sim = _search(train, query)
    assert list(idx) == [3, 17] and sim.shape == (2,)


def test_clinical_counts_give_no_credit_for_an_organ_the_text_does_not_name():
    from sonofm.vlm.metrics import clinical_counts

    tp_wrong = clinical_counts([WRONG], [REF], ["breast"])[0][0]
    tp_right = clinical_counts([REF], [REF], ["breast"])[0][0]
    assert tp_wrong == 0 < tp_right  # the region hint parses the reference only


def test_clinical_counts_without_measurements_score_the_categorical_facts_only():
    from sonofm.vlm.metrics import clinical_counts

    ref = REF.replace("is seen in the breast.", "is seen in the breast. It measures 12.3 x 8.1 mm.")
    off = REF.replace("is seen in the breast.", "is seen in the breast. It measures 14.0 x 9.9 mm.")
    with_m = clinical_counts([off], [ref], ["breast"])[0]
    without = clinical_counts([off], [ref], ["breast"], measurements=False)[0]
    assert without[1] == without[2] == 0 and without[0] > 0  # every finding right
    assert with_m[0] == without[0] and with_m[1] > 0 and with_m[2] > 0  # the sizes miss
    out = compare.compare_reports({"gen": [off], "ret": [WRONG]}, [ref], ["breast"], ["p0"], baseline="ret",
                                  n_boot=10)  # fmt: skip
    assert out["clinical_f1_no_measurements"]["gen"]["value"] == 1.0 > out["clinical_f1"]["gen"]["value"]
