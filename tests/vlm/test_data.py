"""Dataset + collate: label masking, padding sides, image order; the loss does not see padding."""

from __future__ import annotations

import pytest
import torch

from sonofm.models.vlm_prompt import IGNORE_INDEX, image_token_id, train_tokenizer
from sonofm.vlm.conversations import conversations_from_dataset
from sonofm.vlm.data import ConversationDataset, collate_conversations, load_image
from sonofm.vlm.train import tokenizer_texts


@pytest.fixture(scope="module")
def setup(lesion_dir):
    recs = conversations_from_dataset(
        lesion_dir, "train", seed=0, tasks=("report", "vqa_open", "multi_image")
    )
    tok = train_tokenizer(tokenizer_texts(recs), 500)
    ds = ConversationDataset(recs, lesion_dir, tok, num_image_tokens=4, image_size=32, max_length=400)
    return recs, tok, ds


def test_labels_only_on_answers(setup):
    recs, tok, ds = setup
    for i in (0, 1, len(ds) - 1):
        item = ds[i]
        ids, labels = item["input_ids"], item["labels"]
        on = labels != IGNORE_INDEX
        assert torch.equal(labels[on], ids[on])
        # the supervised tokens are exactly the answer followed by EOS
        assert int(labels[on][-1]) == tok.eos_token_id
        assert tok.decode(labels[on][:-1]) == recs[i]["conversations"][1]["value"]
        # image tokens and the prompt are never supervised
        assert not bool(on[ids == image_token_id(tok)].any())
        assert int((ids == image_token_id(tok)).sum()) == 4 * len(recs[i]["image"])


@pytest.mark.parametrize("side", ["right", "left"])
def test_collate_pads_and_masks(setup, side):
    recs, tok, ds = setup
    items = [ds[0], ds[len(ds) - 1], ds[1]]
    b = collate_conversations(items, tok.pad_token_id, side)
    n = max(len(it["input_ids"]) for it in items)
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape == (3, n)
    for row, it in enumerate(items):
        k = len(it["input_ids"])
        sl = slice(0, k) if side == "right" else slice(n - k, n)
        assert torch.equal(b["input_ids"][row, sl], it["input_ids"])
        assert torch.equal(b["labels"][row, sl], it["labels"])
        assert int(b["attention_mask"][row].sum()) == k
        pad = b["attention_mask"][row] == 0
        assert bool((b["labels"][row][pad] == IGNORE_INDEX).all())
        assert bool((b["input_ids"][row][pad] == tok.pad_token_id).all())
    # images stacked in order of appearance: sample 0's first, then sample 1's (a multi-image study)
    expect = [load_image(ds.root / p, 32) for it in (0, len(ds) - 1, 1) for p in recs[it]["image"]]
    assert b["pixel_values"].shape[0] == len(expect) == int(b["n_images"].sum())
    for got, want in zip(b["pixel_values"], expect, strict=True):
        assert torch.equal(got, want)


def test_skipped_items_are_counted(setup):
    recs, tok, ds = setup
    b = collate_conversations([ds[0], None], tok.pad_token_id)
    assert b["n_skipped"] == 1 and b["input_ids"].shape[0] == 1
    with pytest.raises(Exception, match="padding_side"):
        collate_conversations([ds[0]], tok.pad_token_id, "middle")


def test_model_loss_same_with_left_and_right_padding(setup):
    from sonofm.models.vlm import VLMConfig, build_vlm
    from tests.vlm.conftest import TINY_VLM

    recs, tok, ds = setup
    torch.manual_seed(0)
    model = build_vlm(VLMConfig.model_validate(TINY_VLM), tok).eval()
    items = [ds[0], ds[len(ds) - 1]]
    losses = []
    for side in ("right", "left"):
        b = collate_conversations(items, tok.pad_token_id, side)
        with torch.no_grad():
            out = model(b["pixel_values"], b["input_ids"], b["attention_mask"], b["labels"])
        losses.append(float(out["lm_loss"]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
