"""SSL model: exact masks, masking that really hides pixels, the MIM and hierarchy losses against
direct formulas, missing labels, and model directories that round-trip into plain image towers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sonofm.errors import UserError
from sonofm.losses.mim import (
    IGNORE_INDEX,
    conditional_organ_loss,
    group_log_softmax,
    hierarchical_organ_log_probs,
    masked_cross_entropy,
    mim_loss,
    num_masked,
    patchify,
    random_patch_mask,
    upsample_mask,
)
from sonofm.models import build_model, load_image_tower, load_model, save_model
from sonofm.models.config import ImageTowerConfig
from sonofm.models.image_towers import ImageTower
from sonofm.models.ssl import SSLModel, SSLModelConfig, anatomy_labels
from sonofm.taxonomy import ORGAN_IDS, REGIONS, organs_in, region_of
from tests.models.conftest import TINY_IMAGE, tiny_spec

MIM_KINDS = ["vit", "dinov2", "swin", "swinv2", "monai_swin"]


def tower_cfg(kind: str = "vit", **extra) -> ImageTowerConfig:
    arch, size, _ = TINY_IMAGE[kind]
    data = {"kind": kind, "image_size": size, "in_chans": 1, "mean": [0.4], "std": [0.3], **arch, **extra}
    return ImageTowerConfig.model_validate(data)


def ssl_model(kind: str = "vit", seed: int = 0, **kw) -> SSLModel:
    torch.manual_seed(seed)
    return SSLModel(SSLModelConfig(image=tower_cfg(kind), **kw)).eval()


@pytest.fixture(scope="module")
def models() -> dict[str, SSLModel]:
    return {kind: ssl_model(kind) for kind in MIM_KINDS}


# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize(("grid", "ratio"), [((4, 4), 0.6), ((3, 5), 0.5), ((8, 8), 0.75), ((2, 2), 0.1)])
def test_random_patch_mask_has_the_exact_ratio_and_grid(grid: tuple[int, int], ratio: float) -> None:
    gen = torch.Generator().manual_seed(0)
    mask = random_patch_mask(64, grid, ratio, gen)
    assert mask.shape == (64, *grid) and mask.dtype == torch.bool
    n = grid[0] * grid[1]
    want = max(1, min(n - 1, math.floor(ratio * n + 0.5)))
    assert num_masked(n, ratio) == want
    assert (mask.flatten(1).sum(1) == want).all()
    assert len({tuple(m.flatten().tolist()) for m in mask}) > 1  # samples get different masks
    # every cell gets masked sometimes: uniform over positions, not a fixed pattern
    assert mask.any(0).all()
    again = random_patch_mask(64, grid, ratio, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)


def test_random_patch_mask_rejects_bad_ratios() -> None:
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="ratio"):
            random_patch_mask(2, (4, 4), bad)


def test_upsample_mask_and_patchify_are_exact() -> None:
    m = torch.tensor([[[True, False], [False, True]]])
    up = upsample_mask(m, 3)
    assert up.shape == (1, 6, 6)
    assert up[0, :3, :3].all() and not up[0, :3, 3:].any() and up[0, 3:, 3:].all()
    img = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).view(2, 2, 4, 4)
    p = patchify(img, 2)
    assert p.shape == (2, 4, 8)
    # patch 1 = rows 0-1, cols 2-3; values ordered (row, col, channel)
    want = torch.stack([img[0, :, r, c] for r in (0, 1) for c in (2, 3)]).flatten()
    assert torch.equal(p[0, 1], want)


@pytest.mark.parametrize(
    ("kind", "mask_patch", "grid", "token_grid"),
    [
        ("vit", None, 4, 4),  # 32 px, patch 8: one cell per patch
        ("vit", 16, 2, 4),
        ("swin", None, 16, 16),  # 64 px, patch 4
        ("swin", 16, 4, 16),
        ("monai_swin", 8, 8, 32),  # 64 px, patch 2
    ],
)
def test_mask_grid_follows_the_tower_patch_grid(
    kind: str, mask_patch: int | None, grid: int, token_grid: int
):
    model = ssl_model(kind, mask_patch=mask_patch)
    assert model.mask_grid == grid
    mask = model.random_mask(3)
    assert mask.shape == (3, grid, grid)
    tok = model.token_mask(mask)
    assert tok.shape == (3, token_grid, token_grid)
    assert tok.sum() == mask.sum() * (token_grid // grid) ** 2


def test_mask_patch_must_fit_the_tower() -> None:
    with pytest.raises(UserError, match="multiple of the tower's patch size 4"):
        ssl_model("swin", mask_patch=6)
    with pytest.raises(UserError, match="divide image_size"):
        ssl_model("vit", mask_patch=24)
    with pytest.raises(ValueError, match="masked image modelling needs"):
        SSLModelConfig(image=tower_cfg("convnext"))


@pytest.mark.parametrize("kind", MIM_KINDS)
def test_masked_pixels_are_invisible_to_the_tower(models: dict[str, SSLModel], kind: str) -> None:
    """Changing pixels under masked cells changes nothing; changing a visible cell does."""
    model = models[kind]
    size = model.visual.image_size
    mp = model.config.mask_patch
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, size, size, generator=g)
    mask = model.random_mask(2, generator=g)
    pix = upsample_mask(mask, mp).unsqueeze(1)  # (B, 1, S, S) True where masked
    with torch.no_grad():
        ref = model(x, mask)
        hidden = model(torch.where(pix, torch.rand(x.shape, generator=g), x), mask)
        shown = model(torch.where(pix, x, torch.rand(x.shape, generator=g)), mask)
    assert torch.equal(ref["recon"], hidden["recon"])
    assert torch.equal(ref["features"], hidden["features"])
    assert not torch.allclose(ref["recon"], shown["recon"])
    assert ref["recon"].shape == x.shape
    # an empty mask gives exactly the tower's own pooled features
    with torch.no_grad():
        clean = model(x, torch.zeros_like(mask))["features"]
        torch.testing.assert_close(clean, model.visual(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", MIM_KINDS)
def test_every_parameter_gets_a_gradient_and_the_tower_keeps_no_mask_token(kind: str) -> None:
    model = ssl_model(kind).train()
    size = model.visual.image_size
    out = model(torch.rand(3, 1, size, size))
    labels = model.labels_for(["breast", None, "heart"], [None, "gallbladder", "heart"], [None, None, "A4C"])
    sum(model.loss_terms(out, labels, {}).values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []  # DDP needs every trainable weight used
    assert model.mask_token.grad.abs().sum() > 0
    assert not any("mask_token" in k for k in model.visual.state_dict() if kind != "dinov2")
    assert set(model.visual.state_dict()) == set(ImageTower(model.config.image).state_dict())


# ----------------------------------------------------------------------------- losses


def test_mim_loss_counts_masked_patches_only_and_matches_the_formula() -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 6, 12, generator=g), torch.randn(3, 6, 12, generator=g)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, [1, 4]] = True
    mask[2, [0, 2, 5]] = True
    for norm_pix in (True, False):
        for kind in ("l1", "l2"):
            got = mim_loss(pred, target, mask, norm_pix=norm_pix, loss=kind)
            errs = []
            for b in range(3):
                for n in range(6):
                    if mask[b, n]:
                        t = target[b, n].double()
                        if norm_pix:
                            t = (t - t.mean()) / torch.sqrt(((t - t.mean()) ** 2).mean() + 1e-6)
                        d = pred[b, n].double() - t
                        errs.append(float((d.abs() if kind == "l1" else d**2).mean()))
            assert float(got) == pytest.approx(np.mean(errs), rel=1e-5)
            # predictions on visible patches do not matter
            noisy = torch.where(mask.unsqueeze(-1), pred, pred + 100 * torch.randn(pred.shape, generator=g))
            assert float(mim_loss(noisy, target, mask, norm_pix=norm_pix, loss=kind)) == float(got)
    # nothing masked: zero, not NaN
    assert float(mim_loss(pred, target, torch.zeros_like(mask))) == 0.0


def test_model_mim_term_ignores_visible_pixels_of_the_reconstruction() -> None:
    model = ssl_model("vit", mask_patch=16)
    out = model(torch.rand(2, 1, 32, 32))
    labels = model.labels_for([None] * 2, [None] * 2, [None] * 2)
    base = model.loss_terms(out, labels, {})["mim_loss"]
    pix = upsample_mask(out["mask"], 16).unsqueeze(1)
    out2 = dict(out, recon=torch.where(pix, out["recon"], out["recon"] + 5.0))
    assert float(model.loss_terms(out2, labels, {})["mim_loss"].detach()) == float(base.detach())
    out3 = dict(out, recon=torch.where(pix, out["recon"] + 5.0, out["recon"]))
    assert float(model.loss_terms(out3, labels, {})["mim_loss"].detach()) > float(base.detach()) + 1.0


def test_masked_cross_entropy_ignores_missing_labels() -> None:
    logits = torch.randn(5, 4, requires_grad=True)
    y = torch.tensor([2, IGNORE_INDEX, 0, IGNORE_INDEX, 3])
    valid = y != IGNORE_INDEX
    ref = F.cross_entropy(logits[valid], y[valid])
    torch.testing.assert_close(masked_cross_entropy(logits, y), ref)
    none = masked_cross_entropy(logits, torch.full((5,), IGNORE_INDEX))
    assert float(none.detach()) == 0.0
    none.backward()  # still part of the graph (DDP-safe), with a zero gradient
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_group_log_softmax_and_hierarchy_match_direct_computation() -> None:
    g = torch.Generator().manual_seed(0)
    organ_region = torch.tensor([REGIONS.index(region_of(o)) for o in ORGAN_IDS])
    scores = torch.randn(4, len(ORGAN_IDS), generator=g) * 3
    region_logits = torch.randn(4, len(REGIONS), generator=g)
    within = group_log_softmax(scores, organ_region, len(REGIONS))
    for b in range(4):
        for k, organ in enumerate(ORGAN_IDS):
            members = [ORGAN_IDS.index(o.id) for o in organs_in(region_of(organ))]
            want = scores[b, k] - torch.logsumexp(scores[b, members], 0)
            assert float(within[b, k]) == pytest.approx(float(want), abs=1e-5)
    joint = hierarchical_organ_log_probs(scores, region_logits, organ_region)
    torch.testing.assert_close(torch.logsumexp(joint, 1), torch.zeros(4), atol=1e-5, rtol=0)
    # marginalising organs per region gives the region head's distribution back
    per_region = torch.zeros(4, len(REGIONS)).index_add_(1, organ_region, joint.exp())
    torch.testing.assert_close(per_region, F.softmax(region_logits, -1), atol=1e-5, rtol=0)
    # the conditional loss only compares organs of the true region
    y = torch.tensor([ORGAN_IDS.index("gallbladder"), IGNORE_INDEX, ORGAN_IDS.index("ovary"), IGNORE_INDEX])
    got = conditional_organ_loss(scores, y, organ_region, len(REGIONS))
    liver = [ORGAN_IDS.index("liver"), ORGAN_IDS.index("gallbladder")]
    gyn = [ORGAN_IDS.index("ovary"), ORGAN_IDS.index("uterus")]
    want = -(F.log_softmax(scores[0, liver], 0)[1] + F.log_softmax(scores[2, gyn], 0)[0]) / 2
    assert float(got) == pytest.approx(float(want), abs=1e-5)
    # raising the score of an organ in another region leaves it unchanged
    bumped = scores.clone()
    bumped[:, ORGAN_IDS.index("thyroid")] += 50
    assert float(conditional_organ_loss(bumped, y, organ_region, len(REGIONS))) == pytest.approx(float(got))


def test_anatomy_labels_use_known_labels_and_ignore_the_rest() -> None:
    cfg = SSLModelConfig(image=tower_cfg())
    labels = anatomy_labels(
        ["breast", None, float("nan"), "liver", "heart", "heart", "mars"],
        [None, "gallbladder", None, "thyroid", "heart", "heart", None],
        [None, None, None, None, "A4C", "transverse", None],
        cfg,
    )
    r, o, v = labels["region"].tolist(), labels["organ"].tolist(), labels["view"].tolist()
    assert r == [REGIONS.index(x) for x in ("breast", "liver")] + [IGNORE_INDEX] + [
        REGIONS.index("liver"),
        REGIONS.index("heart"),
        REGIONS.index("heart"),
        IGNORE_INDEX,
    ]
    # organ known -> kept; region implied by organ; liver row claiming thyroid -> organ ignored
    assert o == [IGNORE_INDEX, ORGAN_IDS.index("gallbladder"), IGNORE_INDEX, IGNORE_INDEX] + [
        ORGAN_IDS.index("heart")
    ] * 2 + [IGNORE_INDEX]
    assert v == [IGNORE_INDEX] * 4 + [0, IGNORE_INDEX, IGNORE_INDEX]


def test_unlabelled_batches_train_on_reconstruction_alone(models: dict[str, SSLModel]) -> None:
    model = models["vit"]
    out = model(torch.rand(4, 1, 32, 32))
    none = model.labels_for([None] * 4, [None] * 4, [None] * 4)
    terms = model.loss_terms(out, none, {"region": 0.5, "organ": 0.5, "view": 0.5})
    assert all(math.isfinite(float(t.detach())) for t in terms.values())
    assert [float(terms[k].detach()) for k in ("region_loss", "organ_loss", "view_loss")] == [0.0, 0.0, 0.0]
    some = model.labels_for(["breast", None, "heart", None], [None] * 4, [None, None, "PLAX", None])
    t2 = model.loss_terms(out, some, {"region": 0.5})
    ref = 0.5 * F.cross_entropy(out["logits"]["region"][[0, 2]], some["region"][[0, 2]])
    torch.testing.assert_close(t2["region_loss"], ref)
    assert float(t2["view_loss"].detach()) == pytest.approx(
        float(F.cross_entropy(out["logits"]["view"][[2]], some["view"][[2]]).detach())
    )


# ----------------------------------------------------------------------------- model directories


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, models: dict[str, SSLModel]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ssl-dirs")
    out = {}
    for kind in ("vit", "monai_swin"):
        model = models[kind]
        with torch.no_grad():  # make every weight distinctive (not the init)
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        out[kind] = save_model(model, root / kind, training={"job": "ssl"})
    return out


@pytest.mark.parametrize("kind", ["vit", "monai_swin"])
def test_ssl_model_dir_round_trips_bit_identically(
    models: dict[str, SSLModel], saved: dict[str, Path], kind: str
) -> None:
    model = models[kind]
    loaded = load_model(saved[kind])
    assert isinstance(loaded, SSLModel) and loaded.config == model.config
    size = model.visual.image_size
    x = torch.rand(2, 1, size, size)
    mask = model.random_mask(2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = model(x, mask), loaded(x, mask)
    assert torch.equal(a["recon"], b["recon"])
    for k in a["logits"]:
        assert torch.equal(a["logits"][k], b["logits"][k])

    tower = load_image_tower(saved[kind])
    ref = model.visual.state_dict()
    assert set(tower.state_dict()) == set(ref)
    assert all(torch.equal(v, ref[k]) for k, v in tower.state_dict().items())

    # ImageTowerConfig.pretrained = an SSL dir: the same weights, exactly, in a plain tower
    cfg = tower_cfg(kind, pretrained=str(saved[kind]))
    copied = ImageTower(cfg).eval()
    assert all(torch.equal(v, ref[k]) for k, v in copied.state_dict().items())
    with torch.no_grad():
        assert torch.equal(copied(x), model.visual(x))


def test_a_dual_encoder_starts_from_an_ssl_tower(models: dict[str, SSLModel], saved: dict[str, Path]) -> None:
    spec = tiny_spec("vit")
    spec["image"]["mean"], spec["image"]["std"] = [0.4], [0.3]
    spec["image"]["pretrained"] = str(saved["vit"])
    model = build_model(spec)
    ref = models["vit"].visual.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.visual.state_dict().items())
    assert model.config.image.arch is not None  # recorded, so the saved dual encoder rebuilds offline


def test_mismatched_towers_give_clear_errors(saved: dict[str, Path]) -> None:
    with pytest.raises(UserError, match=r"shape mismatches .*backbone\..*hidden|shape mismatches") as err:
        ImageTower(tower_cfg("vit", pretrained=str(saved["vit"]), hidden_size=48, intermediate_size=96))
    msg = str(err.value)
    assert str(saved["vit"]) in msg and "file" in msg and "model" in msg
    with pytest.raises(UserError, match="holds a 'vit' image tower but image.kind is 'swin'"):
        ImageTower(tower_cfg("swin", pretrained=str(saved["vit"])))
    with pytest.raises(UserError, match="1-channel input but image.in_chans is 3"):
        ImageTower(ImageTowerConfig(kind="vit", image_size=32, in_chans=3, pretrained=str(saved["vit"])))
    with pytest.raises(UserError, match="missing keys"):
        ImageTower(tower_cfg("vit", pretrained=str(saved["vit"]), num_hidden_layers=5))
