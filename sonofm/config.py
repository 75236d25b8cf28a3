"""Job configurations: pydantic models, YAML presets and ``key=value`` overrides.

Architecture and training settings are data. A job's config is resolved in three layers:
the pydantic defaults, a YAML preset from ``sonofm/presets/<kind>/<name>.yaml`` (or any YAML
path), then command-line ``key=value`` overrides with dotted keys (``train.lr=1e-4``). The
resolved config is written beside every run (``config.yaml``) so the run can be repeated.

Other jobs (SSL, fine-tuning, VLM) add their own models here and reuse :class:`TrainerConfig`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from sonofm.atomic import atomic_write_text
from sonofm.errors import UserError
from sonofm.models.factory import load_spec

PRESET_ROOT = "presets"


class TrainerConfig(BaseModel):
    """Settings of the shared training loop (:class:`sonofm.train.Trainer`).

    ``batch_size`` is per process and per micro-batch; one optimizer step sees
    ``batch_size * accum_steps * world_size`` samples. With ``accum_feature_cache`` (contrastive
    jobs) the loss of one step is computed over all of them, as if it were one batch.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    batch_size: int = Field(64, ge=1)
    accum_steps: int = Field(1, ge=1)
    accum_feature_cache: bool = True
    lr: float = Field(5e-4, gt=0)
    # Parameter-name prefix -> learning-rate multiplier, e.g. {"text.": 0.05}: pretrained layers
    # that learn (a text tower's top layers) take a fraction of the rate that trains new ones from
    # scratch; the longest matching prefix wins, other parameters take 1.
    lr_scales: dict[str, float] = Field(default_factory=dict)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-6, gt=0)
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"  # auto: sonofm.inference.precision
    device: str = "auto"
    compile: bool = False
    grad_checkpointing: bool = False
    find_unused_parameters: bool = False
    seed: int = 0
    # an epoch that does not fill whole optimizer steps: repeat samples from its start ("pad",
    # every sample every epoch) or leave the rest out ("drop"); sonofm.train.sampler.plan_epoch
    tail: Literal["pad", "drop"] = "pad"
    # DataLoader worker processes, or "auto": none on a CPU whose cores the training threads already
    # use, a few per GPU process otherwise (sonofm.data.loader.loader_workers says why)
    workers: Annotated[int, Field(ge=0)] | Literal["auto"] = 0
    # how DataLoader workers start (default: the platform's; forkserver keeps workers from
    # inheriting the trainer's heap): sonofm.data.loader.worker_context
    worker_start: Literal["default", "fork", "forkserver", "spawn"] = "default"
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(0, ge=0, description="optimizer steps between checkpoints; 0 = per epoch")
    val_every: int = Field(1, ge=0, description="epochs between validations; 0 = never")
    early_stop_metric: str | None = None
    early_stop_mode: Literal["max", "min"] = "max"
    patience: int = Field(0, ge=0, description="validations without improvement before stopping; 0 = off")
    early_stop_target: float | None = Field(None, description="stop once early_stop_metric reaches this")
    progress: bool = True
    tensorboard: bool = False


class LossConfig(BaseModel):
    """``name``: ``clip``, ``siglip``, a preset (``usclip``, ``echo``) or a weighted combination
    such as ``clip+semantic:0.5+view:1`` (see :mod:`sonofm.losses.compose`; the fields below the
    first three only matter for those objectives).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "clip"
    gather_with_grad: bool = True
    local_loss: bool = False
    semantic_lambda: float = Field(1.0, ge=0, description="weight of L_SM in the usclip preset")
    semantic_tau: float = Field(0.07, gt=0, description="temperature of L_SM's KL term")
    soft_eps: float = Field(0.3, ge=0, le=1, description="soft-label CLIP: weight of softmax(S/tau_s)")
    soft_tau: float = Field(0.07, gt=0, description="soft-label CLIP: temperature tau_s")
    negatives: int = Field(3, ge=0, description="hard negative captions per sample (negation)")
    similarity_cache: str | None = Field(None, description="tag-similarity cache dir (default ~/.cache)")
    similarity_rescale: Literal["minmax", "affine"] = "minmax"  # cosine -> [0, 1] for M_k
    graph: dict[str, Any] = Field(default_factory=dict, description="AttributeGraphConfig overrides")
    supervised_targets: list[str] = Field(
        default_factory=lambda: ["region", "view", "attributes"],
        description="manifest labels the 'supervised' term's heads learn (attributes = lesion descriptors)",
    )
    label_text_groups: list[str] | None = Field(
        None,
        min_length=1,
        description="label groups the 'label_text' term contrasts each image against (organ, view, "
        "a lesion descriptor dimension); default: all of them",
    )

    @model_validator(mode="after")
    def _check(self) -> LossConfig:
        if self.local_loss and not self.gather_with_grad:
            raise ValueError("loss.local_loss=true needs loss.gather_with_grad=true")
        if self.name.strip().lower() not in ("clip", "siglip"):
            from sonofm.losses.compose import parse_loss_spec  # lazy: keeps torch out of config

            spec = parse_loss_spec(self.name, semantic_lambda=self.semantic_lambda)  # names the bad term
            if spec.needs_label_text:
                from sonofm.losses.label_text import GROUPS  # lazy: keeps torch out of config

                bad = [g for g in self.label_text_groups or () if g not in GROUPS]
                if bad:
                    raise ValueError(f"loss.label_text_groups {bad}: expected some of {list(GROUPS)}")
        return self


class DataConfig(BaseModel):
    """The ``data`` section every training job shares: which dataset, which splits.

    Jobs subclass it (``PretrainDataConfig``, ``SSLDataConfig``, ``FinetuneDataConfig``,
    ``VLMDataConfig``) and add only what is theirs, so the same setting has the same name in
    every job.
    """

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="dataset directory (or manifest file)")
    train_split: str = "train"
    val_split: str | None = "val"


class ImageDataConfig(DataConfig):
    """`DataConfig` for jobs that train an image model on the dataset's images."""

    augment: float = Field(0.0, ge=0, le=1, description="strength of the ultrasound augmentations")
    # no-gradient passes (validation, evaluation); fine-tuning presets once called it eval_batch_size
    val_batch_size: int = Field(128, ge=1, validation_alias=AliasChoices("val_batch_size", "eval_batch_size"))


class CachedImagesConfig(ImageDataConfig):
    """For jobs that read every image every epoch without masks (pretrain, ssl)."""

    # decoded images kept in shared memory across epochs up to this many MB (0: decode every
    # epoch); a larger set decodes every epoch (sonofm.data.image_cache)
    image_cache_mb: float = Field(1024, ge=0)


class PretrainDataConfig(CachedImagesConfig):
    text: str = "report"
    # with text=caption: the probability that a training image's caption names just one of its
    # findings (sonofm.reports.captions.CaptionSampler); validation and evaluation keep the full one
    caption_sampling: float = Field(0.0, ge=0, le=1)
    image_size: int | None = Field(None, ge=8, description="default: the model's own image size")
    # "data": measure the training images' mean/std (up to 512 images) and store them as the model's
    # preprocessing in config.json; "model": keep the preset's values
    normalize: Literal["model", "data"] = "model"
    # a manifest column (e.g. "region"): group_fraction of the optimizer-step batches hold one
    # value of it only, so their in-batch negatives differ in findings rather than in anatomy
    # (sonofm.train.sampler.ResumableBatchSampler)
    group_by: str | None = None
    group_fraction: float = Field(0.5, ge=0, le=1)


class PretrainConfig(BaseModel):
    """``sonofm pretrain``: a dual encoder trained with a contrastive loss."""

    model_config = ConfigDict(extra="forbid")

    model: str | dict[str, Any] = "tiny"
    loss: LossConfig = Field(default_factory=LossConfig)
    data: PretrainDataConfig = Field(default_factory=PretrainDataConfig)
    train: TrainerConfig = Field(default_factory=TrainerConfig)


def parse_value(text: str) -> Any:
    """A ``key=value`` value parsed as YAML (numbers, booleans, null, lists), else the string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides to a nested dict (returns a new dict)."""
    out = _deep_copy(config)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} is not of the form key=value (e.g. train.lr=1e-4)")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise UserError(f"override {item!r} has an empty key part")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = parse_value(value)
    return out


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = _deep_copy(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def preset_names(kind: str) -> list[str]:
    """Names of the packaged presets of one kind (e.g. ``"train"``)."""
    folder = resources.files("sonofm") / PRESET_ROOT / kind
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(kind: str, name_or_path: str) -> dict[str, Any]:
    """A preset as a dict: a packaged name (``tiny``) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text = path.read_text()
        source = str(path)
    else:
        res = resources.files("sonofm") / PRESET_ROOT / kind / f"{name_or_path}.yaml"
        if not res.is_file():
            raise UserError(
                f"unknown {kind} preset {name_or_path!r}; expected one of {preset_names(kind)} "
                "or a path to a .yaml file"
            )
        text = res.read_text()
        source = f"{kind} preset {name_or_path}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{source}: not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    return data


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def resolve_config(
    cls: type[ConfigT],
    *,
    preset: str | None = None,
    kind: str = "train",
    values: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> ConfigT:
    """Defaults <- preset <- ``values`` (from named CLI options) <- ``key=value`` overrides."""
    data: dict[str, Any] = load_preset(kind, preset) if preset else {}
    data = _deep_merge(data, values or {})
    overrides = list(overrides or [])
    whole = [o for o in overrides if o.split("=", 1)[0].strip() == "model"]
    if whole and any(o.split("=", 1)[0].strip().startswith("model.") for o in overrides):
        # `model=FILE model.image.x=1`: the named spec is the base the field overrides edit
        data = apply_overrides(data, whole[-1:])
        overrides = [o for o in overrides if o not in whole]
    data = _expand_model_spec(cls, data, overrides)
    data = apply_overrides(data, overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()
        )
        raise UserError(f"invalid {cls.__name__} ({preset or 'no preset'}): {problems}") from err


def _expand_model_spec(cls: type[BaseModel], data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Turn a named model (``model: tiny``) into its preset dict when ``model.*`` overrides edit it.

    Without this, ``model.image.pretrained=RUN/model`` would replace the preset by a bare dict
    instead of changing one field of it.
    """
    edits_model = any(o.split("=", 1)[0].strip().startswith("model.") for o in overrides)
    if "model" not in cls.model_fields or not edits_model:
        return data
    spec = data.get("model", cls.model_fields["model"].default)
    if not isinstance(spec, str):
        return data
    return {**data, "model": load_spec(spec)}


def dump_config(config: BaseModel, path: str | Path) -> None:
    """Write a resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
