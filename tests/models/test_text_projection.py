"""The text projection option: linear (CLIP's, unchanged keys) or a two-layer MLP that round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sonofm.models import build_model, load_model, save_model
from tests.tiny_models import tiny_dual_encoder


def test_linear_projection_keeps_clip_keys_and_mlp_is_nonlinear() -> None:
    linear = build_model(tiny_dual_encoder("lin"))
    assert "text_proj.weight" in linear.state_dict()
    mlp = build_model(tiny_dual_encoder("mlp") | {"text_projection": "mlp"})
    proj = mlp.text_proj
    x = torch.randn(4, mlp.text.width)
    # not linear: f(2x) != 2 f(x) (a linear bias-free map would satisfy it exactly)
    assert not torch.allclose(proj(2 * x), 2 * proj(x), atol=1e-4)
    assert proj(x).shape == (4, mlp.config.embed_dim)


def test_mlp_projection_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_dual_encoder("mlp") | {"text_projection": "mlp"}).eval()
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m").eval()
    assert loaded.config.text_projection == "mlp"
    tok = model.tokenize(["a hypoechoic nodule", "normal liver"])
    with torch.no_grad():
        want = model.encode_text(tok["input_ids"], tok["attention_mask"])
        got = loaded.encode_text(tok["input_ids"], tok["attention_mask"])
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_unknown_projection_is_a_clear_error() -> None:
    from sonofm.errors import UserError

    with pytest.raises(UserError, match="text_projection"):
        build_model(tiny_dual_encoder("bad") | {"text_projection": "conv"})
