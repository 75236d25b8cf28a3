"""Embedding: equals the model's own batched output, is batch-size invariant, and caches safely."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from sonofm.data.dataset import UltrasoundDataset
from sonofm.data.manifest import read_manifest
from sonofm.inference import embed as E
from sonofm.models import load_model


@pytest.fixture(scope="module")
def model(model_a):
    return load_model(model_a)


def test_images_match_direct_encode_and_batch_size(model, sim_data):
    ids, emb = E.embed_images(model, sim_data, split="test", batch_size=64)
    ds = UltrasoundDataset(sim_data, "test", image_size=model.config.image.image_size)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with torch.inference_mode():
        want = model.encode_image(x).numpy()
    assert ids == [ds[i]["id"] for i in range(len(ds))]
    np.testing.assert_allclose(emb, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    _, emb7 = E.embed_images(model, sim_data, split="test", batch_size=7)
    np.testing.assert_allclose(emb7, emb, atol=1e-5)


def test_texts_dedup_and_match_encode(model):
    texts = ["a cyst in the liver.", "normal thyroid.", "a cyst in the liver.", "an echo in the A4C view."]
    out = E.embed_texts(model, texts, batch_size=2)
    tok = model.tokenize(texts)
    with torch.inference_mode():
        want = model.encode_text(tok["input_ids"], tok["attention_mask"]).numpy()
    np.testing.assert_allclose(out, want, atol=1e-5)
    assert np.array_equal(out[0], out[2])


def test_embed_split_cache_roundtrip_and_invalidation(model, model_a, sim_data, tmp_path, monkeypatch):
    df = read_manifest(sim_data)
    root = df.attrs["root"]
    mh = E.model_hash(model, model_a)
    assert mh == E.model_hash(model, model_a) and len(mh) == 64
    first = E.embed_split(model, df, root, "val", model_id=mh, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1
    with open(files[0], "rb") as fh:  # safetensors: 8-byte header length then JSON, never a pickle
        n = int.from_bytes(fh.read(8), "little")
        assert fh.read(n).lstrip().startswith(b"{")

    def boom(*a, **k):
        raise AssertionError("cache miss: the model was called again")

    monkeypatch.setattr(E, "embed_images", boom)
    again = E.embed_split(model, df, root, "val", model_id=mh, cache_dir=tmp_path)
    assert again.ids == first.ids
    np.testing.assert_array_equal(again.image, first.image)
    np.testing.assert_array_equal(again.text, first.text)
    # touching an image changes the data hash -> recomputed (and our stub is hit)
    img = sim_data / df[df["split"] == "val"]["image"].iloc[0]
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        with pytest.raises(AssertionError, match="cache miss"):
            E.embed_split(model, df, root, "val", model_id=mh, cache_dir=tmp_path)
    finally:
        os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))
    # a different model id is a different cache entry
    with pytest.raises(AssertionError, match="cache miss"):
        E.embed_split(model, df, root, "val", model_id="0" * 64, cache_dir=tmp_path)


def test_corrupt_cache_is_recomputed(model, sim_data, tmp_path):
    df = read_manifest(sim_data)
    root = df.attrs["root"]
    first = E.embed_split(model, df, root, "test", model_id="ab" * 32, cache_dir=tmp_path)
    (f,) = tmp_path.glob("*.safetensors")
    f.write_bytes(b"garbage")
    again = E.embed_split(model, df, root, "test", model_id="ab" * 32, cache_dir=tmp_path)
    np.testing.assert_allclose(again.image, first.image, atol=1e-6)


def test_workers_same_result_and_bad_images_skipped(model, sim_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(sim_data, data)
    ids0, emb0 = E.embed_images(model, data, split="train", batch_size=8, workers=0)
    ids1, emb1 = E.embed_images(model, data, split="train", batch_size=8, workers=1)  # > 2 batches
    assert len(ids0) > 16 and ids1 == ids0
    np.testing.assert_array_equal(emb1, emb0)
    df = read_manifest(data)
    bad = df[df["split"] == "train"].iloc[3]
    (data / bad["image"]).write_bytes(b"not a png")
    ids2, emb2 = E.embed_images(model, data, split="train", batch_size=8, workers=1)
    assert ids2 == [i for i in ids0 if i != bad["id"]]
    np.testing.assert_allclose(emb2, emb0[[i != bad["id"] for i in ids0]], atol=1e-6)  # other batches


def test_caption_texts_and_image_only_splits(model, sim_data, tmp_path):
    """A caption-trained model is evaluated on captions; a split nobody reads texts of skips them."""
    from sonofm.reports.captions import caption_for_row

    df = read_manifest(sim_data)
    root = df.attrs["root"]
    rows = df[df["split"] == "test"].reset_index(drop=True)
    captions = E.row_texts(rows, "caption")
    assert captions == [caption_for_row(r) or r["report"] for r in rows.to_dict("records")]
    assert captions != E.row_texts(rows, "report")  # captions are not the reports
    with pytest.raises(ValueError, match="text_field"):
        E.row_texts(rows, "impression")
    emb = E.embed_split(model, df, root, "test", model_id="m", text_field="caption")
    want = E.embed_texts(model, [dict(zip(rows["id"], captions, strict=True))[i] for i in emb.ids])
    np.testing.assert_allclose(emb.text, want, atol=1e-5)
    assert emb.text_field == "caption"
    bare = E.embed_split(model, df, root, "test", model_id="m", texts=False, cache_dir=tmp_path)
    assert bare.text.shape == (len(emb.ids), 0)
    np.testing.assert_allclose(bare.image, emb.image, atol=1e-6)
    # the image-only cache entry is not served for a request that needs texts
    again = E.embed_split(model, df, root, "test", model_id="m", text_field="caption", cache_dir=tmp_path)
    np.testing.assert_allclose(again.text, emb.text, atol=1e-6)


def test_training_text_field(tmp_path):
    import json

    assert E.training_text_field(None) == "report"
    assert E.training_text_field(tmp_path) == "report"  # no training.json: an imported model
    (tmp_path / "training.json").write_text(json.dumps({"config": {"data": {"text": "caption"}}}))
    assert E.training_text_field(tmp_path) == "caption"
    (tmp_path / "training.json").write_text("{not json")
    assert E.training_text_field(tmp_path) == "report"
