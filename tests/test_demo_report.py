"""Every sentence of the demo's reading, checked against constructed results.

Results are built from constructed predictions through the real statistics (patient bootstrap,
paired tests, Holm/BH corrections, health detectors), then read: a collapsed model, a
below-chance model, a single-patient split and a clearly better model. No sentence may
contradict the numbers it sits beside.
"""

from __future__ import annotations

import html
import re
from typing import Any

import numpy as np
import pytest

from sonofm.demo_report import headline_rows, reading
from sonofm.eval.runner import add_corrections
from sonofm.stats import metrics as M
from sonofm.stats import patients as S
from sonofm.stats.health import prediction_health

CLASSES = ["cyst", "fluid collection", "mass", "nodule", "normal appearance"]
NAMES = ("A", "B")
HEADLINE = (
    ("zeroshot/diagnosis", "acc1", "zero-shot diagnosis acc"),
    ("regression_probe", "lvef_pct/mae", "EF regression MAE (points)"),
    ("retrieval", "image_to_text/R@1", "image->text R@1"),
)


def _probs(y: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    onehot = np.eye(len(CLASSES))[y]
    if kind == "good":
        return onehot * 3 + rng.normal(0, 0.5, onehot.shape)
    if kind == "collapsed":  # argmax always "cyst", the ranking still carries a little signal
        return np.c_[np.full(len(y), 10.0), np.zeros((len(y), len(CLASSES) - 1))] + 0.3 * onehot
    if kind == "below":  # anti-correlated: the true class scores lowest
        return -3 * onehot + rng.normal(0, 0.3, onehot.shape)
    return rng.normal(size=onehot.shape)


def _results(
    kind_a: str, kind_b: str, *, n_patients: int = 30, ef_patients: int | None = None
) -> dict[str, Any]:
    """results.json-shaped document for two models scored on the same constructed test patients."""
    rng = np.random.default_rng(0)
    per = 2
    pats = np.repeat([f"p{i}" for i in range(n_patients)], per)
    y = np.arange(pats.size) % len(CLASSES)
    ef_pats = (
        pats
        if ef_patients is None
        else np.repeat([f"p{i}" for i in range(ef_patients)], pats.size // ef_patients)
    )
    ef = np.full(pats.size, 58.0) if ef_patients == 1 else rng.normal(55, 8, pats.size)
    ranks_good = rng.integers(1, 3, pats.size)
    ranks_bad = rng.integers(1, 40, pats.size)
    preds = {
        "A": (_probs(y, kind_a, rng), ef + rng.normal(0, 4, ef.size), ranks_bad),
        "B": (
            _probs(y, kind_b, rng),
            ef + rng.normal(0, 2, ef.size),
            ranks_good if kind_b == "good" else ranks_bad,
        ),
    }
    specs = {
        "zeroshot/diagnosis": [
            ("acc1", M.acc1, lambda p: (y, p[0]), pats),
            ("macro_auc", M.macro_auc, lambda p: (y, p[0]), pats),
        ],
        "regression_probe": [("lvef_pct/mae", M.mae, lambda p: (ef, p[1]), ef_pats)],
        "retrieval": [("image_to_text/R@1", lambda r: M.recall_at_k(r, 1), lambda p: (p[2],), pats)],
    }
    models, compare = [], {}
    for name in NAMES:
        tasks: dict[str, Any] = {}
        for task, metrics in specs.items():
            doc: dict[str, Any] = {"metrics": {}, "info": {}}
            for metric, fn, arrays, groups in metrics:
                ci = S.patient_bootstrap_ci(fn, *arrays(preds[name]), patients=groups, n_boot=200)
                doc["metrics"][metric] = ci.to_dict()
            tasks[task] = doc
        tasks["zeroshot/diagnosis"]["info"] = {
            "classes": CLASSES,
            "health": prediction_health(y, preds[name][0], CLASSES),
        }
        tasks["retrieval"]["info"] = {"n_texts": 90, "n_images": pats.size}
        models.append({"label": name, "tasks": tasks, "card": {"n_parameters": 1_000_000}})
    for task, metrics in specs.items():
        compare[task] = {}
        for metric, fn, arrays, groups in metrics:
            row = S.paired_patient_test(
                fn, arrays(preds["A"]), arrays(preds["B"]), patients=groups, n_boot=300
            )
            row["higher_is_better"] = metric != "lvef_pct/mae"
            compare[task][metric] = row
    counts = add_corrections(compare)
    return {
        "data": {"n_images": {"test": int(pats.size)}, "n_patients": {"test": n_patients}},
        "models": models,
        "compare": {"A vs B": compare},
        "multiple_testing": {"alpha": 0.05, "counts": {"A vs B": counts}},
    }


def _read(results: dict[str, Any], **extra: Any) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    from sonofm.stats.reading import model_alerts

    rows = headline_rows(results, HEADLINE)
    findings, caveats = reading(
        rows,
        NAMES,
        n_test=results["data"]["n_images"]["test"],
        n_test_patients=results["data"]["n_patients"]["test"],
        n_params=1_000_000,
        steps={},
        n_images=None,
        multiple_testing=results["multiple_testing"]["counts"]["A vs B"],
        alerts={n: model_alerts(m) for n, m in zip(NAMES, results["models"], strict=True)},
        **extra,
    )
    return rows, findings, caveats


def _plain(s: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", s))


def _check_consistency(rows: list[dict[str, Any]], findings: list[str]) -> None:
    """Rules every reading obeys, whatever the results."""
    text = " ".join(_plain(f) for f in findings)
    assert "close to chance" not in text  # the old, misapplied rule
    for r in rows:
        sent = next((_plain(f) for f in findings if _plain(f).startswith(r["label"] + ":")), None)
        assert sent is not None, r["label"]
        a, b = r["values"]
        if a is not None and b is not None and f"{a:.3f}" == f"{b:.3f}":
            assert "a tie at" in sent
        elif a is not None and b is not None:
            b_better = (b > a) == r["higher_is_better"]
            winner, wv, lv = ("B", b, a) if b_better else ("A", a, b)
            assert f"{r['label']}: {winner} {wv:.3f} vs {lv:.3f}" in sent
        claimed = re.search(r"(?<!not )significant \(", sent) is not None
        ok = r.get("p_holm") is not None and r["p_holm"] < 0.05 and not r.get("untestable")
        assert claimed == ok, (sent, r)
        if r.get("untestable"):
            assert "not tested" in sent
        for name, v, ci in zip(NAMES, r["values"], r["cis"], strict=True):
            if r.get("chance") is None or not r["higher_is_better"] or ci is None:
                continue
            below = ci[1] < r["chance"]
            said = f"{name} is below chance" in sent or "both are below chance" in sent
            assert below == said, (name, v, ci, sent)


def test_collapsed_model_is_named_in_plain_words():
    rows, findings, _ = _read(_results("collapsed", "good"))
    _check_consistency(rows, findings)
    warn = [_plain(f) for f in findings if "Warning (A)" in f and "collapsed" in f]
    assert warn and "100% of the 60 test images are predicted 'cyst'" in warn[0]
    assert "prediction entropy 0.00" in warn[0]
    assert "20% of the true labels" in warn[0] and "1 of 5 classes" in warn[0]
    assert not [f for f in findings if "Warning (B)" in f and "collapsed" in f]


def test_below_chance_model_is_called_anti_correlated():
    rows, findings, _ = _read(_results("below", "good"))
    _check_consistency(rows, findings)
    auc = next(_plain(f) for f in findings if _plain(f).startswith("zero-shot diagnosis macro AUC:"))
    assert "A is below chance" in auc and "anti-correlated" in auc and "B is above chance" in auc
    acc = next(_plain(f) for f in findings if _plain(f).startswith("zero-shot diagnosis acc:"))
    assert "A is below chance" in acc  # 0.000 accuracy: below chance, not "close to" it
    assert any("below chance (0.5) with its whole 95% interval" in f for f in findings if "Warning (A)" in f)


def test_single_patient_split_claims_nothing():
    rows, findings, caveats = _read(_results("good", "good", ef_patients=1))
    _check_consistency(rows, findings)
    ef = next(_plain(f) for f in findings if _plain(f).startswith("EF regression MAE"))
    assert "not tested" in ef and "1 test patient" in ef and "significant (" not in ef
    ef_row = next(r for r in rows if r["label"].startswith("EF"))
    assert ef_row["cis"] == [None, None] and ef_row["n_patients"] == [1, 1]
    assert any("only 1 patient of the test split" in f for f in findings)


def test_too_few_test_patients_no_significance_anywhere():
    rows, findings, caveats = _read(_results("random", "good", n_patients=5))
    _check_consistency(rows, findings)
    assert not any(re.search(r"(?<!not )significant \(", _plain(f)) for f in findings)
    assert any("fewer than 10 test patients no difference is tested" in c for c in caveats)


def test_clearly_better_model_is_significant_after_holm():
    rows, findings, caveats = _read(_results("random", "good"))
    _check_consistency(rows, findings)
    acc = next(_plain(f) for f in findings if _plain(f).startswith("zero-shot diagnosis acc:"))
    assert re.search(
        r"B \d\.\d{3} vs \d\.\d{3} \(\d+% relative; 30 patients in the test split\): significant", acc
    )
    assert (
        "Holm-corrected p" in acc
        and "B is above chance" in acc
        and "A is indistinguishable from chance" in acc
    )
    assert _plain(findings[0]).startswith("Overall, B is ahead on")
    r1 = next(_plain(f) for f in findings if _plain(f).startswith("image->text R@1"))
    assert "both are above chance" in r1 or "B is above chance" in r1
    mt = next(c for c in caveats if "metric differences were tested" in c)
    assert "after Holm" in mt and "Benjamini-Hochberg" in mt


def test_headline_has_auc_and_chance_for_every_zero_shot_task():
    rows, _, _ = _read(_results("collapsed", "good"))
    labels = [r["label"] for r in rows]
    assert labels.index("zero-shot diagnosis macro AUC") == labels.index("zero-shot diagnosis acc") + 1
    by = {r["label"]: r for r in rows}
    assert by["zero-shot diagnosis acc"]["chance"] == pytest.approx(0.2)
    assert by["zero-shot diagnosis macro AUC"]["chance"] == 0.5
    # a collapsed argmax hides ranking signal that the AUC shows
    acc_a, auc_a = (
        by["zero-shot diagnosis acc"]["values"][0],
        by["zero-shot diagnosis macro AUC"]["values"][0],
    )
    assert acc_a == pytest.approx(0.2) and auc_a > 0.9


def test_multiple_testing_counts_reconcile():
    results = _results("random", "good")
    counts = results["multiple_testing"]["counts"]["A vs B"]
    tested = [
        r for t in results["compare"]["A vs B"].values() for r in t.values() if r["p_value"] == r["p_value"]
    ]
    assert counts["tests"] == len(tested)
    assert counts["raw"] == sum(r["p_value"] < 0.05 for r in tested)
    assert counts["holm"] == sum(r["p_holm"] < 0.05 for r in tested) <= counts["raw"]


def test_retrieval_chance_is_k_over_gallery():
    from sonofm.demo_report import _chance

    task = {"info": {"n_texts": 50, "n_images": 200}}
    assert _chance(task, "image_to_text/R@1") == pytest.approx(1 / 50)
    assert _chance(task, "image_to_text/R@10") == pytest.approx(10 / 50)
    assert _chance(task, "text_to_image/R@10") == pytest.approx(10 / 200)
    assert _chance({"info": {"n_texts": 5, "n_images": 5}}, "image_to_text/R@10") == 1.0
    assert _chance({"info": {}}, "image_to_text/R@10") is None


def test_a_bootstrap_too_small_for_holm_is_said_not_read_as_no_difference():
    """With n resamples a bootstrap p is at least 1/(n+1); when Holm's smallest threshold is below
    that, the caveat says no difference could pass, instead of letting 'none significant' stand."""
    results = _results("random", "good")
    tests = results["multiple_testing"]["counts"]["A vs B"]["tests"]
    powerless = int(tests / 0.05) - 2  # 1/(n+1) just above 0.05/tests
    able = int(tests / 0.05) + 2
    _, _, caveats = _read(results, n_boot=powerless)
    said = [c for c in caveats if "no difference can pass it" in c]
    assert len(said) == 1 and f"With {powerless} bootstrap resamples" in said[0]
    _, _, caveats = _read(results, n_boot=able)
    assert not any("no difference can pass it" in c for c in caveats)
