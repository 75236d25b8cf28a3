"""Learning check (slow): a tiny VLM learns to write the right report for a small simulated set.

The measurement with MoE vs dense and generation speed is `benchmarks/vlm.py`; this is its quick
version: clinical-correctness F1 of greedy reports on the training images must reach 0.9, the
test images are scored too (a few dozen images are memorised, not generalised, so no target).
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.tiny_models import tiny_vlm

LEARN_VLM = tiny_vlm(
    "learn-tiny",
    image={"hidden_size": 64, "intermediate_size": 128},
    lm={"hidden_size": 96, "intermediate_size": 192},
    vocab_size=1000,
)


@pytest.mark.slow
def test_tiny_vlm_learns_reports(tmp_path):
    from sonofm.data.dataset import read_grayscale
    from sonofm.data.manifest import read_manifest
    from sonofm.sim.generator import simulate_dataset
    from sonofm.vlm.conversations import format_report
    from sonofm.vlm.metrics import report_metrics
    from sonofm.vlm.train import VLMTrainConfig, train_vlm

    torch.set_num_threads(1)
    data = simulate_dataset(
        tmp_path / "data", 24, regions=["breast", "thyroid"], size=32, seed=0, progress=False
    )
    cfg = VLMTrainConfig.model_validate(
        {
            "model": LEARN_VLM,
            "data": {"path": str(data), "tasks": ["report"], "val_split": None, "report_questions": 3},
            "train": {
                "batch_size": 8,
                "progress": False,
                "device": "cpu",
                "weight_decay": 0.0,
                "log_every": 50,
            },
            "stage1": {"epochs": 1000, "max_steps": 10, "lr": 3e-3},
            "stage2": {"epochs": 1000, "max_steps": 400, "lr": 3e-3},
        }
    )
    model = train_vlm(cfg, tmp_path / "run").model.eval()
    df = read_manifest(data)
    scores = {}
    for split in ("train", "test"):
        rows = df[df["split"] == split]
        if rows.empty:
            continue
        images = [read_grayscale(data / p) for p in rows["image"]]
        preds = model.chat_batch([([im], None) for im in images], max_new_tokens=160)
        refs = [format_report(r) for r in rows["report"]]
        scores[split] = report_metrics(preds, refs, list(rows["region"]), meteor=False)
    assert scores["train"]["clinical_f1"] >= 0.9, scores["train"]
    assert scores["train"]["bleu1"] > 0.8
    for s in scores.values():
        assert math.isfinite(s["clinical_f1"])
