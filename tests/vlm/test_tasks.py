"""Eval tasks `report_generation` and `vqa`: scoring logic with oracle models, a real tiny VLM, suite YAML."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sonofm.data.manifest import read_manifest
from sonofm.eval.tasks.base import EvalContext
from sonofm.vlm import tasks as vt
from sonofm.vlm.conversations import conversations_from_rows, format_report


class Oracle:
    """A stand-in VLM whose answers are known: ``answer(question)`` gives each reply."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.calls: list[tuple[int, str | None]] = []

    def chat_batch(self, batch, **gen):
        self.calls += [(len(images), q) for images, q in batch]
        return [self.answer(q) for _, q in batch]


@pytest.fixture(scope="module")
def df(sim_dir):
    """The manifest with every third patient moved to the test split (few patients -> few splits)."""
    df = read_manifest(sim_dir)
    test = sorted(set(df["patient_id"]))[::3]
    df.loc[df["patient_id"].isin(test), "split"] = "test"
    return df


def _ctx(model, df, root, n_boot=50):
    return EvalContext(model=model, df=df, root=Path(root), embeddings={}, n_boot=n_boot, seed=0)


def test_report_generation_perfect_and_empty(df, sim_dir):
    test = df[df["split"] == "test"].sort_values("id")
    refs = [format_report(r) for r in test["report"]]
    it = iter(refs)
    perfect = Oracle(lambda q: next(it))  # rows are generated in id order
    res = vt.ReportGeneration(split="test", meteor=False, batch_size=3).run(_ctx(perfect, df, sim_dir))
    assert res.skipped is None and res.info["n"] == len(test)
    for k in ("bleu1", "bleu4", "rouge1", "rougeL", "clinical_f1", "clinical_f1_macro"):
        assert res.metrics[k].value == pytest.approx(1.0), k
    assert res.metrics["cider"].value > 1.0
    assert {f"clinical_f1/{r}" for r in set(test["region"])} <= set(res.metrics)
    assert len(res.plots["images"]) == min(6, len(test))
    assert res.plots["images"][0][0].startswith("data:image/png;base64,")
    silent = Oracle(lambda q: "")
    res = vt.ReportGeneration(split="test", meteor=False).run(_ctx(silent, df, sim_dir))
    assert res.metrics["clinical_f1"].value == 0.0 and res.metrics["bleu1"].value == 0.0
    assert all(q is None and n == 1 for n, q in silent.calls)  # one image each, the default question


def test_vqa_scores_known_answers(df, sim_dir):
    rows = df[df["split"] == "test"].sort_values("id").reset_index(drop=True)
    recs = conversations_from_rows(
        rows, seed=0, tasks=("vqa_closed", "vqa_open", "diagnosis"), questions_per_image=2
    )
    # answers in question order: two images can share a question text with different answers
    truth = [
        (r["conversations"][0]["value"].replace("<image>\n", ""), r["conversations"][1]["value"])
        for r in recs
    ]

    def in_order(pairs):
        it = iter(pairs)

        def answer(q):
            expected, a = next(it)
            assert q == expected  # the task asks the records' questions in their order
            return a

        return answer

    model = Oracle(in_order(truth))
    res = vt.VQA(split="test", seed=0).run(_ctx(model, df, sim_dir))
    assert res.metrics["closed_accuracy"].value == 1.0
    assert res.metrics["open_token_f1"].value == 1.0 and res.metrics["diagnosis_token_f1"].value == 1.0
    # flip every yes/no: closed accuracy drops to the share of multiple-choice questions
    flipped = [(q, {"Yes": "No", "No": "Yes"}.get(a, a)) for q, a in truth]
    res2 = vt.VQA(split="test", seed=0).run(_ctx(Oracle(in_order(flipped)), df, sim_dir))
    closed = [r for r in recs if r["meta"]["task"] == "vqa_closed"]
    mc = sum(r["conversations"][1]["value"] not in ("Yes", "No") for r in closed)
    assert res2.metrics["closed_accuracy"].value == pytest.approx(mc / len(closed))
    assert sum(res.info["n_questions"].values()) == len(recs)


def test_real_tiny_vlm_runs_both_tasks(df, sim_dir):
    import torch

    from sonofm.models.vlm import VLMConfig, build_vlm, train_tokenizer
    from tests.vlm.conftest import TINY_VLM

    tok = train_tokenizer([format_report(r) for r in df["report"]], 400)
    torch.manual_seed(0)
    model = build_vlm(VLMConfig.model_validate(TINY_VLM), tok).eval()
    ctx = _ctx(model, df, sim_dir, n_boot=20)
    res = vt.ReportGeneration(split="test", max_new_tokens=6, meteor=False, max_samples=3).run(ctx)
    assert res.info["n"] == 3 and all(np.isfinite(v.value) for v in res.metrics.values())
    res = vt.VQA(split="test", max_new_tokens=4, max_samples=2).run(ctx)
    assert not math.isnan(res.metrics["closed_accuracy"].value)
    # no findings head, no measurements: every answer is the language model's own
    assert set(res.info["answered_by"]) == {"language model"}
    assert res.metrics["closed_accuracy_language_model"].value == res.metrics["closed_accuracy"].value
    # with a findings head, the head answers the organ/view/descriptor questions it covers
    head = build_vlm(VLMConfig.model_validate({**TINY_VLM, "findings": {}}), tok).eval()
    res = vt.VQA(split="test", max_new_tokens=4, max_samples=4, tasks=("vqa_closed",)).run(
        _ctx(head, df, sim_dir)
    )
    assert res.info["answered_by"].get("findings head", 0) > 0


def test_non_vlm_model_is_skipped(df, sim_dir):
    res = vt.ReportGeneration().run(_ctx(object(), df, sim_dir))
    assert res.skipped and "SonoVLM" in res.skipped


def test_suite_yaml_builds_tasks():
    from sonofm.eval.runner import load_suite

    suite = load_suite("vlm")
    kinds = [t.kind for t in suite.tasks]
    assert kinds == ["report_generation", "vqa"] and not any(t.needs_embeddings for t in suite.tasks)
