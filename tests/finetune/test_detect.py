"""`detect` fine-tuning task: COCO AP on hand-built boxes, CenterNet targets/decoding, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sonofm.finetune.detect import coco_ap
from sonofm.finetune.tasks import collate, get_task
from sonofm.models.heads.detection import centernet_targets, decode_boxes
from tests.finetune.fitting import eval_loss, fit, predict
from tests.tiny_models import tiny_task_model


@pytest.fixture(scope="module")
def lesions(tmp_path_factory):
    from sonofm.data.manifest import read_manifest
    from sonofm.sim.generator import simulate_dataset

    out = tmp_path_factory.mktemp("lesions") / "d"
    simulate_dataset(out, 80, regions="breast,thyroid", size=64, seed=0, progress=False)
    return out, read_manifest(out)


# ----------------------------------------------------------------------------- AP


def test_ap_of_hand_built_boxes():
    gt = [np.array([[10.0, 10.0, 20.0, 20.0]])]
    tp = [10.0, 10.0, 20.0, 20.0]
    fp = [40.0, 40.0, 50.0, 50.0]
    # TP ranked above the FP: precision 1 up to recall 1 -> AP 1
    m = coco_ap([np.array([tp, fp])], [np.array([0.9, 0.8])], gt)
    assert m["ap50"] == pytest.approx(1.0) and m["map"] == pytest.approx(1.0)
    # FP ranked above the TP: precision 1/2 at recall 1 -> interpolated AP 0.5 at every threshold
    m = coco_ap([np.array([tp, fp])], [np.array([0.7, 0.8])], gt)
    assert m["ap50"] == pytest.approx(0.5) and m["map"] == pytest.approx(0.5)
    # IoU 0.6 (shifted by 2.5 px of 10): a TP at 0.5 .. 0.6, a miss above -> AP@.5 = 1, mAP = 3/10
    shifted = [12.5, 10.0, 22.5, 20.0]  # intersection 75, union 125
    m = coco_ap([np.array([shifted])], [np.array([0.9])], gt)
    assert m["ap50"] == pytest.approx(1.0) and m["ap75"] == pytest.approx(0.0)
    assert m["map"] == pytest.approx(0.3)  # thresholds 0.50, 0.55, 0.60 of the ten
    # two images, one box each; only one found -> recall 1/2: AP 0.5 (101-point interpolation)
    m = coco_ap(
        [np.array([tp]), np.zeros((0, 4))],
        [np.array([0.9]), np.zeros(0)],
        [np.array([tp]), np.array([fp])],
    )
    assert m["ap50"] == pytest.approx(0.5, abs=0.01)
    # no detections at all: AP 0, not an error; no ground truth at all: undefined (NaN)
    assert coco_ap([np.zeros((0, 4))], [np.zeros(0)], gt)["ap50"] == 0.0
    assert np.isnan(coco_ap([np.array([tp])], [np.array([0.5])], [np.zeros((0, 4))])["ap50"])


def test_centernet_targets_decode_back_to_the_boxes():
    boxes = [torch.tensor([[8.0, 12.0, 28.0, 20.0], [40.0, 36.0, 60.0, 62.0]]), torch.zeros(0, 4)]
    labels = [torch.zeros(2, dtype=torch.long), torch.zeros(0, dtype=torch.long)]
    t = centernet_targets(boxes, labels, 1, (16, 16), 4.0)
    assert t["mask"][0].sum() == 2 and t["mask"][1].sum() == 0
    assert t["heatmap"].max() == 1.0 and t["heatmap"][1].max() == 0.0
    # perfect outputs from the targets: logits with peaks only at centres, size/offset filled in
    logits = torch.where(t["heatmap"] == 1.0, torch.tensor(8.0), torch.tensor(-8.0))
    offset_logit = torch.logit(t["offset"].clamp(1e-4, 1 - 1e-4))
    dets = decode_boxes({"heatmap": logits, "size": t["size"], "offset": offset_logit}, 4.0, min_score=0.5)
    got = dets[0][0][dets[0][0][:, 0].argsort()]
    torch.testing.assert_close(got, boxes[0], atol=1e-2, rtol=0)
    assert len(dets[1][0]) == 0


# ----------------------------------------------------------------------------- data


def test_select_includes_negatives_and_boxes_follow_augmentation(lesions):
    root, df = lesions
    task = get_task("detect")
    sel = task.select(df)
    n_box = sel["bbox"].map(len)
    assert (n_box == 0).any() and (n_box > 0).any()  # negatives kept
    assert get_task("detect", negatives=False).select(df)["bbox"].map(len).min() > 0
    # resize 64 -> 32: boxes halve (edge coordinates scale with the image)
    ds = task.dataset(sel, root, "train", 32, augment=False)
    i = int(np.flatnonzero(n_box.to_numpy() > 0)[0])
    item = ds[i]
    np.testing.assert_allclose(item["boxes"].numpy(), np.asarray(ds.table.iloc[i]["bbox"]) / 2, atol=1e-4)
    assert item["scale"] == 0.5
    # augmentation moves the box with the lesion: it still frames the (identically warped) lesion mask
    aug = task.dataset(sel, root, "train", 64, augment=1.0)
    aug.base.with_masks = True  # the same (seed, epoch, index) draws also warp the mask
    checked = 0
    for j in np.flatnonzero(n_box.to_numpy() > 0)[:10]:
        lesion = aug.base[int(j)]["mask"].numpy() == 1
        boxes = aug[int(j)]["boxes"].numpy()
        if not lesion.any() or len(boxes) != 1:
            continue
        ys, xs = np.nonzero(lesion)
        mask_box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)
        assert np.abs(boxes[0] - mask_box).max() <= 3.0, (boxes[0], mask_box)
        checked += 1
    assert checked >= 5


# ----------------------------------------------------------------------------- training


def test_trains_and_loss_decreases(lesions):
    root, df = lesions
    task = get_task("detect")
    sel = task.select(df)
    model = tiny_task_model(task)
    ds = model.task.dataset(sel[sel["split"] == "train"], root, "train", 64, augment=False)
    fixed = collate([ds[i] for i in range(16)])
    before = eval_loss(model, fixed)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, collate_fn=collate)
    fit(model, loader, epochs=3, lr=2e-3)
    after = eval_loss(model, fixed)
    assert after < 0.7 * before, (before, after)
    preds, rows = predict(model, loader, ds.table)
    # predictions come back in stored-image pixels: the targets equal the manifest boxes
    for tb, (_, r) in zip(preds["true_boxes"], rows.iterrows(), strict=True):
        np.testing.assert_allclose(tb, np.asarray(r["bbox"], dtype=float).reshape(-1, 4), atol=1e-4)
    m = model.task.metrics(preds, rows)
    assert 0.0 <= m["map"] <= m["ap50"] <= 1.0
    figs = model.task.figures(preds, rows, root)
    assert figs and all(src.startswith("data:image/png;base64,") for src, _ in figs)
