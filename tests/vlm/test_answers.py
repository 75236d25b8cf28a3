"""Closed answers from the source that knows the fact (models/vlm_answers.py): the study's
measurements, the guideline rules on them and the findings head's probabilities, in that order;
their use by answer_batch / chat (the language model's answer kept as the draft); and every closed
question the training conversations ask is read back to what it asks."""

from __future__ import annotations

import pytest
import torch

from sonofm.models import vlm_prompt
from sonofm.models.vlm_answers import (
    SOURCE_GUIDELINES,
    SOURCE_HEAD,
    SOURCE_MEASUREMENTS,
    answer_from_context,
    answer_from_head,
    sourced_answer,
)
from sonofm.models.vlm_findings import SINGLE_GROUPS, FindingsConfig, FindingsVocab
from sonofm.reports.questions import read_closed_question
from sonofm.taxonomy.echo import evaluate_guidelines

VOCAB = FindingsVocab.from_config(FindingsConfig())
ECHO = {"measurements": {"lvidd_mm": 68.5, "lvef_pct": 32.0}, "sex": "M"}


def _probs(**on: float) -> torch.Tensor:
    """Head probabilities: the given (group__value=p) set, the rest of each single-label group
    sharing what is left, multi-label columns at 0.1."""
    p = torch.full((VOCAB.size,), 0.1)
    for g, (a, b) in zip(VOCAB.groups, VOCAB.spans, strict=True):
        if g in SINGLE_GROUPS:
            given = {k.split("__")[1]: v for k, v in on.items() if k.split("__")[0] == g}
            rest = (1.0 - sum(given.values())) / max(b - a - len(given), 1)
            for j in range(a, b):
                p[j] = given.get(VOCAB.labels[j][1], rest)
    for k, v in on.items():
        g, value = k.split("__")
        if g not in SINGLE_GROUPS:
            p[VOCAB.labels.index((g, value))] = v
    return p


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("Is the LV ejection fraction below 50 %?", "Yes"),  # 32 < 50
        ("Is the LVEF above 32%?", "No"),  # equal is not above
        ("Is the LVEF at least 32%?", "Yes"),  # ... but is at least
        ("Is the LV end-diastolic diameter above 6 cm?", "Yes"),  # 68.5 mm > 60 mm
    ],
)
def test_threshold_answers_come_from_the_given_measurement(question, answer):
    got = sourced_answer(question, context=ECHO)
    assert got is not None and (got.text, got.source) == (answer, SOURCE_MEASUREMENTS)


def test_a_measurement_not_given_is_not_guessed():
    assert sourced_answer("Is the TAPSE below 17 mm?", context=ECHO) is None
    assert sourced_answer("Is the LVEF below 50%?", context=None) is None


def test_echo_findings_follow_the_guideline_rules_where_they_apply():
    decided = {r.finding: r.present for r in evaluate_guidelines(ECHO["measurements"], "M")}
    assert decided["reduced_lvef"] and decided["lv_dilation"]  # the reference the answers follow
    q = read_closed_question("Is the left ventricle dilated?")
    assert q is not None and q.labels == (("echo", "lv_dilation"),)
    got = answer_from_context(q, ECHO)
    assert got is not None and (got.text, got.source) == ("Yes", SOURCE_GUIDELINES)
    normal = {"measurements": {"lvidd_mm": 48.0}, "sex": "F"}
    assert answer_from_context(q, normal).text == "No"
    # no rule decides an effusion from these numbers: the head (or the LM) answers instead
    effusion = read_closed_question("Is there a pericardial effusion?")
    assert answer_from_context(effusion, ECHO) is None
    got = sourced_answer(
        "Is there a pericardial effusion?",
        context=ECHO,
        probs=_probs(echo__pericardial_effusion=0.9),
        vocab=VOCAB,
    )
    assert (got.text, got.source) == ("Yes", SOURCE_HEAD)


def test_head_answers_single_label_groups_by_their_top_class():
    probs = _probs(organ__thyroid=0.7, organ__breast=0.2, view__none=0.9, diagnosis__nodule=0.45)
    ask = lambda q: answer_from_head(read_closed_question(q), probs, VOCAB, 0.5)  # noqa: E731
    assert (
        ask("Is this an ultrasound of the thyroid?").text,
        ask("Is this an ultrasound of the thyroid?").probability,
    ) == ("Yes", 0.7)
    no = ask("Does this image show the breast?")
    assert no.text == "No" and no.probability == pytest.approx(0.8, abs=1e-4)
    assert ask("Is this an apical four-chamber view?").text == "No"  # "no view" is the top class
    # 0.45 is below one half but the top diagnosis: the head's decision is "nodule"
    assert ask("Is there a nodule?").text == "Yes"
    # several labels: all must hold
    assert ask("Is this thyroid nodule present?").text == "Yes"
    assert ask("Is this breast normal?").text == "No"


def test_head_answers_multi_label_groups_by_the_threshold_and_choices_by_the_top_option():
    probs = _probs(echogenicity__hypoechoic=0.8, echogenicity__anechoic=0.3, posterior__shadowing=0.4)
    q = lambda t: read_closed_question(t)  # noqa: E731
    assert answer_from_head(q("Is the lesion hypoechoic?"), probs, VOCAB, 0.5).text == "Yes"
    assert answer_from_head(q("Is there posterior acoustic shadowing?"), probs, VOCAB, 0.5).text == "No"
    assert answer_from_head(q("Is there posterior acoustic shadowing?"), probs, VOCAB, 0.35).text == "Yes"
    got = answer_from_head(
        q("Choose the lesion's echogenicity: anechoic, hypoechoic, isoechoic."), probs, VOCAB, 0.5
    )
    assert got.text == "hypoechoic" and got.probability == pytest.approx(0.8 / 1.2, abs=1e-4)
    # a head without the asked group cannot answer
    small = FindingsVocab.from_config(FindingsConfig(groups=["organ"]))
    assert answer_from_head(q("Is the lesion hypoechoic?"), torch.ones(small.size), small, 0.5) is None


def test_no_echo_finding_for_an_image_without_an_echo_view():
    """As the findings line (FindingsVocab.decide): a breast image's stray effusion probability
    says nothing."""
    q = read_closed_question("Is there a pericardial effusion?")
    breast = _probs(view__none=0.9, echo__pericardial_effusion=0.8)
    echo = _probs(view__A4C=0.9, echo__pericardial_effusion=0.8)
    assert answer_from_head(q, breast, VOCAB, 0.5).text == "No"
    assert answer_from_head(q, echo, VOCAB, 0.5).text == "Yes"


def test_measurements_come_before_the_head():
    probs = _probs(organ__heart=0.9)
    got = sourced_answer("Is the LVEF below 50%?", context=ECHO, probs=probs, vocab=VOCAB)
    assert got.source == SOURCE_MEASUREMENTS
    assert sourced_answer("What is the diagnosis?", context=ECHO, probs=probs, vocab=VOCAB) is None


@pytest.fixture(scope="module")
def head_model(tmp_path_factory):
    """An untrained tiny VLM with a findings head: sourcing does not depend on training."""
    from sonofm.models.vlm import VLMConfig, build_vlm
    from tests.tiny_models import tiny_vlm

    torch.manual_seed(0)
    texts = [
        vlm_prompt.DEFAULT_QUESTION,
        "Yes",
        "No",
        "Is this an ultrasound of the thyroid?",
        *VOCAB.all_phrases(),
    ]
    tok = vlm_prompt.train_tokenizer(texts * 3, 600)
    return build_vlm(VLMConfig.model_validate(tiny_vlm("unit-answers", findings={})), tok).eval()


def test_answer_batch_takes_the_sourced_answer_and_keeps_the_lms(head_model):
    g = torch.Generator().manual_seed(1)
    image = (torch.rand(32, 32, generator=g) * 255).to(torch.uint8).numpy()
    pix = head_model.prepare_images([image])
    probs = head_model.findings_probabilities(pix)[0]
    a, b = VOCAB.spans[VOCAB.groups.index("organ")]
    top = VOCAB.labels[a + int(probs[a:b].argmax())][1]
    other = next(v for _, v in VOCAB.labels[a:b] if v != top)
    from sonofm import taxonomy as tx

    questions = [
        f"Is this an ultrasound of the {tx.get_organ(top).phrase}?",
        f"Is this an ultrasound of the {tx.get_organ(other).phrase}?",
        "Is the LV ejection fraction below 50 %?",
        "What is the diagnosis?",
    ]
    batch = [([image], q) for q in questions]
    ctxs = [None, None, ECHO, None]
    out = head_model.answer_batch(batch, contexts=ctxs, max_new_tokens=4)
    plain = head_model.answer_batch(batch, contexts=ctxs, sources=False, max_new_tokens=4)
    assert [o.text for o in out[:3]] == ["Yes", "No", "Yes"]
    assert [o.answered_by for o in out] == [SOURCE_HEAD, SOURCE_HEAD, SOURCE_MEASUREMENTS, None]
    # the language model's own answers are kept, and are what sources=False returns
    assert [o.draft for o in out[:3]] == [p.text for p in plain[:3]]
    assert out[3].text == plain[3].text and out[3].draft is None
    assert all(p.answered_by is None for p in plain)
    # chat answers a question as answer_batch does
    assert head_model.chat([image], questions[2], context=ECHO) == "Yes"


def test_every_training_closed_question_reads_back_to_what_it_asks(lesion_dir, sim_dir):
    from sonofm.vlm.conversations import conversations_from_dataset

    recs = [
        r
        for d in (lesion_dir, sim_dir)
        for r in conversations_from_dataset(d, "train", seed=0, tasks=("vqa_closed",), questions_per_image=4)
    ]
    kinds = set()
    for r in recs:
        m, text = r["meta"], r["conversations"][0]["value"].split("\n", 1)[-1]
        q = read_closed_question(text)
        kinds.add(m["kind"])
        assert q is not None, text
        if m["kind"] == "threshold":
            assert (q.measurement, q.threshold, q.above) == (m["measurement"], m["threshold"], m["above"]), (
                text
            )
        elif m["kind"] == "organ":
            assert q.labels == (("organ", m["organ"]),), text
        elif m["kind"] == "view":
            assert q.labels == (("view", m["view"]),), text
        elif m["kind"] == "attribute":
            assert q.labels == ((m["dimension"], m["tag"]),), text
        else:  # multiple choice: the true answer is one of the options, read as its label
            assert q.kind == "choice"
            answer = r["conversations"][1]["value"]
            assert answer in [t for t, _ in q.options], text
    assert {"threshold", "organ", "attribute"} <= kinds


def test_a_report_agrees_with_the_heads_line_and_keeps_the_draft(head_model):
    from sonofm.reports import parse_report

    g = torch.Generator().manual_seed(2)
    image = (torch.rand(32, 32, generator=g) * 255).to(torch.uint8).numpy()
    decided = head_model.findings.vocab.decide(
        head_model.findings_probabilities(head_model.prepare_images([image])), 0.5
    )[0]
    out = head_model.answer_batch([([image], None)], max_new_tokens=12)[0]
    plain = head_model.answer_batch([([image], None)], agree=False, max_new_tokens=12)[0]
    assert out.draft == plain.text and plain.draft is None
    study = parse_report(out.text).study
    assert study.organ == decided["organ"]
    if decided["diagnosis"] not in (None, "normal"):
        assert ("diagnosis", decided["diagnosis"]) in {f.key() for f in study.findings}
