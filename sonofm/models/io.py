"""Model directories: save and load (safetensors + config.json + tokenizer files + training.json).

Layout (a Hugging Face-style repo, so `hf-hub:owner/name` works where a network exists):

    config.json        {"model_type": "dual_encoder", "sonofm_version": ..., "config": {...},
                        "preprocess": {...}, "tokenizer": {"dir": ".", "source": ...}}
    model.safetensors  all weights (strictly checked on load)
    tokenizer.json, tokenizer_config.json, ...   (the tokenizer's own `save_pretrained`)
    training.json      the resolved job config and data card (when given)

`load_model` dispatches on `model_type` through a registry, so later model kinds (SSL towers,
task models, the generative VLM) plug into the same `sonofm.load_model`.
"""

from __future__ import annotations

import importlib
import logging
import operator
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import safetensors.torch
import torch
from pydantic import BaseModel, ValidationError
from safetensors import SafetensorError
from torch import nn

from sonofm._version import __version__
from sonofm.atomic import atomic_dir
from sonofm.errors import UserError
from sonofm.models.model_dir import (  # noqa: F401 (the file names are re-exported for loaders)
    CONFIG_NAME,
    TRAINING_NAME,
    WEIGHTS_NAME,
    ModelDir,
)

log = logging.getLogger(__name__)

HUB_PREFIX = "hf-hub:"
ConfigT = TypeVar("ConfigT", bound=BaseModel)
ModelT = TypeVar("ModelT", bound=nn.Module)

Loader = Callable[[Path, dict[str, Any]], nn.Module]
# model_type -> loader, or "module:function" (imported on first use, so registering costs nothing).
_LOADERS: dict[str, Loader | str] = {
    "dual_encoder": "sonofm.models.dual_encoder:load_dual_encoder",
    "attribute_graph_dual_encoder": "sonofm.models.attribute_graph:load_attribute_graph_dual_encoder",
    "ssl_image_model": "sonofm.models.ssl:load_ssl_model",
    "task_model": "sonofm.models.task_model:load_task_model",
    "sono_vlm": "sonofm.models.vlm:load_vlm",
}


def register_model_type(name: str, loader: Loader | str, *, overwrite: bool = False) -> None:
    """Make `load_model` handle directories whose config.json says `"model_type": name`.

    `loader(model_dir, config_json) -> nn.Module` must build the model and load its weights
    (use `load_weights` for the strict check). `loader` may be a "module:function" string.
    """
    if name in _LOADERS and not overwrite and _LOADERS[name] != loader:
        raise ValueError(f"model_type {name!r} is already registered")
    _LOADERS[name] = loader


def registered_model_types() -> list[str]:
    return sorted(_LOADERS)


def _get_loader(name: str) -> Loader:
    entry = _LOADERS[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        _LOADERS[name] = entry
    return entry


# ---------------------------------------------------------------- save


def _config_json(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "config", None)
    model_type = getattr(model, "model_type", None)
    if cfg is None or not model_type:
        raise TypeError(f"{type(model).__name__} needs `config` and `model_type` attributes to be saved")
    out: dict[str, Any] = {"model_type": model_type}
    out["sonofm_version"] = __version__
    out["config"] = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else dict(cfg)
    if hasattr(cfg, "preprocess"):
        out["preprocess"] = cfg.preprocess  # for readers that only need preprocessing (serve, eval)
    if getattr(model, "tokenizer", None) is not None:
        text = getattr(cfg, "text", None)
        out["tokenizer"] = {"dir": ".", "source": getattr(text, "tokenizer", None)}
    return out


def _state_dict_for_safetensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors; tensors sharing storage are cloned (safetensors refuses aliasing)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu").contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if t.numel() and key in seen:
            t = t.clone()
        seen.add(key)
        out[k] = t
    return out


def save_model(model: nn.Module, path: str | Path, *, training: dict[str, Any] | None = None) -> Path:
    """Write a model directory atomically (built in a temp dir beside `path`, then swapped in).

    An existing directory at `path` is replaced as a whole.
    """
    target = Path(path).expanduser().resolve()
    model = getattr(model, "module", model)  # unwrap DDP
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    umask = os.umask(0)
    os.umask(umask)
    with atomic_dir(target) as tmp:
        out = ModelDir(tmp)
        out.write_config(_config_json(model))
        state = _state_dict_for_safetensors(model)
        safetensors.torch.save_file(state, str(out.weights_file), metadata={"format": "pt"})
        # safetensors writes its file private (0600); a model dir is shared like any other file
        os.chmod(out.weights_file, 0o666 & ~umask)
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if training is not None:
            out.write_training(training)
    log.info("saved model to %s", target)
    return target


# ---------------------------------------------------------------- load


def _describe(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > n else ''})"


def check_state_dict(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str) -> None:
    """Raise UserError naming missing, unexpected and mis-shaped keys (first few + counts)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} (file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_describe(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_describe(mismatched)}")
    if problems:
        raise UserError(f"{source} does not match the model architecture: " + "; ".join(problems))


def read_safetensors(weights_file: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (CPU); unreadable or absent files raise UserError."""
    weights_file = Path(weights_file)
    if not weights_file.is_file():
        raise UserError(f"model weights not found: {weights_file}")
    try:
        return safetensors.torch.load_file(str(weights_file))
    except (SafetensorError, OSError) as e:
        raise UserError(f"cannot read model weights {weights_file}: {e}") from e


def load_weights(model: nn.Module, weights_file: str | Path) -> None:
    """Load safetensors weights strictly: missing, unexpected or mis-shaped keys raise UserError."""
    state = read_safetensors(weights_file)
    check_state_dict(model.state_dict(), state, f"{weights_file} (with its {CONFIG_NAME})")
    model.load_state_dict(state, strict=True)


def validated_config(
    config_cls: type[ConfigT], model_dir: str | Path, cfg_json: dict[str, Any], *required: str
) -> ConfigT:
    """The `config` section of a model directory's config.json as a `config_cls` (a loader's first step).

    `required`: fields, dotted for nested ones ("image.arch"), that a saved model must have set.
    Errors name the file: an invalid section, or the required fields when any of them is missing.
    """
    where = Path(model_dir) / CONFIG_NAME
    try:
        config = config_cls.model_validate(cfg_json.get("config", {}))
    except ValidationError as e:
        raise UserError(f"{where}: invalid 'config': {e}") from e
    if any(operator.attrgetter(name)(config) is None for name in required):
        raise UserError(f"{where}: {' / '.join(f'config.{name}' for name in required)} missing")
    return config


def with_weights(model: ModelT, model_dir: str | Path, device: str | torch.device | None = None) -> ModelT:
    """`model` with the directory's weights loaded strictly, moved to `device` (a loader's last step)."""
    load_weights(model, Path(model_dir) / WEIGHTS_NAME)
    return model.to(device) if device is not None else model


def resolve_model_dir(path_or_id: str | Path) -> Path:
    """A local model directory, or `hf-hub:owner/name[@revision]` downloaded with huggingface_hub."""
    s = str(path_or_id)
    if s.startswith(HUB_PREFIX):
        repo, _, revision = s[len(HUB_PREFIX) :].partition("@")
        if repo.count("/") != 1:
            raise UserError(f"hub id {s!r} must look like hf-hub:owner/name")
        from huggingface_hub import snapshot_download  # lazy: hub download stack (~0.2 s), hf-hub: ids only

        try:
            return Path(snapshot_download(repo_id=repo, revision=revision or None))
        except Exception as e:  # network, auth, not-found and offline errors all land here
            raise UserError(
                f"cannot fetch {s!r} from the Hugging Face hub ({type(e).__name__}: {e}). Without a "
                "network, download the repository elsewhere and pass its local directory instead."
            ) from e
    path = Path(s).expanduser()
    if not path.exists():
        raise UserError(f"model directory {path} does not exist (expected a directory with {CONFIG_NAME})")
    if not path.is_dir():
        raise UserError(f"model path {path} is not a directory (expected a directory with {CONFIG_NAME})")
    return path


def read_model_config(model_dir: str | Path) -> dict[str, Any]:
    """The parsed config.json of a model directory (errors name the file and field)."""
    return ModelDir(model_dir).read_config(registered_model_types())


def load_model(path_or_id: str | Path, **kwargs: Any) -> nn.Module:
    """Load any registered model kind from a local directory or `hf-hub:owner/name`; returns eval mode."""
    model_dir = resolve_model_dir(path_or_id)
    cfg = read_model_config(model_dir)
    kind = cfg["model_type"]
    if kind not in _LOADERS:
        raise UserError(
            f"{model_dir / CONFIG_NAME}: unknown model_type {kind!r}; "
            f"known: {', '.join(registered_model_types())}"
        )
    model = _get_loader(kind)(model_dir, cfg, **kwargs)
    return model.eval()


def load_image_tower(path_or_id: str | Path, **kwargs: Any) -> nn.Module:
    """The image tower (an `ImageTower`, attribute `.visual`) of any sonofm model directory.

    Every model kind that holds an image tower (dual encoders, SSL models, task models, VLMs)
    exposes it as `.visual`, so SSL-pretrained towers feed `pretrain`, `finetune` and `train-vlm`.
    """
    model = load_model(path_or_id, **kwargs)
    tower = getattr(model, "visual", None)
    if not isinstance(tower, nn.Module):
        raise UserError(f"{path_or_id}: a {type(model).__name__} has no image tower (`.visual`)")
    return tower


def load_training_info(model_dir: str | Path) -> dict[str, Any] | None:
    """training.json of a model directory, or None when absent."""
    return ModelDir(model_dir).read_training()
