"""ONNX export: onnxruntime matches torch within 1e-4 across batch sizes and sequence lengths."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sonofm.serve import export as export_mod
from sonofm.serve.export import ExportCheckError, OnnxDualEncoder, export_onnx
from tests.eval.conftest import TINY

TEXTS = [
    "Hypoechoic solid nodule with irregular margins in the left breast.",
    "Normal liver.",
    "Apical four-chamber view, ejection fraction 55%, no pericardial effusion.",
    "Thyroid: isoechoic nodule, wider than tall.",
    "No hydronephrosis.",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from sonofm.models import build_model, save_model

    torch.manual_seed(1)
    model = build_model(TINY).eval()
    d = tmp_path_factory.mktemp("export-model")
    model_dir = save_model(model, d / "model")
    info = export_onnx(model_dir, d / "onnx")
    return model, model_dir, d / "onnx", info


def test_export_files_and_report(tiny) -> None:
    _, model_dir, out, info = tiny
    names = {p.name for p in out.iterdir()}
    assert {
        "image_encoder.onnx",
        "text_encoder.onnx",
        "export.json",
        "config.json",
        "preprocess.json",
    } <= names
    assert "tokenizer.json" in names or "vocab.txt" in names  # tokenizer files travel with the export
    assert not any(n.endswith(".safetensors") for n in names)  # no torch weights needed to serve
    on_disk = json.loads((out / "export.json").read_text())
    assert on_disk["max_abs_diff"] == info["max_abs_diff"]
    assert set(info["exporter"].values()) <= {"dynamo", "torchscript"}
    assert {"image_batch1", "image_batch5", "text_real_batch1", "text_real_batch5"} <= set(
        info["max_abs_diff"]
    )
    assert max(info["max_abs_diff"].values()) <= 1e-4
    assert info["model_dir"] == str(model_dir.resolve()) and len(info["model_hash"]) == 64
    assert {"torch", "onnxruntime", "onnx"} <= set(info["versions"])
    assert json.loads((out / "preprocess.json").read_text())["image_size"] == TINY["image"]["image_size"]
    assert not list(out.parent.glob(".onnx.tmp-*"))


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_matches_torch_across_batch_sizes(tiny, batch) -> None:
    model, _, out, _ = tiny
    enc = OnnxDualEncoder.load(out)
    s = TINY["image"]["image_size"]
    images = torch.rand(batch, 1, s, s, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref_img = model.encode_image(images)
        ref_raw = model.encode_image(images, normalize=False)
        tok = model.tokenize(TEXTS[:batch])
        ref_txt = model.encode_text(tok["input_ids"], tok["attention_mask"])
    got = enc.encode_image(images)  # torch in -> torch out
    assert isinstance(got, torch.Tensor) and got.shape == (batch, TINY["embed_dim"])
    assert (got - ref_img).abs().max().item() <= 1e-4
    assert (enc.encode_image(images, normalize=False) - ref_raw).abs().max().item() <= 1e-4
    got_np = enc.encode_image(images.numpy())  # numpy in -> numpy out
    assert isinstance(got_np, np.ndarray) and np.abs(got_np - ref_img.numpy()).max() <= 1e-4
    # RGB input to a 1-channel tower is averaged exactly like the torch tower does
    rgb = images.expand(-1, 3, -1, -1).contiguous()
    assert (enc.encode_image(rgb) - ref_img).abs().max().item() <= 1e-4
    # tokenizer of the export dir gives the same ids; text embeddings match
    etok = enc.tokenize(TEXTS[:batch], return_tensors="np")
    np.testing.assert_array_equal(etok["input_ids"], tok["input_ids"].numpy())
    got_txt = enc.encode_text(etok["input_ids"], etok["attention_mask"])
    assert np.abs(got_txt - ref_txt.numpy()).max() <= 1e-4
    assert np.allclose(np.linalg.norm(got_txt, axis=1), 1, atol=1e-5)


def test_onnx_encoder_feeds_embed_images(tiny, tmp_path) -> None:
    """The ONNX model is a drop-in for the shared embedding loop (build_index on onnxruntime)."""
    from sonofm.inference.embed import embed_images
    from sonofm.sim.generator import simulate_dataset

    model, _, out, _ = tiny
    data = simulate_dataset(tmp_path / "d", 12, size=64, seed=2, progress=False, regions="breast")
    ids_t, emb_t = embed_images(model, data, split=None, batch_size=5)
    ids_o, emb_o = embed_images(OnnxDualEncoder.load(out), data, split=None, batch_size=5)
    assert ids_t == ids_o and np.abs(emb_t - emb_o).max() <= 1e-4


def test_attribute_graph_model_exports_without_graph(tmp_path) -> None:
    from sonofm.models import build_model, save_model
    from sonofm.models.attribute_graph import AttributeGraphDualEncoder

    torch.manual_seed(2)
    model = AttributeGraphDualEncoder.from_dual_encoder(build_model(TINY)).eval()
    with torch.no_grad():  # make the fusion non-trivial so "without graph" is really checked
        for p in model.fusion.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model_dir = save_model(model, tmp_path / "graph-model")
    info = export_onnx(model_dir, tmp_path / "graph-onnx")
    assert info["model_type"] == "attribute_graph_dual_encoder"
    assert any("without attribute-graph features" in n for n in info["notes"])
    enc = OnnxDualEncoder.load(tmp_path / "graph-onnx")
    s = TINY["image"]["image_size"]
    images = torch.rand(3, 1, s, s)
    tok = model.tokenize(TEXTS[:3])
    with torch.no_grad():
        ref_img = model.encode_image(images)
        ref_txt = model.encode_text(tok["input_ids"], tok["attention_mask"], attributes=None)
        plain = super(AttributeGraphDualEncoder, model).encode_text(tok["input_ids"], tok["attention_mask"])
    assert (enc.encode_image(images) - ref_img).abs().max().item() <= 1e-4
    got = enc.encode_text(tok["input_ids"], tok["attention_mask"])
    assert (got - ref_txt).abs().max().item() <= 1e-4
    assert (got - plain).abs().max().item() > 1e-3  # the fusion (LN of t) is in the graph, not skipped


def test_check_failure_is_loud_and_writes_nothing(tiny, tmp_path, monkeypatch) -> None:
    _, model_dir, _, _ = tiny
    monkeypatch.setattr(export_mod, "TOLERANCE", -1.0)  # any difference (even 0) now fails
    with pytest.raises(ExportCheckError, match="differs from torch"):
        export_onnx(model_dir, tmp_path / "bad")
    assert list(tmp_path.iterdir()) == []


def test_load_errors(tmp_path) -> None:
    from sonofm.errors import UserError

    with pytest.raises(UserError, match="export.json is missing"):
        OnnxDualEncoder.load(tmp_path)


def test_cli_export(tiny, tmp_path) -> None:
    from typer.testing import CliRunner

    from sonofm.cli import app

    _, model_dir, _, _ = tiny
    out = tmp_path / "e"
    res = CliRunner().invoke(
        app, ["export", "onnx", "--model", str(model_dir), "--out", str(out), "--no-check"]
    )
    assert res.exit_code == 0, res.output
    assert "exported" in res.output and (out / "image_encoder.onnx").is_file()
    assert json.loads((out / "export.json").read_text())["checked"] is False


def test_build_index_on_onnxruntime(tiny, tmp_path) -> None:
    """An index built from the export dir matches one built with torch (same hash, same neighbours)."""
    from sonofm.serve.index import CaseIndex, build_index
    from sonofm.sim.generator import simulate_dataset

    model, model_dir, out, info = tiny
    data = simulate_dataset(tmp_path / "d", 12, size=64, seed=4, progress=False, regions="liver")
    onnx_idx = CaseIndex.load(build_index(out, data, tmp_path / "io"))
    torch_idx = CaseIndex.load(build_index(model_dir, data, tmp_path / "it"))
    assert onnx_idx.info["runtime"] == "onnxruntime" and torch_idx.info["runtime"] == "torch"
    assert onnx_idx.info["model_hash"] == torch_idx.info["model_hash"] == info["model_hash"]
    enc = OnnxDualEncoder.load(out)
    a = onnx_idx.search_text(enc, "liver lesion", 5)[0]
    b = torch_idx.search_text(model, "liver lesion", 5)[0]
    assert [h.id for h in a] == [h.id for h in b]
    assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-4)


def test_export_carries_the_learned_temperature(tiny, tmp_path) -> None:
    """Zero-shot probabilities from an ONNX export use the model's learned logit scale even when
    the source model directory is gone."""
    import shutil

    from sonofm.serve.analyze import model_logit_scale
    from sonofm.serve.export import OnnxDualEncoder

    model, _, out, info = tiny
    assert info["logit_scale"] == pytest.approx(float(model.logit_scale.detach()))
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    onnx = OnnxDualEncoder.load(moved)
    onnx.info["model_dir"] = str(tmp_path / "no-such-model")  # as on a server without the torch weights
    scale = float(model.logit_scale.detach().exp())
    assert model_logit_scale(onnx) == pytest.approx(min(scale, 100.0), rel=1e-6)
