"""Image and text towers inside the dual encoder: shapes, normalisation, channels, gradients."""

from __future__ import annotations

import pytest
import torch

from sonofm.models import build_model
from sonofm.models.config import ImageTowerConfig
from sonofm.models.image_towers import ImageTower
from tests.models.conftest import TINY_IMAGE, tiny_spec

KINDS = list(TINY_IMAGE)


@pytest.mark.parametrize("kind", KINDS)
def test_every_tower_gives_normalised_embeddings_features_and_gradients(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_spec(kind, in_chans=3)).train()
    size = model.config.image.image_size
    x1 = torch.rand(2, 1, size, size)
    tok = model.tokenize(["thyroid nodule", "a hypoechoic mass with posterior shadowing"])

    with torch.no_grad():
        model.eval()
        e1 = model.encode_image(x1)
        e3 = model.encode_image(x1.repeat(1, 3, 1, 1))
    assert e1.shape == (2, 16)
    torch.testing.assert_close(e1.norm(dim=-1), torch.ones(2))
    # A grayscale image is fed to a 3-channel tower by repetition: identical to its RGB copy.
    torch.testing.assert_close(e1, e3)

    maps = model.image_feature_maps(x1)
    assert [tuple(m.shape) for m in maps] == [(2, *s) for s in TINY_IMAGE[kind][2]]

    # forward() alone gives every trainable parameter a gradient (no unused weights: DDP needs this).
    model.train()
    out = model(x1, tok["input_ids"], tok["attention_mask"])
    loss = (out["image_features"] @ out["text_features"].T).sum() * out["logit_scale"]
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []


@pytest.mark.parametrize("kind", ["vit", "convnext", "monai_swin"])
def test_one_channel_tower_accepts_rgb_by_averaging(kind: str) -> None:
    torch.manual_seed(0)
    arch, size, _ = TINY_IMAGE[kind]
    tower = ImageTower(
        ImageTowerConfig(kind=kind, image_size=size, in_chans=1, mean=[0.4], std=[0.3], **arch)
    )
    tower.eval()
    rgb = torch.rand(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(tower(rgb), tower(rgb.mean(dim=1, keepdim=True)))
    torch.testing.assert_close(tower.preprocess(rgb), (rgb.mean(dim=1, keepdim=True) - 0.4) / 0.3)


def test_image_checks_name_the_problem(tiny_vit_model) -> None:
    with pytest.raises(ValueError, match="32x32"):
        tiny_vit_model.encode_image(torch.rand(1, 1, 48, 48))
    with pytest.raises(ValueError, match="float"):
        tiny_vit_model.encode_image(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 1\|3, H, W\)"):
        tiny_vit_model.encode_image(torch.rand(1, 2, 32, 32))


def test_mean_pooling_ignores_padding(tiny_vit_model) -> None:
    model = tiny_vit_model
    alone = model.tokenize(["thyroid nodule"])
    batch = model.tokenize(
        ["thyroid nodule", "a much longer report about an irregular hypoechoic breast mass"]
    )
    assert batch["attention_mask"][0].sum() == alone["attention_mask"].sum() < batch["input_ids"].shape[1]
    with torch.no_grad():
        a = model.encode_text(**alone)
        b = model.encode_text(**batch)
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)


def test_tokenize_truncates_to_max_length(tiny_vit_model) -> None:
    tok = tiny_vit_model.tokenize(["word " * 200, "short"])
    assert tok["input_ids"].shape == (2, 32) and tok["input_ids"].dtype == torch.long
    assert tok["input_ids"][0, -1].item() == tiny_vit_model.tokenizer.sep_token_id
    import pickle

    tokenizer = pickle.loads(pickle.dumps(tiny_vit_model.get_tokenizer()))  # DataLoader workers
    assert torch.equal(tokenizer(["short"])["input_ids"], tiny_vit_model.tokenize(["short"])["input_ids"])


@pytest.mark.parametrize("kind", ["vit", "monai_swin"])
def test_grad_checkpointing_gives_same_outputs_and_gradients(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_spec(kind)).train()
    size = model.config.image.image_size
    x = torch.rand(2, 1, size, size)
    tok = model.tokenize(["cyst", "solid nodule"])

    def grads() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        out = model(x, **tok)
        loss = (out["image_features"] * out["text_features"]).sum()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    l0, g0 = grads()
    model.set_grad_checkpointing(True)
    if kind == "monai_swin":
        flags = [m.use_checkpoint for m in model.visual.modules() if hasattr(m, "use_checkpoint")]
        assert flags and all(flags)
    else:
        assert model.visual.backbone.is_activation_checkpointing
    assert model.text.encoder.is_activation_checkpointing
    l1, g1 = grads()
    model.set_grad_checkpointing(False)
    torch.testing.assert_close(l0, l1)
    assert g0.keys() == g1.keys()
    for n in g0:
        torch.testing.assert_close(g0[n], g1[n], msg=n)


def test_cls_pooling_and_text_freezing() -> None:
    spec = tiny_spec("vit")
    spec["text"].update(pool="cls", num_hidden_layers=2, freeze_layers=1)
    model = build_model(spec)
    frozen = {n for n, p in model.text.named_parameters() if not p.requires_grad}
    assert any(n.startswith("encoder.embeddings.") for n in frozen)
    assert any(".layer.0." in n for n in frozen) and not any(".layer.1." in n for n in frozen)
    tok = model.tokenize(["a", "b c d"])
    h = model.text.encoder(**tok).last_hidden_state
    torch.testing.assert_close(model.text(**tok), h[:, 0])


def test_monai_swin_loads_pretrained_safetensors_strictly(tmp_path) -> None:
    from safetensors.torch import save_file

    from sonofm.errors import UserError

    arch, size, _ = TINY_IMAGE["monai_swin"]
    cfg = dict(kind="monai_swin", image_size=size, in_chans=1, mean=[0.5], std=[0.5], **arch)
    torch.manual_seed(1)
    src = ImageTower(ImageTowerConfig(**cfg))
    # SwinUNETR-style checkpoint: encoder keys under "swinViT."
    save_file(
        {f"swinViT.{k}": v.contiguous() for k, v in src.backbone.net.state_dict().items()},
        tmp_path / "w.safetensors",
    )
    torch.manual_seed(2)
    dst = ImageTower(ImageTowerConfig(**cfg, pretrained=str(tmp_path / "w.safetensors")))
    x = torch.rand(1, 1, size, size)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))
    state = {k: v.contiguous() for k, v in src.backbone.net.state_dict().items()}
    state.pop("patch_embed.proj.weight")
    save_file(state, tmp_path / "bad.safetensors")
    with pytest.raises(UserError, match=r"missing keys 1 \(patch_embed\.proj\.weight\)"):
        ImageTower(ImageTowerConfig(**cfg, pretrained=str(tmp_path / "bad.safetensors")))
