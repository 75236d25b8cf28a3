"""`build_model`: presets (YAML in sonofm/presets/models), config files/dicts, and key=value overrides."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sonofm.errors import UserError
from sonofm.models.config import DualEncoderConfig

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets" / "models"

# Keys of MONAI's SwinTransformer that an image section may set (besides the named fields).
_MONAI_SWIN_KEYS = {
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "patch_size",
    "mlp_ratio",
    "qkv_bias",
    "drop_rate",
    "attn_drop_rate",
    "drop_path_rate",
    "patch_norm",
    "use_v2",
    "downsample",
}


def list_presets() -> list[str]:
    """Names of the shipped model presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise UserError(f"cannot read model config {path}: {e}") from e
    if not isinstance(data, dict):
        raise UserError(f"model config {path} must hold a mapping, got {type(data).__name__}")
    if "config" in data and "model_type" in data:  # a model directory's config.json
        data = data["config"]
    return data


def load_spec(spec: str | Path | Mapping[str, Any] | DualEncoderConfig) -> dict[str, Any]:
    """A preset name, a YAML/JSON path, a dict or a config -> a plain (deep-copied) dict."""
    if isinstance(spec, DualEncoderConfig):
        return spec.model_dump(mode="json")
    if isinstance(spec, Mapping):
        data = copy.deepcopy(dict(spec))
        if "config" in data and "model_type" in data:  # a loaded config.json
            return data["config"]
        data.pop("model_type", None)
        return data
    s = str(spec)
    path = Path(s).expanduser()
    if path.is_file():
        return _read_config_file(path)
    preset = PRESET_DIR / f"{s}.yaml"
    if preset.is_file():
        return _read_config_file(preset)
    raise UserError(
        f"model spec {s!r} is neither a preset ({', '.join(list_presets())}) nor a YAML/JSON config file"
    )


def parse_overrides(overrides: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """`["image.hidden_size=256", "text.num_layers=2"]` -> {dotted key: YAML-parsed value}."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {item!r} must look like key=value (e.g. image.hidden_size=256)")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise UserError(f"override {item!r}: cannot parse value {raw!r}: {e}") from e
    return out


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (creating sections as needed); returns `data`."""
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"override {dotted!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _check_tower_keys(cfg: DualEncoderConfig) -> None:
    """Reject misspelt architecture keys (transformers configs would silently keep them)."""
    extra = cfg.image.extra
    if cfg.image.kind == "monai_swin":
        known = _MONAI_SWIN_KEYS
    else:
        from transformers import CONFIG_MAPPING  # lazy: keeps torch out of sonofm.config (an importer)

        known = set(CONFIG_MAPPING[cfg.image.kind]().to_dict())
    unknown = sorted(set(extra) - known)
    if unknown:
        raise UserError(
            f"unknown image.{unknown[0]} for image.kind={cfg.image.kind!r} "
            f"(unknown keys: {', '.join(unknown)}); valid keys include: {', '.join(sorted(known)[:40])}"
        )
    if cfg.text.extra and cfg.text.pretrained is None:
        from transformers import CONFIG_MAPPING  # lazy: keeps torch out of sonofm.config (an importer)

        if cfg.text.model_type in CONFIG_MAPPING:
            known_t = set(CONFIG_MAPPING[cfg.text.model_type]().to_dict())
            bad = sorted(set(cfg.text.extra) - known_t)
            if bad:
                raise UserError(f"unknown text.{bad[0]} for text.model_type={cfg.text.model_type!r}")


def resolve_config(
    spec: str | Path | Mapping[str, Any] | DualEncoderConfig,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
) -> DualEncoderConfig:
    """Spec + overrides -> validated `DualEncoderConfig` (errors name the offending field)."""
    data = apply_overrides(load_spec(spec), parse_overrides(overrides))
    try:
        cfg = DualEncoderConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()[:5]
        )
        raise UserError(f"invalid model config: {problems}") from e
    if cfg.image.arch is None:
        _check_tower_keys(cfg)
    return cfg


def build_model(
    spec: str | Path | Mapping[str, Any] | DualEncoderConfig = "tiny",
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    *,
    load_pretrained: bool = True,
) -> Any:
    """Build a `DualEncoder` from a preset name ("tiny"), YAML/JSON path, dict or config.

    `overrides` are `key=value` strings or a {dotted key: value} mapping, e.g.
    `build_model("tiny", ["image.hidden_size=256", "logit_bias=true"])`; the result's
    `model.config` holds the resolved values (and the towers' full architectures).
    """
    from sonofm.models.dual_encoder import DualEncoder  # lazy: keeps torch out of sonofm.config (an importer)

    return DualEncoder(resolve_config(spec, overrides), load_pretrained=load_pretrained)
