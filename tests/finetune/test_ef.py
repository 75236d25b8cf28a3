"""`ef` fine-tuning task: ED/ES pairing, the 2-frame input path, metrics against scikit-learn, training."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from sonofm.errors import DataError
from sonofm.finetune.ef import EFTask, pair_frames, regression_metrics
from sonofm.finetune.tasks import collate, get_task
from tests.finetune.fitting import eval_loss, fit, predict
from tests.tiny_models import tiny_task_model


@pytest.fixture(scope="module")
def heart(tmp_path_factory):
    from sonofm.data.manifest import read_manifest
    from sonofm.sim.generator import simulate_dataset

    out = tmp_path_factory.mktemp("heart") / "d"
    simulate_dataset(out, 80, regions="heart", size=64, seed=1, progress=False)
    return out, read_manifest(out)


def _row(study, view, frame, ef, rid):
    return {
        "id": rid,
        "patient_id": study.split("-")[0],
        "study_id": study,
        "split": "train",
        "image": f"images/{rid}.png",
        "view": view,
        "frame": frame,
        "region": "heart",
        "measurements": {} if ef is None else {"lvef_pct": ef},
    }


def test_pairing_picks_the_right_rows_and_reports_incomplete_groups(caplog):
    rows = [
        _row("s1", "A4C", "ES", 60.0, "s1-a4c-es"),  # order in the manifest does not matter
        _row("s1", "A4C", "ED", 60.0, "s1-a4c-ed"),
        _row("s1", "A2C", "ED", 60.0, "s1-a2c-ed"),  # ES missing -> skipped
        _row("s2", "A4C", "ED", 35.0, "s2-a4c-ed"),
        _row("s2", "A4C", "ES", 35.0, "s2-a4c-es"),
        _row("s2", "A2C", "ED", 35.0, "s2-a2c-ed"),  # two ED rows -> skipped
        _row("s2", "A2C", "ED", 35.0, "s2-a2c-ed2"),
        _row("s2", "A2C", "ES", 35.0, "s2-a2c-es"),
        _row("s3", "A4C", "ED", None, "s3-a4c-ed"),  # no EF -> skipped
        _row("s3", "A4C", "ES", None, "s3-a4c-es"),
        _row("s4", "A4C", "ED", 50.0, "s4-a4c-ed"),  # ED/ES disagree -> skipped
        _row("s4", "A4C", "ES", 51.0, "s4-a4c-es"),
        {**_row("s5", None, None, None, "breast-1"), "region": "breast"},  # not echo: ignored
    ]
    df = pd.DataFrame(rows)
    pairs, skipped = pair_frames(df)
    assert list(pairs["id"]) == ["s1-a4c-ed", "s2-a4c-ed"]
    assert list(pairs["id_es"]) == ["s1-a4c-es", "s2-a4c-es"]
    assert list(pairs["image_es"]) == ["images/s1-a4c-es.png", "images/s2-a4c-es.png"]
    assert list(pairs["target"]) == [60.0, 35.0]
    why = {(s["study_id"], s["view"]): s["reason"] for s in skipped}
    assert set(why) == {("s1", "A2C"), ("s2", "A2C"), ("s3", "A4C"), ("s4", "A4C")}
    assert "[ED]" in why[("s1", "A2C")] and "[ED,ED,ES]" in why[("s2", "A2C")]
    assert "lvef_pct" in why[("s3", "A4C")] and "disagree" in why[("s4", "A4C")]

    task = EFTask()
    with caplog.at_level(logging.WARNING, logger="sonofm.finetune.ef"):
        sel = task.select(df)  # reported, not raised
    assert len(sel) == 2 and len(task.skipped) == 4
    assert "skipped 4 study/view groups" in caplog.text

    only_views = EFTask(views=["A2C"])
    with pytest.raises(DataError, match="no complete ED/ES pairs"):
        only_views.select(df)


def test_metrics_match_scikit_learn():
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(0)
    y = rng.uniform(20, 75, 50)
    p = y + rng.normal(0, 4, 50)
    m = regression_metrics(y, p)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, p)))
    assert m["r2"] == pytest.approx(r2_score(y, p))
    assert m["mae"] == pytest.approx(np.mean(np.abs(y - p)))  # and the definition itself


def test_pair_item_is_ed_then_es_with_identical_augmentation(heart):
    from sonofm.data.dataset import read_grayscale

    root, df = heart
    task = get_task("ef")
    sel = task.select(df)
    ds = task.dataset(sel, root, "train", 64, augment=False)
    item = ds[0]
    row = ds.table.iloc[0]
    assert item["image"].shape == (2, 64, 64)
    ed = read_grayscale(root / row["image"]).astype(np.float32) / 255
    es = read_grayscale(root / row["image_es"]).astype(np.float32) / 255
    np.testing.assert_allclose(item["image"][0].numpy(), ed, atol=1e-6)
    np.testing.assert_allclose(item["image"][1].numpy(), es, atol=1e-6)
    assert item["ef"] == pytest.approx(row["measurements"]["lvef_pct"])
    # augmentation: a pair of two identical frames must stay identical after augmentation (the
    # same random draws for both frames), and differ from the un-augmented image
    same = sel.assign(image_es=sel["image"])
    aug = task.dataset(same, root, "train", 64, augment=1.0)
    changed = 0
    for i in range(6):
        a = aug[i]["image"]
        assert torch.equal(a[0], a[1])
        changed += not torch.equal(a[0], ds[i]["image"][0])
    assert changed >= 3


def test_prepare_standardises_with_training_targets(heart):
    _, df = heart
    task = get_task("ef")
    train = task.select(df)
    task.prepare(train)
    assert task.options["target_mean"] == pytest.approx(train["target"].mean(), abs=1e-3)
    assert EFTask(**json.loads(json.dumps(task.options))).target_std == task.target_std


def test_two_frame_model_trains_and_loss_decreases(heart):
    root, df = heart
    task = get_task("ef")
    sel = task.select(df)
    train = sel[sel["split"] == "train"]
    task.prepare(train)
    model = tiny_task_model(task)
    assert model.input_frames == 2
    ds = model.task.dataset(train, root, "train", 64, augment=False)
    fixed = collate([ds[i] for i in range(min(24, len(ds)))])
    # the tower sees each frame on its own: swapping ED and ES must change the prediction
    model.eval()
    with torch.no_grad():
        a = model(fixed["image"][:4])
        b = model(fixed["image"][:4].flip(1))
    assert a["ef"].shape == (4,) and not torch.allclose(a["ef"], b["ef"])
    assert a["lv_logits"].shape == (4, 2, 16, 16)  # per frame, at stride 4
    # the LV masks of both frames come with the pair (simulated echo has them)
    assert bool(fixed["has_mask"].all()) and fixed["lv_mask"].shape == (24, 2, 64, 64)
    assert 0 < float(fixed["lv_mask"].mean()) < 0.5

    before = eval_loss(model, fixed)
    fit(model, [fixed], epochs=40, lr=1e-3)  # fit a fixed set of pairs: the loss on them must fall
    after = eval_loss(model, fixed)
    assert after < 0.8 * before, (before, after)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, collate_fn=collate)
    preds, rows = predict(model, loader, ds.table)
    m = model.task.metrics(preds, rows)
    assert {"mae", "rmse", "r2", "mae_study"} <= set(m)
    assert m["mae"] == pytest.approx(np.mean(np.abs(preds["pred"] - rows["target"].to_numpy())), rel=1e-6)
    for name, (fn, arrays, higher) in model.task.metric_fns(preds, rows).items():
        assert fn(*arrays) == pytest.approx(m[name]) and higher == (name == "r2")
    figs = model.task.figures(preds, rows, root)
    assert len(figs) == 1 and figs[0][0].startswith("data:image/png;base64,")
