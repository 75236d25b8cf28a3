"""The VLM training job behind ``sonofm train-vlm`` (EchoVLM's two stages, docs/methods.md section 5).

config -> conversations (`sonofm.vlm.conversations`, or an EchoVLM ShareGPT JSON) -> tokenizer
(BPE trained on the training conversations when no pretrained LM is given) -> `SonoVLM`
(`sonofm.models.vlm.build_vlm`; ``dense`` swaps in `dense_equivalent_config`, the dense LM with
the MoE model's ACTIVE parameter count) -> stages through the shared
:class:`~sonofm.train.trainer.Trainer` (AMP, DDP, exact resume, JSONL metrics, progress bar):

- stage 1: only the MoE blocks (router, routed + shared experts, shared gate, path mix) and the
  projector learn; image tower and LM are frozen (a dense model trains its projector only).
- stage 2: LoRA (peft) on the LM's attention and dense-MLP projections, full gradients on the MoE
  blocks and the projector; the tower stays frozen unless ``stage2.train_visual``. The adapters
  are merged into the LM before saving, so the model directory loads as a plain `SonoVLM`.
  ``lora.enabled: auto`` (default) applies LoRA to a pretrained LM (``lm_pretrained``) and
  fine-tunes a from-scratch LM fully: low-rank updates of random weights cannot learn the reports
  (measured on the tiny benchmark set: train clinical F1 0.79 with LoRA r=16 + trainable
  embeddings vs 1.00 fully fine-tuned, same 400 steps). ``lora.enabled: true`` forces LoRA; a
  from-scratch LM then also trains its token embeddings (``lora.train_embeddings: auto``).

Both stages use AdamW with a cosine schedule and a linear warmup over ``warmup_ratio`` (5 %) of
the stage's steps.

Run layout (``out``): ``config.yaml``, ``conversations/{train,val}.json``, ``tokenizer/``,
``stage1/`` and ``stage2/`` (each: ``metrics.jsonl``, ``checkpoints/``, ``routing.jsonl`` = expert
load per region per logged step, ``routing.json`` = the stage's totals per layer, ``model/``),
and ``model/`` (the final VLM model directory, loadable by `sonofm.load_model`).
Resume (``resume="latest"``): finished stages (their ``model/`` exists) are loaded, not re-run;
an interrupted stage continues from its latest checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn
from torch.utils.data import DataLoader

from sonofm.config import DataConfig, TrainerConfig, load_preset
from sonofm.errors import DataError, UserError
from sonofm.models import load_model, save_model, vlm_context
from sonofm.models.model_dir import ModelDir
from sonofm.models.text_towers import load_tokenizer
from sonofm.models.vlm import VLMConfig, build_tokenizer, build_vlm, dense_equivalent_config
from sonofm.models.vlm_findings import FindingsVocab
from sonofm.models.vlm_prompt import safe_no_repeat_ngram
from sonofm.train.checkpoint import LATEST
from sonofm.train.distributed import barrier, init_distributed
from sonofm.train.rundir import open_run
from sonofm.train.trainer import FitResult, Trainer, to_device
from sonofm.vlm.conversations import (
    IMAGE_TOKEN,
    TASKS,
    conversations_from_dataset,
    read_sharegpt,
    write_sharegpt,
)
from sonofm.vlm.data import Collator, ConversationDataset, GroupCollator, LengthGroupedBatches

log = logging.getLogger(__name__)

# Llama/Qwen names, then BERT's (a MiniLM decoder): the ones an LM lacks are skipped.
LORA_TARGETS = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "query",
    "key",
    "value",
)


class VLMDataConfig(DataConfig):
    path: str | None = Field(None, description="dataset directory (or manifest) to build conversations from")
    sharegpt: str | None = Field(None, description="train on this ShareGPT JSON instead (EchoVLM format)")
    images: str | None = Field(None, description="folder the ShareGPT image paths are relative to")
    tasks: list[str] = Field(default_factory=lambda: list(TASKS))
    questions_per_image: int = Field(2, ge=1)
    max_images: int = Field(4, ge=2)
    report_questions: int = Field(1, ge=1, description="report records per image, each worded differently")
    val_max: int = Field(128, ge=1, description="validation conversations scored each epoch (lm loss)")
    group_by_length: bool = Field(
        True,
        description="batches of similar-length conversations (far less padding; see LengthGroupedBatches)",
    )
    seed: int = 0


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(3, ge=1)
    max_steps: int | None = Field(None, ge=1)
    lr: float = Field(1e-3, gt=0)
    train_visual: bool = False  # stage 2 only: fine-tune the image tower too


class LoRASettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # auto: LoRA on a pretrained LM (lm_pretrained); a from-scratch LM has no weights worth keeping
    # frozen, so stage 2 fine-tunes it fully (LoRA on random weights cannot learn the reports).
    enabled: bool | Literal["auto"] = "auto"
    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(LORA_TARGETS))
    train_embeddings: bool | Literal["auto"] = "auto"  # auto: yes for a from-scratch LM


class VLMTrainConfig(BaseModel):
    """``sonofm train-vlm``: the model (a VLM preset name or VLMConfig dict), data and both stages.

    ``train`` holds the shared trainer settings (batch size, precision, device, workers, ...);
    each stage sets its own epochs / max_steps / lr on top.
    """

    model_config = ConfigDict(extra="forbid")

    model: str | dict[str, Any] = "tiny"
    image_from: str | None = None
    moe: bool = True  # False: the dense baseline at equal active parameters
    stage: Literal["1", "2", "both"] = "both"
    init_from: str | None = Field(None, description="start from this VLM model dir (e.g. RUN/stage1/model)")
    data: VLMDataConfig = Field(default_factory=VLMDataConfig)
    train: TrainerConfig = Field(
        default_factory=lambda: TrainerConfig(batch_size=16, warmup_steps=0, accum_feature_cache=False)
    )
    stage1: StageConfig = Field(default_factory=lambda: StageConfig(epochs=3, lr=1e-3))
    stage2: StageConfig = Field(default_factory=lambda: StageConfig(epochs=3, lr=2e-4))
    lora: LoRASettings = Field(default_factory=LoRASettings)
    warmup_ratio: float = Field(0.05, ge=0, le=1)


@dataclass
class VLMTrainResult:
    """Where a VLM run put its outputs."""

    run_dir: Path
    model_dir: Path
    stages: dict[str, FitResult] = field(default_factory=dict)
    model: nn.Module | None = None  # the final model (adapters merged), on the training device


# ------------------------------------------------------------------ model config
def resolve_model_config(config: VLMTrainConfig) -> Any:
    """The `VLMConfig` a run builds: preset/dict, ``image_from``, and ``moe=False`` -> dense twin."""
    spec = config.model
    data = load_preset("vlm", spec) if isinstance(spec, str) else dict(spec)
    if config.image_from is not None:
        data["image_from"] = config.image_from
    try:
        cfg = VLMConfig.model_validate(data)
    except ValidationError as err:
        raise UserError(
            f"invalid VLM model config ({spec if isinstance(spec, str) else 'dict'}): {err}"
        ) from err
    if not config.moe:
        cfg = dense_equivalent_config(cfg)
    return cfg


# ------------------------------------------------------------------ data
def _conversations(config: VLMTrainConfig, split: str) -> tuple[list[dict[str, Any]], Path]:
    d = config.data
    if d.sharegpt is not None:
        path = Path(d.sharegpt)
        root = Path(d.images) if d.images else path.parent
        if split != d.train_split:
            return [], root
        return read_sharegpt(path), root
    if d.path is None:
        raise UserError("no training data: pass --data DIR (a dataset directory) or data.sharegpt=FILE")
    data_path = Path(d.path)
    if not data_path.exists():
        raise UserError(f"--data {data_path}: no such dataset directory or manifest")
    root = data_path if data_path.is_dir() else data_path.parent
    recs = conversations_from_dataset(
        data_path,
        split,
        seed=d.seed,
        tasks=d.tasks,
        questions_per_image=d.questions_per_image,
        max_images=d.max_images,
        report_questions=d.report_questions,
    )
    return recs, root


def tokenizer_texts(records: list[dict[str, Any]]) -> list[str]:
    """Every turn's text with ``<image>`` placeholders removed (the tokenizer's training corpus)."""
    return [t["value"].replace(IMAGE_TOKEN, "") for r in records for t in r["conversations"]]


def _tokenizer(model_cfg: Any, records: list[dict[str, Any]], run_dir: Path, main: bool) -> Any:
    """The run's tokenizer: reloaded from ``run_dir/tokenizer`` when present (resume); else rank 0
    builds and saves it and the other ranks load that copy (identical vocabularies everywhere)."""
    tok_dir = run_dir / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file() and main:
        texts = tokenizer_texts(records)
        if model_cfg.findings is not None:  # a predicted findings prompt may name any label
            texts += FindingsVocab.from_config(model_cfg.findings).all_phrases()
        if model_cfg.context is not None:  # so may a caller's measurements
            texts += vlm_context.all_phrases()
        build_tokenizer(model_cfg, texts).save_pretrained(str(tok_dir))
    barrier()
    return load_tokenizer(str(tok_dir))


# ------------------------------------------------------------------ steps and freezing
class VLMStep:
    """Trainer step: the LM loss, plus ``aux_weight`` x the load-balancing loss when that is on,
    plus ``findings_weight`` x the findings head's loss when the model has one.

    The unweighted balance loss is always returned as ``moe_aux_loss`` (logged, not trained on,
    when the switch is off, as in the EchoVLM release).
    """

    def __init__(self, aux_weight: float | None = None, findings_weight: float | None = None) -> None:
        self.aux_weight = aux_weight
        self.findings_weight = findings_weight

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        out = model(
            batch["pixel_values"],
            batch["input_ids"],
            batch["attention_mask"],
            batch["labels"],
            regions=batch["regions"],
            findings_targets=batch.get("findings_targets"),
            findings_known=batch.get("findings_known"),
        )
        res = {"lm_loss": out["lm_loss"]}
        if out.get("aux_loss") is not None:
            res["moe_aux_loss"] = out["aux_loss"]
        if out.get("findings_loss") is not None:
            res["findings_loss"] = out["findings_loss"]
        return res

    def loss(self, outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        terms = {"lm_loss": outputs["lm_loss"]}
        if self.aux_weight and outputs.get("moe_aux_loss") is not None:
            terms["aux_loss"] = self.aux_weight * outputs["moe_aux_loss"]
        if self.findings_weight and outputs.get("findings_loss") is not None:
            terms["findings_loss"] = self.findings_weight * outputs["findings_loss"]
        return terms


def _findings_weight(model: nn.Module) -> float | None:
    findings = getattr(model.config, "findings", None)
    return float(findings.weight) if findings is not None else None


def _aux_weight(model: nn.Module) -> float | None:
    moe = getattr(model.config, "moe", None)
    return float(moe.aux_weight) if moe is not None and moe.aux_loss else None


def freeze_for_stage1(model: nn.Module) -> list[str]:
    """Stage 1: only MoE parameters, the projector and the LM's freshly initialised parts train.

    Fresh parts are what a pretrained checkpoint lacked (a BERT encoder has no next-token head
    transform); left frozen at random they would scramble every prediction of stage 1.
    """
    model.requires_grad_(False)
    for p in model.moe_parameters():
        p.requires_grad_(True)
    model.projector.requires_grad_(True)
    if model.findings is not None:  # the findings head starts untrained in stage 1
        model.findings.requires_grad_(True)
    for p in model.fresh_lm_parameters():
        p.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _lm_is_scratch(model: nn.Module) -> bool:
    return getattr(model.config, "lm_pretrained", None) is None


def apply_stage2(model: nn.Module, lora: LoRASettings, *, train_visual: bool = False) -> list[str]:
    """Stage 2: LoRA (peft) on the LM + full MoE + projector; returns the trainable names."""
    model.requires_grad_(False)
    use_lora = not _lm_is_scratch(model) if lora.enabled == "auto" else bool(lora.enabled)
    if use_lora:
        from peft import LoraConfig, get_peft_model  # lazy: peft takes ~3 s to import; only stage 2 uses it

        names = {n.rsplit(".", 1)[-1] for n, m in model.lm.named_modules() if isinstance(m, nn.Linear)}
        targets = [t for t in lora.target_modules if t in names]
        if not targets:
            raise UserError(
                f"lora.target_modules {lora.target_modules} match no linear layer of the LM "
                f"(its linear layers: {sorted(names)})"
            )
        peft_cfg = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, bias="none"
        )
        with warnings.catch_warnings():  # peft 0.21 reads transformers' deprecated alias (FutureWarning)
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            model.lm = get_peft_model(model.lm, peft_cfg)
        for n, p in model.lm.named_parameters():
            if "lora_" in n:
                p.requires_grad_(True)
        train_emb = _lm_is_scratch(model) if lora.train_embeddings == "auto" else bool(lora.train_embeddings)
        if train_emb:
            model.lm.get_input_embeddings().requires_grad_(True)
            model.lm.get_output_embeddings().requires_grad_(True)
    else:
        model.lm.requires_grad_(True)
    for p in model.moe_parameters():
        p.requires_grad_(True)
    model.projector.requires_grad_(True)
    if model.findings is not None:
        model.findings.requires_grad_(True)
    for p in model.fresh_lm_parameters():
        p.requires_grad_(True)
    if train_visual:
        model.visual.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


# ------------------------------------------------------------------ routing log
class RoutingLog:
    """Trainer callback: expert load per region over each logging window -> ``routing.jsonl``."""

    def __init__(self, model: nn.Module, path: Path, enabled: bool) -> None:
        self.model, self.path, self.enabled = model, path, enabled
        self.total: dict[str, list[int]] = {}

    def __call__(self, trainer: Trainer, record: dict[str, Any]) -> None:
        stats = self.model.routing_stats()
        self.model.reset_routing_stats()
        if not stats.get("total") or not self.enabled:
            return
        window = {r: v["fraction"] for r, v in stats["total"].items()}
        for r, v in stats["total"].items():
            old = self.total.get(r, [0] * len(v["counts"]))
            self.total[r] = [a + b for a, b in zip(old, v["counts"], strict=True)]
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": record["step"], "fraction": window}) + "\n")
        log.info(
            "routing step %d: %s",
            record["step"],
            "; ".join(f"{r} {[round(x, 2) for x in fr]}" for r, fr in window.items()),
        )


@contextlib.contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _val_fn(model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
    """Mean validation LM loss (token-weighted) with routing statistics paused."""
    blocks = getattr(model, "moe_blocks", [])
    was = [b.collect_stats for b in blocks]
    for b in blocks:
        b.collect_stats = False
    total, tokens, f_total, f_batches = 0.0, 0, 0.0, 0
    try:
        for batch in loader:
            if "input_ids" not in batch:
                continue
            batch = to_device(batch, device)
            out = model(
                batch["pixel_values"],
                batch["input_ids"],
                batch["attention_mask"],
                batch["labels"],
                findings_targets=batch.get("findings_targets"),
                findings_known=batch.get("findings_known"),
            )
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(out["lm_loss"]) * n
            tokens += n
            if out.get("findings_loss") is not None:
                f_total += float(out["findings_loss"])
                f_batches += 1
    finally:
        for b, w in zip(blocks, was, strict=True):
            b.collect_stats = w
    res = {"val/lm_loss": total / tokens if tokens else float("nan")}
    if f_batches:
        res["val/findings_loss"] = f_total / f_batches
    return res


# ------------------------------------------------------------------ one stage
def _run_stage(
    name: str,
    model: nn.Module,
    stage: StageConfig,
    config: VLMTrainConfig,
    stage_dir: Path,
    train_ds: Any,
    collate: Any,
    val_loader: Any,
    info: Any,
    resume: str | None,
) -> FitResult:
    base = config.train.model_copy(
        update={
            "epochs": stage.epochs,
            "max_steps": stage.max_steps,
            "lr": stage.lr,
            "accum_feature_cache": False,  # an LM loss is a per-token mean: plain accumulation is exact
            # length-grouped data: one item is a whole batch of train.batch_size conversations
            **({"batch_size": 1} if config.data.group_by_length else {}),
            "warmup_steps": 0,
            # experts that received no token in a batch have no gradient: DDP must allow that
            "find_unused_parameters": True,
        }
    )
    evaluate = None
    if val_loader is not None and base.val_every:

        def evaluate(m: nn.Module, epoch: int) -> dict[str, float]:
            return _val_fn(m, val_loader, info.device)

    routing = RoutingLog(model, stage_dir / "routing.jsonl", info.is_main)

    def make(cfg: TrainerConfig) -> Trainer:
        return Trainer(
            model,
            VLMStep(_aux_weight(model), _findings_weight(model)),
            cfg,
            stage_dir,
            train_ds,
            collate_fn=collate,
            evaluate=evaluate,
            dist_info=info,
            extra_state={"config": config.model_dump(mode="json"), "stage": name},
            on_step=[routing],
        )

    trainer = make(base)
    warmup = math.ceil(config.warmup_ratio * trainer.total_steps)
    if warmup:
        trainer = make(base.model_copy(update={"warmup_steps": warmup}))
    has_ckpt = (stage_dir / "checkpoints" / LATEST).is_file()
    model.reset_routing_stats()
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(
        "stage %s: %d trainable parameters, %d steps (warmup %d)", name, n_train, trainer.total_steps, warmup
    )
    fit = trainer.fit(resume="latest" if resume and has_ckpt else None)
    # max_steps usually ends a stage mid-epoch: report the fraction of epochs actually run, and
    # score the validation set once at the end when no epoch boundary did it.
    fit.data["epochs_done"] = round(fit.step / max(1, trainer.steps_per_epoch), 3)
    if not fit.last_val and val_loader is not None:
        with torch.no_grad(), _eval(model):
            fit.last_val = _val_fn(model, val_loader, info.device)
        log.info("stage %s: val lm_loss %.4f", name, fit.last_val["val/lm_loss"])
    if info.is_main:
        total = {
            r: {"counts": c, "fraction": [x / max(1, sum(c)) for x in c]} for r, c in routing.total.items()
        }
        stats = model.routing_stats()
        stats["total"] = total or stats.get("total", {})
        (stage_dir / "routing.json").write_text(json.dumps(stats, indent=1))
    return fit


def _save(model: nn.Module, path: Path, training: dict[str, Any]) -> None:
    save_model(model, path, training=training)


def _load_vlm(path: Path) -> nn.Module:
    model = load_model(str(path))
    if getattr(model, "model_type", None) != "sono_vlm":
        raise UserError(
            f"{path}: not a VLM model directory (model_type {getattr(model, 'model_type', None)!r})"
        )
    return model


# ------------------------------------------------------------------ the job
def train_vlm(
    config: VLMTrainConfig, out: str | Path, *, resume: str | None = None, overwrite: bool = False
) -> VLMTrainResult:
    """Run the configured stages; write the run into ``out`` (see the module docstring)."""
    out = Path(out)
    info = init_distributed(config.train.device)
    run = open_run(
        out, job="train-vlm", config=config, resume=resume, overwrite=overwrite, needs_checkpoint=False
    )
    resume = run.resume  # the same config re-run skips finished stages and resumes the rest
    model_cfg = resolve_model_config(config)
    train_recs, root = _conversations(config, config.data.train_split)
    if not train_recs:
        raise DataError(f"{config.data.path or config.data.sharegpt}: no training conversations")
    val_recs: list[dict[str, Any]] = []
    if config.data.val_split:
        try:
            val_recs = _conversations(config, config.data.val_split)[0][: config.data.val_max]
        except DataError as err:
            log.warning("no validation: %s", err)
    run.start(config, info.is_main)
    if info.is_main:
        write_sharegpt(train_recs, out / "conversations" / "train.json")
        if val_recs:
            write_sharegpt(val_recs, out / "conversations" / "val.json")

    torch.manual_seed(config.train.seed)  # same initial weights on every rank
    if config.init_from is not None:
        model = _load_vlm(Path(config.init_from))
        tokenizer = model.tokenizer
    else:
        tokenizer = _tokenizer(model_cfg, train_recs, out, info.is_main)
        model = build_vlm(model_cfg, tokenizer)
        answers = [t["value"] for r in train_recs for t in r["conversations"][1::2]]
        model.config.no_repeat_ngram = safe_no_repeat_ngram(tokenizer, answers)
        log.info(
            "decoding: no n-gram of %d tokens repeats in any training answer", model.config.no_repeat_ngram
        )
    mc = model.config
    common = {
        "num_image_tokens": mc.num_image_tokens,
        "image_size": mc.image.image_size,
        "max_length": mc.max_length,
        "findings": model.findings.vocab if model.findings is not None else None,
        "context": mc.context,
    }
    train_ds = ConversationDataset(train_recs, root, tokenizer, **common)
    collate = Collator(tokenizer.pad_token_id, "right")
    val_collate = collate
    if config.data.group_by_length:
        train_ds = LengthGroupedBatches(train_ds, config.train.batch_size, seed=config.data.seed)
        collate = GroupCollator(collate)
    val_loader = None
    if val_recs:
        val_ds = ConversationDataset(val_recs, root, tokenizer, **common)
        val_loader = DataLoader(
            val_ds, batch_size=config.train.batch_size, shuffle=False, collate_fn=val_collate
        )

    stages = ["1", "2"] if config.stage == "both" else [config.stage]
    result = VLMTrainResult(run_dir=out, model_dir=out / "model")
    for name in stages:
        stage_dir = out / f"stage{name}"
        done = ModelDir(stage_dir / "model").config_file
        if resume and done.is_file():
            log.info("stage %s already finished: loading %s", name, done.parent)
            model = _load_vlm(done.parent)
            continue
        stage = config.stage1 if name == "1" else config.stage2
        if name == "1":
            freeze_for_stage1(model)
        else:
            apply_stage2(model, config.lora, train_visual=stage.train_visual)
        fit = _run_stage(name, model, stage, config, stage_dir, train_ds, collate, val_loader, info, resume)
        result.stages[name] = fit
        if name == "2" and hasattr(model.lm, "merge_and_unload"):
            model.merge_adapters()
        model.requires_grad_(False)
        training = {
            "job": "train-vlm",
            "stage": name,
            "config": config.model_dump(mode="json"),
            "steps": fit.step,
            "epochs": fit.data.get("epochs_done", fit.epoch),
            "val": fit.last_val,
            "parameters": model.parameter_counts(),
        }
        if info.is_main:
            _save(model, stage_dir / "model", training)
        barrier()
    if info.is_main:
        training = {
            "job": "train-vlm",
            "stages": stages,
            "config": config.model_dump(mode="json"),
            "fit": {
                k: {"steps": f.step, "epochs": f.data.get("epochs_done", f.epoch), "val": f.last_val}
                for k, f in result.stages.items()
            },
            "parameters": model.parameter_counts(),
        }
        _save(model, result.model_dir, training)
    barrier()
    result.model = model
    return result
