"""Benchmark the generative VLM: learning check, MoE vs dense, generation speed.

Prints and writes (``benchmarks/results/vlm.json``):

- learning check: a tiny SonoVLM (ViT 32 px, Qwen2 width 96 x 2 layers, dual-path MoE) trained
  with ``train_vlm`` (stage 1: MoE + projector, 10 steps; stage 2: the from-scratch LM fully +
  MoE + projector, ``lora.enabled: auto``) on the report conversations (3 question wordings per
  image) of a small simulated set (breast + thyroid lesions), then greedy-decoded with the default
  report question on every train and test image: clinical-correctness F1 on train must reach
  >= 0.9; test (every image of held-out patients simulated with another seed) is measured
  (a 30-image set is memorised, not generalised);
- the report-generation table (BLEU-1..4, ROUGE-1/L, CIDEr, METEOR, clinical F1) for the MoE
  model and its dense twin at equal ACTIVE parameters (`dense_equivalent_config`), both trained
  the same way;
- generation tokens/s on 2 CPU threads, batch 1 and 8, greedy with and without the KV cache
  (``min_new_tokens`` forces equal lengths).

Usage::

    python benchmarks/vlm.py                       # full run (~6-10 min on a busy 2-core machine)
    python benchmarks/vlm.py --quick               # smoke run (few steps, no quality target)
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "vlm.json"
TARGET_TRAIN_CLINICAL_F1 = 0.9

BENCH_VLM: dict[str, Any] = {
    "name": "bench-tiny",
    "image": {
        "kind": "vit",
        "image_size": 32,
        "in_chans": 1,
        "mean": [0.5],
        "std": [0.5],
        "patch_size": 8,
        "hidden_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 128,
    },
    "lm": {
        "model_type": "qwen2",
        "hidden_size": 96,
        "intermediate_size": 192,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": True,
    },
    "moe": {"num_experts": 4, "top_k": 2, "shared_expert": True},
    "num_image_tokens": 4,
    "max_length": 320,
    "vocab_size": 1000,
}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def simulate(out: Path, n: int, seed: int) -> Path:
    from sonofm.sim.generator import simulate_dataset

    return simulate_dataset(out, n, regions=["breast", "thyroid"], size=32, seed=seed, progress=False)


def train_config(data: Path, *, moe: bool, stage1_steps: int, stage2_steps: int, lr: float = 3e-3) -> Any:
    from sonofm.vlm.train import VLMTrainConfig

    return VLMTrainConfig.model_validate(
        {
            "model": BENCH_VLM,
            "moe": moe,
            "data": {"path": str(data), "tasks": ["report"], "val_split": None, "report_questions": 3},
            "train": {
                "batch_size": 8,
                "progress": False,
                "log_every": 25,
                "device": "cpu",
                "weight_decay": 0.0,
            },
            "stage1": {"epochs": 10_000, "max_steps": stage1_steps, "lr": lr},
            "stage2": {"epochs": 10_000, "max_steps": stage2_steps, "lr": lr},
            "lora": {"enabled": "auto"},  # from-scratch LM: stage 2 fine-tunes it fully
        }
    )


def generate_reports(
    model: Any, data: Path, split: str, max_new_tokens: int = 160
) -> tuple[list, list, list]:
    """Greedy reports for every image of a split: (predictions, references, regions)."""
    from sonofm.data.dataset import read_grayscale
    from sonofm.data.manifest import read_manifest
    from sonofm.vlm.conversations import format_report

    df = read_manifest(data)
    rows = (df if split is None else df[df["split"] == split]).sort_values("id")
    images = [read_grayscale(data / p) for p in rows["image"]]
    preds: list[str] = []
    for a in range(0, len(images), 16):
        preds += model.chat_batch([([im], None) for im in images[a : a + 16]], max_new_tokens=max_new_tokens)
    refs = [format_report(r) for r in rows["report"]]
    return preds, refs, list(rows["region"])


def learn_and_score(
    data: Path,
    heldout: Path,
    run: Path,
    *,
    moe: bool,
    stage1_steps: int,
    stage2_steps: int,
    meteor: bool,
) -> dict[str, Any]:
    """Train one model; score its greedy reports on its training images and on held-out patients."""
    from sonofm.vlm.metrics import report_metrics
    from sonofm.vlm.train import train_vlm

    cfg = train_config(data, moe=moe, stage1_steps=stage1_steps, stage2_steps=stage2_steps)
    t0 = time.perf_counter()
    res = train_vlm(cfg, run)
    train_s = time.perf_counter() - t0
    model = res.model.eval()
    out: dict[str, Any] = {
        "moe": moe,
        "train_seconds": round(train_s, 1),
        "steps": {k: f.step for k, f in res.stages.items()},
        "parameters": model.parameter_counts(),
        "model_dir": str(res.model_dir),
    }
    for split, where, part in (("train", data, "train"), ("test", heldout, None)):
        preds, refs, regions = generate_reports(model, where, part)
        scores = report_metrics(preds, refs, regions, meteor=meteor and split == "test")
        scores["example"] = {"generated": preds[0], "reference": refs[0]}
        out[split] = scores
        _log(
            f"  {'moe' if moe else 'dense'} {split}: n={scores['n']} clinical_f1={scores['clinical_f1']:.3f} "
            f"bleu1={scores['bleu1']:.3f} rouge1={scores['rouge1']:.3f}"
        )
    out["model"] = model
    return out


@torch.no_grad()
def generation_speed(model: Any, data: Path, *, new_tokens: int, threads: int = 2) -> dict[str, Any]:
    """Greedy tokens/s (batch 1 and 8) with and without the KV cache, on `threads` CPU threads."""
    from sonofm.data.dataset import read_grayscale
    from sonofm.data.manifest import read_manifest

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    df = read_manifest(data)
    images = [read_grayscale(data / p) for p in df["image"][:8]]
    out: dict[str, Any] = {"threads": threads, "new_tokens": new_tokens}
    try:
        for batch in (1, 8):
            items = [([im], None) for im in images[:batch]]
            for cache in (True, False):
                gen = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "use_cache": cache}
                model.chat_batch(items[:1], max_new_tokens=4, use_cache=cache)  # warm-up
                best = float("inf")
                for _ in range(2):
                    t0 = time.perf_counter()
                    model.chat_batch(items, **gen)
                    best = min(best, time.perf_counter() - t0)
                key = f"batch{batch}_{'cache' if cache else 'no_cache'}_tokens_per_s"
                out[key] = round(batch * new_tokens / best, 1)
                _log(f"  {key}: {out[key]}")
    finally:
        torch.set_num_threads(old)
    for b in (1, 8):
        out[f"batch{b}_cache_speedup"] = round(
            out[f"batch{b}_cache_tokens_per_s"] / out[f"batch{b}_no_cache_tokens_per_s"], 2
        )
    return out


TABLE_KEYS = ("bleu1", "bleu4", "rouge1", "rougeL", "cider", "meteor", "clinical_f1", "clinical_f1_macro")


def table(results: dict[str, dict[str, Any]], split: str) -> str:
    head = "| model | active params | total params | " + " | ".join(TABLE_KEYS) + " |"
    lines = [head, "|" + "---|" * (3 + len(TABLE_KEYS))]
    for name, r in results.items():
        s = r[split]
        vals = " | ".join(f"{s[k]:.3f}" if isinstance(s.get(k), float) else "-" for k in TABLE_KEYS)
        p = r["parameters"]
        lines.append(f"| {name} | {p['active'] / 1e6:.3f} M | {p['total'] / 1e6:.3f} M | {vals} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="dataset dir (default: simulate breast+thyroid, 32 px)")
    ap.add_argument("--n", type=int, default=36, help="images to simulate for training")
    ap.add_argument("--test-n", type=int, default=32, help="held-out images (other patients, other seed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage1-steps", type=int, default=10)
    ap.add_argument("--stage2-steps", type=int, default=350)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 + 10 steps, 16 new tokens")
    ap.add_argument("--no-meteor", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.stage1_steps, args.stage2_steps = 5, 10
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sonofm-vlm-bench-") as tmp:
        tmp_path = Path(tmp)
        data = args.data or simulate(tmp_path / "data", args.n, args.seed)
        # test = every image of patients simulated with another seed (the training set's own
        # test split holds only a handful of images at this size)
        heldout = simulate(tmp_path / "heldout", args.test_n, args.seed + 1000)
        results: dict[str, dict[str, Any]] = {}
        for name, moe in (("moe", True), ("dense", False)):
            _log(f"training {name} ({args.stage1_steps} + {args.stage2_steps} steps) ...")
            results[name] = learn_and_score(
                data,
                heldout,
                tmp_path / f"run-{name}",
                moe=moe,
                stage1_steps=args.stage1_steps,
                stage2_steps=args.stage2_steps,
                meteor=not args.no_meteor,
            )
        _log("generation speed (MoE model) ...")
        speed = generation_speed(
            results["moe"]["model"], data, new_tokens=16 if args.quick else 64, threads=2
        )
    for r in results.values():
        r.pop("model")
        r.pop("model_dir")
    train_f1 = results["moe"]["train"]["clinical_f1"]
    doc = {
        "benchmark": "vlm",
        "command": " ".join(["python", "benchmarks/vlm.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
        "data": {
            "simulated": args.data is None,
            "n": args.n,
            "test": f"{args.test_n} held-out simulated images (seed {args.seed + 1000})",
            "regions": ["breast", "thyroid"],
            "size": 32,
        },
        "model": BENCH_VLM,
        "learning_check": {
            "train_clinical_f1": train_f1,
            "test_clinical_f1": results["moe"]["test"]["clinical_f1"],
            "target_train_clinical_f1": TARGET_TRAIN_CLINICAL_F1,
            "passed": bool(train_f1 >= TARGET_TRAIN_CLINICAL_F1),
        },
        "results": results,
        "generation": speed,
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1, default=float))
    print("## Report generation, test split (MoE vs dense at equal active parameters)\n")
    print(table(results, "test"))
    print("\n## Same, train split (learning check: clinical F1 >= 0.9)\n")
    print(table(results, "train"))
    print(
        f"\nlearning check: train clinical F1 {train_f1:.3f} "
        f"({'PASS' if doc['learning_check']['passed'] else 'FAIL'}, target {TARGET_TRAIN_CLINICAL_F1})"
    )
    print("\n## Generation tokens/s (greedy, 2 threads)\n")
    for k, v in speed.items():
        print(f"- {k}: {v}")
    print(f"\ntotal {doc['seconds']} s" + ("" if args.quick else f"; wrote {args.out}"))


if __name__ == "__main__":
    main()
