"""The model directory: the one owner of its file names and of reading/writing its JSON files.

    config.json        architecture + preprocessing + tokenizer reference (`model_type` picks the loader)
    model.safetensors  all weights
    training.json      the resolved job config and data card (when the trainer gave one)
    tokenizer files    written by the tokenizer's own `save_pretrained`

Nothing else in sonofm spells these names: code asks a `ModelDir` for its files. This module
imports no torch, so tools that only look at a model directory (eval caching, the CLI, an
export's copy of the config) stay light; saving and loading weights live in
:mod:`sonofm.models.io`. Every write goes through :mod:`sonofm.atomic`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sonofm.atomic import atomic_write_json
from sonofm.errors import UserError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TRAINING_NAME = "training.json"


class ModelDir:
    """A model directory (which need not exist yet): its files, and reading/writing its JSON."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ModelDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def weights_file(self) -> Path:
        return self.path / WEIGHTS_NAME

    @property
    def training_file(self) -> Path:
        return self.path / TRAINING_NAME

    def is_model(self) -> bool:
        """True when the directory holds a config.json (a saved model, finished writing)."""
        return self.config_file.is_file()

    def has_weights(self) -> bool:
        return self.weights_file.is_file()

    def identity_files(self) -> Iterator[Path]:
        """The files that define the model (config, then weights) that exist, for hashing."""
        return (p for p in (self.config_file, self.weights_file) if p.is_file())

    def portable_files(self) -> Iterator[Path]:
        """Every file but the weights (config, tokenizer, training record): what an export copies."""
        for f in sorted(self.path.iterdir()):
            if f.is_file() and f.name != WEIGHTS_NAME and not f.name.endswith(".safetensors"):
                yield f

    # ----- config.json
    def read_config(self, known_types: Iterable[str] = ()) -> dict[str, Any]:
        """The parsed config.json (errors name the file and field)."""
        f = self.config_file
        if not f.is_file():
            raise UserError(f"{f} not found: {self.path} is not a sonofm model directory")
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"cannot parse {f}: {e}") from e
        if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
            raise UserError(f"{f} has no 'model_type' field (expected one of {sorted(known_types)})")
        return data

    def write_config(self, data: dict[str, Any]) -> Path:
        return atomic_write_json(self.config_file, data)

    # ----- training.json
    def read_training(self) -> dict[str, Any] | None:
        """training.json, or None when absent (unparseable files raise UserError)."""
        f = self.training_file
        if not f.is_file():
            return None
        try:
            return json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"cannot parse {f}: {e}") from e

    def write_training(self, data: dict[str, Any]) -> Path:
        return atomic_write_json(self.training_file, data)
