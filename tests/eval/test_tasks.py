"""Tasks on hand-built embeddings (exact expectations) and on a real tiny model (prompt maths)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

from sonofm import taxonomy as tx
from sonofm.data.manifest import read_manifest
from sonofm.errors import UserError
from sonofm.eval.tasks import (
    EvalContext,
    KNNProbe,
    LinearProbe,
    RegressionProbe,
    Retrieval,
    ZeroShotClassification,
    ZeroShotFindings,
    build_task,
)
from sonofm.eval.tasks.probes import knn_scores, sample_patients
from sonofm.inference.embed import SplitEmbeddings, embed_split
from sonofm.models import load_model
from sonofm.reports import prompts as P


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _ctx(df, emb, model=None, n_boot=50):
    return EvalContext(model=model, df=df, root=None, embeddings=emb, n_boot=n_boot, seed=0)


def _synthetic(n_per=(40, 20, 20), n_classes=3, dim=8, seed=0, noise=0.1):
    """Separable clusters per class; rows in train/val/test; 2 images per patient."""
    rng = np.random.default_rng(seed)
    centers = _unit(rng.normal(size=(n_classes, dim)))
    rows, emb = [], {}
    for split, n in zip(("train", "val", "test"), n_per, strict=True):
        y = np.arange(n) % n_classes
        x = _unit(centers[y] + noise * rng.normal(size=(n, dim))).astype(np.float32)
        ids = [f"{split}{i}" for i in range(n)]
        for i in range(n):
            rows.append(
                {
                    "id": ids[i],
                    "image": f"images/{ids[i]}.png",
                    "split": split,
                    "patient_id": f"{split}p{i // 2}",
                    "study_id": f"{split}s{i // 2}",
                    "region": ["liver", "thyroid", "heart"][y[i]],
                    "diagnosis": "cyst",
                    "report": f"report {split} {i // 2}",
                    "measurements": {"lvef_pct": float(40 + 10 * x[i, 0])},
                }
            )
        emb[split] = SplitEmbeddings(ids, x, x.copy())
    return pd.DataFrame(rows), emb


def test_linear_probe_separable_and_kshot():
    df, emb = _synthetic()
    res = LinearProbe(target="region", shots=[0.1, 0.5]).run(_ctx(df, emb))
    assert res.skipped is None
    assert res.metrics["acc1"].value == 1.0 and res.metrics["macro_auc"].value == 1.0
    assert res.info["C"] in LinearProbe().cs
    assert res.info["n_train"] == 60  # retrained on train + val
    assert "10pct/acc1" in res.metrics and "50pct/acc1" in res.metrics
    assert res.info["shots/0.5"]["n_train"] >= 20
    assert 0 <= res.metrics["ece"].value <= 1


def test_sample_patients_whole_patients_and_fraction():
    pids = np.repeat([f"p{i}" for i in range(50)], 2)
    labels = np.tile(["a", "b"], 50)
    idx = sample_patients(pids, labels, 0.1, seed=0)
    assert len(idx) >= 10
    chosen = set(pids[idx])
    assert all(set(np.flatnonzero(pids == p)) <= set(idx) for p in chosen)  # whole patients only
    assert np.array_equal(idx, sample_patients(pids, labels, 0.1, seed=0))
    assert not np.array_equal(idx, sample_patients(pids, labels, 0.1, seed=1))


def test_knn_matches_brute_force():
    rng = np.random.default_rng(0)
    tr, te = _unit(rng.normal(size=(30, 5))), _unit(rng.normal(size=(7, 5)))
    ytr = rng.integers(0, 3, 30)
    got = knn_scores(tr, ytr, te, 3, k=5, temperature=0.1)
    for i in range(7):
        s = tr @ te[i]
        nn = np.argsort(-s)[:5]
        v = np.zeros(3)
        for j in nn:
            v[ytr[j]] += np.exp(s[j] / 0.1)
        np.testing.assert_allclose(got[i], v / v.sum(), rtol=1e-6)
    df, emb = _synthetic()
    res = KNNProbe(target="region", k=5).run(_ctx(df, emb))
    assert res.metrics["acc1"].value == 1.0


def test_regression_probe_linear_target():
    df, emb = _synthetic(noise=0.5)
    res = RegressionProbe(targets=["lvef_pct", "tapse_mm"]).run(_ctx(df, emb))
    assert res.metrics["lvef_pct/r2"].value > 0.99
    assert res.metrics["lvef_pct/mae"].value < 0.2
    assert "skipped" in str(res.info["tapse_mm"])


def test_retrieval_exact_and_multi_positive():
    df, emb = _synthetic(n_per=(4, 4, 12))
    test = emb["test"]
    # text embedding == image embedding of the first image of each report -> every query's positive
    # (its own report) is the best match for image->text when images of a report are identical
    test.image[1::2] = test.image[0::2]
    test.text[:] = test.image
    res = Retrieval(split="test", ks=[1, 5]).run(_ctx(df, emb))
    assert res.metrics["image_to_text/R@1"].value == 1.0
    assert res.metrics["text_to_image/R@1"].value == 1.0
    assert res.metrics["image_to_text/median_rank"].value == 1.0
    assert res.info["n_texts"] == 6 and res.info["n_images"] == 12
    assert "subset_note" in res.info
    by_study = Retrieval(split="test", positives="study", ks=[1]).run(_ctx(df, emb))
    assert by_study.metrics["image_to_text/R@1"].value == 1.0
    with pytest.raises(ValueError):
        Retrieval(positives="nonsense")


def test_retrieval_subset_is_fixed():
    df, emb = _synthetic(n_per=(4, 4, 30))
    a = Retrieval(subset=10).run(_ctx(df, emb))
    b = Retrieval(subset=10).run(_ctx(df, emb))
    assert a.info["subset10/n_images"] == 10
    assert a.metrics["subset10/image_to_text/R@1"] == b.metrics["subset10/image_to_text/R@1"]


def test_build_task_errors():
    with pytest.raises(UserError, match="unknown task type"):
        build_task({"type": "nope"})
    with pytest.raises(UserError, match="bad options"):
        build_task({"type": "retrieval", "bogus": 1})


@pytest.fixture(scope="module")
def real_ctx(model_a, sim_data):
    model = load_model(model_a)
    df = read_manifest(sim_data)
    emb = {s: embed_split(model, df, df.attrs["root"], s, model_id="x") for s in ("train", "val", "test")}
    return EvalContext(model=model, df=df, root=sim_data, embeddings=emb, n_boot=30, seed=0)


def test_zeroshot_classification_prompt_ensemble_math(real_ctx):
    ctx = real_ctx
    res = ZeroShotClassification(target="region").run(ctx)
    classes = res.plots["classes"]
    # independent computation: per organ of the region, the mean of its normalised prompt
    # embeddings, renormalised; a region's logit is its best organ's
    img = ctx.embeddings["test"].image
    cols = []
    for c in classes:
        best = None
        ensembles = [P.organ_prompts(o.id) for o in tx.organs_in(c)]
        if c == "heart":  # echo views are heart images
            ensembles += [P.view_prompts(v) for v in tx.VIEWS]
        for prompts in ensembles:
            tok = ctx.model.tokenize(prompts)
            with torch.inference_mode():
                e = ctx.model.encode_text(tok["input_ids"], tok["attention_mask"]).numpy()
            m = e.mean(0)
            s = img @ (m / np.linalg.norm(m))
            best = s if best is None else np.maximum(best, s)
        cols.append(best)
    logits = ctx.logit_scale * np.stack(cols, axis=1)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(res.plots["probs"], p, atol=1e-5)
    y = res.plots["y"]
    assert res.metrics["acc1"].value == pytest.approx(accuracy_score(y, p.argmax(1)))
    assert ctx.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)
    assert set(classes) == set(ctx.df["region"])  # classes come from the whole manifest


def test_zeroshot_findings_echo_labels_and_pair_softmax(real_ctx):
    res = ZeroShotFindings(tags=False, split="train").run(real_ctx)  # train: 3 echo patients
    echo = [f for f in res.info["findings"] if f.startswith("echo/")]
    assert echo, res.skipped
    y, p = res.plots["roc"][echo[0]]
    assert res.metrics[f"auc/{echo[0]}"].value == pytest.approx(roc_auc_score(y, p))
    assert ((p > 0) & (p < 1)).all()
    assert "mean_auc/echo" in res.metrics and "ece/echo" in res.metrics


def test_view_task_only_uses_echo_rows(real_ctx):
    res = ZeroShotClassification(target="view").run(real_ctx)
    n_heart = int((real_ctx.rows("test")["view"].notna()).sum())
    assert res.info["n"] == n_heart
    # classes absent from the test split are reported in the result's info, not raised
    absent = set(res.plots["classes"]) - set(real_ctx.rows("test")["view"].dropna())
    if absent:
        assert "macro_auc" in res.info["warnings"]


class _ScaleOnly(torch.nn.Module):
    """What the attribute scoring reads of a model: its logit scale (prompts come from the cache)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(float(np.log(scale))))


def _cache_prompts(ctx, directions: dict, other: np.ndarray) -> None:
    """Prompt embeddings by hand: the given tags' directions, `other` for every other tag."""
    for d in {d for d, _ in directions}:
        for t in tx.tags(d):
            for p in P.attribute_prompts(d, t.id):
                ctx._prompt_cache[p] = directions.get((d, t.id), other)


def test_dimension_scoring_cancels_what_the_dimension_prompts_share():
    """A component shared by every echogenicity prompt (say, lesion-in-an-organ) decides the cosine
    but not which echogenicity: the dimension softmax scores the tag itself."""
    from sonofm.eval.tasks.zeroshot import attribute_scores

    rng = np.random.default_rng(1)
    n, dim = 200, 8
    basis = np.eye(dim, dtype=np.float32)
    hyper = rng.random(n) < 0.5
    organ = rng.random(n) < 0.5  # independent of the tag, but half the images lie along e1
    x = (
        rng.normal(scale=0.2, size=(n, dim))
        + 1.0 * hyper[:, None] * basis[0]
        + 3.0 * organ[:, None] * basis[1]
    )
    x = _unit(x).astype(np.float32)
    rows = [{"id": f"t{i}", "split": "test", "patient_id": f"p{i}"} for i in range(n)]
    emb = {"test": SplitEmbeddings([r["id"] for r in rows], x, np.zeros((n, 0), np.float32))}
    ctx = _ctx(pd.DataFrame(rows), emb, model=_ScaleOnly(10.0))
    shared = 0.9 * basis[1]  # every echogenicity prompt also points along the organ direction
    hyper_prompt = _unit((shared + 0.3 * basis[0])[None])[0]
    _cache_prompts(ctx, {("echogenicity", "hyperechoic"): hyper_prompt}, other=basis[1])
    names = ["echogenicity/hyperechoic"]
    cosine = attribute_scores(ctx, x, names, "cosine")[:, 0]
    by_dim = attribute_scores(ctx, x, names)[:, 0]
    assert roc_auc_score(hyper, cosine) < 0.75 < 0.9 < roc_auc_score(hyper, by_dim)
    # the rule itself: softmax over every tag of the dimension at the model's logit scale
    tags = [t.id for t in tx.tags("echogenicity")]
    w = ctx.class_weights([P.attribute_prompts("echogenicity", t) for t in tags])
    logits = 10.0 * x @ w.T
    p = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(by_dim, (p / p.sum(1, keepdims=True))[:, tags.index("hyperechoic")], rtol=1e-5)
    with pytest.raises(ValueError, match="expected one of"):
        attribute_scores(ctx, x, names, "max")


def test_learnable_attributes_select_on_val_and_score_on_test():
    """Tags are chosen by the image-side bound on val (never on test), then scored zero-shot on test."""
    from sonofm.eval.tasks.attribute_bounds import ZeroShotLearnableAttributes, learnable

    rng = np.random.default_rng(0)
    dim = 8
    rows, emb = [], {}
    for split, n in (("train", 120), ("val", 60), ("test", 60)):
        x = rng.normal(scale=0.3, size=(n, dim))
        anechoic = np.arange(n) % 2 == 0  # visible everywhere: +e0
        spiculated = rng.random(n) < 0.4  # invisible: no direction carries it
        solid = np.arange(n) % 3 == 0  # visible in test only: a test-selected tag would be a leak
        x[:, 0] += 2.0 * anechoic
        if split == "test":
            x[:, 2] += 2.0 * solid
        ids = [f"{split}{i}" for i in range(n)]
        for i in range(n):
            attrs = {
                "echogenicity": ["anechoic"] if anechoic[i] else ["hyperechoic"],
                "margin": ["spiculated"] if spiculated[i] else ["circumscribed"],
                "internal": ["solid"] if solid[i] else ["cystic"],
            }
            rows.append({"id": ids[i], "split": split, "patient_id": f"{split}p{i}", "attributes": attrs})
        emb[split] = SplitEmbeddings(ids, _unit(x).astype(np.float32), np.zeros((n, 0), np.float32))
    ctx = _ctx(pd.DataFrame(rows), emb, model=_ScaleOnly(10.0))
    basis = np.eye(dim, dtype=np.float32)
    directions = {
        ("echogenicity", "anechoic"): basis[0],
        ("echogenicity", "hyperechoic"): -basis[0],
        ("margin", "spiculated"): basis[1],
        ("internal", "solid"): basis[2],
    }
    _cache_prompts(ctx, directions, other=basis[7])
    res = ZeroShotLearnableAttributes().run(ctx)
    assert res.skipped is None
    # internal/solid is separable on test only: selecting it would mean choosing on the scored split
    assert res.info["tags"] == ["echogenicity/anechoic", "echogenicity/hyperechoic"]
    assert res.info["n_tags"] == 2
    assert res.metrics["auc/echogenicity/anechoic"].value > 0.95
    assert res.metrics["mean_auc"].n_patients == 60
    # the rule itself: both bounds considered, NaN ignored, too few positives excluded
    bounds = {
        "a/x": {"positives": 10, "n": 40, "linear_probe_auc": float("nan"), "head_auc": 0.95},
        "a/y": {"positives": 3, "n": 40, "linear_probe_auc": 0.99},
        "a/z": {"positives": 10, "n": 40, "linear_probe_auc": 0.7, "head_auc": 0.8},
    }
    assert learnable(bounds) == {"a/x": 0.95}


def test_warm_started_probe_reaches_the_independent_optimum() -> None:
    """The C path starts each fit from the last solution; the problem is convex, so each probe
    must equal the one fitted from scratch (scikit-learn's own solver as the reference)."""
    from sonofm.eval.tasks.probes import _fit_logreg

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16)) * 2
    y = rng.integers(0, 4, size=400)
    x = centers[y] + rng.normal(size=(400, 16))
    previous = None
    for c in (1e-2, 1.0, 100.0):
        previous = _fit_logreg(x, y, c, 0, 5000, init=previous)
        scratch = _fit_logreg(x, y, c, 0, 5000)
        # equal up to L-BFGS's stopping tolerance (tol 1e-4 on the gradient)
        np.testing.assert_allclose(previous.predict_proba(x), scratch.predict_proba(x), atol=1e-2)
        assert (previous.predict(x) == scratch.predict(x)).mean() > 0.99
    other = _fit_logreg(x[y < 2], y[y < 2], 1.0, 0, 5000, init=previous)  # other classes: cold start
    assert list(other.classes_) == [0, 1]
