"""`sonofm demo`: the summary picks the right metrics, and the quick run completes and resumes."""

from __future__ import annotations

import json

import pytest

from sonofm.demo import StageLog, summarize
from sonofm.errors import UserError


def _doc() -> dict:
    def task(**metrics):
        return {"metrics": {k: {"value": v} for k, v in metrics.items()}}

    tasks = {
        "retrieval": task(**{"image_to_text/R@1": 0.5, "text_to_image/R@1": 0.25}),
        "zeroshot/attributes": task(**{"mean_auc/shape": 0.6, "mean_auc/margin": 0.8, "auc/shape/oval": 0.1}),
        "zeroshot/findings": task(**{"mean_auc/echo": float("nan"), "mean_auc/margin": 0.7}),
    }
    return {"models": [{"label": "a", "tasks": tasks}, {"label": "b", "tasks": {}}]}


def test_summary_rows_and_family_means() -> None:
    rows = {r["metric"]: r for r in summarize(_doc())}
    assert rows["image->text R@1"]["a"] == 0.5 and rows["image->text R@1"]["b"] is None
    assert rows["zero-shot attribute AUC (mean)"]["a"] == pytest.approx(0.7)  # per-tag AUCs excluded
    assert rows["zero-shot finding AUC, pos/neg prompts (mean)"]["a"] == pytest.approx(0.7)  # NaN dropped
    assert "zero-shot region acc" not in rows  # absent for every model -> no row


def test_stage_log_refuses_other_settings(tmp_path) -> None:
    from sonofm.demo import DEFAULT, QUICK

    log = StageLog(tmp_path / "stages.json", QUICK)
    log.finish("simulate", 1.0)
    assert StageLog(tmp_path / "stages.json", QUICK).done("simulate")
    with pytest.raises(UserError, match="other settings"):
        StageLog(tmp_path / "stages.json", DEFAULT)


@pytest.mark.slow
def test_quick_demo_end_to_end_and_resume(tmp_path) -> None:
    from sonofm.demo import run_demo

    res = run_demo(tmp_path / "demo", quick=True)
    assert res.report.is_file() and (tmp_path / "demo/data/preview.png").is_file()
    assert {m["label"] for m in res.results["models"]} == {"clip/model", "usclip/model"}
    assert any(r["metric"] == "image->text R@1" for r in res.summary)
    before = json.loads((tmp_path / "demo/stages.json").read_text())
    messages: list[str] = []
    run_demo(tmp_path / "demo", quick=True, notify=messages.append)
    assert all("already done" in m for m in messages) and len(messages) == 4
    assert json.loads((tmp_path / "demo/stages.json").read_text())["stages"] == before["stages"]
