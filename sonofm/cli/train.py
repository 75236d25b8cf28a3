"""Training verbs: pretrain (contrastive), ssl (masked modelling), finetune (adapters), train-vlm."""

from __future__ import annotations

from pathlib import Path

import typer

from sonofm.cli.common import (
    BatchSize,
    Epochs,
    LearningRate,
    Overwrite,
    Precision,
    ResumeFrom,
    TrainData,
    console,
    given,
    launch,
    print_outputs,
    saved_config,
)
from sonofm.errors import UserError


def _epochs_done(fit: object) -> str:
    """Epochs as steps over steps per epoch: a run cut by train.max_steps says "0.03", not "0"."""
    per_epoch = (getattr(fit, "data", None) or {}).get("steps_per_epoch")
    if not per_epoch:
        return str(getattr(fit, "epoch", 0))
    done = fit.step / per_epoch  # type: ignore[attr-defined]
    return f"{done:.0f}" if abs(done - round(done)) < 1e-9 else f"{done:.2f}"


def pretrain_cmd(
    out: str = typer.Option(..., "--out", help="Run directory: model/, checkpoints/, metrics.jsonl."),
    data: TrainData = None,
    preset: str = typer.Option("tiny", "--preset", help="Preset: tiny, small, base or a YAML file."),
    loss: str | None = typer.Option(
        None,
        "--loss",
        help="clip, siglip, usclip (soft CLIP + semantic + graph), echo (CLIP + view + negation) "
        "or weighted terms, e.g. clip+semantic:0.5+view:1; terms: clip, siglip, soft_clip, semantic, "
        "view, negation, supervised, label_text (images vs the texts of their organ/view/tags).",
    ),
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    precision: Precision = None,
    resume: ResumeFrom = None,
    overwrite: Overwrite = False,
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides (train.lr=1e-4)."),
) -> None:
    """Contrastive image-text pretraining (CLIP or SigLIP) of a dual encoder.

    Examples:

      sonofm pretrain --data data/sim --out runs/clip --preset tiny

      sonofm pretrain --data data/sim --out runs/siglip --loss siglip --precision bf16 train.accum_steps=4

      sonofm pretrain --out runs/clip --resume latest

      torchrun --nproc_per_node 2 -m sonofm.cli pretrain --data data/sim --out runs/ddp
    """
    from sonofm.config import PretrainConfig  # lazy: pydantic + yaml would slow `sonofm --help`
    from sonofm.pretrain import pretrain as run_pretrain  # lazy: keeps torch out of `sonofm --help`

    values = {
        "data": given(path=data),
        "train": given(epochs=epochs, batch_size=batch_size, lr=lr, precision=precision),
        "loss": given(name=loss),
    }
    result = launch(run_pretrain, PretrainConfig, "train", values, out, preset, overrides, resume, overwrite)
    if result is None:
        return
    fit = result.fit
    console.print(
        f"[green]pretrained[/] {fit.step} steps, {_epochs_done(fit)} epochs"
        + (" (early stop)" if fit.stopped_early else "")
        + (f", {fit.skipped_samples} undecodable images skipped" if fit.skipped_samples else "")
    )
    for key in ("val/i2t_r1", "val/t2i_r1", "val/r_mean"):
        if key in fit.last_val:
            console.print(f"  {key} = {fit.last_val[key]:.3f}")
    print_outputs(model=result.model_dir, metrics=result.metrics, config=saved_config(out))


def ssl_cmd(
    out: str = typer.Option(..., "--out", help="Run directory: model/, checkpoints/, metrics.jsonl."),
    data: TrainData = None,
    preset: str = typer.Option("tiny", "--preset", help="SSL preset: tiny, small or a YAML file."),
    model: str | None = typer.Option(
        None, "--model", help="Tower to pretrain: a model preset, config file or sonofm model dir."
    ),
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    precision: Precision = None,
    resume: ResumeFrom = None,
    overwrite: Overwrite = False,
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides (mask_ratio=0.75)."),
) -> None:
    """Self-supervised image pretraining: masked image modelling + region/organ/view classifier.

    Writes RUN/model: its image tower initialises other jobs through image.pretrained=RUN/model
    (and loads with sonofm.models.load_image_tower).

    Examples:

      sonofm ssl --data data/sim --out runs/ssl --preset tiny

      sonofm ssl --data data/sim --out runs/ssl-swin --model swin-echocare --precision bf16 mask_ratio=0.75

      sonofm ssl --data data/sim --out runs/ssl2 --model runs/clip/model weights.view=1.0

      sonofm ssl --out runs/ssl --resume latest
    """
    from sonofm.ssl import SSLConfig, ssl_pretrain  # lazy: keeps torch out of `sonofm --help`

    values = {
        "data": given(path=data),
        "train": given(epochs=epochs, batch_size=batch_size, precision=precision),
        **given(model=model),
    }
    result = launch(ssl_pretrain, SSLConfig, "ssl", values, out, preset, overrides, resume, overwrite)
    if result is None:
        return
    fit = result.fit
    stop = " (early stop)" if fit.stopped_early else ""
    console.print(f"[green]ssl[/] {fit.step} steps, {_epochs_done(fit)} epochs{stop}")
    for key, value in fit.last_val.items():
        console.print(f"  {key} = {value:.3f}")
    print_outputs(model=result.model_dir, metrics=result.metrics, config=saved_config(out))


def finetune_cmd(
    out: str = typer.Option(..., "--out", help="Run dir: seed-<s>/model, results.json, report.html."),
    data: TrainData = None,
    model: str | None = typer.Option(
        None, "--model", help="Model preset (tiny, small, ...) or a sonofm model dir (SSL/CLIP run's model/)."
    ),
    task: str | None = typer.Option(
        None, "--task", help="segment, classify, landmarks, ef, detect or enhance."
    ),
    adapter: str | None = typer.Option(None, "--adapter", help="ht (hybrid tuning), lora, linear or full."),
    fraction: float | None = typer.Option(None, "--fraction", help="Share of training PATIENTS labelled."),
    seeds: str | None = typer.Option(None, "--seeds", help="Comma-separated seeds, e.g. 1,2,3."),
    preset: str = typer.Option("tiny", "--preset", help="Fine-tuning preset: tiny, base or a YAML file."),
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    precision: Precision = None,
    resume: bool = typer.Option(False, "--resume", help="Keep finished seeds, resume an interrupted one."),
    overwrite: Overwrite = False,
    overrides: list[str] | None = typer.Argument(
        None, help="key=value overrides (task_options.target=view, task_options.labels=[3,4,5])."
    ),
) -> None:
    """Fine-tune an image tower on a downstream task with an adapter; mean +- std over seeds.

    Examples:

      sonofm finetune --model tiny --data data/sim --task segment --adapter ht --out runs/seg

      sonofm finetune --model runs/ssl/model --data data/sim --task classify --adapter lora
      --fraction 0.1 --seeds 1,2,3 --out runs/view task_options.target=view

      sonofm finetune --model tiny --data data/sim --task segment --adapter full --out runs/lv
      task_options.labels=[3,4,5]

      sonofm eval --model runs/seg/seed-1/model --data data/sim --suite finetune --out runs/seg/eval
    """
    from sonofm.finetune.job import FinetuneConfig  # lazy: keeps torch out of `sonofm --help`
    from sonofm.finetune.job import finetune as run_finetune  # lazy: keeps torch out of `sonofm --help`

    values = {
        "data": given(path=data, fraction=fraction),
        "train": given(epochs=epochs, batch_size=batch_size, lr=lr, precision=precision),
        **given(model=model, task=task, adapter=adapter),
    }
    if seeds is not None:
        try:
            values["seeds"] = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError as e:
            raise UserError(f"--seeds must be comma-separated integers, got {seeds!r}") from e
    result = launch(
        run_finetune, FinetuneConfig, "finetune", values, out, preset, overrides, resume, overwrite
    )
    if result is None:
        return
    from sonofm.finetune.job import format_ci  # lazy: keeps torch out of `sonofm --help`

    s = result.summary
    console.print(f"[green]finetune[/] {s['task']} / {s['adapter']}, seeds {s['seeds']}")
    for name, v in s["test"].items():
        if v["mean"] is not None and name != "n_images":
            console.print(f"  test {name} = {format_ci(v)}")  # seeds pooled, CI over test patients
    if s.get("missing_classes"):
        console.print(f"  [yellow]no test rows of[/] {', '.join(s['missing_classes'])} (not measured)")
    print_outputs(models=f"{Path(out)}/seed-<s>/model", results=result.results, report=result.report)


def train_vlm_cmd(
    out: str = typer.Option(..., "--out", help="Run directory: model/, stage1/, stage2/, conversations/."),
    data: str | None = typer.Option(None, "--data", help="Dataset dir or manifest to build chats from."),
    sharegpt: str | None = typer.Option(None, "--sharegpt", help="Train on an EchoVLM ShareGPT JSON."),
    image_from: str | None = typer.Option(
        None, "--image-from", help="Model dir whose image tower (.visual) the VLM starts from."
    ),
    moe: bool | None = typer.Option(
        None, "--moe/--dense", help="Dual-path MoE LM, or the dense twin at equal active parameters."
    ),
    stage: str | None = typer.Option(None, "--stage", help="1 (MoE + projector), 2 (LoRA + MoE) or both."),
    preset: str = typer.Option("train-tiny", "--preset", help="VLM training preset or a YAML file."),
    resume: str | None = typer.Option(None, "--resume", help="'latest': skip finished stages, go on."),
    overwrite: Overwrite = False,
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides (stage2.lr=1e-4)."),
) -> None:
    """Train the generative VLM (image tower -> projector -> MoE LM) in EchoVLM's two stages.

    Examples:

      sonofm train-vlm --data data/sim --out runs/vlm

      sonofm train-vlm --data data/sim --out runs/vlm-dense --dense --image-from runs/clip/model

      sonofm train-vlm --data data/sim --out runs/vlm2 --stage 2 init_from=runs/vlm/stage1/model

      sonofm train-vlm --out runs/vlm --resume latest
    """
    from sonofm.vlm.train import VLMTrainConfig  # lazy: keeps torch out of `sonofm --help`
    from sonofm.vlm.train import train_vlm as run_train_vlm  # lazy: keeps torch out of `sonofm --help`

    values = {"data": given(path=data, sharegpt=sharegpt), **given(image_from=image_from, moe=moe)}
    if stage is not None:
        if stage not in ("1", "2", "both"):
            raise UserError(f"--stage {stage!r}: expected 1, 2 or both")
        values["stage"] = stage
    result = launch(run_train_vlm, VLMTrainConfig, "vlm", values, out, preset, overrides, resume, overwrite)
    if result is None:
        return
    for name, fit in result.stages.items():
        val = fit.last_val.get("val/lm_loss")
        console.print(
            f"[green]stage {name}[/] {fit.step} steps, {fit.data.get('epochs_done', fit.epoch):g} epochs"
            + (f", val lm_loss {val:.3f}" if val is not None else "")
        )
    print_outputs(model=result.model_dir, routing=f"{out}/stage*/routing.json", config=saved_config(out))
