"""Model directory save/load: bit-exact round trips and strict, named failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import sonofm
from sonofm.errors import UserError
from sonofm.models import build_model, load_model, register_model_type, save_model
from sonofm.models.io import read_model_config
from tests.models.conftest import tiny_spec

TEXTS = ["thyroid nodule, TI-RADS 4", "Pericardial effusion of 12 mm; LVEF 45%.", "normal liver"]


def _outputs(model, size: int, chans: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, chans, size, size, generator=g)
    tok = model.tokenize(TEXTS)
    with torch.no_grad():
        out = model(x, tok["input_ids"], tok["attention_mask"])
        maps = model.image_feature_maps(x)
    return {**{k: v for k, v in out.items() if v is not None}, **{f"map{i}": m for i, m in enumerate(maps)}}


@pytest.mark.parametrize("kind", ["vit", "swinv2", "monai_swin"])
def test_round_trip_is_bit_exact(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_spec(kind, logit_bias=True)).eval()
    size = model.config.image.image_size
    save_model(model, tmp_path / "m", training={"epochs": 3, "data": {"name": "sim"}})

    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "training.json",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= files
    cfg = read_model_config(tmp_path / "m")
    assert cfg["model_type"] == "dual_encoder"
    assert cfg["preprocess"] == {
        "image_size": size,
        "in_chans": 1,
        "mean": [0.4],
        "std": [0.3],
        "max_length": 32,
    }
    assert json.loads((tmp_path / "m" / "training.json").read_text())["data"]["name"] == "sim"

    loaded = sonofm.load_model(str(tmp_path / "m"))
    assert not loaded.training
    assert loaded.config == model.config
    a, b = _outputs(model, size), _outputs(loaded, size)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for t in TEXTS + ["an unseen word: hyperechogenicity"]:
        assert loaded.tokenize([t])["input_ids"].tolist() == model.tokenize([t])["input_ids"].tolist()


def test_save_overwrites_atomically_and_leaves_no_temp_dirs(tmp_path: Path, tiny_vit_model) -> None:
    target = tmp_path / "m"
    save_model(tiny_vit_model, target)
    (target / "stale.txt").write_text("old")
    save_model(tiny_vit_model, target)
    assert not (target / "stale.txt").exists()
    assert target.stat().st_mode & 0o055, "model dir must not stay private like mkdtemp's 0700"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_failed_save_keeps_the_old_directory(tmp_path: Path, tiny_vit_model, monkeypatch) -> None:
    target = tmp_path / "m"
    save_model(tiny_vit_model, target)
    before = (target / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_model(tiny_vit_model, target)
    assert (target / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def _corrupt(tmp_path: Path, model, edit) -> Path:
    d = tmp_path / "bad"
    save_model(model, d)
    state = load_file(str(d / "model.safetensors"))
    edit(state)
    save_file(state, str(d / "model.safetensors"))
    return d


def test_missing_tensor_is_named(tmp_path: Path, tiny_vit_model) -> None:
    key = [k for k in tiny_vit_model.state_dict() if k.startswith("visual.backbone.") and ".0." in k][0]
    d = _corrupt(tmp_path, tiny_vit_model, lambda s: s.pop(key))
    with pytest.raises(UserError) as e:
        load_model(d)
    assert f"missing keys 1 ({key})" in str(e.value) and "model.safetensors" in str(e.value)


def test_renamed_tensor_is_named(tmp_path: Path, tiny_vit_model) -> None:
    d = _corrupt(
        tmp_path, tiny_vit_model, lambda s: s.__setitem__("renamed.weight", s.pop("text_proj.weight"))
    )
    with pytest.raises(UserError) as e:
        load_model(d)
    assert "missing keys 1 (text_proj.weight)" in str(e.value)
    assert "unexpected keys 1 (renamed.weight)" in str(e.value)


def test_misshaped_tensor_is_named(tmp_path: Path, tiny_vit_model) -> None:
    d = _corrupt(tmp_path, tiny_vit_model, lambda s: s.__setitem__("image_proj.weight", torch.zeros(16, 31)))
    with pytest.raises(
        UserError, match=r"shape mismatches 1 \(image_proj\.weight \(file \(16, 31\) vs model \(16, 32\)\)"
    ):
        load_model(d)


def test_many_problems_are_counted(tmp_path: Path, tiny_vit_model) -> None:
    d = _corrupt(tmp_path, tiny_vit_model, lambda s: [s.pop(k) for k in list(s) if k.startswith("visual.")])
    with pytest.raises(UserError, match=r"missing keys \d{2,} \(.*, \.\.\.\)"):
        load_model(d)


def test_bad_directories(tmp_path: Path, tiny_vit_model) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="config.json not found"):
        load_model(tmp_path / "empty")
    d = tmp_path / "m"
    save_model(tiny_vit_model, d)
    (d / "model.safetensors").unlink()
    with pytest.raises(UserError, match="model weights not found"):
        load_model(d)
    (d / "config.json").write_text(json.dumps({"model_type": "martian"}))
    with pytest.raises(UserError, match="unknown model_type 'martian'.*dual_encoder"):
        load_model(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot parse"):
        load_model(d)


def test_hub_id_without_network_is_a_clear_error(monkeypatch) -> None:
    def offline(**kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' (offline mode)")

    monkeypatch.setattr("huggingface_hub.snapshot_download", offline)
    with pytest.raises(UserError, match=r"cannot fetch 'hf-hub:owner/model'.*local directory"):
        load_model("hf-hub:owner/model")
    with pytest.raises(UserError, match="hf-hub:owner/name"):
        load_model("hf-hub:no-slash")


def test_hub_id_resolves_through_snapshot_download(tmp_path: Path, tiny_vit_model, monkeypatch) -> None:
    save_model(tiny_vit_model, tmp_path / "snap")
    seen = {}

    def fake(repo_id, revision=None):
        seen.update(repo_id=repo_id, revision=revision)
        return str(tmp_path / "snap")

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake)
    model = load_model("hf-hub:sonofm/tiny@v1")
    assert seen == {"repo_id": "sonofm/tiny", "revision": "v1"}
    assert model.config == tiny_vit_model.config


def test_registry_dispatches_new_model_types(tmp_path: Path) -> None:
    class Probe(torch.nn.Module):
        model_type = "test_probe"

        def __init__(self) -> None:
            super().__init__()
            self.config = {"n": 3}
            self.fc = torch.nn.Linear(3, 2)

    def loader(path: Path, cfg: dict) -> torch.nn.Module:
        from sonofm.models.io import load_weights

        m = Probe()
        assert cfg["config"] == {"n": 3}
        load_weights(m, path / "model.safetensors")
        return m

    register_model_type("test_probe", loader)
    with pytest.raises(ValueError, match="already registered"):
        register_model_type("test_probe", lambda p, c: Probe())
    src = Probe()
    save_model(src, tmp_path / "p")
    got = load_model(tmp_path / "p")
    assert isinstance(got, Probe) and torch.equal(got.fc.weight, src.fc.weight)
