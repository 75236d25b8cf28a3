"""Case index: exact search vs numpy, ANN recall vs exact, metadata alignment, atomic builds, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sonofm.errors import UserError
from sonofm.serve import index as index_mod
from sonofm.serve import index_build
from sonofm.serve.index import CaseIndex, build_faiss, build_index, normalize_rows, read_query_image
from tests.eval.conftest import TINY


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    from sonofm.sim.generator import simulate_dataset

    out = tmp_path_factory.mktemp("serve-index") / "data"
    simulate_dataset(out, 48, size=64, seed=5, progress=False, regions="breast,liver,thyroid")
    return out


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    from sonofm.models import build_model, save_model

    torch.manual_seed(0)
    return save_model(build_model(TINY).eval(), tmp_path_factory.mktemp("serve-model") / "model")


@pytest.fixture(scope="module")
def built(sim, tiny_model_dir, tmp_path_factory) -> Path:
    return build_index(tiny_model_dir, sim, tmp_path_factory.mktemp("serve-idx") / "idx", batch_size=16)


def _clustered(n: int, d: int, n_clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, d)).astype(np.float32)
    x = centers[rng.integers(0, n_clusters, n)] + 0.35 * rng.standard_normal((n, d)).astype(np.float32)
    return normalize_rows(x)


def _numpy_topk(db: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = normalize_rows(q) @ normalize_rows(db).T
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(s, idx, axis=1)


def _faiss_case_index(vectors: np.ndarray, kind: str, tmp_path: Path) -> CaseIndex:
    index, params = build_faiss(vectors, kind)
    n = len(vectors)
    meta = pd.DataFrame(
        {
            "id": [f"c{i}" for i in range(n)],
            "image": [f"img/{i}.png" for i in range(n)],
            "thumb": [f"thumbs/c{i}.jpg" for i in range(n)],
            "report": [f"report {i}" for i in range(n)],
            "region": ["breast"] * n,
            "organ": ["breast"] * n,
            "diagnosis": [None] * n,
            "view": [None] * n,
            "patient_id": [f"p{i // 4}" for i in range(n)],  # 4 cases per patient
        }
    )
    info = {"format": index_mod.FORMAT, "dim": vectors.shape[1], **params}
    return CaseIndex(path=tmp_path, index=index, meta=meta, info=info)


# ---------------------------------------------------------------- FAISS correctness


def test_flat_search_equals_numpy_topk(tmp_path) -> None:
    rng = np.random.default_rng(0)
    db = rng.standard_normal((3000, 24)).astype(np.float32)
    q = rng.standard_normal((25, 24)).astype(np.float32)  # unnormalised on purpose: search normalises
    ci = _faiss_case_index(db, "auto", tmp_path)
    assert ci.info["kind"] == "flat"
    hits = ci.search(q, 10)
    ref_idx, ref_s = _numpy_topk(db, q, 10)
    got_idx = np.array([[int(h.id[1:]) for h in row] for row in hits])
    got_s = np.array([[h.score for h in row] for row in hits])
    np.testing.assert_array_equal(got_idx, ref_idx)
    np.testing.assert_allclose(got_s, ref_s, atol=1e-5)
    assert [h.rank for h in hits[0]] == list(range(10))
    # torch tensors and single vectors are accepted too
    assert [h.id for h in ci.search(torch.from_numpy(q[:1]), 3)[0]] == [h.id for h in hits[0][:3]]
    assert [h.id for h in ci.search(q[0], 3)[0]] == [h.id for h in hits[0][:3]]


@pytest.mark.parametrize(("kind", "knob"), [("ivf", {"nprobe": 16}), ("hnsw", {"ef_search": 128})])
def test_ann_recall_at_10_vs_flat(kind, knob, tmp_path) -> None:
    db = _clustered(20_000, 32, 200, seed=1)
    rng = np.random.default_rng(2)
    q = normalize_rows(db[rng.integers(0, len(db), 200)] + 0.2 * rng.standard_normal((200, 32)))
    exact = _faiss_case_index(db, "flat", tmp_path).search(q, 10)
    ann = _faiss_case_index(db, kind, tmp_path)
    assert ann.info["kind"] == kind
    ann.set_search_params(**knob)
    approx = ann.search(q, 10)
    recall = np.mean(
        [len({h.id for h in a} & {h.id for h in e}) / 10 for a, e in zip(approx, exact, strict=True)]
    )
    assert recall >= 0.95, f"{kind} recall@10 = {recall:.3f}"
    if kind == "ivf":
        # 4 sqrt(n) = 566 lists, capped at n // 39 = 512 so k-means has 39 points per centroid
        assert ann.info["nlist"] == min(round(4 * np.sqrt(20_000)), 20_000 // 39) == 512
        assert index_mod.default_nlist(1_000_000) == 4000


def test_auto_kind_switches_at_threshold() -> None:
    assert index_mod.resolve_kind("auto", index_mod.AUTO_FLAT_MAX - 1) == "flat"
    assert index_mod.resolve_kind("auto", index_mod.AUTO_FLAT_MAX) == "ivf"
    with pytest.raises(UserError, match="not one of"):
        index_mod.resolve_kind("lsh", 10)


def test_exclusion_of_own_id_and_patient(tmp_path) -> None:
    rng = np.random.default_rng(3)
    db = rng.standard_normal((400, 16)).astype(np.float32)
    ci = _faiss_case_index(db, "flat", tmp_path)
    q = db[[8, 9]]
    plain = ci.search(q, 5)
    assert plain[0][0].id == "c8" and plain[1][0].id == "c9"
    no_self = ci.search(q, 5, exclude_ids=["c8", "c9"])
    assert [h.id for h in no_self[0]] == [h.id for h in plain[0][1:]] + [no_self[0][-1].id]
    assert all(h.id != "c8" for h in no_self[0]) and len(no_self[0]) == 5
    no_patient = ci.search(q, 5, exclude_patients=["p2", None])
    assert len(no_patient[0]) == 5 and all(h.patient_id != "p2" for h in no_patient[0])
    assert [h.id for h in no_patient[1]] == [h.id for h in plain[1]]  # None excludes nothing
    ref_idx, _ = _numpy_topk(db[[i for i in range(400) if i // 4 != 2]], q[:1], 5)
    keep = [i for i in range(400) if i // 4 != 2]
    assert [h.id for h in no_patient[0]] == [f"c{keep[j]}" for j in ref_idx[0]]


def test_dim_mismatch_is_a_clear_error(tmp_path) -> None:
    ci = _faiss_case_index(np.eye(8, dtype=np.float32), "flat", tmp_path)
    with pytest.raises(UserError, match="dim 8"):
        ci.search(np.ones((2, 16), np.float32), 3)

    class Fake:
        class config:  # noqa: N801 - mimics model.config
            embed_dim = 16

    with pytest.raises(UserError, match="model embeds to dim 16"):
        ci.check_model(Fake())


def test_load_with_other_model_dims_fails(built) -> None:
    class Other:
        class config:  # noqa: N801 - mimics model.config
            embed_dim = TINY["embed_dim"] * 2

    with pytest.raises(UserError, match=f"holds dim {TINY['embed_dim']} vectors"):
        CaseIndex.load(built, model=Other())


# ---------------------------------------------------------------- build from a model + dataset


def test_build_round_trip_and_files(built, sim, tiny_model_dir) -> None:
    from sonofm.data.manifest import read_manifest

    ci = CaseIndex.load(built)
    info = json.loads((built / "index.json").read_text())
    df = read_manifest(sim)
    assert info["kind"] == "flat" and info["metric"] == "ip" and info["dim"] == TINY["embed_dim"]
    assert info["count"] == len(df) == len(ci) and info["model_dir"] == str(tiny_model_dir.resolve())
    assert len(info["model_hash"]) == 64 and info["data_card"]["num_images"] == len(df)
    assert set(ci.meta["id"]) == set(df["id"])
    for thumb in ci.meta["thumb"]:
        from PIL import Image

        with Image.open(built / thumb) as im:
            assert im.format == "JPEG" and max(im.size) <= index_mod.THUMB_SIZE
    # image paths are relative to the index dir and point at the dataset's files
    first = ci.meta.iloc[0]
    assert not Path(first["image"]).is_absolute() and (built / first["image"]).resolve().is_file()
    assert not list(built.parent.glob(".idx.tmp-*"))


def test_metadata_aligned_with_vectors(built, sim, tiny_model_dir) -> None:
    """Re-embed each indexed image independently: the index returns that very case first."""
    from sonofm.data.manifest import read_manifest
    from sonofm.models import load_model

    ci = CaseIndex.load(built)
    model = load_model(tiny_model_dir)
    df = read_manifest(sim).set_index("id")
    size = int(model.config.image.image_size)
    rows = ci.meta.sample(12, random_state=0)
    images = np.concatenate([read_query_image(built / p, size) for p in rows["image"]])
    hits = ci.search_images(model, torch.from_numpy(images), 3)
    for (_, row), hs in zip(rows.iterrows(), hits, strict=True):
        assert hs[0].id == row["id"] and hs[0].score == pytest.approx(1.0, abs=1e-5)
        assert hs[0].report == df.loc[row["id"], "report"] and hs[0].region == df.loc[row["id"], "region"]
        assert hs[0].patient_id == df.loc[row["id"], "patient_id"]
    # text queries go through the same model
    t = ci.search_text(model, ["hypoechoic breast mass", "normal liver"], 4)
    assert [len(x) for x in t] == [4, 4] and t[0][0].score >= t[0][-1].score


def test_interrupted_build_leaves_no_partial_index(sim, tiny_model_dir, tmp_path, monkeypatch) -> None:
    out = tmp_path / "idx"
    calls = {"n": 0}
    real = index_build._write_thumb

    def flaky(src, dst):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # a kill mid-build
        return real(src, dst)

    monkeypatch.setattr(index_build, "_write_thumb", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_index(tiny_model_dir, sim, out, split="train")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # a previous index at OUT survives a failed rebuild untouched
    monkeypatch.setattr(index_build, "_write_thumb", real)
    build_index(tiny_model_dir, sim, out, split="val")
    before = (out / "index.json").read_bytes()
    calls["n"] = 0
    monkeypatch.setattr(index_build, "_write_thumb", flaky)
    with pytest.raises(KeyboardInterrupt):  # another split into OUT needs --overwrite
        build_index(tiny_model_dir, sim, out, split="train", overwrite=True)
    assert (out / "index.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_bad_inputs(sim, tiny_model_dir, tmp_path) -> None:
    with pytest.raises(UserError, match="not one of"):
        build_index(tiny_model_dir, sim, tmp_path / "x", kind="annoy")
    with pytest.raises(UserError, match="split"):
        build_index(tiny_model_dir, sim, tmp_path / "x", split="holdout")
    with pytest.raises(UserError, match="index.faiss is missing"):
        (tmp_path / "empty").mkdir()
        CaseIndex.load(tmp_path / "empty")
    with pytest.raises(UserError, match="does not exist"):
        CaseIndex.load(tmp_path / "nope")


def test_cli_build_and_search(sim, tiny_model_dir, tmp_path) -> None:
    from typer.testing import CliRunner

    from sonofm.cli import app

    out = tmp_path / "cli-idx"
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "index",
            "build",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(sim),
            "--out",
            str(out),
            "--split",
            "train",
            "--batch-size",
            "8",
        ],
    )
    assert res.exit_code == 0, res.output
    ci = CaseIndex.load(out)
    assert ci.info["split"] == "train" and len(ci) > 0
    img = ci.meta.iloc[3]
    res = runner.invoke(
        app, ["index", "search", "--index", str(out), "--image", str(out / img["image"]), "-k", "3", "--json"]
    )
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)
    assert len(hits) == 3 and hits[0]["id"] == img["id"] and hits[0]["score"] == pytest.approx(1, abs=1e-5)
    res = runner.invoke(app, ["index", "search", "--index", str(out), "--text", "thyroid nodule", "-k", "2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["index", "search", "--index", str(out)])
    assert isinstance(res.exception, UserError)
