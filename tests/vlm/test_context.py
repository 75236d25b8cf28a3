"""The study-context prompt (models/vlm_context.py): the line's content against the ASE/EACVI
rules, its stability, the training dropout, the prompt shared by training and generation, and a
trained model whose next token depends on the measurements it is given."""

from __future__ import annotations

import pytest
import torch

from sonofm import taxonomy as tx
from sonofm.errors import UserError
from sonofm.models import vlm_prompt
from sonofm.models.vlm_context import (
    CONTEXT_PREFIX,
    ContextConfig,
    clean_context,
    context_text,
    dropped,
    guideline_findings,
    prompt_hint,
    short_name,
)
from sonofm.models.vlm_findings import FindingsConfig, FindingsVocab
from sonofm.vlm.conversations import conversations_from_dataset, labels_of_row

VOCAB = FindingsVocab.from_config(FindingsConfig())
# an echo study: LVEF 32 % (< 50 %, "moderate" is 30-40 %), LVIDd 68.5 mm in a man (> 58.4 mm)
ECHO = {"measurements": {"lvidd_mm": 68.5, "lvef_pct": 32.0, "tapse_mm": 21.04}, "sex": "male"}
HEART = {
    "organ": "heart",
    "view": "A4C",
    "diagnosis": "normal",
    "attributes": {},
    "echo": ["pericardial_effusion"],
}


def test_line_states_measurements_at_reporting_precision_in_taxonomy_order():
    line = context_text(ECHO)
    assert line is not None and line.startswith(CONTEXT_PREFIX)
    # taxonomy order (LVEF before LVIDd before TAPSE) whatever the caller's order; TAPSE at 0.1 mm
    assert "lvef 32; lvidd 68.5; tapse 21.0; sex M." in line
    # the order of the mapping never changes the text (training rows and callers differ in order)
    reordered = {"measurements": dict(reversed(list(ECHO["measurements"].items()))), "sex": "M"}
    assert context_text(reordered) == line


def test_guideline_part_follows_the_ase_rules():
    found = guideline_findings(ECHO)
    assert found == {"reduced_lvef": "moderate", "lv_dilation": "severe"}
    assert "Guideline: reduced lvef moderate; lv dilation severe." in context_text(ECHO)
    # the same diameter in a woman's limits is dilated too, a normal one is not, and a normal
    # study says so instead of listing nothing
    normal = {"measurements": {"lvef_pct": 60.0, "lvidd_mm": 48.0}, "sex": "F"}
    assert guideline_findings(normal) == {}
    assert context_text(normal).endswith("Guideline: normal.")
    # lesion measurements decide no echo rule: no guideline part at all
    lesion = {"measurements": {"lesion_width_mm": 12.34}, "sex": None}
    assert guideline_findings(lesion) is None
    assert context_text(lesion) == f"{CONTEXT_PREFIX} lesion width 12.3."


def test_clean_context_rejects_unknown_ids_and_skips_missing_values():
    with pytest.raises(UserError, match=r"study 3: unknown measurement ids \['lvef'\]"):
        clean_context({"measurements": {"lvef": 55}}, "study 3")
    with pytest.raises(UserError, match="must be a mapping"):
        clean_context({"measurements": [55]})
    ctx = clean_context({"measurements": {"lvef_pct": float("nan"), "tapse_mm": "19"}, "sex": "o"})
    assert ctx == {"measurements": {"tapse_mm": 19.0}, "sex": None}
    assert context_text(None) is None and context_text({"measurements": {}}) is None
    assert clean_context({"sex": "female"})["sex"] == "F"
    with pytest.raises(UserError, match="study 1: sex: expected 'M', 'F'"):
        clean_context({"sex": "mal"}, "study 1")


def test_short_names_are_distinct():
    names = [short_name(m) for m in tx.MEASUREMENTS] + [short_name(f) for f in tx.ECHO_FINDINGS]
    assert len(set(names)) == len(names)
    assert short_name("lavi_ml_m2") == "lavi" and short_name("e_e_prime_ratio") == "e e prime"


def test_measured_guideline_findings_replace_the_heads_echo_guess():
    hint = prompt_hint(VOCAB, HEART, ECHO)
    findings, context = hint.split("\n")
    # the head said "pericardial effusion"; the measurements say reduced LVEF and LV dilation
    assert "pericardial effusion" not in findings
    assert tx.ECHO_FINDINGS["reduced_lvef"].phrase in findings
    assert context == context_text(ECHO)
    # without a view (the head decided "no echo view") the findings line keeps no echo findings
    no_view = prompt_hint(VOCAB, {**HEART, "view": None, "echo": []}, ECHO)
    assert tx.ECHO_FINDINGS["reduced_lvef"].phrase not in no_view.split("\n")[0]
    assert prompt_hint(None, None, ECHO) == context_text(ECHO)
    assert prompt_hint(VOCAB, HEART, None) == VOCAB.hint_text(HEART)


def test_dropout_is_stable_and_near_its_rate():
    cfg = ContextConfig(dropout=0.25)
    ids = [f"rec-{i}" for i in range(4000)]
    picked = [dropped(i, cfg) for i in ids]
    assert picked == [dropped(i, cfg) for i in ids]
    assert 0.22 < sum(picked) / len(ids) < 0.28
    assert not any(dropped(i, ContextConfig(dropout=0.0)) for i in ids[:50])


def test_training_prompt_matches_generation_and_dropout_leaves_the_image_only_prompt(sim_dir):
    from sonofm.data.dataset import load_table
    from sonofm.vlm.data import ConversationDataset

    df = load_table(sim_dir, "train")
    row = df[df["region"] == "heart"].sort_values("id").iloc[0]
    labels = labels_of_row(row)
    assert (
        labels["sex"] in ("M", "F") and labels["measurements"]["lvef_pct"] == row["measurements"]["lvef_pct"]
    )
    recs = conversations_from_dataset(sim_dir, "train", seed=0, tasks=("report",))
    texts = [t["value"] for r in recs for t in r["conversations"]]
    tok = vlm_prompt.train_tokenizer(texts + VOCAB.all_phrases(), 900)
    cfg = ContextConfig(dropout=0.5)
    ds = ConversationDataset(
        recs, sim_dir, tok, num_image_tokens=4, image_size=32, max_length=1024, findings=VOCAB, context=cfg
    )
    with_line = [k for k, r in enumerate(recs) if not dropped(r["id"], cfg)]
    without = [k for k, r in enumerate(recs) if dropped(r["id"], cfg)]
    assert with_line and without
    for k in (with_line[0], without[0]):
        lab = recs[k]["meta"]["labels"]
        ctx = None if k in without else {"measurements": lab["measurements"], "sex": lab["sex"]}
        question = recs[k]["conversations"][0]["value"].replace(f"{vlm_prompt.IMAGE_TOKEN}\n", "")
        hint = prompt_hint(VOCAB, lab, ctx)
        prompt = vlm_prompt.render_prompt(question, 1, tok, 4, hint=hint)
        assert ds[k]["input_ids"][: len(prompt)].tolist() == prompt
        assert (CONTEXT_PREFIX.lower() in tok.decode(prompt).lower()) == (k not in without)


def test_a_trained_context_model_reads_the_measurements(sim_dir, tmp_path):
    """A stage-1 run with the context prompt: generation takes the caller's measurements, the
    next-token distribution depends on them; any model's reports are grounded in them."""
    from sonofm.data.dataset import load_table, read_grayscale
    from sonofm.models import load_model
    from sonofm.vlm.train import VLMTrainConfig, train_vlm
    from tests.tiny_models import tiny_vlm

    def run(name: str, **top):
        cfg = VLMTrainConfig.model_validate(
            {
                "model": tiny_vlm(name, max_length=512, **top),
                "stage": "1",
                "data": {"path": str(sim_dir), "tasks": ["report"], "val_split": None},
                "train": {"batch_size": 8, "progress": False, "device": "cpu", "seed": 0},
                "stage1": {"epochs": 1, "max_steps": 2, "lr": 1e-2},
            }
        )
        return load_model(str(train_vlm(cfg, tmp_path / name).model_dir)).eval()

    model = run("unit-context", context={"dropout": 0.2})
    assert model.config.context == ContextConfig(dropout=0.2)
    row = load_table(sim_dir, "train").query("region == 'heart'").sort_values("id").iloc[0]
    image = read_grayscale(sim_dir / row["image"])
    out = model.answer_batch([([image], None), ([image], None)], contexts=[ECHO, None], max_new_tokens=4)
    assert out[0].findings == context_text(ECHO) and out[1].findings is None
    with pytest.raises(UserError, match="2 study contexts given for 1 studies"):
        model.answer_batch([([image], None)], contexts=[ECHO, ECHO])
    tok, n_tok = model.tokenizer, model.config.num_image_tokens
    pix = model.prepare_images([image])
    other = {"measurements": {**ECHO["measurements"], "lvef_pct": 62.0}, "sex": "M"}
    with torch.no_grad():
        logits = [
            model(pix, torch.tensor([vlm_prompt.render_prompt(None, 1, tok, n_tok, hint=context_text(c))]))[
                "logits"
            ][0, -1]
            for c in (ECHO, other)
        ]
    assert not torch.allclose(logits[0], logits[1])
    # the CLI passes a JSON file's measurements and the sex through to the same prompt
    import json

    from typer.testing import CliRunner

    from sonofm.cli import app

    (tmp_path / "m.json").write_text(json.dumps(ECHO["measurements"]))
    png = sim_dir / row["image"]
    args = ["generate", "-m", str(tmp_path / "unit-context" / "model"), "--image", str(png)]
    res = CliRunner().invoke(
        app, [*args, "--measurements", str(tmp_path / "m.json"), "--sex", "M", "--max-new-tokens", "4"]
    )
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, [*args, "--measurements", '{"lvef": 40}'])
    assert isinstance(res.exception, UserError) and "unknown measurement ids ['lvef']" in str(res.exception)
    # a model trained without the line still grounds its reports in the study (no prompt line);
    # this 2-step model writes no echo report, so the given echo numbers have no place: flagged
    plain = run("unit-plain")
    got = plain.answer_batch([([image], None)], contexts=[ECHO], max_new_tokens=48)[0]
    assert got.findings is None and got.draft is not None
    from sonofm.reports import parse_report
    from sonofm.reports.grounding import ground_report

    assert got.text == ground_report(got.draft, ECHO["measurements"], "M")
    if parse_report(got.draft).study.view is None:
        assert got.low_confidence and any("no place for the given measurements" in r for r in got.reasons)
    assert plain.chat([image], context=ECHO, max_new_tokens=48) == got.text
    # questions are answered by the model alone (grounding rewrites reports only)
    q = plain.answer_batch([([image], "Which view is this?")], contexts=[ECHO], max_new_tokens=8)[0]
    assert q.draft is None


def test_retrieval_given_the_context_rewrites_the_neighbours_report(sim_dir):
    """The same-inputs retrieval baseline: a study rewritten with its OWN context scores clinical
    F1 1.0 against its own report (writer and parser agree); a neighbour rewritten with the
    query's context states the query's numbers and the guideline findings they imply."""
    from sonofm.data.dataset import load_table
    from sonofm.reports.metrics import clinical_f1
    from sonofm.reports.parser import parse_report
    from sonofm.vlm.conversations import format_report
    from sonofm.vlm.retrieval import answer_from_row, retrieved_report, with_study_context

    df = load_table(sim_dir, "train").sort_values("id")
    for _, row in df.head(12).iterrows():
        lab = labels_of_row(row)
        own = retrieved_report(with_study_context(row, lab), seed=1)
        assert clinical_f1([own], [format_report(row["report"])], row["region"]).f1 == 1.0
    neighbour = df[df["region"] == "heart"].iloc[0]
    edited = with_study_context(neighbour, ECHO)
    study = parse_report(retrieved_report(edited), "heart").study
    assert study.measurements == {"lvef_pct": 32.0, "lvidd_mm": 68.5, "tapse_mm": 21.0}
    assert study.sex == "M" and study.view == neighbour["view"]
    echo = {f.tag: f.grade for f in study.present("echo")}
    assert echo == {"reduced_lvef": "moderate", "lv_dilation": "severe"}
    question = {"kind": "threshold", "measurement": "lvef_pct", "threshold": 50.0, "above": False}
    assert answer_from_row(question, edited) == "Yes"
    assert neighbour["measurements"]["lvef_pct"] != 32.0  # the row itself is left as it was
