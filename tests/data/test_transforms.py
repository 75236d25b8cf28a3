"""One image pipeline: the same PNG gives the same model input in every job that reads it.

Training (`UltrasoundDataset` / `build_item`), evaluation (`eval.embed`'s decode-only loader),
serving (an upload through `decode_upload` + `to_model_input`), the case index's query image,
fine-tuning overlays and the VLM's conversation loader must hand a model identical tensors;
a difference would be a silent train/serve accuracy bug.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from sonofm.data import transforms
from sonofm.data.dataset import UltrasoundDataset

SIZE = 32


def _pictures() -> dict[str, Image.Image]:
    rng = np.random.default_rng(7)
    gray = rng.integers(0, 256, (45, 61), dtype=np.uint8)
    rgb = rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)
    deep = rng.integers(0, 4000, (37, 37), dtype=np.uint16)
    return {
        "gray": Image.fromarray(gray),  # non-square, resized
        "square": Image.fromarray(gray[:SIZE, :SIZE].copy()),  # already the model's size
        "rgb": Image.fromarray(rgb),  # colour -> luminance
        "deep": Image.fromarray(deep),  # 16-bit -> 8-bit by its maximum
    }


@pytest.fixture(scope="module")
def pngs(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, list[str]]:
    root = tmp_path_factory.mktemp("pipeline")
    (root / "images").mkdir()
    names = []
    for name, im in _pictures().items():
        im.save(root / "images" / f"{name}.png")
        names.append(name)
    return root, names


def _train_inputs(root, names) -> list[torch.Tensor]:
    table = pd.DataFrame(
        {
            "id": names,
            "patient_id": names,
            "split": ["test"] * len(names),
            "image": [f"images/{n}.png" for n in names],
            "report": ["Findings: normal."] * len(names),
        }
    )
    ds = UltrasoundDataset(table, split="test", image_size=SIZE, with_masks=False, root=root)
    return [ds[i]["image"] for i in range(len(ds))]


def test_train_and_serve_inputs_are_identical(pngs) -> None:
    from sonofm.serve.analyze import decode_upload, to_model_input

    root, names = pngs
    train = _train_inputs(root, names)
    for name, x_train in zip(names, train, strict=True):
        path = root / "images" / f"{name}.png"
        upload = decode_upload(path.read_bytes(), f"{name}.png", "image/png", deid=None)
        x_serve = to_model_input(upload.image, SIZE)
        assert x_train.shape == x_serve.shape == (1, SIZE, SIZE)
        assert x_train.dtype == x_serve.dtype == torch.float32
        assert torch.equal(x_train, x_serve), name
        assert torch.equal(x_train, transforms.load_model_input(path, SIZE)), name


def test_eval_index_finetune_and_vlm_inputs_match_training(pngs) -> None:
    from sonofm.finetune.segment import load_gray
    from sonofm.inference.embed import _collate_uint8, _DecodeOnly
    from sonofm.serve.index import read_query_image
    from sonofm.vlm.data import load_image

    root, names = pngs
    train = _train_inputs(root, names)
    paths = [root / "images" / f"{n}.png" for n in names]
    ds = _DecodeOnly(paths, SIZE)
    idx, x8, skipped = _collate_uint8([ds[i] for i in range(len(ds))])
    assert idx == list(range(len(names))) and skipped == 0
    x_eval = transforms.unit_from_uint8(x8)
    for i, (name, x_train) in enumerate(zip(names, train, strict=True)):
        assert torch.equal(x_eval[i], x_train), f"eval {name}"
        assert torch.equal(torch.from_numpy(read_query_image(paths[i], SIZE)[0]), x_train), f"index {name}"
        assert torch.equal(load_image(paths[i], SIZE), x_train), f"vlm {name}"
        overlay = load_gray(root, f"images/{name}.png", SIZE)
        assert torch.equal(transforms.unit_tensor(overlay), x_train), f"finetune {name}"


def test_pipeline_steps() -> None:
    gray = np.arange(24 * 30, dtype=np.uint32).reshape(24, 30).astype(np.uint8)
    same = transforms.resize_image(gray[:16, :16], 16)
    assert same.base is gray or np.shares_memory(same, gray)  # already the size: untouched
    out = transforms.resize_image(gray, 16)
    assert out.shape == (16, 16) and out.dtype == np.uint8
    labels = np.zeros((24, 30), np.uint8)
    labels[5:15, 3:20] = 2
    assert set(np.unique(transforms.resize_mask(labels, 16))) <= {0, 2}  # labels never blended
    x = transforms.model_input(gray, 16)
    assert x.shape == (1, 16, 16) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG")
    assert torch.equal(transforms.load_model_input(buf.getvalue(), 16), x)


def test_normalise_is_the_towers_preprocessing() -> None:
    x = torch.rand(2, 1, 8, 8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    y = transforms.normalise(x, mean, std, 3)
    assert y.shape == (2, 3, 8, 8)
    for c in range(3):
        assert torch.allclose(y[:, c], (x[:, 0] - mean[c]) / std[c])
    rgb = torch.rand(2, 3, 8, 8)
    z = transforms.normalise(rgb, [0.5], [0.25], 1)
    assert torch.allclose(z, (rgb.mean(1, keepdim=True) - 0.5) / 0.25)
