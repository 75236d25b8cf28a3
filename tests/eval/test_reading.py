"""The eval report's plain-words alerts and tables, from constructed task results."""

from __future__ import annotations

import numpy as np

from sonofm.eval.tables import results_markdown
from sonofm.stats import metrics as M
from sonofm.stats import patients as S
from sonofm.stats.health import prediction_health
from sonofm.stats.reading import alerts_html, ci_text, task_alerts

CLASSES = ["PLAX", "PSAX_PM", "A4C", "SC4C"]


def _task(y: np.ndarray, probs: np.ndarray, pats: np.ndarray) -> dict:
    metrics = {
        name: S.patient_bootstrap_ci(fn, y, probs, patients=pats, n_boot=200).to_dict()
        for name, fn in (("acc1", M.acc1), ("macro_auc", M.macro_auc))
    }
    return {"metrics": metrics, "info": {"classes": CLASSES, "health": prediction_health(y, probs, CLASSES)}}


def test_collapsed_view_classifier_alert():
    y = np.arange(40) % 4
    probs = np.tile([0.1, 0.7, 0.1, 0.1], (40, 1))  # everything "PSAX_PM"
    alerts = task_alerts("zeroshot/view", _task(y, probs, np.repeat(np.arange(20), 2)))
    assert (
        len(alerts) == 1
        and "predictions collapsed: 100% of the 40 test images are predicted 'PSAX_PM'" in alerts[0]
    )
    assert "<li>" in alerts_html(alerts) and alerts_html([]) == ""


def test_anti_correlated_scores_alert():
    y = np.arange(40) % 4
    probs = 1 - np.eye(4)[y] + np.random.default_rng(0).uniform(0, 0.1, (40, 4))
    alerts = task_alerts("zeroshot/diagnosis", _task(y, probs, np.repeat(np.arange(20), 2)))
    assert any(
        "below chance (0.5) with its whole 95% interval" in a and "anti-correlated" in a for a in alerts
    )


def test_healthy_model_has_no_alert_and_cis_show_patients():
    y = np.arange(40) % 4
    doc = _task(y, np.eye(4)[y] + 0.01, np.repeat(np.arange(20), 2))
    assert task_alerts("zeroshot/view", doc) == []
    assert ci_text(doc["metrics"]["acc1"]).endswith("(20 patients)")


def test_single_patient_and_unseen_classes_alerts():
    ef = S.patient_bootstrap_ci(M.mae, np.full(6, 58.0), np.full(6, 60.0), patients=["p"] * 6).to_dict()
    doc = {"metrics": {"lvef_pct/mae": ef}, "info": {"test_unseen_classes": {"breast": 3}}}
    alerts = task_alerts("regression_probe", doc)
    assert any("only 1 patient" in a and "no interval" in a for a in alerts)
    assert any("absent from training were left out: breast (3)" in a for a in alerts)
    assert ci_text(ef) == "2.000 (1 patient: no interval)"


def test_markdown_compare_shows_patients_and_corrections():
    from sonofm.eval.runner import add_corrections

    compare = {
        "t": {
            "m1": {"a": 0.5, "b": 0.6, "delta": -0.1, "p_value": 0.01, "n_patients": 30},
            "m2": {"a": 0.5, "b": 0.6, "delta": -0.1, "p_value": 0.04, "n_patients": 30},
            "m3": {
                "a": 0.5,
                "b": 0.5,
                "delta": 0.0,
                "p_value": float("nan"),
                "n_patients": 3,
                "untestable": "3 test patients (< 10): no test",
            },
        }
    }
    counts = add_corrections(compare)
    assert counts == {"tests": 2, "raw": 2, "holm": 1, "bh": 1} or counts["holm"] <= counts["raw"]
    doc = {
        "suite": {"name": "s", "n_boot": 10, "bootstrap_unit": "patient"},
        "data": {"dir": "d", "hash": "h" * 12, "n_images": {"test": 60}},
        "models": [
            {"label": "a", "dir": "a", "hash": "a" * 12, "tasks": {}},
            {"label": "b", "dir": "b", "hash": "b" * 12, "tasks": {}},
        ],
        "compare": {"a vs b": compare},
        "multiple_testing": {"alpha": 0.05, "counts": {"a vs b": counts}},
    }
    md = results_markdown(doc)
    assert "| p (Holm) | p (BH) |" in md and "3 test patients (< 10): no test" in md
    assert "2 differences were tested: 2 have p < 0.05 before correction" in md
