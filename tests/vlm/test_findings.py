"""The findings prompt (models/vlm_findings.py): labels <-> targets <-> hint text, the head's loss
against torch's own losses, the prompt layout shared by training and generation, and a trained
head that conditions what the model writes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sonofm.models import vlm_prompt
from sonofm.models.vlm_findings import (
    SINGLE_GROUPS,
    FindingsConfig,
    FindingsHead,
    FindingsVocab,
    stack_targets,
)
from sonofm.vlm.conversations import conversations_from_dataset, labels_of_row

VOCAB = FindingsVocab.from_config(FindingsConfig())

BREAST = {
    "organ": "breast",
    "view": None,
    "diagnosis": "mass",
    "attributes": {
        "shape": ["oval", "wider_than_tall"],
        "echogenicity": ["hypoechoic"],
        "internal": ["solid"],
    },
    "echo": None,
}
HEART = {
    "organ": "heart",
    "view": "A4C",
    "diagnosis": "normal",
    "attributes": {},
    "echo": ["lv_dilation", "reduced_lvef"],
}


def _col(group: str, value: str) -> int:
    return VOCAB.labels.index((group, value))


def _known(known: torch.Tensor) -> set[str]:
    return {g for g, k in zip(VOCAB.groups, known.tolist(), strict=True) if k}


def test_targets_mark_what_the_row_states_and_mask_what_it_does_not():
    y, known = VOCAB.targets(BREAST)
    on = {VOCAB.labels[j] for j in torch.nonzero(y).flatten().tolist()}
    assert on == {
        ("organ", "breast"),
        ("view", "none"),  # a breast scan has no echo view: a class, not a gap
        ("diagnosis", "mass"),
        ("shape", "oval"),
        ("shape", "wider_than_tall"),
        ("echogenicity", "hypoechoic"),
        ("internal", "solid"),
    }
    # a lesion whose row skips margin/posterior/vascularity says nothing about them; a scan without
    # an echo view has no echo findings (known negatives)
    assert _known(known) == {"organ", "view", "diagnosis", "shape", "echogenicity", "internal", "echo"}
    y, known = VOCAB.targets(HEART)
    assert y[_col("view", "A4C")] == 1 and y[_col("echo", "reduced_lvef")] == 1
    assert y[_col("echo", "pericardial_effusion")] == 0
    # no descriptor at all and a diagnosis: every descriptor tag is absent (known negatives)
    assert _known(known) == set(VOCAB.groups)
    assert float(y[VOCAB.spans[VOCAB.groups.index("shape")][0] : VOCAB.spans[-1][0]].sum()) == 0
    y, known = VOCAB.targets(None)
    assert not y.any() and not known.any()
    # a breast scan has no echo view, hence no echo findings: known negatives, not a gap


def test_echo_findings_are_only_stated_with_an_echo_view():
    y, _ = VOCAB.targets(HEART)
    probs = y.clone()
    a, b = VOCAB.spans[VOCAB.groups.index("view")]
    probs[a:b] = 0
    probs[VOCAB.labels.index(("view", "none"))] = 1  # the head decides "no view" ...
    labels = VOCAB.decide(probs[None], threshold=0.5)[0]
    assert labels["view"] is None and labels["echo"] == []  # ... so its echo findings are dropped
    assert "ventricular" not in VOCAB.hint_text(labels)


def test_decide_and_hint_round_trip_the_labels():
    for labels in (BREAST, HEART):
        y, _ = VOCAB.targets(labels)
        back = VOCAB.decide(y[None], threshold=0.5)[0]
        assert back["organ"] == labels["organ"] and back["view"] == labels["view"]
        assert back["diagnosis"] == labels["diagnosis"]
        assert {d: sorted(t) for d, t in back["attributes"].items()} == {
            d: sorted(t) for d, t in labels["attributes"].items()
        }
        assert sorted(back["echo"] or []) == sorted(labels["echo"] or [])
        assert VOCAB.hint_text(back) == VOCAB.hint_text(labels)
    assert (
        VOCAB.hint_text(BREAST) == "Image findings: breast; mass; oval, wider-than-tall, hypoechoic, solid."
    )
    # the manifest's tag order does not change the text (a prediction lists tags in vocabulary order)
    shuffled = {
        **BREAST,
        "attributes": {
            "shape": ["wider_than_tall", "oval"],
            **{k: v for k, v in BREAST["attributes"].items() if k != "shape"},
        },
    }
    assert VOCAB.hint_text(shuffled) == VOCAB.hint_text(BREAST)
    hint = VOCAB.hint_text(HEART)
    assert hint.startswith("Image findings: heart; apical four-chamber view; normal appearance;")
    assert "reduced left ventricular ejection fraction" in hint


def test_head_loss_equals_torchs_cross_entropy_and_bce_over_labelled_images():
    torch.manual_seed(0)
    head = FindingsHead(8, VOCAB)
    rows = [BREAST, HEART, None]
    y, known = stack_targets(VOCAB, rows)
    logits = torch.randn(3, VOCAB.size)
    got = head.loss(logits, y, known)
    per_group = []
    for k, (group, (a, b)) in enumerate(zip(VOCAB.groups, VOCAB.spans, strict=True)):
        rows_k = [i for i in range(3) if known[i, k]]
        if not rows_k:
            continue
        z, t = logits[rows_k, a:b], y[rows_k, a:b]
        if group in SINGLE_GROUPS:
            per_group.append(F.cross_entropy(z, t.argmax(-1)))
        else:
            per_group.append(F.binary_cross_entropy_with_logits(z, t))
    torch.testing.assert_close(got, torch.stack(per_group).mean())
    probs = head.probabilities(logits)
    a, b = VOCAB.spans[0]
    torch.testing.assert_close(probs[:, a:b].sum(-1), torch.ones(3))


def test_manifest_labels_and_the_training_prompt_match_generation(lesion_dir):
    from sonofm.data.dataset import load_table
    from sonofm.vlm.data import ConversationDataset

    df = load_table(lesion_dir, "train")
    row = df.sort_values("id").iloc[0]
    labels = labels_of_row(row)
    assert labels["organ"] == row["organ"] and labels["diagnosis"] == row["diagnosis"]
    recs = conversations_from_dataset(lesion_dir, "train", seed=0, tasks=("report", "multi_image"))
    assert recs[0]["meta"]["labels"] == labels
    multi = [r for r in recs if len(r["image"]) > 1]
    assert multi and all("labels" not in r["meta"] for r in multi)
    texts = [t["value"] for r in recs for t in r["conversations"]] + VOCAB.all_phrases()
    tok = vlm_prompt.train_tokenizer(texts, 600)
    ds = ConversationDataset(recs, lesion_dir, tok, num_image_tokens=4, image_size=32, findings=VOCAB)
    item = ds[0]
    question = recs[0]["conversations"][0]["value"].replace(f"{vlm_prompt.IMAGE_TOKEN}\n", "")
    prompt = vlm_prompt.render_prompt(question, 1, tok, 4, hint=VOCAB.hint_text(labels))
    # the training sample starts with exactly the prompt generation renders with that hint
    assert item["input_ids"][: len(prompt)].tolist() == prompt
    assert "Image findings:" in tok.decode(prompt)
    y, known = item["findings"]
    torch.testing.assert_close(y[0], VOCAB.targets(labels)[0])
    # a multi-image record: no prompt line, head targets masked out
    j = recs.index(multi[0])
    assert "Image findings" not in tok.decode(ds[j]["input_ids"].tolist())
    assert not ds[j]["findings"][1].any()


def test_a_trained_head_states_the_findings_and_the_lm_reads_them(lesion_dir, tmp_path):
    """Stage 1 trains the head from the manifest's labels (its loss falls); generation puts the
    predicted findings in the prompt, and the model directory keeps the head."""
    from sonofm.models import load_model
    from sonofm.vlm.train import VLMTrainConfig, train_vlm
    from tests.tiny_models import tiny_vlm

    cfg = VLMTrainConfig.model_validate(
        {
            "model": tiny_vlm("unit-findings", findings={"groups": ["organ", "diagnosis", "echogenicity"]}),
            "stage": "1",
            "data": {"path": str(lesion_dir), "tasks": ["report", "vqa_closed"], "val_split": None},
            "train": {"batch_size": 8, "progress": False, "log_every": 1, "device": "cpu", "seed": 0},
            "stage1": {"epochs": 50, "max_steps": 24, "lr": 1e-2},
        }
    )
    result = train_vlm(cfg, tmp_path / "run")
    import json

    logs = [json.loads(x) for x in (tmp_path / "run" / "stage1" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["findings_loss"] for r in logs if "findings_loss" in r]
    assert len(losses) >= 20 and sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4
    model = load_model(str(result.model_dir)).eval()
    assert model.findings is not None and model.parameter_counts()["findings_head"] > 0
    from sonofm.data.dataset import load_table, read_grayscale

    rows = load_table(lesion_dir, "train").sort_values("id").head(4)
    images = [read_grayscale(lesion_dir / p) for p in rows["image"]]
    out = model.answer_batch([([im], None) for im in images[:2]], max_new_tokens=8)
    assert all(o.findings and o.findings.startswith("Image findings:") for o in out)
    assert model.findings_hint(model.prepare_images(images[:2])) is None  # two images: no prompt line
    # the hint is in the prompt the LM reads: a different hint changes the next-token distribution
    tok, n_tok = model.tokenizer, model.config.num_image_tokens
    pix = model.prepare_images(images[:1])
    hints = ["Image findings: breast; mass; hypoechoic.", "Image findings: thyroid; cyst; anechoic."]
    with torch.no_grad():
        outs = [
            model(pix, torch.tensor([vlm_prompt.render_prompt(None, 1, tok, n_tok, hint=h)]))["logits"][0, -1]
            for h in hints
        ]
    assert not torch.allclose(outs[0], outs[1])


@pytest.mark.parametrize("bad", [["organ", "colour"], []])
def test_config_names_known_groups(bad):
    with pytest.raises(ValueError, match="findings groups"):
        FindingsConfig(groups=bad)
