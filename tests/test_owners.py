"""Directory owners and atomic writes (#19).

One object owns each directory format's file names (`ModelDir`, `DatasetDir`); nothing else in
the package spells them, and directories are written whole through `sonofm.atomic`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import sonofm
from sonofm.atomic import atomic_dir, atomic_write_json
from sonofm.data.manifest import CARD_FILE, MANIFEST_FILE, DatasetDir
from sonofm.errors import DataError, UserError
from sonofm.models.model_dir import CONFIG_NAME, TRAINING_NAME, WEIGHTS_NAME, ModelDir

OWNERS = {
    CONFIG_NAME: "models/model_dir.py",
    WEIGHTS_NAME: "models/model_dir.py",
    TRAINING_NAME: "models/model_dir.py",
    MANIFEST_FILE: "data/manifest.py",
    CARD_FILE: "data/manifest.py",
}


def test_only_the_owners_spell_the_file_names() -> None:
    pkg = Path(sonofm.__file__).parent
    found = []
    for py in sorted(pkg.rglob("*.py")):
        rel = py.relative_to(pkg).as_posix()
        text = py.read_text(encoding="utf-8")
        for name, owner in OWNERS.items():
            if rel != owner and re.search(rf"""["']{re.escape(name)}["']""", text):
                found.append(f"{rel}: {name}")
    assert not found, f"file names spelled outside their owner: {found}"


def test_model_dir_files_and_json(tmp_path: Path) -> None:
    d = ModelDir(tmp_path / "m")
    assert not d.is_model() and d.read_training() is None
    d.write_config({"model_type": "dual_encoder", "config": {}})
    d.write_training({"job": "pretrain"})
    assert d.is_model() and not d.has_weights()
    assert d.read_config()["model_type"] == "dual_encoder"
    assert d.read_training() == {"job": "pretrain"}
    d.weights_file.write_bytes(b"w")
    (d.path / "tokenizer.json").write_text("{}")
    assert [p.name for p in d.identity_files()] == [CONFIG_NAME, WEIGHTS_NAME]
    assert WEIGHTS_NAME not in {p.name for p in d.portable_files()}
    d.config_file.write_text("{}")
    with pytest.raises(UserError, match="model_type"):
        d.read_config(["dual_encoder"])
    with pytest.raises(UserError, match="not a sonofm model directory"):
        ModelDir(tmp_path / "none").read_config()


def test_dataset_dir_card(tmp_path: Path) -> None:
    assert DatasetDir.read_card(tmp_path) == {}
    assert DatasetDir.manifest_file(tmp_path) == tmp_path / MANIFEST_FILE
    atomic_write_json(DatasetDir.card_file(tmp_path), {"name": "x"})
    assert DatasetDir.read_card(tmp_path) == {"name": "x"}
    DatasetDir.card_file(tmp_path).write_text("{", encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON"):
        DatasetDir.read_card(tmp_path)


def test_atomic_dir_swaps_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(target, mode=0o755) as tmp:
        (tmp / "b.txt").write_text("2")
        raise RuntimeError("half-way")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]  # the old tree, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind
    with atomic_dir(target, mode=0o755) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]  # replaced as a whole
    assert target.stat().st_mode & 0o777 == 0o755
