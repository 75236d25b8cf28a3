"""CAMUS (NIfTI via nibabel) and EchoNet-Dynamic (AVI via PyAV) on fixtures in their published layouts."""

from __future__ import annotations

import numpy as np
import pytest

from sonofm.data.manifest import load_dataset
from sonofm.data.pngio import read_png

nib = pytest.importorskip("nibabel")
av = pytest.importorskip("av")


def _echo_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(10, 240, (h, w), dtype=np.uint8)


def _write_nifti(path, arr_hw: np.ndarray) -> None:
    # CAMUS stores images as (W, H): the importer transposes them back to (H, W).
    nib.save(nib.Nifti1Image(np.ascontiguousarray(arr_hw.T), affine=np.eye(4)), str(path))


@pytest.fixture(scope="module")
def camus_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("camus") / "database_nifti"
    truth = {}
    for p, pid in enumerate(("patient0001", "patient0002")):
        d = root / pid
        d.mkdir(parents=True)
        for ch in ("2CH", "4CH"):
            cfg = f"ED: 1\nES: 12\nNbFrame: 20\nSex: {'MF'[p]}\nAge: 60\nLVef: {50 + p}.5\n"
            (d / f"Info_{ch}.cfg").write_text(cfg)
            for f, frame in enumerate(("ED", "ES")):
                img = _echo_image(40, 30, seed=10 * p + f)
                gt = np.zeros((40, 30), np.uint8)
                gt[5:20, 5:15] = 1  # LV cavity
                gt[5:20, 15:18] = 2  # myocardium
                gt[25:35, 5:15] = 3  # left atrium
                _write_nifti(d / f"{pid}_{ch}_{frame}.nii.gz", img)
                _write_nifti(d / f"{pid}_{ch}_{frame}_gt.nii.gz", gt)
                truth[(pid, ch, frame)] = (img, gt)
    # a corrupt file is skipped with a reason, not a crash
    (root / "patient0002" / "patient0002_4CH_ES.nii.gz").write_bytes(b"not a nifti")
    return root.parent, truth


def test_camus_import(camus_root, tmp_path):
    from sonofm.data.importers.echo import import_camus

    root, truth = camus_root
    res = import_camus(root, tmp_path / "out")
    assert res.images == 7 and res.skipped == {"unreadable": 1}
    df = load_dataset(tmp_path / "out", check_files=True).manifest
    assert set(df["view"]) == {"A2C", "A4C"} and set(df["frame"]) == {"ED", "ES"}
    row = df.set_index("id").loc["camus_patient0001_A4C_ED"]
    img, gt = truth[("patient0001", "4CH", "ED")]
    np.testing.assert_array_equal(read_png(tmp_path / "out" / row["image"]), img)  # orientation kept
    mask = read_png(tmp_path / "out" / row["mask"])
    # CAMUS labels 1/2/3 -> sonofm's lv (3) / myocardium (4) / la (5)
    np.testing.assert_array_equal(mask, np.select([gt == 1, gt == 2, gt == 3], [3, 4, 5], 0))
    assert row["measurements"]["lvef_pct"] == 50.5 and row["sex"] == "M"
    # both frames and views of one patient stay in one split (split per patient)
    assert df.groupby("patient_id")["split"].nunique().max() == 1


def _write_avi(path, frames: list[np.ndarray]) -> None:
    h, w = frames[0].shape
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=50)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuvj444p"
        stream.options = {"qscale": "1"}
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="gray")
            for pkt in stream.encode(vf):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)


@pytest.fixture(scope="module")
def echonet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("echonet")
    (root / "Videos").mkdir()
    size = 112
    yy, xx = np.mgrid[0:size, 0:size]
    frames = [((np.sin(xx / 7.0 + k) + 1) * 60 + 40 + 3 * k).astype(np.uint8) for k in range(8)]
    _write_avi(root / "Videos" / "0X1A.avi", frames)
    _write_avi(root / "Videos" / "0X2B.avi", frames[:4])
    (root / "FileList.csv").write_text(
        "FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split\n"
        "0X1A,62.5,40.0,106.7,112,112,50,8,TRAIN\n"
        "0X2B,35.0,80.0,123.0,112,112,50,4,TEST\n"
        "0X3C,50.0,50.0,100.0,112,112,50,4,VAL\n"  # video missing -> skipped
    )
    lines = ["FileName,X1,Y1,X2,Y2,Frame"]
    for name, big, small in (("0X1A.avi", 2, 6), ("0X2B.avi", 3, 1)):
        for frame, half in ((big, 20), (small, 12)):  # the larger tracing is end-diastole
            lines.append(f"{name},56,20,56,90,{frame}")
            lines += [f"{name},{56 - half},{y},{56 + half},{y},{frame}" for y in range(25, 90, 8)]
    (root / "VolumeTracings.csv").write_text("\n".join(lines) + "\n")
    return root, frames


def test_echonet_import(echonet_root, tmp_path):
    from sonofm.data.importers.echo import import_echonet

    root, frames = echonet_root
    res = import_echonet(root, tmp_path / "out")
    assert res.images == 4 and res.skipped == {"missing_video": 1}
    df = load_dataset(tmp_path / "out", check_files=True).manifest
    rows = df.set_index("id")
    ed, es = rows.loc["echonet_0X1A_ED"], rows.loc["echonet_0X1A_ES"]
    # ED is the traced frame with the larger LV (frame 2), ES the smaller one (frame 6); MJPEG is
    # lossy, so the decoded frame is compared with a tolerance and against the wrong frame.
    got = read_png(tmp_path / "out" / ed["image"]).astype(int)
    assert np.abs(got - frames[2]).mean() < 3 < np.abs(got - frames[6]).mean()
    got_es = read_png(tmp_path / "out" / es["image"]).astype(int)
    assert np.abs(got_es - frames[6]).mean() < 3
    m_ed = read_png(tmp_path / "out" / ed["mask"])
    m_es = read_png(tmp_path / "out" / es["mask"])
    assert set(np.unique(m_ed)) == {0, 3} and (m_ed == 3).sum() > (m_es == 3).sum()
    assert ed["measurements"] == {"lvef_pct": 62.5, "lv_edv_ml": 106.7, "lv_esv_ml": 40.0}
    assert rows.loc["echonet_0X2B_ED", "split"] == "test" and ed["split"] == "train"
    assert ed["view"] == "A4C" and ed["frame"] == "ED"
