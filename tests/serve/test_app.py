"""API tests of `sonofm serve` (FastAPI TestClient over the real app, tiny model + tiny index).

The VLM and segmentation model are optional features; their paths are tested with small fake
objects implementing the same calls (`chat(images, question)`; a module with `.visual.image_size`
returning (B, C, H, W) logits), because the real `SonoVLM` / `TaskModel` are other helpers' work.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sonofm.errors import UserError
from tests.eval.conftest import TINY

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

from sonofm.serve.analyze import Analyzer, to_model_input  # noqa: E402
from sonofm.serve.app import AnalyzeResponse, ServeState, create_app, load_state  # noqa: E402
from sonofm.serve.batching import MicroBatcher  # noqa: E402
from sonofm.serve.settings import ServeSettings  # noqa: E402


# ------------------------------------------------ shared builders (also used by the browser test)
def build_tiny_assets(root: Path, n: int = 24) -> tuple[Path, Path, Path]:
    """(data dir, model dir, index dir): a small simulated set, a tiny untrained CLIP, its index."""
    from sonofm.models import build_model, save_model
    from sonofm.serve.index import build_index
    from sonofm.sim.generator import simulate_dataset

    data = root / "data"
    simulate_dataset(data, n, size=64, seed=5, progress=False, regions="breast,heart,thyroid,liver")
    torch.manual_seed(0)
    model_dir = save_model(build_model(TINY).eval(), root / "model")
    index = build_index(model_dir, data, root / "index")
    return data, Path(model_dir), Path(index)


def png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def pydicom_us_file() -> Path:
    """An ultrasound DICOM from pydicom's own test files (always installed with pydicom)."""
    import pydicom.data

    p = Path(pydicom.data.__file__).parent / "test_files" / "examples_rgb_color.dcm"
    if not p.is_file():
        pytest.skip("pydicom test file examples_rgb_color.dcm missing")
    return p


class FakeVLM:
    """Implements `SonoVLM.chat(images, question)`; records what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], str | None]] = []

    def chat(self, images: list[np.ndarray], question: str | None) -> str:
        self.calls.append((tuple(images[0].shape), question))
        return "Findings: test report." if question is None else f"answer to: {question}"


class FakeSeg(torch.nn.Module):
    """A 'segmentation model': lesion (channel 1) wherever the input is brighter than 0.5."""

    def __init__(self, size: int = 32) -> None:
        super().__init__()
        self.visual = torch.nn.Module()
        self.visual.image_size = size
        self.label_names = ["background", "lesion"]
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        fg = x[:, :1] - 0.5
        return torch.cat([-fg, fg], dim=1)


# ---------------------------------------------------------------- fixtures
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_tiny_assets(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def state(assets) -> ServeState:
    _, model_dir, index = assets
    return load_state(ServeSettings(model=str(model_dir), index=str(index), batch_wait_ms=2))


@pytest.fixture(scope="module")
def client(assets, state):
    _, model_dir, index = assets
    app = create_app(ServeSettings(model=str(model_dir), index=str(index)), state=state)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def sample_png(assets) -> bytes:
    data, _, _ = assets
    return sorted((data / "images").glob("*.png"))[0].read_bytes()


def _variant(state: ServeState, settings: ServeSettings, **analyzer_kw) -> ServeState:
    """Same loaded encoder + cached text bank, new batcher/analyzer options (no re-encoding of prompts)."""
    a = state.analyzer
    kw = dict(index=a.index, vlm=a.vlm, seg=a.seg, device=a.device, backend=a.backend, bank=a.bank)
    kw.update(analyzer_kw)
    analyzer = Analyzer(a.encoder, **kw)
    batcher = MicroBatcher(analyzer.forward, max_batch=settings.batch_max, max_wait_ms=settings.batch_wait_ms)
    return dataclasses.replace(state, settings=settings, analyzer=analyzer, batcher=batcher)


def _post(c: TestClient, content: bytes, name: str = "scan.png", ctype: str = "image/png", **kw):
    return c.post("/api/analyze", files={"file": (name, content, ctype)}, **kw)


# ---------------------------------------------------------------- service routes
def test_health_ready_info_docs(client, state):
    assert client.get("/health").json()["status"] == "ok"
    r = client.get("/ready")
    assert r.status_code == 200 and r.json()["ready"] is True
    assert r.json()["models"]["index"]["count"] == 24
    assert str(state.analyzer.index.path) not in r.text  # /ready is open: no filesystem paths
    assert r.json()["text_prompts_cached"] == state.analyzer.bank.n_prompts > 500
    info = client.get("/api/info").json()
    assert info["features"] == {"similar_cases": True, "report": False, "segmentation": False}
    schema = client.get("/openapi.json").json()
    assert "/api/analyze" in schema["paths"] and "AnalyzeResponse" in schema["components"]["schemas"]
    page = client.get("/")
    assert page.status_code == 200 and "sonofm" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        body = client.get(asset).text
        assert "http://" not in body and "https://" not in body  # offline: no external URLs


def test_ready_is_503_before_startup(assets, state):
    _, model_dir, index = assets
    fresh = _variant(state, ServeSettings(model=str(model_dir), index=str(index)))
    app = create_app(fresh.settings, state=fresh)
    r = TestClient(app).get("/ready")  # no `with`: lifespan not run, batcher not started
    assert r.status_code == 503 and r.json()["ready"] is False


# ---------------------------------------------------------------- analyze
def test_analyze_png_matches_direct_model_call(client, state, sample_png):
    r = _post(client, sample_png, data={"k": "3"})
    assert r.status_code == 200, r.text
    res = r.json()
    AnalyzeResponse.model_validate(res)  # the documented schema holds
    assert res["input"]["kind"] == "png" and res["report"] is None and res["segmentation"] is None
    assert len(res["similar_cases"]) == 3
    # reference: the model called directly on the same pixels, scored like EvalContext does
    a = state.analyzer
    arr = np.asarray(Image.open(io.BytesIO(sample_png)).convert("L"))
    with torch.inference_mode():
        emb = a.encoder.encode_image(to_model_input(arr, a.image_size)[None], normalize=True).numpy()[0]
    pairs = a.bank.pair_w.reshape(-1, 2, emb.shape[0]) @ emb * a.bank.logit_scale
    ref = np.exp(pairs[:, 0]) / np.exp(pairs).sum(1)
    got = {(f["dimension"], f["tag"]): f["probability"] for f in res["findings"]}
    assert got and res["findings_region"]["region"] == res["region"]["tag"]  # the predicted region's findings
    for (d, t, _), p in zip(a.bank.findings, ref, strict=True):
        if (d, t) in got:
            assert got[(d, t)] == pytest.approx(p, abs=1e-4)
    probs = [f["probability"] for f in res["findings"]]
    assert probs == sorted(probs, reverse=True)
    for dim, scores in res["attributes"].items():
        assert sum(s["probability"] for s in scores) == pytest.approx(1.0, abs=1e-3), dim
    assert sum(s["probability"] for s in res["region"]["scores"]) == pytest.approx(1.0, abs=1e-3)
    # the indexed image itself is the top hit, with cosine ~1, and thumbnails are inline JPEGs
    top = res["similar_cases"][0]
    assert top["score"] == pytest.approx(1.0, abs=1e-4)
    assert top["thumbnail"].startswith("data:image/jpeg;base64,")
    scores = [c["score"] for c in res["similar_cases"]]
    assert scores == sorted(scores, reverse=True)
    assert res["preview"].startswith("data:image/png;base64,")
    assert r.headers["x-request-id"] == res["request_id"]


def test_analyze_jpeg_and_16bit(client):
    rng = np.random.default_rng(0)
    img = (rng.random((90, 120)) * 255).astype(np.uint8)
    r = _post(client, png_bytes(img, "JPEG"), "scan.jpg", "image/jpeg", data={"k": "2"})
    assert r.status_code == 200, r.text
    assert r.json()["input"] == {
        "kind": "jpeg",
        "height": 90,
        "width": 120,
        "bytes": r.json()["input"]["bytes"],
    }
    assert len(r.json()["similar_cases"]) == 2
    img16 = (rng.random((40, 40)) * 65535).astype(np.uint16)
    r = _post(client, png_bytes(img16), "deep.png")
    assert r.status_code == 200, r.text


def test_analyze_dicom_is_deidentified_and_not_echoed(assets, state, tmp_path):
    _, model_dir, index = assets
    dcm = pydicom_us_file()
    store = tmp_path / "kept"
    settings = ServeSettings(model=str(model_dir), index=str(index), store_uploads=store)
    with TestClient(create_app(settings, state=state)) as c:
        r = _post(c, dcm.read_bytes(), "patient.dcm", "application/dicom")
    assert r.status_code == 200, r.text
    res = r.json()
    AnalyzeResponse.model_validate(res)
    assert res["input"]["kind"] == "dicom" and res["input"]["deidentified"] is True
    assert res["input"]["frames"] == 1 and res["input"]["modality"] == "US"
    # nothing identifying comes back or is stored (PatientName CompressedSamples^US1, ID 13US1)
    kept = sorted(p.name for p in store.iterdir())  # named by the server, never by the client
    assert len(kept) == 2 and kept[0].endswith(".json") and kept[1] == kept[0][:-5] + ".png"
    assert json.loads((store / kept[0]).read_text())["request_id"] == res["request_id"]
    for text in (r.text, (store / kept[0]).read_text()):
        assert "CompressedSamples" not in text and "13US1" not in text
    # the stored image is the masked scan-area crop the model saw
    img = np.asarray(Image.open(store / kept[1]))
    x0, y0, x1, y1 = res["input"]["scan_box"]
    assert img.shape == (y1 - y0, x1 - x0) == (res["input"]["height"], res["input"]["width"])


def test_uploads_are_not_stored_by_default(client, sample_png, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _post(client, sample_png).status_code == 200
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- malformed uploads
def test_malformed_uploads_get_4xx_and_server_keeps_serving(client, sample_png):
    dcm = pydicom_us_file().read_bytes()
    cases = [
        (b"", "empty.png", "image/png", 400, "empty"),
        (b"just some text, not an image", "notes.txt", "text/plain", 415, "expected a PNG, JPEG or DICOM"),
        (b"GIF89a" + b"\0" * 64, "anim.gif", "image/gif", 415, "GIF"),
        (sample_png[: len(sample_png) // 2], "cut.png", "image/png", 422, "corrupt PNG"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 40, "bad.jpg", "image/jpeg", 422, "corrupt JPEG"),
        (dcm[: len(dcm) // 2], "cut.dcm", "application/dicom", 422, "DICOM"),
        (b"\0" * 128 + b"DICM" + b"\x02\x00\x10", "hdr.dcm", "application/dicom", 422, "DICOM"),
        (b"garbage that claims to be dicom", "x.dcm", "application/dicom", 422, "DICOM"),
    ]
    for content, name, ctype, status, words in cases:
        r = _post(client, content, name, ctype)
        assert r.status_code == status, (name, r.status_code, r.text)
        body = r.json()
        assert words in body["detail"] and body["request_id"], (name, body)
    r = client.post("/api/analyze", data={"k": "3"})  # no file field
    assert r.status_code == 422 and "'file'" in r.json()["detail"]
    r = _post(client, sample_png, data={"k": "0"})
    assert r.status_code == 422 and "'k'" in r.json()["detail"]
    r = _post(client, sample_png, data={"k": "51"})
    assert r.status_code == 422 and "50" in r.json()["detail"]
    assert _post(client, sample_png).status_code == 200  # still serving
    assert client.get("/ready").json()["batcher"]["failed_batches"] == 0


def test_max_upload_size(assets, state, sample_png):
    _, model_dir, index = assets
    settings = ServeSettings(model=str(model_dir), index=str(index), max_upload_mb=0.01)  # 10 KiB
    limit = settings.max_upload_bytes
    with TestClient(create_app(settings, state=state)) as c:
        just_over = sample_png + b"\0" * (limit + 1 - len(sample_png))  # checked by the endpoint
        way_over = b"\0" * (limit * 20)  # refused by the body limit before parsing
        for content in (just_over, way_over):
            r = _post(c, content)
            assert r.status_code == 413, r.text
            assert "0.01 MB" in r.json()["detail"]
        assert _post(c, sample_png).status_code == 200


# ---------------------------------------------------------------- auth, CORS, logs
def test_bearer_token(assets, state, sample_png):
    _, model_dir, index = assets
    settings = ServeSettings(model=str(model_dir), index=str(index), token="s3cret-token")
    with TestClient(create_app(settings, state=state)) as c:
        assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200
        assert c.get("/api/info").json()["auth_required"] is True
        r = _post(c, sample_png)
        assert r.status_code == 401 and "missing bearer token" in r.json()["detail"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = _post(c, sample_png, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and "invalid" in r.json()["detail"]
        r = _post(c, sample_png, headers={"Authorization": "Basic s3cret-token"})
        assert r.status_code == 401
        case = state.analyzer.index.meta["id"].iloc[0]
        assert c.get(f"/api/thumb/{case}").status_code == 401
        ok = {"Authorization": "Bearer s3cret-token"}
        assert _post(c, sample_png, headers=ok).status_code == 200
        r = c.get(f"/api/thumb/{case}", headers=ok)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert r.content[:3] == b"\xff\xd8\xff"
        assert c.get("/api/thumb/..%2F..%2Findex.json", headers=ok).status_code == 404
        assert c.get("/api/thumb/no-such-case", headers=ok).status_code == 404


def test_cors_off_by_default_and_configurable(assets, state, client):
    r = client.get("/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    _, model_dir, index = assets
    settings = ServeSettings(
        model=str(model_dir), index=str(index), token="t", cors_origins=["http://pacs.example"]
    )
    with TestClient(create_app(settings, state=state)) as c:
        pre = c.options(
            "/api/analyze",
            headers={
                "Origin": "http://pacs.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert pre.status_code == 200  # preflight is answered by CORS before auth
        assert pre.headers["access-control-allow-origin"] == "http://pacs.example"
        r = c.get("/health", headers={"Origin": "http://other.example"})
        assert "access-control-allow-origin" not in r.headers


def test_structured_access_log(client, sample_png, caplog):
    with caplog.at_level(logging.INFO, logger="sonofm.serve.access"):
        r = _post(client, sample_png, headers={"X-Request-ID": "req-abc.1"})
        _post(client, b"")
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "sonofm.serve.access"]
    ok = next(x for x in lines if x["request_id"] == "req-abc.1")
    assert r.json()["request_id"] == "req-abc.1"
    assert ok["route"] == "/api/analyze" and ok["status"] == 200 and ok["latency_ms"] > 0
    assert ok["kind"] == "png" and ok["batch_size"] >= 1
    bad = [x for x in lines if x["status"] == 400]
    assert bad and "empty" in bad[0]["error"]


# ---------------------------------------------------------------- batching
def test_concurrent_requests_are_batched(assets, state, sample_png):
    _, model_dir, index = assets
    settings = ServeSettings(model=str(model_dir), index=str(index), batch_max=16, batch_wait_ms=200)
    st = _variant(state, settings)
    calls: list[int] = []
    forward = st.analyzer.forward

    def counting(jobs):
        calls.append(len(jobs))
        return forward(jobs)

    st.batcher.fn = counting
    results: list = [None] * 16
    with TestClient(create_app(settings, state=st)) as c:
        barrier = threading.Barrier(16)

        def worker(i: int) -> None:
            barrier.wait()
            results[i] = _post(c, sample_png, data={"k": "2"})

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        stats = c.get("/ready").json()["batcher"]
    assert all(r is not None and r.status_code == 200 for r in results)
    assert sum(calls) == 16 and len(calls) < 16, calls  # fewer model forwards than requests
    assert stats["items"] == 16 and stats["batches"] == len(calls)
    assert max(r.json()["batch_size"] for r in results) == max(calls) > 1
    # batching does not change results: every request saw the same findings
    first = results[0].json()["findings"]
    for r in results[1:]:
        assert r.json()["findings"] == first


def test_batcher_unit_errors_and_order():
    import asyncio

    def fn(items):
        if "boom" in items:
            raise RuntimeError("model failed")
        return [ValueError(f"bad {x}") if x == "bad" else x * 2 for x in items]

    async def main():
        b = MicroBatcher(fn, max_batch=4, max_wait_ms=20)
        await b.start()
        got = await asyncio.gather(*(b.submit(x) for x in ["a", "b", "c"]))
        assert got == ["aa", "bb", "cc"] and b.stats.batches == 1
        res = await asyncio.gather(b.submit("ok"), b.submit("bad"), return_exceptions=True)
        assert res[0] == "okok" and isinstance(res[1], ValueError)
        with pytest.raises(RuntimeError, match="model failed"):
            await b.submit("boom")
        assert await b.submit("z") == "zz"  # keeps working after a failed batch
        many = await asyncio.gather(*(b.submit(str(i)) for i in range(10)))
        assert many == [str(i) * 2 for i in range(10)] and b.stats.largest == 4
        await b.stop()
        b.close()

    asyncio.run(main())


# ---------------------------------------------------------------- optional models
def test_optional_vlm_and_segmentation(assets, state):
    _, model_dir, index = assets
    vlm, seg = FakeVLM(), FakeSeg(32)
    settings = ServeSettings(model=str(model_dir), index=None)
    st = _variant(state, settings, index=None, vlm=vlm, seg=seg)
    img = np.zeros((80, 80), np.uint8)
    img[20:60, 10:50] = 220  # a bright square: the fake model's "lesion"
    with TestClient(create_app(settings, state=st)) as c:
        info = c.get("/api/info").json()
        assert info["features"] == {"similar_cases": False, "report": True, "segmentation": True}
        r = _post(c, png_bytes(img), data={"question": "Is there a lesion?"})
    assert r.status_code == 200, r.text
    res = r.json()
    AnalyzeResponse.model_validate(res)
    assert res["similar_cases"] is None
    assert res["report"] == "Findings: test report." and res["answer"] == "answer to: Is there a lesion?"
    assert res["answer_check"]["low_confidence"] is False  # a VLM without a check passes unflagged
    assert vlm.calls == [((80, 80), None), ((80, 80), "Is there a lesion?")]
    with TestClient(create_app(settings, state=st)) as c:  # a VLM that cannot take measurements
        r = _post(c, png_bytes(img), data={"measurements": '{"lvef_pct": 38}'})
    assert r.status_code == 422 and "cannot draft from measurements" in r.json()["detail"]
    seg_out = res["segmentation"]
    assert seg_out["overlay"].startswith("data:image/png;base64,")
    expected = float((to_model_input(img, 32)[0] > 0.5).float().mean())
    assert seg_out["area_fraction"]["lesion"] == pytest.approx(expected, abs=1e-4)
    assert seg.forwards == 1


def _tiny_seg_and_vlm(root: Path) -> tuple[Path, Path]:
    """A tiny untrained segment TaskModel and SonoVLM saved as model dirs (their own loaders read them)."""
    from sonofm.finetune.tasks import get_task
    from sonofm.models.config import ImageTowerConfig
    from sonofm.models.image_towers import ImageTower
    from sonofm.models.io import save_model
    from sonofm.models.task_model import TaskModel, TaskModelConfig, feature_geometry, tower_config
    from sonofm.models.vlm import VLMConfig, build_vlm
    from sonofm.models.vlm_prompt import DEFAULT_QUESTION, train_tokenizer

    torch.manual_seed(0)
    vit = {"patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
           "intermediate_size": 64}  # fmt: skip
    tower = ImageTower(ImageTowerConfig(kind="vit", image_size=32, in_chans=1, mean=[0.5], std=[0.5], **vit))
    ch, st = feature_geometry(tower)
    task = get_task("segment", labels=[1, 2])
    cfg = TaskModelConfig(
        image=tower_config(tower), adapter="full", task="segment", task_options=dict(task.options),
        feature_channels=ch, feature_strides=st,
    )  # fmt: skip
    seg_dir = save_model(TaskModel(cfg, tower=tower).eval(), root / "seg")
    tok = train_tokenizer(["Findings: a hypoechoic mass. Impression: BI-RADS 4.", DEFAULT_QUESTION] * 3, 300)
    lm = {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
          "num_attention_heads": 2, "num_key_value_heads": 1, "tie_word_embeddings": True}  # fmt: skip
    vcfg = VLMConfig(
        image=ImageTowerConfig(kind="vit", image_size=32, in_chans=1, mean=[0.5], std=[0.5], **vit),
        lm=lm, num_image_tokens=4, findings={"groups": ["organ", "diagnosis", "echogenicity"]},
        context={"dropout": 0.2},
    )  # fmt: skip
    vlm_dir = save_model(build_vlm(vcfg, tok).eval(), root / "vlm")
    return Path(seg_dir), Path(vlm_dir)


def test_real_vlm_and_task_model_when_available(assets, state, tmp_path):
    """The optional paths with the project's own SonoVLM and segment TaskModel (tiny, untrained)."""
    pytest.importorskip("sonofm.models.vlm")
    pytest.importorskip("sonofm.models.task_model")
    import sonofm.serve.app as app_mod

    seg_dir, vlm_dir = _tiny_seg_and_vlm(tmp_path)
    seg = app_mod._load_optional(str(seg_dir), "segmentation", ("visual",), None)
    vlm = app_mod._load_optional(str(vlm_dir), "generative VLM", ("chat",), None)
    _, model_dir, _ = assets
    settings = ServeSettings(model=str(model_dir))
    st = _variant(state, settings, index=None, vlm=vlm, seg=seg)
    img = (np.random.default_rng(1).random((48, 56)) * 255).astype(np.uint8)
    with TestClient(create_app(settings, state=st)) as c:
        r = _post(c, png_bytes(img))
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["report"] == vlm.chat([img], None, max_new_tokens=128)  # greedy: same text as a direct call
    # the findings line the draft was written from is shown with it (the head's own decision)
    hint = vlm.findings_hint(vlm.prepare_images([img]))
    assert hint.startswith("Image findings:") and res["report_check"]["findings"] == hint
    with torch.inference_mode():
        pred = seg(to_model_input(img, 32)[None]).argmax(1)[0].numpy()
    names = {1: "lesion", 2: "organ"}  # channel c -> MASK_LABELS[labels[c - 1]]
    want = {names[c]: pytest.approx(float((pred == c).mean()), abs=1e-4) for c in (1, 2) if (pred == c).any()}
    assert res["segmentation"]["area_fraction"] == want
    # the study's measurements and sex: the draft is written from them, and the line shows them
    with TestClient(create_app(settings, state=st)) as c:
        r = _post(c, png_bytes(img), data={"measurements": '{"lvef_pct": 38, "tapse_mm": 15.2}', "sex": "F"})
        asked = _post(
            c,
            png_bytes(img),
            data={"measurements": '{"lvef_pct": 38}', "question": "Is the LV ejection fraction below 50 %?"},
        )
        bad = _post(c, png_bytes(img), data={"measurements": '{"lvef_pct": 38'})
        unknown = _post(c, png_bytes(img), data={"measurements": '{"ef": 38}'})
    assert r.status_code == 200, r.text
    ctx = {"measurements": {"lvef_pct": 38, "tapse_mm": 15.2}, "sex": "F"}
    assert r.json()["report"] == vlm.chat([img], None, context=ctx, max_new_tokens=128)
    # grounded (sonofm.reports.grounding): the model's own text is kept beside it; a report with no
    # place for the echo numbers (the untrained head may decide a breast) is flagged
    from sonofm.reports import parse_report
    from sonofm.reports.grounding import agreeing_report

    gen = {"ground": False, "agree": False, "max_new_tokens": 128}
    own = vlm.answer_batch([([img], None)], contexts=[ctx], **gen)[0].text
    check = r.json()["report_check"]
    # the draft made to agree with the head's line, then grounded (agreeing_report does both)
    decided = vlm.findings.vocab.decide(vlm.findings_probabilities(vlm.prepare_images([img])), 0.5)[0]
    groups = vlm.config.findings.groups
    assert check["draft"] == own
    assert r.json()["report"] == agreeing_report(own, decided, ctx["measurements"], "F", dimensions=groups)
    if set(ctx["measurements"]) - set(parse_report(r.json()["report"]).study.measurements):
        assert check["low_confidence"] and any(
            "no place for the given measurements" in x for x in check["reasons"]
        )
    line = r.json()["report_check"]["findings"].split("\n")[-1]
    assert (
        line
        == "Study measurements: lvef 38; tapse 15.2; sex F. Guideline: reduced lvef moderate; rv dysfunction."
    )
    # a closed question on a given measurement is answered by it; the language model's answer is kept
    assert asked.status_code == 200, asked.text
    assert asked.json()["answer"] == "Yes"
    a_check = asked.json()["answer_check"]
    assert a_check["answered_by"] == "study measurements" and isinstance(a_check["draft"], str)
    assert bad.status_code == 422 and "field 'measurements': not valid JSON" in bad.json()["detail"]
    assert unknown.status_code == 422 and "unknown measurement ids ['ef']" in unknown.json()["detail"]
    with pytest.raises(UserError, match="not a generative VLM"):
        app_mod._load_optional(str(seg_dir), "generative VLM", ("chat",), None)


# ---------------------------------------------------------------- onnxruntime backend
def test_onnx_backend_matches_torch(assets, client, sample_png):
    pytest.importorskip("onnxruntime")
    _, model_dir, index = assets
    ref = _post(client, sample_png, data={"k": "3"}).json()
    app = create_app(ServeSettings(model=str(model_dir), index=str(index), onnx=True))
    with TestClient(app) as c:
        assert c.get("/api/info").json()["backend"] == "onnxruntime"
        res = _post(c, sample_png, data={"k": "3"}).json()
    assert res["model"]["backend"] == "onnxruntime"
    got = {(f["dimension"], f["tag"]): f["probability"] for f in res["findings"]}
    for f in ref["findings"]:
        assert got[(f["dimension"], f["tag"])] == pytest.approx(f["probability"], abs=1e-3)
    assert [c["id"] for c in res["similar_cases"]] == [c["id"] for c in ref["similar_cases"]]


def test_settings_validation():
    with pytest.raises(ValueError, match="token"):
        ServeSettings(model="m", token="  ")
    with pytest.raises(ValueError, match="CORS"):
        ServeSettings(model="m", cors_origins=["pacs.example"])
    assert ServeSettings(model="m").cors_origins == []


def test_cli_serve_wires_settings(monkeypatch):
    """`sonofm serve` flags reach ServeSettings and uvicorn (both stubbed: nothing is loaded)."""
    import uvicorn
    from typer.testing import CliRunner

    import sonofm.serve.app as app_mod
    from sonofm.cli import app as cli

    seen: dict = {}
    monkeypatch.setattr(app_mod, "create_app", lambda s: seen.setdefault("settings", s) and "APP")
    monkeypatch.setattr(app_mod, "configure_json_logging", lambda: None)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    args = [
        "serve",
        "--model",
        "m",
        "--index",
        "idx",
        "--onnx",
        "--port",
        "9001",
        "--token",
        "t0k",
        "--max-upload-mb",
        "5",
        "--cors",
        "https://a.example",
        "--cors",
        "https://b.example",
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    s = seen["settings"]
    assert (s.model, s.index, s.onnx, s.token, s.max_upload_mb) == ("m", "idx", True, "t0k", 5.0)
    assert s.cors_origins == ["https://a.example", "https://b.example"] and s.vlm is None
    assert seen["app"] == "APP" and seen["host"] == "127.0.0.1" and seen["port"] == 9001
    r = CliRunner().invoke(cli, ["serve", "--model", "m", "--cors", "pacs.example"])
    assert r.exit_code != 0 and "CORS origins" in str(r.exception)


def test_large_uploads_stay_in_memory(client):
    """Uploads up to the limit are not spooled to disk by the multipart parser (PHI in DICOM headers)."""
    from starlette.formparsers import MultiPartParser

    assert MultiPartParser.spool_max_size >= ServeSettings(model="m").max_upload_bytes


def test_model_failure_is_a_json_500_and_server_recovers(assets, state, sample_png):
    _, model_dir, index = assets
    settings = ServeSettings(model=str(model_dir), index=str(index))
    st = _variant(state, settings)
    forward, fail = st.analyzer.forward, {"on": True}

    def flaky(jobs):
        if fail["on"]:
            raise RuntimeError("CUDA out of memory at /secret/path")
        return forward(jobs)

    st.batcher.fn = flaky
    with TestClient(create_app(settings, state=st), raise_server_exceptions=False) as c:
        r = _post(c, sample_png)
        assert r.status_code == 500 and "/secret/path" not in r.text
        assert r.json()["request_id"] == r.headers["x-request-id"]
        fail["on"] = False
        assert _post(c, sample_png).status_code == 200


def test_given_region_scopes_the_findings_and_a_bad_one_is_refused(client, sample_png):
    r = _post(client, sample_png, data={"region": "breast"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["findings_region"]["region"] == "breast" and body["findings_region"]["source"] == "given"
    assert not any(f["dimension"] == "echo" for f in body["findings"])
    bad = _post(client, sample_png, data={"region": "elbow"})
    assert bad.status_code == 422 and "field 'region'" in bad.json()["detail"]
