"""`sonofm demo`: the summary picks the right metrics, the report reads the numbers right and opens
in a real browser, and the quick run completes, resumes and writes a report worth looking at."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from sonofm.demo import HEADLINE, StageLog, summarize
from sonofm.errors import UserError
from tests.browser import chromium_page, save_screenshot


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
    # a demo written before a plan field existed (its default keeps the old behaviour) resumes
    old = json.loads((tmp_path / "stages.json").read_text())
    del old["plan"]["group_by"], old["plan"]["group_fraction"]
    (tmp_path / "stages.json").write_text(json.dumps(old))
    assert StageLog(tmp_path / "stages.json", QUICK).done("simulate")
    old["plan"]["group_fraction"] = 0.5  # but not one that set it otherwise
    (tmp_path / "stages.json").write_text(json.dumps(old))
    with pytest.raises(UserError, match="other settings"):
        StageLog(tmp_path / "stages.json", QUICK)


def test_stage_log_refuses_models_of_other_objectives(tmp_path) -> None:
    """The demo's ultrasound-aware objective gained a term: its trained stage from before is not
    reused as this demo's model; a demo that has only simulated resumes."""
    from sonofm.demo import MODELS, QUICK

    log = StageLog(tmp_path / "stages.json", QUICK)
    log.finish("simulate", 1.0)
    log.finish("pretrain-clip", 1.0)
    assert StageLog(tmp_path / "stages.json", QUICK).done("pretrain-clip")
    old = json.loads((tmp_path / "stages.json").read_text())
    old["objectives"] = {**MODELS, "usclip": "soft_clip+semantic+graph+view+negation+supervised"}
    (tmp_path / "stages.json").write_text(json.dumps(old))
    with pytest.raises(UserError, match="other objectives"):
        StageLog(tmp_path / "stages.json", QUICK)
    del old["objectives"]  # written before they were recorded
    (tmp_path / "stages.json").write_text(json.dumps(old))
    with pytest.raises(UserError, match="before the objectives were recorded"):
        StageLog(tmp_path / "stages.json", QUICK)
    old["stages"] = {"simulate": {"seconds": 1.0}}
    (tmp_path / "stages.json").write_text(json.dumps(old))
    assert StageLog(tmp_path / "stages.json", QUICK).done("simulate")


def test_pretraining_stages_get_the_plans_recipe(tmp_path, monkeypatch) -> None:
    """Each demo model trains with the plan's recipe: captions, measured statistics, caption
    sampling and grouped batches reach the resolved config (a dropped key would silently train
    another recipe than the README describes)."""
    import dataclasses

    import sonofm.pretrain
    from sonofm.demo import CAPTION_SAMPLING, DEFAULT, _pretrain

    seen = []

    class _Fit:
        step, last_val = 7, {}

    def fake_pretrain(config, run, resume=None):
        seen.append(config)
        return type("R", (), {"fit": _Fit})()

    monkeypatch.setattr(sonofm.pretrain, "pretrain", fake_pretrain)
    plan = dataclasses.replace(DEFAULT, group_by="region", group_fraction=0.3, seed=4)
    assert _pretrain(tmp_path / "data", tmp_path / "run", "clip", plan) == {"steps": 7, "val": {}}
    data, train = seen[0].data, seen[0].train
    assert (data.text, data.normalize, data.caption_sampling) == ("caption", "data", CAPTION_SAMPLING)
    assert (data.group_by, data.group_fraction) == ("region", 0.3)
    assert (train.epochs, train.batch_size, train.seed) == (DEFAULT.epochs, DEFAULT.batch_size, 4)


# ------------------------------------------------------------------ the report, on a synthetic run
def _metric(v: float, lo: float, hi: float) -> dict:
    return {"value": v, "ci_low": lo, "ci_high": hi, "n": 40}


def _results(data_dir: Path) -> dict:
    """Two models: B clearly better on R@1 (p = 0.002), worse on EF MAE but not significantly."""
    a = {
        "retrieval": {"metrics": {"image_to_text/R@1": _metric(0.20, 0.1, 0.3)}, "info": {}},
        "regression_probe": {"metrics": {"lvef_pct/mae": _metric(5.0, 4.0, 6.0)}, "info": {}},
        "zeroshot/attributes": {
            "metrics": {"mean_auc/shape": {"value": 0.6}, "auc/shape/oval": _metric(0.6, 0.5, 0.7)},
            "info": {},
        },
    }
    b = {
        "retrieval": {"metrics": {"image_to_text/R@1": _metric(0.40, 0.3, 0.5)}, "info": {}},
        "regression_probe": {"metrics": {"lvef_pct/mae": _metric(5.5, 4.5, 6.5)}, "info": {}},
        "zeroshot/attributes": {
            "metrics": {"mean_auc/shape": {"value": 0.7}, "auc/shape/oval": _metric(0.7, 0.6, 0.8)},
            "info": {},
        },
    }
    compare = {
        "retrieval": {"image_to_text/R@1": {"a": 0.2, "b": 0.4, "delta": -0.2, "p_value": 0.002}},
        "regression_probe": {
            "lvef_pct/mae": {"a": 5.0, "b": 5.5, "delta": -0.5, "p_value": 0.4, "higher_is_better": False}
        },
        "zeroshot/attributes": {"auc/shape/oval": {"a": 0.6, "b": 0.7, "delta": -0.1, "p_value": 0.03}},
    }
    from sonofm.eval.runner import add_corrections

    add_corrections(compare)
    card = {"n_parameters": 19_000_000}
    return {
        "data": {"dir": str(data_dir), "n_images": {"train": 16, "val": 4, "test": 4}},
        "models": [
            {"label": "clip/model", "tasks": a, "card": card},
            {"label": "usclip/model", "tasks": b, "card": card},
        ],
        "compare": {"clip/model vs usclip/model": compare},
    }


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory) -> Path:
    from sonofm.demo_report import write_demo_report
    from sonofm.eval.report import png_data_uri
    from sonofm.sim.generator import simulate_dataset

    out = tmp_path_factory.mktemp("demo")
    simulate_dataset(out / "data", 16, size=64, seed=0, regions="breast,heart", progress=False, preview=True)
    for name, terms in (("clip", ["contrastive_loss"]), ("usclip", ["soft_clip_loss", "semantic_loss"])):
        run = out / "runs" / name
        run.mkdir(parents=True)
        lines = []
        for step in range(1, 11):
            rec = {"step": step, "loss": 4.0 - 0.1 * step, **{t: 2.0 - 0.05 * step for t in terms}}
            lines.append(json.dumps(rec))
            if step % 5 == 0:
                lines.append(json.dumps({"step": step, "val/r_mean": 0.03 * step, "val/r1": 0.01 * step}))
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (out / "eval").mkdir()
    src = png_data_uri(np.full((8, 8), 128, np.uint8))
    (out / "eval" / "report.html").write_text(
        f'<!DOCTYPE html><html><body><h1>sonofm evaluation: quick</h1><img src="{src}" alt="x"></body></html>'
    )
    stages = {"simulate": {"seconds": 3.0}, "pretrain-clip": {"seconds": 9.0, "steps": 10}}
    return write_demo_report(
        out,
        results=_results(out / "data"),
        headline=HEADLINE,
        plan={"n_images": 16, "image_size": 64, "epochs": 2},
        stages=stages,
        machine={"cpu": "test cpu", "cores": 2},
        runs={"clip": out / "runs" / "clip", "usclip": out / "runs" / "usclip"},
        names=("baseline CLIP (clip)", "ultrasound-aware (usclip)"),
    )


A, B = "baseline CLIP (clip)", "ultrasound-aware (usclip)"


def test_report_reading_follows_the_numbers(synthetic_report) -> None:
    text = synthetic_report.read_text()
    reading = text[text.index("id='reading'") : text.index("id='headline'")]
    # R@1: B ahead by 0.20 (100% relative), significant; EF MAE (lower is better): A ahead, not significant
    assert re.search(r"R@1</b>: ultrasound-aware \(usclip\) 0\.400 vs 0\.200 \(100% relative\)", reading)
    assert (
        "significant</span> (paired bootstrap over patients, p = 0.002; Holm-corrected p = 0.006)" in reading
    )
    assert re.search(r"EF regression MAE \(points\)</b>: baseline CLIP \(clip\) 5\.000 vs 5\.500", reading)
    assert "not significant</span> (p = 0.400" in reading
    # per-tag AUC: significant alone (p = 0.03), not after Holm over the 3 tests (2 x 0.03 = 0.06)
    tag = f"1 favour {B} and 0 favour {A}, of 1; after Holm correction 0 and 0"
    assert tag in reading
    assert "ahead on 2 of 3 headline metrics" in reading
    for caveat in ("simulated", "tiny", "only 10 steps (clip)", "only <b>4 images</b>"):
        assert caveat in text, caveat
    # what was simulated is counted from the data, not hard-coded; headings use the run names
    assert "over 2 body regions (breast, heart)" in text and "seven body regions" not in text


def test_report_is_self_contained(synthetic_report) -> None:
    text = synthetic_report.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<script" not in text.lower()
    assert not re.search(r'(src|href)="(https?:|//)', text)
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(imgs) >= 4  # contact sheet, 2 training figures, the eval report's figure
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in imgs)
    assert "<h2>sonofm evaluation: quick</h2>" in text  # eval report inlined, headings demoted


def test_report_opens_in_headless_chromium(synthetic_report) -> None:
    with chromium_page() as (page, errors):
        page.goto(synthetic_report.resolve().as_uri(), wait_until="load")
        broken = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length")
        n_imgs = page.evaluate("document.images.length")
        save_screenshot(page, "demo_report_synthetic.png")
    assert errors == [] and broken == 0 and n_imgs >= 4


# ------------------------------------------------------------------ the real quick demo
@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    from sonofm.demo import run_demo

    out = tmp_path_factory.mktemp("quick") / "demo"
    return run_demo(out, quick=True)


@pytest.mark.slow
def test_quick_demo_end_to_end_and_resume(quick_demo) -> None:
    from sonofm.demo import run_demo

    res, out = quick_demo, quick_demo.out
    assert res.report == out / "report.html" and res.report.is_file()
    assert (out / "data/preview.png").is_file() and (out / "eval/report.html").is_file()
    assert {m["label"] for m in res.results["models"]} == {"clip", "usclip"}  # run names, not "model"
    assert any(r["metric"] == "image->text R@1" for r in res.summary)
    before = json.loads((out / "stages.json").read_text())
    messages: list[str] = []
    again = run_demo(out, quick=True, notify=messages.append)
    assert all("already done" in m for m in messages) and len(messages) == 4
    assert json.loads((out / "stages.json").read_text())["stages"] == before["stages"]
    assert again.report.is_file()


@pytest.mark.slow
def test_quick_demo_report_in_headless_chromium(quick_demo) -> None:
    text = quick_demo.report.read_text()
    for needle in ("The data", "Training", "What the numbers say", "Caveats", "Headline numbers", "t-SNE"):
        assert needle in text, needle
    assert "<script" not in text.lower() and not re.search(r'(src|href)="(https?:|//)', text)
    with chromium_page() as (page, errors):
        page.goto(quick_demo.report.resolve().as_uri(), wait_until="load")
        n_imgs = page.evaluate("document.images.length")
        broken = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length")
        shot = save_screenshot(page, "demo_report.png")
    assert errors == []
    assert n_imgs >= 10 and broken == 0
    assert shot.stat().st_size > 50_000


def test_reading_chance_level_and_ties() -> None:
    """Chance is judged per model from its CI; equal printed values are a tie, not a win."""
    from sonofm.demo_report import reading

    rows = [
        {
            "label": "some AUC",
            "metric": "macro_auc",
            "values": [0.49, 0.52],
            "cis": [(0.40, 0.58), (0.45, 0.60)],
            "higher_is_better": True,
            "p_value": 0.5,
            "chance": 0.5,
        },
        {
            "label": "acc",
            "metric": "acc1",
            "values": [0.3, 0.3],
            "cis": [None, None],
            "higher_is_better": True,
            "p_value": 1.0,
            "chance": 0.1,
        },
        {
            "label": "MAE",
            "metric": "mae",
            "values": [2.0, None],
            "cis": [None, None],
            "higher_is_better": False,
            "p_value": None,
            "chance": None,
        },
    ]
    findings, caveats = reading(rows, ("A", "B"), n_test=None, n_params=None, steps={}, n_images=None)
    text = " ".join(findings)
    assert "B 0.520 vs 0.490 (6% relative)" in text
    assert "Against chance (chance is 0.500): both are indistinguishable from chance." in text
    assert "acc: a tie at 0.300. Against chance (chance is 0.100): both are above chance." in text
    assert "only one model has this number" in text
    assert "B</b> is ahead on 1 of 1 headline metrics" in text
    assert any("simulated" in c for c in caveats)
