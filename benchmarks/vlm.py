"""Benchmark the report generator against nearest-neighbour retrieval on unseen patients (issue 20).

Systems, all scored on the SAME held-out images (every patient simulated with another seed, so
none was seen in training, pretraining or the retrieval index):

- ``generator_moe``: `sonofm train-vlm` (default preset ``train-tiny``: pretrained MiniLM decoder
  + EchoVLM dual-path MoE + the contrastively pretrained image tower via ``--image-from``),
  greedy decoding with the model's no-repeat n-gram limit;
- ``generator_dense``: the same recipe with ``--dense`` (dense FFN widened to the MoE model's
  ACTIVE parameter count), when a dense run is given / trained;
- ``retrieval``: the report of the nearest training image by CLIP image embedding (exact inner
  product search, `sonofm.vlm.retrieval`); its closed-VQA answers are the neighbour's facts;
- ``*_grounded`` / ``retrieval_measured``: the same drafts, and the neighbour's report, grounded in
  each held-out study's measurements and sex (`sonofm.reports.grounding`: the numbers, the sex and
  the echo guideline findings are the study's, as `sonofm generate --measurements` writes them),
  so the two are compared on what they read from the image given the same inputs. A model trained
  with the study-context prompt (`VLMConfig.context`) also gets the measurements in its prompt.

Metrics (`sonofm.vlm.compare`): BLEU-1, ROUGE-L, clinical F1 (both texts parsed by the report
parser; also without the measurement facts, which count only within half a reporting step),
per-attribute correctness, closed-VQA accuracy; every CI is a patient-level bootstrap (whole
patients resampled; `sonofm.eval.metrics.bootstrap_ci` with groups), and the generator minus
retrieval difference gets its own patient-level CI. Each run (seed) is scored on its own, and the
runs of one kind are pooled: every seed's text for every image, whole patients resampled (the
summary and the README table use the pooled MoE runs). Also: clinical F1 per region, the
low-confidence flag rate of the trained model and of an untrained one (floor), and 10 random
held-out images run through the same code path as ``sonofm generate`` (listed with their
region/lesion check). With a findings prompt (`sonofm.models.vlm_findings`): the head's accuracy
per label group and the ceiling ``ceiling_true_findings`` (the first MoE run prompted with the
true findings line). ``--variant-run``: a recipe variant (e.g. without the findings prompt) scored
on the same images and paired against the first MoE run.

Usage (runs that already exist are reused; missing ones are trained with the CLI's defaults; each
run's generated texts are cached in RUN/benchmark_outputs.json, so adding a seed regenerates only
that seed; ``--generate-only`` fills the caches while other runs still train)::

    python benchmarks/vlm.py --data D --heldout H --clip CLIP/model --moe-run RUN [--moe-run RUN2 ...] \
        [--dense-run RUN3 ...] [--variant-run RUN4 ...]
    python benchmarks/vlm.py --table [RESULT.json]     # the README table
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sonofm.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "vlm.json"
TARGETS = {"clinical_f1": 0.70, "closed_vqa": 0.85, "readable_of_10": 8}
# A closed answer is "Yes"/"No" or one option; the longest option (an echo view such as
# "parasternal short-axis view at the papillary muscle level") is ~16 WordPiece tokens.
ANSWER_TOKENS = 24


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _rows(path: Path, split: str | None) -> Any:
    from sonofm.data.manifest import read_manifest

    df = read_manifest(path)
    df = df if split is None else df[df["split"] == split]
    return df.sort_values("id").reset_index(drop=True)


def _images(root: Path, rows: Any) -> list[np.ndarray]:
    from sonofm.data.dataset import read_grayscale

    return [read_grayscale(root / p) for p in rows["image"]]


def generate_reports(
    model: Any,
    images: list[np.ndarray],
    *,
    batch: int = 16,
    max_new_tokens: int = 320,
    contexts: list[dict[str, Any]] | None = None,
) -> list[Any]:
    """GeneratedText (text, mean log-prob, flag) for every image, greedy, default report question;
    `contexts`: each image's study context (measurements, sex) for a context-prompted model."""
    out: list[Any] = []
    for a in range(0, len(images), batch):
        out += model.answer_batch(
            [([im], None) for im in images[a : a + batch]],
            contexts=None if contexts is None else contexts[a : a + batch],
            agree=False,  # the model's own drafts; the benchmark applies the agreement itself
            max_new_tokens=max_new_tokens,
        )
        _log(f"    reports {min(a + batch, len(images))}/{len(images)}")
    return out


def closed_questions(rows: Any, seed: int = 0) -> list[dict[str, Any]]:
    from sonofm.vlm.conversations import conversations_from_rows

    return conversations_from_rows(rows, seed=seed, tasks=["vqa_closed"], questions_per_image=2)


def answer_questions(
    model: Any,
    recs: list[dict[str, Any]],
    images: dict[str, np.ndarray],
    contexts: dict[str, dict[str, Any]] | None = None,
) -> dict[str, list[Any]]:
    """Greedy closed answers as the model returns them (closed questions a source covers answered
    by it: `sonofm.models.vlm_answers`), the language model's own answers, and each answer's source
    (None: the language model); `contexts`: image path -> its study context (context-prompted models)."""
    items = [([images[r["image"][0]]], question_text(r)) for r in recs]
    ctx = None if contexts is None else [contexts[r["image"][0]] for r in recs]
    out: dict[str, list[Any]] = {"answers": [], "answers_language_model": [], "answered_by": []}
    for a in range(0, len(items), 32):
        gens = model.answer_batch(
            items[a : a + 32], contexts=None if ctx is None else ctx[a : a + 32], max_new_tokens=ANSWER_TOKENS
        )
        out["answers"] += [g.text for g in gens]
        out["answers_language_model"] += [g.draft if g.answered_by else g.text for g in gens]
        out["answered_by"] += [g.answered_by for g in gens]
    return out


def _agreeing_summary(pooled: dict[str, Any]) -> dict[str, Any] | None:
    """The product's reports (drafts agreeing with the findings head, grounded) against retrieval
    given the same inputs, seeds pooled."""
    ag = pooled.get("generator_moe_agree_grounded")
    img = pooled.get("generator_moe_agree")
    if ag is None or img is None:
        return None
    vm = ag["vs_retrieval_measured"]
    d = vm["clinical_f1"]["delta/generator_moe_agree_grounded-retrieval_measured"]
    return {
        "note": "generator_moe_agree: the MoE drafts made to agree with the run's findings head "
        "(sonofm.reports.grounding.agree_with_findings; what answer_batch returns); _grounded: also "
        "grounded in the study's measurements and sex",
        "clinical_f1": ag["clinical_f1"]["generator_moe_agree_grounded"],
        "clinical_f1_no_measurements": ag["clinical_f1_no_measurements"]["generator_moe_agree_grounded"],
        "image_only_clinical_f1_no_measurements": img["clinical_f1_no_measurements"]["generator_moe_agree"],
        "image_only_delta_vs_retrieval_no_measurements": img["clinical_f1_no_measurements"][
            "delta/generator_moe_agree-retrieval"
        ],
        "delta_vs_retrieval_measured": d,
        "delta_vs_retrieval_measured_no_measurements": vm["clinical_f1_no_measurements"][
            "delta/generator_moe_agree_grounded-retrieval_measured"
        ],
        "beats_retrieval_measured_ci_excludes_0": bool(d["ci_low"] > 0),
    }


def head_decisions(model: Any, images: list[np.ndarray], batch: int = 100) -> list[dict[str, Any]] | None:
    """The findings head's decided labels per image (None without a head)."""
    if getattr(model, "findings", None) is None:
        return None
    out: list[dict[str, Any]] = []
    with torch.no_grad():
        for a in range(0, len(images), batch):
            probs = model.findings_probabilities(model.prepare_images(images[a : a + batch]))
            out += model.findings.vocab.decide(probs, model.config.findings.threshold)
    return out


def question_text(rec: dict[str, Any]) -> str:
    return rec["conversations"][0]["value"].replace("<image>\n", "")


def with_measured_answers(
    answers: list[str], recs: list[dict[str, Any]], contexts: dict[str, Any]
) -> list[str]:
    """The answers given the study's measurements too: what `answer_batch(contexts=...)` returns for
    a model without the context prompt (its prompt, hence its own answers, are the same; threshold
    and guideline questions are then decided by the measurements: `vlm_answers.sourced_answer`)."""
    from sonofm.models.vlm_answers import sourced_answer

    out = []
    for ans, r in zip(answers, recs, strict=True):
        got = sourced_answer(question_text(r), context=contexts[r["image"][0]])
        out.append(got.text if got is not None else ans)
    return out


def readable_check(text: str, row: Any) -> dict[str, Any]:
    """Does the generated report name the right organ and the right lesion (diagnosis), or for an
    echo image the right view?"""
    from sonofm.reports import parse_report, study_attributes

    study = parse_report(text).study  # no region hint: the text must name it
    attrs = study_attributes(study)
    want = dict(row["attributes"]) if isinstance(row["attributes"], dict) else {}
    organ_ok = row["organ"] in (attrs.get("organ") or [])
    want_dx = set(want.get("diagnosis") or [])
    dx_ok = bool(want_dx) and want_dx <= set(attrs.get("diagnosis") or [])
    if row["region"] == "heart":  # echo: no lesion; the right view must be named
        dx_ok = study.view is not None and study.view == row.get("view")
    return {"organ_ok": bool(organ_ok), "lesion_ok": bool(dx_ok), "ok": bool(organ_ok and dx_ok)}


def decoding_settings(model: Any) -> dict[str, Any]:
    """What decides the generated texts besides the weights (the outputs cache is keyed on it)."""
    return {
        "greedy": True,
        "max_new_tokens_report": 320,
        "max_new_tokens_answer": ANSWER_TOKENS,
        "no_repeat_ngram": model.config.no_repeat_ngram,
        "repetition_penalty": model.config.repetition_penalty,
        # closed questions answered by the source that covers them (sonofm.models.vlm_answers)
        "closed_answers": "sourced-v1",
    }


def run_outputs(
    model: Any,
    run: Path,
    images: list[np.ndarray],
    recs: list[dict[str, Any]],
    by_path: dict[str, np.ndarray],
    ids: list[str],
    heldout: Path,
    fresh: bool,
    contexts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The run's reports and closed answers on the held-out set, cached in RUN/benchmark_outputs.json.

    Each part is reused only when the same weights (file size and mtime), held-out images (and
    questions), decoding settings and study contexts produced it, so a later run of the
    benchmark (another seed added, the answer length changed) regenerates only what changed.
    `contexts` (one per image, for a context-prompted model) are cached as their own parts, so the
    same run's image-only outputs sit beside them.
    """
    weights = run / "model" / "model.safetensors"
    dec = decoding_settings(model)
    base = {
        "heldout": str(heldout.resolve()),
        "ids": ids,
        "weights": [weights.stat().st_size, weights.stat().st_mtime_ns],
        **({"context": True} if contexts is not None else {}),  # image-only keys stay as they were
    }
    tag = "_context" if contexts is not None else ""
    keys = {
        f"reports{tag}": {
            **base,
            "decoding": {
                k: v for k, v in dec.items() if k not in ("max_new_tokens_answer", "closed_answers")
            },
        },
        f"answers{tag}": {
            **base,
            "questions": [r["conversations"][0]["value"] for r in recs],
            "decoding": {k: v for k, v in dec.items() if k != "max_new_tokens_report"},
        },
    }
    cache = run / "benchmark_outputs.json"
    old = json.loads(cache.read_text()) if cache.is_file() and not fresh else {}
    parts = {k: old[k]["outputs"] for k in keys if old.get(k, {}).get("key") == keys[k]}
    if f"reports{tag}" not in parts:
        t0 = time.perf_counter()
        gens = generate_reports(model, images, contexts=contexts)
        parts[f"reports{tag}"] = {
            "texts": [g.text for g in gens],
            "low_confidence": [bool(g.low_confidence) for g in gens],
            "mean_logprob": [float(g.mean_logprob) for g in gens],
            "seconds": round(time.perf_counter() - t0, 1),
        }
    else:
        _log(f"    reports{tag}: reusing {cache}")
    if f"answers{tag}" not in parts:
        by_image = None if contexts is None else dict(zip(by_path, contexts, strict=True))
        parts[f"answers{tag}"] = answer_questions(model, recs, by_path, by_image)
    else:
        _log(f"    answers{tag}: reusing {cache}")
    kept = {k: v for k, v in old.items() if k not in keys}  # the other mode's parts stay cached
    atomic_write_text(cache, json.dumps(kept | {k: {"key": keys[k], "outputs": parts[k]} for k in keys}))
    return {**parts[f"reports{tag}"], **parts[f"answers{tag}"], "decoding": dec}


def findings_head_scores(model: Any, images: list[np.ndarray], rows: Any) -> dict[str, Any] | None:
    """How well the findings head reads the held-out images (the image side of the generator):
    accuracy per single-label group, micro F1 over the tags of each multi-label group, each over
    the images whose row labels that group. None for a model without a head."""
    from sonofm.models.vlm_findings import SINGLE_GROUPS
    from sonofm.vlm.conversations import labels_of_row

    if getattr(model, "findings", None) is None:
        return None
    vocab = model.findings.vocab
    preds: list[dict[str, Any]] = []
    for a in range(0, len(images), 64):
        preds += model.predict_findings(model.prepare_images(images[a : a + 64]))
    truth = [vocab.targets(labels_of_row(row)) for _, row in rows.iterrows()]
    decided = [vocab.targets(pred)[0] for pred in preds]
    out: dict[str, Any] = {}
    for k, group in enumerate(vocab.groups):
        a, b = vocab.spans[k]
        hit = tp = fp = fn = n = 0
        for (y, known), p in zip(truth, decided, strict=True):
            if not known[k]:
                continue
            n += 1
            if group in SINGLE_GROUPS:
                hit += int(bool(torch.equal(p[a:b], y[a:b])))
            else:
                tp += int((p[a:b] * y[a:b]).sum())
                fp += int((p[a:b] * (1 - y[a:b])).sum())
                fn += int(((1 - p[a:b]) * y[a:b]).sum())
        if not n:
            continue
        if group in SINGLE_GROUPS:
            out[group] = {"accuracy": hit / n, "n": n}
        else:
            out[group] = {"micro_f1": 2 * tp / max(2 * tp + fp + fn, 1), "n": n}
    return out


def oracle_findings_outputs(
    model: Any,
    run: Path,
    images: list[np.ndarray],
    rows: Any,
    recs: list[dict[str, Any]],
    row_of: dict[str, int],
    contexts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ceiling of the findings prompt: reports and closed answers written from the TRUE
    findings line (the manifest's labels) instead of the head's prediction (with the study
    context line too, for a context-prompted model). Cached beside the run."""
    from sonofm.models.vlm_context import prompt_hint
    from sonofm.vlm.conversations import labels_of_row

    weights = run / "model" / "model.safetensors"
    key = {
        "ids": list(rows["id"]),
        "weights": [weights.stat().st_size, weights.stat().st_mtime_ns],
        "n_q": len(recs),
        **({"context": True} if contexts is not None else {}),
    }
    cache = run / "benchmark_oracle_findings.json"
    if cache.is_file():
        old = json.loads(cache.read_text())
        if old.get("key") == key:
            _log(f"    oracle findings: reusing {cache}")
            return old["outputs"]
    vocab = model.findings.vocab
    ctx = contexts if contexts is not None else [None] * len(rows)
    hints = [prompt_hint(vocab, labels_of_row(r), c) for (_, r), c in zip(rows.iterrows(), ctx, strict=True)]
    texts: list[str] = []
    for a in range(0, len(images), 16):
        gens = model.answer_batch(
            [([im], None) for im in images[a : a + 16]], hints=hints[a : a + 16], max_new_tokens=320
        )
        texts += [g.text for g in gens]
    items = [
        ([images[row_of[r["image"][0]]]], r["conversations"][0]["value"].replace("<image>\n", ""))
        for r in recs
    ]
    q_hints = [hints[row_of[r["image"][0]]] for r in recs]
    answers: list[str] = []
    for a in range(0, len(items), 32):
        gens = model.answer_batch(items[a : a + 32], hints=q_hints[a : a + 32], max_new_tokens=ANSWER_TOKENS)
        answers += [g.text for g in gens]
    outputs = {"texts": texts, "answers": answers}
    atomic_write_text(cache, json.dumps({"key": key, "outputs": outputs}))
    return outputs


def train_run(data: Path, clip: Path, out: Path, *, dense: bool, seed: int) -> Path:
    """`sonofm train-vlm` with its defaults (train-tiny), as a user would run it."""
    import subprocess

    cmd = [
        sys.executable,
        "-m",
        "sonofm.cli",
        "train-vlm",
        "--data",
        str(data),
        "--out",
        str(out),
        "--image-from",
        str(clip),
        f"train.seed={seed}",
        "train.progress=false",
    ]
    if dense:
        cmd.append("--dense")
    _log("  $ " + " ".join(cmd))
    subprocess.run(cmd, check=True)
    return out


def _ci(c: dict[str, Any], signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(c['value'])} [{f.format(c['ci_low'])}, {f.format(c['ci_high'])}]"


def _vqa_delta(doc: dict[str, Any], gen: str, base: str) -> str:
    """Closed-VQA difference of a pooled generator to a baseline: the paired CI where the result
    file has it (against retrieval given the same inputs), else the difference of the means."""
    paired = doc.get("closed_vqa_vs_retrieval", {}).get(gen, {})
    if paired.get("baseline") == base:
        return _ci(paired["delta"], True)
    return f"{doc['closed_vqa_seeds_pooled'][gen]['value'] - doc['closed_vqa'][base]['value']:+.3f}"


def markdown_table(doc: dict[str, Any]) -> str:
    """The README's table from a result file: each system's seeds pooled, patient-level 95 % CIs."""
    pooled, vqa = doc["reports_seeds_pooled"], doc["closed_vqa_seeds_pooled"]
    ret = doc["reports"]
    rows = [
        "| system | seeds | clinical F1 | clinical F1 without measurements | closed-VQA | BLEU-1 | ROUGE-L |",
        "|---|---|---|---|---|---|---|",
    ]
    rows.append(
        f"| nearest-neighbour retrieval (CLIP index) | - | {_ci(ret['clinical_f1']['retrieval'])} | "
        f"{_ci(ret['clinical_f1_no_measurements']['retrieval'])} | {_ci(doc['closed_vqa']['retrieval'])} | "
        f"{ret['bleu1']['retrieval']['value']:.3f} | {ret['rougeL']['retrieval']['value']:.3f} |"
    )
    if "retrieval_measured" in ret["clinical_f1"]:
        rows.append(
            f"| retrieval, grounded in the study's measurements | - | "
            f"{_ci(ret['clinical_f1']['retrieval_measured'])} | "
            f"{_ci(ret['clinical_f1_no_measurements']['retrieval_measured'])} | "
            f"{_ci(doc['closed_vqa']['retrieval_measured'])} | "
            f"{ret['bleu1']['retrieval_measured']['value']:.3f} | "
            f"{ret['rougeL']['retrieval_measured']['value']:.3f} |"
        )
    labels = {
        "generator_moe": "generator, dual-path MoE",
        "generator_dense": "generator, dense twin",
        "generator_moe_grounded": "generator, dual-path MoE, grounded in the measurements",
        "generator_dense_grounded": "generator, dense twin, grounded in the measurements",
        "generator_moe_agree": "generator, dual-path MoE, agreeing with its findings head",
        "generator_dense_agree": "generator, dense twin, agreeing with its findings head",
        "generator_moe_agree_grounded": "generator, dual-path MoE, agreeing with its head, grounded",
        "generator_dense_agree_grounded": "generator, dense twin, agreeing with its head, grounded",
    }
    for gen, t in pooled.items():
        rows.append(
            f"| {labels.get(gen, gen)} | {len(t['seeds'])} | {_ci(t['clinical_f1'][gen])} | "
            f"{_ci(t['clinical_f1_no_measurements'][gen])} | {_ci(vqa[gen])} | "
            f"{t['bleu1'][gen]['value']:.3f} | {t['rougeL'][gen]['value']:.3f} |"
        )
    for gen, t in pooled.items():
        d, dn = (
            t["clinical_f1"][f"delta/{gen}-retrieval"],
            t["clinical_f1_no_measurements"][f"delta/{gen}-retrieval"],
        )
        rows.append(
            f"| {labels.get(gen, gen)} minus retrieval | | {_ci(d, True)} | {_ci(dn, True)} | "
            f"{_vqa_delta(doc, gen, 'retrieval')} | | |"
        )
    for gen, t in pooled.items():
        vm = t.get("vs_retrieval_measured")
        if vm:
            rows.append(
                f"| {labels.get(gen, gen)} minus retrieval given the measurements | | "
                f"{_ci(vm['clinical_f1'][f'delta/{gen}-retrieval_measured'], True)} | "
                f"{_ci(vm['clinical_f1_no_measurements'][f'delta/{gen}-retrieval_measured'], True)} | "
                f"{_vqa_delta(doc, gen, 'retrieval_measured')} | | |"
            )
    lm_vqa = doc.get("closed_vqa_language_model_only", {})
    for gen in ("generator_moe", "generator_dense"):
        if gen in lm_vqa:
            rows.append(
                f"| {labels[gen]}: closed answers of its language model alone | "
                f"{len(pooled[gen]['seeds'])} | | | {_ci(lm_vqa[gen])} | | |"
            )
    ceiling = doc.get("summary", {}).get("ceiling_true_findings")
    if ceiling:
        rows.append(
            f"| ceiling: MoE generator prompted with the true findings | 1 | {_ci(ceiling['clinical_f1'])} | "
            f"{_ci(ceiling['clinical_f1_no_measurements'])} | {_ci(ceiling['closed_vqa'])} | | |"
        )
    md = doc.get("moe_vs_dense")
    if md:
        k = md["seeds_each"]
        rows.append(
            f"| MoE minus dense ({k} seed{'s' if k > 1 else ''} each, paired) | | "
            f"{_ci(md['clinical_f1']['delta/generator_moe-generator_dense'], True)} | "
            f"{_ci(md['clinical_f1_no_measurements']['delta/generator_moe-generator_dense'], True)} | | | |"
        )
    return "\n".join(rows)


def main() -> None:  # noqa: C901 - a linear script
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="training dataset dir (its train split)")
    ap.add_argument("--heldout", type=Path, help="dataset of unseen patients (all rows)")
    ap.add_argument("--clip", type=Path, help="contrastive model dir (image tower + index)")
    ap.add_argument(
        "--moe-run", type=Path, action="append", default=[], help="train-vlm run dir (repeat per seed)"
    )
    ap.add_argument("--dense-run", type=Path, action="append", default=[], help="dense twin run dir(s)")
    ap.add_argument(
        "--variant-run",
        type=Path,
        action="append",
        default=[],
        help="a recipe variant (e.g. trained without the findings prompt): scored on the same images, "
        "paired against the first --moe-run (not pooled with it)",
    )
    ap.add_argument("--train-missing", action="store_true", help="train runs whose dirs lack model/")
    ap.add_argument("--max-images", type=int, default=None, help="score only this many held-out images")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--fresh", action="store_true", help="ignore the RUN/benchmark_outputs.json caches")
    ap.add_argument("--generate-only", action="store_true", help="write the runs' output caches and stop")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--table", nargs="?", const=str(RESULTS), default=None, help="print the README table of a result file"
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.table is not None:  # print the README table of an existing result file and stop
        print(markdown_table(json.loads(Path(args.table).read_text())))
        return
    if args.data is None or args.heldout is None or args.clip is None:
        ap.error("--data, --heldout and --clip are required (except with --table)")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()

    from sonofm.models import load_model
    from sonofm.models.vlm_context import clean_context, grounded_report
    from sonofm.reports.grounding import agreeing_report
    from sonofm.vlm import compare
    from sonofm.vlm.conversations import format_report, labels_of_row
    from sonofm.vlm.retrieval import (
        answer_from_row,
        nearest_training_cases,
        retrieved_report,
        with_study_context,
    )

    train_rows = _rows(args.data, "train")
    test_rows = _rows(args.heldout, None)
    if args.max_images is not None and len(test_rows) > args.max_images:
        # whole patients, chosen with a fixed seed, so the test set stays patient-grouped
        pats = np.random.default_rng(0).permutation(test_rows["patient_id"].unique())
        keep, n = [], 0
        for p in pats:
            k = int((test_rows["patient_id"] == p).sum())
            if n + k > args.max_images:
                continue
            keep.append(p)
            n += k
        test_rows = test_rows[test_rows["patient_id"].isin(keep)].reset_index(drop=True)
    refs = [format_report(r) for r in test_rows["report"]]
    regions = list(test_rows["region"])
    patients = [str(p) for p in test_rows["patient_id"]]
    images = _images(args.heldout, test_rows)
    by_path = dict(zip(test_rows["image"], images, strict=True))
    # each held-out study's context: what the sonographer measured and the header's sex
    contexts = [
        {"measurements": lab["measurements"], "sex": lab["sex"]}
        for lab in (labels_of_row(r) for _, r in test_rows.iterrows())
    ]
    _log(
        f"held-out: {len(test_rows)} images, {len(set(patients))} patients; "
        f"train index: {len(train_rows)} images"
    )

    # ---- retrieval baseline
    t0 = time.perf_counter()
    clip = load_model(str(args.clip)).eval()
    nb = nearest_training_cases(clip, train_rows, args.data, test_rows, args.heldout)
    retrieved = [format_report(train_rows["report"][i]) for i in nb.index]
    recs = closed_questions(test_rows)
    row_of = {r: i for i, r in enumerate(test_rows["image"])}
    q_refs = [r["conversations"][1]["value"] for r in recs]
    q_patients = [patients[row_of[r["image"][0]]] for r in recs]
    ret_answers = [
        answer_from_row(r["meta"], train_rows.iloc[int(nb.index[row_of[r["image"][0]]])]) for r in recs
    ]
    # the same baseline given the same inputs as a context-prompted generator: the neighbour's
    # structured study with the query's measurements, sex and guideline findings, rewritten
    measured_rows = [
        with_study_context(train_rows.iloc[int(i)], c) for i, c in zip(nb.index, contexts, strict=True)
    ]
    retrieved_measured = [format_report(retrieved_report(r, seed=k)) for k, r in enumerate(measured_rows)]
    measured_answers = [answer_from_row(r["meta"], measured_rows[row_of[r["image"][0]]]) for r in recs]
    retrieval_s = time.perf_counter() - t0
    del clip

    systems: dict[str, list[str]] = {"retrieval": retrieved, "retrieval_measured": retrieved_measured}
    answers: dict[str, list[str]] = {"retrieval": ret_answers, "retrieval_measured": measured_answers}
    info: dict[str, Any] = {
        "retrieval": {"seconds": round(retrieval_s, 1), "mean_similarity": float(nb.similarity.mean())}
    }
    flags: dict[str, Any] = {}
    lm_answers: dict[str, list[str]] = {}  # the language model's own closed answers, per run
    answer_sources: dict[str, list[str | None]] = {}
    runs = [("moe", p) for p in args.moe_run] + [("dense", p) for p in args.dense_run]
    if not args.moe_run:
        raise SystemExit("give at least one --moe-run")
    names: dict[str, list[str]] = {
        k: [] for k in ("moe", "dense", "moe_grounded", "dense_grounded", "moe_agree", "dense_agree",
                        "moe_agree_grounded", "dense_agree_grounded")
    }  # fmt: skip
    for i, (kind, run) in enumerate(runs):
        if not (run / "model" / "config.json").is_file():
            if not args.train_missing:
                raise SystemExit(f"{run}/model missing (pass --train-missing to train it)")
            train_run(args.data, args.clip, run, dense=kind == "dense", seed=i)
        name = f"generator_{kind}_{run.name}"
        names[kind].append(name)
        _log(f"{name}: {run}")
        model = load_model(str(run / "model")).eval()
        ctx = contexts if model.config.context is not None else None
        out = run_outputs(
            model, run, images, recs, by_path, list(test_rows["id"]), args.heldout, args.fresh, ctx
        )
        systems[name] = out["texts"]
        answers[name] = out["answers"]
        # the same drafts grounded in each study's measurements and sex (what `sonofm generate
        # --measurements` and the server return; the function answer_batch applies)
        g_name = f"generator_{kind}_grounded_{run.name}"
        names[f"{kind}_grounded"].append(g_name)
        systems[g_name] = [grounded_report(t, c) for t, c in zip(out["texts"], contexts, strict=True)]
        # the study's measurements decide threshold and guideline questions (answer_batch's sources)
        # the drafts made to agree with the run's own findings head (what answer_batch returns),
        # image only and grounded in the measurements too
        decided = head_decisions(model, images)
        if decided is not None:
            dims = model.config.findings.groups
            a_name, ag_name = (
                f"generator_{kind}_agree_{run.name}",
                f"generator_{kind}_agree_grounded_{run.name}",
            )
            names[f"{kind}_agree"].append(a_name)
            names[f"{kind}_agree_grounded"].append(ag_name)
            systems[a_name] = [
                agreeing_report(t, lab, dimensions=dims) for t, lab in zip(out["texts"], decided, strict=True)
            ]
            systems[ag_name] = [
                agreeing_report(t, lab, cc["measurements"], cc["sex"], dimensions=dims)
                for t, lab, cc in zip(
                    out["texts"], decided, (clean_context(c) for c in contexts), strict=True
                )
            ]
        answers[g_name] = with_measured_answers(
            out["answers"], recs, dict(zip(by_path, contexts, strict=True))
        )
        lm_answers[name] = out["answers_language_model"]
        answer_sources[name] = out["answered_by"]
        if decided is not None:  # agreeing reports change no answer
            answers[a_name], answers[ag_name] = answers[name], answers[g_name]
        gen_s = out["seconds"]
        training = json.loads((run / "model" / "training.json").read_text())
        flags[name] = {
            "low_confidence_rate": float(np.mean(out["low_confidence"])),
            "mean_logprob": float(np.mean(out["mean_logprob"])),
        }
        info[name] = {
            "run": str(run),
            "seed": training.get("config", {}).get("train", {}).get("seed"),
            "parameters": model.parameter_counts(),
            "decoding": out["decoding"],
            "fit": training.get("fit"),
            "generation_seconds": round(gen_s, 1),
            "example": {"id": str(test_rows["id"][0]), "generated": systems[name][0], "reference": refs[0]},
        }
        info[name]["findings_head"] = findings_head_scores(model, images, test_rows)
        if i == 0:  # the 10-image check, the untrained floor and the findings ceiling: first MoE run
            first_model, first_run = model, run
        else:
            del model
    variants: dict[str, Any] = {}
    for run in args.variant_run:
        name = f"variant_{run.name}"
        _log(f"{name}: {run}")
        model = load_model(str(run / "model")).eval()
        ctx = contexts if model.config.context is not None else None
        out = run_outputs(
            model, run, images, recs, by_path, list(test_rows["id"]), args.heldout, args.fresh, ctx
        )
        training = json.loads((run / "model" / "training.json").read_text())
        variants[name] = {
            "run": str(run),
            "model": training.get("config", {}).get("model"),
            "texts": out["texts"],
            "answers": out["answers"],
        }
        del model
    oracle_name = None
    if getattr(first_model, "findings", None) is not None:
        oracle_name = "ceiling_true_findings"
        _log(f"{oracle_name}: {first_run} prompted with the true findings")
        oracle = oracle_findings_outputs(
            first_model,
            first_run,
            images,
            test_rows,
            recs,
            row_of,
            contexts if first_model.config.context is not None else None,
        )
        systems[oracle_name] = oracle["texts"]
        answers[oracle_name] = oracle["answers"]

    if args.generate_only:
        _log("outputs cached in every RUN/benchmark_outputs.json")
        return

    # ---- scores with patient-level CIs: every run, and each kind with its seeds pooled per patient
    table = compare.compare_reports(
        systems, refs, regions, patients, baseline="retrieval", n_boot=args.n_boot
    )
    vqa = compare.closed_vqa(answers, q_refs, q_patients, n_boot=args.n_boot)
    from sonofm.vlm.metrics import closed_correct

    kinds = [str(r["meta"]["kind"]) for r in recs]

    def per_kind(preds: list[str]) -> dict[str, Any]:
        ok = [closed_correct(p, r) for p, r in zip(preds, q_refs, strict=True)]
        return {
            k: {"accuracy": float(np.mean([o for o, kk in zip(ok, kinds, strict=True) if kk == k])),
                "n": kinds.count(k)}
            for k in sorted(set(kinds))
        }  # fmt: skip

    vqa_kind = {name: per_kind(preds) for name, preds in answers.items()}
    # the language model's own closed answers (before the sources of sonofm.models.vlm_answers)
    lm_vqa: dict[str, Any] = {"per_kind": {n: per_kind(a) for n, a in lm_answers.items()}}
    for kind in ("moe", "dense"):
        if names[kind]:
            k = len(names[kind])
            lm_vqa[f"generator_{kind}"] = compare.closed_vqa(
                {"lm": [t for n in names[kind] for t in lm_answers[n]]},
                q_refs * k,
                q_patients * k,
                n_boot=args.n_boot,
            )["lm"]
    sources_used = {
        n: {str(src or "language model"): int(c) for src, c in collections.Counter(s).items()}
        for n, s in answer_sources.items()
    }
    pooled: dict[str, Any] = {}
    pooled_vqa: dict[str, Any] = {}
    vqa_vs_retrieval: dict[str, Any] = {}  # paired, seeds pooled, against retrieval given the same inputs
    for kind, members in names.items():
        if not members:
            continue
        k = len(members)
        gen = f"generator_{kind}"
        pooled[gen] = compare.compare_reports(
            {gen: [t for n in members for t in systems[n]], "retrieval": systems["retrieval"] * k},
            refs * k,
            regions * k,
            patients * k,
            baseline="retrieval",
            n_boot=args.n_boot,
        )
        base = "retrieval_measured" if kind.endswith("grounded") else "retrieval"  # same inputs
        both = compare.closed_vqa(
            {gen: [t for n in members for t in answers[n]], base: answers[base] * k},
            q_refs * k,
            q_patients * k,
            n_boot=args.n_boot,
            baseline=base,
        )
        pooled_vqa[gen] = both[gen]
        vqa_vs_retrieval[gen] = {"baseline": base, "delta": both[f"delta/{gen}-{base}"]}
        pooled[gen]["seeds"] = members
        if kind.endswith("grounded"):  # against retrieval given the same measurements
            pooled[gen]["vs_retrieval_measured"] = compare.compare_reports(
                {gen: [t for n in members for t in systems[n]], "retrieval_measured": retrieved_measured * k},
                refs * k,
                regions * k,
                patients * k,
                baseline="retrieval_measured",
                n_boot=args.n_boot,
            )
    per_region: dict[str, Any] = {}
    from sonofm.vlm import metrics as VM

    for reg in sorted(set(regions)):
        sel = [i for i, r in enumerate(regions) if r == reg]
        per_region[reg] = {"n_images": len(sel)}
        for name, p in systems.items():
            sub_p, sub_r = [p[i] for i in sel], [refs[i] for i in sel]
            per_region[reg][name] = {
                "clinical_f1": VM.micro_f1(VM.clinical_counts(sub_p, sub_r, reg)),
                "clinical_f1_no_measurements": VM.micro_f1(
                    VM.clinical_counts(sub_p, sub_r, reg, measurements=False)
                ),
            }
    moe_vs_dense = None
    if names["dense"]:
        k = min(len(names["moe"]), len(names["dense"]))  # equal seed counts, paired by position
        both = compare.compare_reports(
            {
                "generator_moe": [t for n in names["moe"][:k] for t in systems[n]],
                "generator_dense": [t for n in names["dense"][:k] for t in systems[n]],
            },
            refs * k,
            regions * k,
            patients * k,
            baseline="generator_dense",
            n_boot=args.n_boot,
        )
        moe_vs_dense = {
            "seeds_each": k,
            "clinical_f1": both["clinical_f1"],
            "clinical_f1_no_measurements": both["clinical_f1_no_measurements"],
            "closed_vqa_per_kind": pooled_vqa,
        }

    # ---- recipe variants, paired against the first MoE run on the same images
    variant_scores: dict[str, Any] = {}
    first_name = names["moe"][0]
    for name, v in variants.items():
        pair = compare.compare_reports(
            {name: v["texts"], first_name: systems[first_name]},
            refs,
            regions,
            patients,
            baseline=name,
            n_boot=args.n_boot,
        )
        variant_scores[name] = {
            "run": v["run"],
            "clinical_f1": pair["clinical_f1"],
            "clinical_f1_no_measurements": pair["clinical_f1_no_measurements"],
            "closed_vqa": compare.closed_vqa(
                {name: v["answers"], first_name: answers[first_name]}, q_refs, q_patients, n_boot=args.n_boot
            ),
        }

    # ---- `sonofm generate` on 10 random held-out images (same code path as the CLI)
    from sonofm.models.vlm import generate_from_files

    pick = np.random.default_rng(20).choice(len(test_rows), size=min(10, len(test_rows)), replace=False)
    ten = []
    for j in sorted(int(x) for x in pick):
        row = test_rows.iloc[j]
        res = generate_from_files(
            first_run / "model",
            [args.heldout / row["image"]],
            max_new_tokens=320,
            checked=True,
        )  # image only, as a user runs it without measurements: the check is what the image says
        text = res.text
        draft_check = readable_check(res.draft or text, row)
        ten.append(
            {
                "id": str(row["id"]),
                "region": row["region"],
                "diagnosis": list(dict(row["attributes"]).get("diagnosis") or []),
                "generated": text,
                "low_confidence": res.low_confidence,
                "reference": refs[j],
                **readable_check(text, row),
                "draft": res.draft,
                "draft_ok": draft_check["ok"],
            }
        )
    n_ok = sum(t["ok"] for t in ten)
    n_ok_draft = sum(t["draft_ok"] for t in ten)

    # ---- floor for the flag: an untrained model of the same architecture writes garbage
    from sonofm.models.vlm import SonoVLM

    torch.manual_seed(0)
    untrained = SonoVLM(first_model.config, first_model.tokenizer, load_pretrained=False).eval()
    garbage = generate_reports(untrained, images[:16], max_new_tokens=64)
    flags["untrained_floor"] = {
        "low_confidence_rate": float(np.mean([g.low_confidence for g in garbage])),
        "mean_logprob": float(np.mean([g.mean_logprob for g in garbage])),
        "example": garbage[0].text,
    }

    main = pooled["generator_moe"]
    g_main = pooled["generator_moe_grounded"]
    gen_f1 = main["clinical_f1"]["generator_moe"]
    delta = main["clinical_f1"]["delta/generator_moe-retrieval"]
    gen_f1_nm = main["clinical_f1_no_measurements"]["generator_moe"]
    delta_nm = main["clinical_f1_no_measurements"]["delta/generator_moe-retrieval"]
    doc = {
        "benchmark": "vlm",
        "command": " ".join(["python", "benchmarks/vlm.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
        "data": {
            "train": str(args.data),
            "heldout": str(args.heldout),
            "clip": str(args.clip),
            "n_test_images": len(test_rows),
            "n_test_patients": len(set(patients)),
            "n_closed_questions": len(recs),
            "regions": sorted(set(regions)),
            "note": "held-out patients are simulated with another seed: none is in training, "
            "pretraining or the index",
        },
        "targets": TARGETS,
        "summary": {
            "note": "generator_moe: its seeds pooled per patient (every seed's report of every image; "
            "whole patients resampled)",
            "moe_seeds": len(names["moe"]),
            "dense_seeds": len(names["dense"]),
            "generator_clinical_f1": gen_f1,
            "retrieval_clinical_f1": table["clinical_f1"]["retrieval"],
            "delta_vs_retrieval": delta,
            "beats_retrieval_ci_excludes_0": bool(delta["ci_low"] > 0),
            "generator_clinical_f1_no_measurements": gen_f1_nm,
            "retrieval_clinical_f1_no_measurements": table["clinical_f1_no_measurements"]["retrieval"],
            "delta_vs_retrieval_no_measurements": delta_nm,
            "closed_vqa": pooled_vqa["generator_moe"],
            "closed_vqa_grounded": pooled_vqa.get("generator_moe_grounded"),
            "closed_vqa_language_model_only": lm_vqa.get("generator_moe"),
            "closed_vqa_retrieval": vqa["retrieval"],
            "closed_vqa_retrieval_measured": vqa["retrieval_measured"],
            "closed_vqa_grounded_minus_retrieval_measured": vqa_vs_retrieval.get(
                "generator_moe_grounded", {}
            ).get("delta"),
            "readable_of_10": n_ok,
            "readable_of_10_language_model_draft": n_ok_draft,
            "clinical_f1_target_met": bool(gen_f1["value"] >= TARGETS["clinical_f1"]),
            "closed_vqa_target_met": bool(pooled_vqa["generator_moe"]["value"] >= TARGETS["closed_vqa"]),
            "closed_vqa_grounded_target_met": bool(
                pooled_vqa.get("generator_moe_grounded", {}).get("value", 0.0) >= TARGETS["closed_vqa"]
            ),
            "ceiling_true_findings": None
            if oracle_name is None
            else {
                "note": "the first MoE run prompted with the true findings line (manifest labels) "
                "instead of its head's prediction: what a perfect image classifier would give",
                "clinical_f1": table["clinical_f1"][oracle_name],
                "clinical_f1_no_measurements": table["clinical_f1_no_measurements"][oracle_name],
                "closed_vqa": vqa[oracle_name],
            },
            "findings_head": info[names["moe"][0]].get("findings_head"),
            "agreeing": _agreeing_summary(pooled),
            "grounded": {
                "note": "generator_moe_grounded: the same MoE drafts grounded in each held-out study's "
                "measurements and sex (sonofm.reports.grounding: numbers, sex and echo guideline "
                "findings are the study's; organ, view, frame and lesion stay the generator's); "
                "retrieval_measured: the neighbour's report grounded the same way (the baseline given "
                "the same inputs)",
                "generator_clinical_f1": g_main["clinical_f1"]["generator_moe_grounded"],
                "generator_clinical_f1_no_measurements": g_main["clinical_f1_no_measurements"][
                    "generator_moe_grounded"
                ],
                "retrieval_measured_clinical_f1": table["clinical_f1"]["retrieval_measured"],
                "retrieval_measured_clinical_f1_no_measurements": table["clinical_f1_no_measurements"][
                    "retrieval_measured"
                ],
                "delta_vs_retrieval": g_main["clinical_f1"]["delta/generator_moe_grounded-retrieval"],
                "delta_vs_retrieval_measured": g_main["vs_retrieval_measured"]["clinical_f1"][
                    "delta/generator_moe_grounded-retrieval_measured"
                ],
                "delta_vs_retrieval_measured_no_measurements": g_main["vs_retrieval_measured"][
                    "clinical_f1_no_measurements"
                ]["delta/generator_moe_grounded-retrieval_measured"],
                "clinical_f1_target_met": bool(
                    g_main["clinical_f1"]["generator_moe_grounded"]["value"] >= TARGETS["clinical_f1"]
                ),
                "beats_retrieval_measured_ci_excludes_0": bool(
                    g_main["vs_retrieval_measured"]["clinical_f1"][
                        "delta/generator_moe_grounded-retrieval_measured"
                    ]["ci_low"]
                    > 0
                ),
            },
        },
        "reports": table,
        "reports_seeds_pooled": pooled,
        "closed_vqa": vqa,
        "closed_vqa_seeds_pooled": pooled_vqa,
        "closed_vqa_per_kind": vqa_kind,
        "closed_vqa_language_model_only": lm_vqa,
        "closed_vqa_vs_retrieval": vqa_vs_retrieval,
        "closed_answer_sources": {
            "note": "who answered each closed question (sonofm.models.vlm_answers): the study's "
            "measurements, the guideline rules, the findings head, else the language model",
            "image_only": sources_used,
        },
        "clinical_f1_per_region": per_region,
        "moe_vs_dense": moe_vs_dense,
        "variants_vs_first_moe_run": variant_scores,
        "low_confidence_flag": flags,
        "systems": info,
        "generate_10_random_test_images": ten,
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(doc, indent=1, default=float))
    print(
        f"clinical F1 generator {gen_f1['value']:.3f} [{gen_f1['ci_low']:.3f}, {gen_f1['ci_high']:.3f}] vs "
        f"retrieval {table['clinical_f1']['retrieval']['value']:.3f}; delta {delta['value']:+.3f} "
        f"[{delta['ci_low']:+.3f}, {delta['ci_high']:+.3f}] ({gen_f1.get('n_patients')} patients)"
    )
    print(
        f"without measurements: generator {gen_f1_nm['value']:.3f} vs retrieval "
        f"{table['clinical_f1_no_measurements']['retrieval']['value']:.3f}; delta {delta_nm['value']:+.3f} "
        f"[{delta_nm['ci_low']:+.3f}, {delta_nm['ci_high']:+.3f}]"
    )
    gg, gd = (
        g_main["clinical_f1"]["generator_moe_grounded"],
        doc["summary"]["grounded"]["delta_vs_retrieval_measured"],
    )
    print(
        f"grounded in the measurements: generator {gg['value']:.3f} vs retrieval "
        f"{table['clinical_f1']['retrieval_measured']['value']:.3f}; delta {gd['value']:+.3f} "
        f"[{gd['ci_low']:+.3f}, {gd['ci_high']:+.3f}]"
    )
    gv = pooled_vqa["generator_moe"]["value"]
    print(f"closed VQA generator {gv:.3f} vs retrieval {vqa['retrieval']['value']:.3f}")
    for m in ("bleu1", "rougeL"):
        print(
            f"{m}: "
            + ", ".join(f"{k} {v['value']:.3f}" for k, v in table[m].items() if not k.startswith("delta"))
        )
    print(f"readable reports naming region and lesion: {n_ok}/10; wrote {args.out}")


if __name__ == "__main__":
    main()
