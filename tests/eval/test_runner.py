"""`sonofm eval` end to end: outputs, cards, cache, compare mode, and bad-input errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sonofm.cli import app
from sonofm.errors import UserError
from sonofm.eval.runner import list_suites, load_suite

SUITE = """
name: mini
n_boot: 30
seed: 0
batch_size: 32
tasks:
  - {type: zeroshot_classification, target: region}
  - {type: zeroshot_findings, tags: false, split: train}
  - {type: retrieval, subset: 20}
  - {type: knn_probe, target: region, k: 5}
  - {type: regression_probe, targets: [lvef_pct]}
"""


@pytest.fixture
def suite_file(tmp_path):
    p = tmp_path / "mini.yaml"
    p.write_text(SUITE)
    return p


def test_presets_load():
    assert {"default", "quick"} <= set(list_suites())
    for name in ("default", "quick"):
        s = load_suite(name)
        assert s.tasks and len({t.name for t in s.tasks}) == len(s.tasks)


@pytest.mark.parametrize(
    "text, match",
    [
        ("tasks: []", "non-empty 'tasks'"),
        ("tasks: [{type: nope}]", "unknown task type"),
        ("tasks: [{type: retrieval, frobnicate: 1}]", "bad options"),
        ("tasks: [{type: retrieval}, {type: retrieval}]", "duplicate task names"),
        ("bogus: 1\ntasks: [{type: retrieval}]", "unknown keys"),
        ("tasks: [{type: retrieval]", "invalid YAML"),
    ],
)
def test_bad_suites(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(UserError, match=match):
        load_suite(p)
    with pytest.raises(UserError, match="unknown suite"):
        load_suite("no-such-suite")


def test_cli_single_then_compare(tmp_path, sim_data, model_a, model_b, suite_file, monkeypatch):
    monkeypatch.setenv("SONOFM_CACHE_DIR", str(tmp_path / "cache"))
    runner = CliRunner()
    out = tmp_path / "one"
    args = ["eval", "--model", str(model_a), "--data", str(sim_data), "--suite", str(suite_file)]
    r = runner.invoke(app, [*args, "--out", str(out), "--no-html"])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "results.json").read_text())
    m = doc["models"][0]
    assert m["card"]["config"]["model_type"] == "dual_encoder"
    assert doc["data"]["card"]["format"] == "sonofm-dataset"
    acc = m["tasks"]["zeroshot/region"]["metrics"]["acc1"]
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"]
    assert "image_to_text/R@1" in m["tasks"]["retrieval"]["metrics"]
    assert "subset20/image_to_text/R@1" in m["tasks"]["retrieval"]["metrics"]
    md = (out / "results.md").read_text()
    assert "## zeroshot/region" in md and "| acc1 |" in md
    events = [json.loads(line) for line in (out / "eval_log.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    assert sum(e["event"] == "task_end" for e in events) == 5
    cached = sorted((tmp_path / "cache" / "embeddings").glob("*.safetensors"))
    assert len(cached) == 3  # train / val / test
    # only retrieval reads texts (of test); the probes' train split never runs the text tower
    assert sorted(p.name.split("-", 3)[3] for p in cached) == [
        "test-report.safetensors",
        "train-images.safetensors",
        "val-images.safetensors",
    ]
    assert m["tasks"]["retrieval"]["info"]["text_field"] == "report"  # model_a has no training.json

    # compare mode: A vs B (B is a different random init); model A comes from the cache
    out2 = tmp_path / "two"
    r = runner.invoke(app, [*args, "--model", str(model_b), "--out", str(out2), "--no-html"])
    assert r.exit_code == 0, r.output
    doc2 = json.loads((out2 / "results.json").read_text())
    assert len(doc2["models"]) == 2
    # identical embeddings for A in both runs (cache or not) -> identical metrics
    for task in ("zeroshot/region", "retrieval", "knn/region"):
        assert doc2["models"][0]["tasks"][task]["metrics"] == doc["models"][0]["tasks"][task]["metrics"]
    (pair,) = doc2["compare"]
    row = doc2["compare"][pair]["zeroshot/region"]["acc1"]
    # patient-level test: a p-value from >= 10 test patients, else no test and the reason
    k = doc2["data"]["n_patients"]["test"]
    assert row["n_patients"] == k == acc["n_patients"]
    if k >= 10:
        assert 0 < row["p_value"] <= 1 and 0 < row["p_holm"] <= 1
    else:
        assert row["p_value"] is None and "no test" in row["untestable"]
    assert row["delta"] == pytest.approx(row["a"] - row["b"])
    assert doc2["multiple_testing"]["counts"][pair]["tests"] >= 0
    assert "Compare:" in (out2 / "results.md").read_text()
    assert len(sorted((tmp_path / "cache" / "embeddings").glob("*.safetensors"))) == 6


def test_cli_bad_model_dir_is_user_error(tmp_path, sim_data, suite_file):
    r = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            str(tmp_path / "missing"),
            "--data",
            str(sim_data),
            "--out",
            str(tmp_path / "o"),
            "--suite",
            str(suite_file),
        ],
    )
    assert r.exit_code != 0
    assert isinstance(r.exception, UserError) and "does not exist" in str(r.exception)
    assert not (tmp_path / "o").exists()  # a bad --model is refused before --out is created


FAST_SUITE = """
name: fast
n_boot: 10
seed: 0
tasks:
  - {type: zeroshot_classification, target: region}
"""


def _snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_eval_follows_the_output_folder_rule(tmp_path, sim_data, model_a, model_b):
    """#18: `sonofm eval --out EXISTING` used to overwrite another evaluation's results silently."""
    from sonofm.outdir import JOB_FILE

    suite = tmp_path / "fast.yaml"
    suite.write_text(FAST_SUITE)
    out = tmp_path / "ev"
    base = ["eval", "--data", str(sim_data), "--suite", str(suite), "--no-html", "--no-cache"]

    def run(*extra: str, to=out):
        return CliRunner().invoke(app, [*base, "--out", str(to), *extra])

    r = run("--model", str(model_a))
    assert r.exit_code == 0, r.output
    assert json.loads((out / JOB_FILE).read_text())["job"] == "eval"
    first = _snapshot(out)
    log_lines = (out / "eval_log.jsonl").read_text().splitlines()

    # another model, another bootstrap: refused with one line naming the folder; nothing touched
    for extra in (("--model", str(model_b)), ("--model", str(model_a), "--n-boot", "20")):
        r = run(*extra)
        assert r.exit_code != 0 and isinstance(r.exception, UserError), r.output
        msg = str(r.exception)
        assert str(out) in msg and "--overwrite" in msg and "new --out" in msg and "\n" not in msg
        assert _snapshot(out) == first

    # the same evaluation again (the folder named another way) redoes it: the log is appended to
    r = run("--model", str(model_a), to=out / ".." / "ev")
    assert r.exit_code == 0, r.output
    again = (out / "eval_log.jsonl").read_text().splitlines()
    assert again[: len(log_lines)] == log_lines and len(again) > len(log_lines)
    task = json.loads((out / "results.json").read_text())["models"][0]["tasks"]["zeroshot/region"]
    assert (
        task["metrics"]
        == json.loads(first["results.json"])["models"][0]["tasks"]["zeroshot/region"]["metrics"]
    )

    # --overwrite replaces it with the other evaluation
    r = run("--model", str(model_b), "--overwrite")
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "results.json").read_text())
    assert [m["dir"] for m in doc["models"]] == [str(model_b)]
    assert len((out / "eval_log.jsonl").read_text().splitlines()) < len(again)

    # a folder written before job records: the same evaluation continues, another is refused
    (out / JOB_FILE).unlink()
    r = run("--model", str(model_b))
    assert r.exit_code == 0, r.output
    (out / JOB_FILE).unlink()
    r = run("--model", str(model_a))
    assert isinstance(r.exception, UserError) and str(out) in str(r.exception)

    # a folder sonofm did not write is never replaced, even with --overwrite
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    for extra in ((), ("--overwrite",)):
        r = run("--model", str(model_a), *extra, to=mine)
        assert isinstance(r.exception, UserError) and str(mine) in str(r.exception), r.output
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


def test_an_interrupted_eval_from_before_job_records_continues(tmp_path):
    """A demo killed mid-eval (before job records) left only eval_log.jsonl: its re-run goes on."""
    from sonofm.eval.runner import _same_legacy_eval, eval_settings

    out = tmp_path / "eval"
    out.mkdir()
    (out / "eval_log.jsonl").write_text('{"event": "start"}\n')
    settings = eval_settings([str(tmp_path / "m")], tmp_path / "d", load_suite("quick"), "fp32")
    assert _same_legacy_eval(out, settings)
    (out / "notes.txt").write_text("mine")
    assert not _same_legacy_eval(out, settings)
