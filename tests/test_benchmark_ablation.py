# SPDX-License-Identifier: Apache-2.0
"""benchmarks/ablation.py --quick: the demo's recipe, 2 objectives x 2 seeds on tiny data, reported
per patient (#17): pooled values with CIs that contain them and their patient counts, the paired
difference against CLIP with Holm-adjusted p-values, and runs that are not retrained."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sonofm.stats.patients import MIN_PATIENTS

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"


def _ablation():
    if "sonofm_bench_ablation" not in sys.modules:
        spec = importlib.util.spec_from_file_location("sonofm_bench_ablation", BENCH)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["sonofm_bench_ablation"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["sonofm_bench_ablation"]


def test_objectives_keep_the_demo_models():
    from sonofm.demo import MODELS

    abl = _ablation()
    names = abl.objectives()
    assert list(names)[0] == abl.BASELINE == "clip"
    assert names["usclip"] == MODELS["usclip"] and names["clip"] == MODELS["clip"]
    assert {
        "soft_clip",
        "soft_clip+semantic",
        "soft_clip+semantic+graph",
        "+view",
        "+negation",
        "+supervised",
    } < set(names)
    assert names["+view"] == "soft_clip+semantic+graph+view"
    for name, (base, changes) in abl.RECIPE_VARIANTS.items():  # a recipe variant of a known model
        assert base in names and "," not in name and set(changes) <= {"group_by", "group_fraction", "epochs"}


def test_runs_of_another_recipe_get_their_own_folder(tmp_path, monkeypatch):
    """A grouped or longer run is never reused as the demo recipe's run (or the reverse): the
    recipe axes that --group-by/--group-fraction/--epochs move are in the run's folder name."""
    import dataclasses

    import sonofm.demo
    from sonofm.demo import DEFAULT

    abl = _ablation()
    trained: list[tuple[str, object]] = []

    def fake_pretrain(data, run, loss, plan):
        trained.append((run.name, plan))
        (run / "model").mkdir(parents=True)
        (run / "model" / "config.json").write_text("{}")
        return {"steps": 1}

    monkeypatch.setattr(sonofm.demo, "_pretrain", fake_pretrain)
    plans = [
        DEFAULT,
        dataclasses.replace(DEFAULT, group_by="region", group_fraction=0.25),
        dataclasses.replace(DEFAULT, group_by="region", group_fraction=0.5),
        dataclasses.replace(DEFAULT, group_by="region", group_fraction=0.25, epochs=6),
    ]
    for plan in plans * 2:  # the second pass finds every model and trains nothing
        abl.train(tmp_path / "data", tmp_path, "clip", "clip", 0, plan)
    names = [name for name, _ in trained]
    assert len(names) == len(set(names)) == 4
    e = f"e{DEFAULT.epochs}"
    assert names[0] == f"clip-s0-cs0.5-{e}" and names[3] == "clip-s0-cs0.5-gregion0.25-e6"
    assert [p.seed for _, p in trained] == [0] * 4
    # what the name does not carry is checked against the run's record: never reused silently
    with pytest.raises(SystemExit, match="batch_size"):
        abl.train(tmp_path / "data", tmp_path, "clip", "clip", 0, dataclasses.replace(DEFAULT, batch_size=32))
    # ... unless it cannot change the model
    abl.train(tmp_path / "data", tmp_path, "clip", "clip", 0, dataclasses.replace(DEFAULT, loader_workers=2))
    assert len(trained) == 4
    # an objective whose loss changed (the demo's usclip gained a term) is not its old run
    abl.train(tmp_path / "data", tmp_path, "usclip", "soft_clip+supervised", 0, DEFAULT)
    with pytest.raises(SystemExit, match="loss 'soft_clip\\+supervised' vs"):
        abl.train(tmp_path / "data", tmp_path, "usclip", "soft_clip+supervised+label_text", 0, DEFAULT)


@pytest.mark.slow
def test_quick_ablation_json_table_and_resume(tmp_path):
    from sonofm.demo import DEFAULT

    abl = _ablation()
    work, out = tmp_path / "work", tmp_path / "out"
    args = ["--quick", "--objectives", "soft_clip", "--seeds", "0,1", "--work", str(work), "--out", str(out)]
    abl.main([*args, "--n-boot", "50"])  # clip is added: every row is compared with it

    doc = json.loads((out / "ablation.json").read_text())
    assert list(doc["objectives"]) == ["clip", "soft_clip"] and doc["seeds"] == [0, 1]
    assert (doc["plan"]["n_images"], doc["plan"]["epochs"], doc["plan"]["batch_size"]) == (240, 1, 32)
    assert doc["plan"]["model"] == DEFAULT.model and doc["plan"]["image_size"] == DEFAULT.image_size
    k = doc["data"]["n_patients"]["test"]
    with_ci = 0
    for obj in doc["objectives"].values():
        assert [r["seed"] for r in obj["runs"]] == [0, 1]
        assert set(obj["metrics"]) == set(abl.METRICS)
        for key, m in obj["metrics"].items():
            if key == "learnable_auc" and m["value"] is None:  # no tag is learnable after 1 epoch
                assert "not computed" in m["note"]
                continue
            assert 0 < m["n_patients"] <= k and len(m["per_seed"]) == 2
            assert m["value"] == pytest.approx(np.mean(m["per_seed"]))
            if m["ci_low"] is None:
                assert m["n_patients"] < MIN_PATIENTS and "no CI" in m["note"]
            else:
                assert m["ci_low"] <= m["value"] <= m["ci_high"]
                with_ci += 1
    assert with_ci > 0 and k >= MIN_PATIENTS
    assert "vs_baseline" not in doc["objectives"]["clip"]
    clip, soft = doc["objectives"]["clip"]["metrics"], doc["objectives"]["soft_clip"]["metrics"]
    for key, t in doc["objectives"]["soft_clip"]["vs_baseline"].items():
        if "delta" not in t:  # a metric one of the two models did not compute
            assert "not computed" in t["note"] and None in (clip[key]["value"], soft[key]["value"])
            continue
        assert t["delta"] == pytest.approx(soft[key]["value"] - clip[key]["value"])
        assert t["n_patients"] == clip[key]["n_patients"]
        if t.get("untestable"):
            assert t["p_value"] is None and t["ci_low"] is None
        else:
            assert 0 < t["p_value"] <= t["p_holm"] <= 1
            assert t["ci_low"] <= t["delta"] <= t["ci_high"]
    assert doc["multiple_testing"]["method"] == "holm"

    md = (out / "ablation.md").read_text()
    assert "| clip |" in md and "| soft_clip |" in md and "Holm" in md and "(Δ " in md
    assert f"zero-shot region acc ({clip['region_acc']['n_patients']} patients)" in md

    # resumable: a run whose model exists is not trained again
    (weights,) = (work / "runs").glob("clip-s0*/model/model.safetensors")
    stamp = weights.stat().st_mtime_ns
    info = abl.train(work / "data", work, "clip", "clip", 0, abl.quick_plan())
    assert weights.stat().st_mtime_ns == stamp
    assert info["train_seconds"] == doc["objectives"]["clip"]["runs"][0]["train_seconds"]
