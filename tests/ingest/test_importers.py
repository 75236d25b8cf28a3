"""Each importer on a tiny fixture built here in exactly the published layout."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from sonofm.data.manifest import load_dataset
from sonofm.data.pngio import read_png
from sonofm.errors import UserError


def _img(path, h=48, w=64, seed=0, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(20, 200, (h, w), dtype=np.uint8)
    Image.fromarray(arr).convert("RGB").save(path, format=fmt)
    return arr


def _mask(path, box, h=48, w=64, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 255
    Image.fromarray(m).save(path, format=fmt)


def test_busi(tmp_path):
    from sonofm.data.importers.busi import import_busi

    root = tmp_path / "Dataset_BUSI_with_GT"
    _img(root / "benign" / "benign (1).png")
    _mask(root / "benign" / "benign (1)_mask.png", (10, 10, 20, 20))
    _mask(root / "benign" / "benign (1)_mask_1.png", (40, 30, 50, 40))  # second lesion
    _img(root / "malignant" / "malignant (1).png", seed=1)
    _mask(root / "malignant" / "malignant (1)_mask.png", (5, 5, 30, 25))
    _img(root / "normal" / "normal (1).png", seed=2)
    _mask(root / "normal" / "normal (1)_mask.png", (0, 0, 0, 0))
    _img(root / "malignant" / "malignant (2).png", seed=3)  # no mask -> skipped
    res = import_busi(tmp_path, tmp_path / "out")
    assert res.images == 3 and res.skipped == {"missing_mask": 1}
    df = load_dataset(tmp_path / "out", check_files=True).manifest.set_index("id")
    ben = df.loc["busi_benign_benign_1"]
    assert ben["malignant"] is False and ben["diagnosis"] == "mass" and ben["region"] == "breast"
    assert sorted(map(tuple, ben["bbox"])) == [(10, 10, 20, 20), (40, 30, 50, 40)]
    mask = read_png(tmp_path / "out" / ben["mask"])
    assert set(np.unique(mask)) == {0, 1} and (mask == 1).sum() == 200
    assert df.loc["busi_malignant_malignant_1"]["malignant"] is True
    assert df.loc["busi_normal_normal_1"]["diagnosis"] == "normal"


def test_tn3k_and_ddti(tmp_path):
    from sonofm.data.importers.thyroid import import_thyroid

    tn = tmp_path / "tn3k"
    for part in ("trainval", "test"):
        for k in range(2):
            _img(tn / f"{part}-image" / f"{k:04d}.jpg", seed=k, fmt="JPEG")
            _mask(tn / f"{part}-mask" / f"{k:04d}.jpg", (8, 8, 30, 24), fmt="JPEG")
    res = import_thyroid(tn, tmp_path / "o1")
    df = load_dataset(tmp_path / "o1").manifest
    assert res.images == 4 and (df["split"] == "test").sum() == 2
    assert set(df["organ"]) == {"thyroid"} and set(df["source"]) == {"tn3k"}
    box = df.iloc[0]["bbox"][0]  # JPEG noise must not move the nodule box by more than a pixel
    assert np.allclose(box, [8, 8, 30, 24], atol=1)

    dd = tmp_path / "ddti"
    _img(dd / "p_image" / "1.PNG")
    _mask(dd / "p_mask" / "1.PNG", (3, 3, 9, 9))
    _img(dd / "p_image" / "2.PNG", seed=4)  # no mask
    res = import_thyroid(dd, tmp_path / "o2")
    assert res.images == 1 and res.skipped == {"missing_mask": 1}
    with pytest.raises(UserError, match="not a TN3K"):
        import_thyroid(tmp_path / "o2" / "images", tmp_path / "o3")


def test_ultrabench(tmp_path):
    from sonofm.data.importers.ultrabench import import_ultrabench

    root = tmp_path / "open_kidney_v1.0"
    for split, n in (("train", 2), ("validation", 1), ("test", 1)):
        samples = []
        for k in range(n):
            name = f"{split}{k}.png"
            _img(root / "images" / name, seed=k)
            _mask(root / "masks" / "scan" / name, (0, 0, 64, 48))
            _mask(root / "masks" / "capsule" / name, (10, 10, 40, 30))
            samples.append({"image": f"images/{name}", "scan_mask": f"masks/scan/{name}",
                            "capsule_mask": f"masks/capsule/{name}", "label": 0})
        samples.append({"scan_mask": "x"})  # broken record
        fname = "validation.json" if split == "validation" else f"{split}.json"
        (root / fname).write_text(json.dumps(samples))
    res = import_ultrabench(root, tmp_path / "out")
    df = load_dataset(tmp_path / "out").manifest
    assert res.images == 4 and res.skipped == {"bad_record": 3}
    assert df["split"].value_counts().to_dict() == {"train": 2, "val": 1, "test": 1}
    assert set(df["organ"]) == {"kidney"}
    m = read_png(tmp_path / "out" / df.iloc[0]["mask"])
    assert (m == 2).sum() == 600  # an organ mask gets the "organ" label


def test_echovlm_sharegpt(tmp_path):
    from sonofm.data.importers.sharegpt import import_sharegpt

    _img(tmp_path / "imgs" / "a.jpg", fmt="JPEG")
    _img(tmp_path / "imgs" / "b.jpg", seed=1, fmt="JPEG")
    data = [
        {"id": "s1", "image": ["imgs/a.jpg", "imgs/b.jpg"], "conversations": [
            {"from": "human", "value": "<image>\nDescribe the thyroid."},
            {"from": "gpt", "value": "Thyroid: hypoechoic solid nodule 8 x 6 mm with microcalcifications."}]},
        {"id": "s2", "image": "imgs/missing.jpg", "messages": [
            {"role": "user", "content": "<image>"}, {"role": "assistant", "content": "Normal liver."}]},
        {"id": "s3", "conversations": []},
    ]
    (tmp_path / "echovlm.json").write_text(json.dumps(data))
    res = import_sharegpt(tmp_path / "echovlm.json", tmp_path / "out")
    df = load_dataset(tmp_path / "out").manifest
    assert res.images == 2 and res.skipped == {"bad_record": 1, "unreadable": 1}
    assert set(df["study_id"]) == {"s1"} and set(df["organ"]) == {"thyroid"}
    assert "microcalcifications" in df.iloc[0]["attributes"]["internal"]
    assert df.iloc[0]["measurements"]["lesion_width_mm"] == pytest.approx(8.0)


def test_us365k(tmp_path):
    from sonofm.data.importers.us365k import import_us365k

    root = tmp_path / "US-365K"
    _img(root / "images" / "liver" / "001.jpg", fmt="JPEG")
    _img(root / "images" / "breast" / "002.jpg", seed=1, fmt="JPEG")
    (root / "train.json").write_text(json.dumps([
        {"image": "images/liver/001.jpg", "caption": "Liver: hyperechoic mass.", "patient_id": "p1"},
        {"image": "images/breast/002.jpg", "caption": "Breast: irregular hypoechoic mass."},
    ]))
    (root / "captions.jsonl").write_text(
        json.dumps({"image_path": "images/liver/001.jpg", "text": "Posterior acoustic enhancement."}) + "\n"
        + json.dumps({"image_path": "images/none.jpg", "text": "x"}) + "\n"
    )
    res = import_us365k(root, tmp_path / "out")
    df = load_dataset(tmp_path / "out").manifest.set_index("id")
    assert res.images == 2 and res.skipped == {"unreadable": 1}
    liver = df.loc["us365k_images_liver_001"]
    assert liver["patient_id"] == "p1" and liver["organ"] == "liver"
    assert "Posterior acoustic enhancement." in liver["report"]  # captions of both files joined
    assert df.loc["us365k_images_breast_002"]["organ"] == "breast"


def test_echonet_tracing_mask():
    from sonofm.data.importers.echo import tracing_mask

    # long axis, then chords whose ends trace the two walls of a 20-px-wide box
    rows = [(50, 10, 50, 90)] + [(40, y, 60, y) for y in range(10, 91, 10)]
    m = tracing_mask(rows, (112, 112))
    assert set(np.unique(m)) == {0, 3}
    assert abs(int((m == 3).sum()) - 21 * 81) < 60


@pytest.mark.skipif(importlib.util.find_spec("nibabel") is not None, reason="nibabel installed")
def test_camus_without_nibabel_names_the_package(tmp_path):
    from sonofm.data.importers.echo import import_camus

    with pytest.raises(UserError, match="nibabel"):
        import_camus(tmp_path, tmp_path / "out")


@pytest.mark.skipif(importlib.util.find_spec("av") is not None, reason="PyAV installed")
def test_echonet_without_pyav_names_the_package(tmp_path):
    from sonofm.data.importers.echo import import_echonet

    (tmp_path / "FileList.csv").write_text("FileName,EF,EDV,ESV,Split\nx,55,100,45,TRAIN\n")
    (tmp_path / "VolumeTracings.csv").write_text("FileName,X1,Y1,X2,Y2,Frame\n")
    with pytest.raises(UserError, match="'av'"):
        import_echonet(tmp_path, tmp_path / "out")
