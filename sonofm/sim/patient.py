"""One simulated patient: its images, masks and manifest rows, written to the dataset directory.

Module-level and picklable so the generator's process pool can run it; what it writes depends only
on (parameters, index). PNGs are written first and the patient's record last, atomically, so a
record marks a finished patient.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sonofm.atomic import atomic_write_text
from sonofm.reports import study_attributes, write_report
from sonofm.sim import domain_randomization, overlays
from sonofm.sim.compound import simulate_with_clean
from sonofm.sim.dataset_params import patient_id, patient_region, patient_split
from sonofm.sim.domain_randomization import DOMAIN_RANDOMIZATION_STREAM
from sonofm.sim.registry import simulate_patient


def _safe_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(key)) or "s0"


def _record_path(out: Path, index: int) -> Path:
    return out / "records" / f"p{index:06d}.json"


def _atomic_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _check_sim_image(sim: Any, size: int, where: str) -> None:
    img = np.asarray(sim.image)
    if img.dtype != np.uint8 or img.shape[:2] != (size, size):
        raise RuntimeError(f"{where}: image must be uint8 ({size}, {size}), got {img.dtype} {img.shape}")
    mask = sim.mask
    if mask is not None and (mask.dtype != np.uint8 or mask.shape != (size, size)):
        raise RuntimeError(f"{where}: mask must be uint8 ({size}, {size}), got {mask.dtype} {mask.shape}")


def simulate_one_patient(out: str | Path, params: Mapping[str, Any], index: int) -> int:
    """Simulate patient `index`, write its PNGs then its record; return its number of images.

    Module-level (picklable) so process pools can run it; depends only on its arguments.
    """
    from sonofm.data.manifest import dumps_json, normalize_records  # lazy: keeps pandas out of sonofm.sim
    from sonofm.data.pngio import write_png  # lazy: keeps PIL out of sonofm.sim

    out = Path(out)
    seed, size = int(params["seed"]), int(params["size"])
    region = patient_region(params["regions"], index)
    pid = patient_id(seed, index)
    split = patient_split(seed, index, params["splits"])
    looks = int(params.get("clean_looks", 0))  # opt-in despeckling targets (sonofm.sim.compound)
    knobs = params["realism"]
    # opt-in: per-image nuisances from the sibling stream [seed, index, 4, image]; workers never matter
    dr_key = (seed, index, DOMAIN_RANDOMIZATION_STREAM) if knobs.get("domain_randomization") else None
    with domain_randomization.active(dr_key):
        if looks:
            (out / "clean").mkdir(exist_ok=True)
            images, cleans = simulate_with_clean(
                region, np.random.default_rng([seed, index]), size, looks, [seed, index, 3]
            )
        else:
            images = simulate_patient(region, np.random.default_rng([seed, index]), size)
    if not images:
        raise RuntimeError(f"region simulator {region!r} returned no images for patient {index}")
    report_rng = np.random.default_rng([seed, index, 1])
    overlay_rng = np.random.default_rng([seed, index, 2])
    rows = []
    for k, sim in enumerate(images):
        iid = f"{pid}-{k:02d}"
        _check_sim_image(sim, size, f"{region} patient {index} image {k}")
        pixels = np.asarray(sim.image)
        imaging = dict(sim.imaging)
        realism: dict[str, Any] = dict(knobs)
        if knobs["burned_in_text"]:
            pixels, info = overlays.burn_in_text(pixels, overlay_rng, imaging)
            realism["text"] = info
        if knobs["doppler_box"] and pixels.ndim == 2:
            vasc = [f.tag for f in sim.study.present("vascularity")]
            pixels, info = overlays.doppler_box(
                pixels, sim.mask, sim.fan_mask, overlay_rng, vascularity=(vasc or [None])[0], organ=sim.organ
            )
            realism["doppler"] = info
        imaging["realism"] = realism
        write_png(out / "images" / f"{iid}.png", pixels)
        mask_rel = None
        if sim.mask is not None:
            write_png(out / "masks" / f"{iid}.png", np.asarray(sim.mask))
            mask_rel = f"masks/{iid}.png"
        rows.append(
            {
                "id": iid,
                "patient_id": pid,
                "study_id": f"{pid}-{_safe_key(sim.study_key)}",
                "split": split,
                "image": f"images/{iid}.png",
                "mask": mask_rel,
                "region": sim.region,
                "organ": sim.organ,
                "view": sim.view,
                "frame": sim.frame,
                "report": write_report(sim.study, report_rng),
                "attributes": study_attributes(sim.study),
                "diagnosis": sim.diagnosis,
                "malignant": None if sim.malignant is None else bool(sim.malignant),
                "measurements": {str(m): float(v) for m, v in sim.study.measurements.items()},
                "landmarks": {str(n): [float(p[0]), float(p[1])] for n, p in sim.landmarks.items()},
                "bbox": [[float(c) for c in b] for b in sim.bboxes],
                "pixel_spacing_mm": float(sim.pixel_spacing_mm),
                "source": "sim",
                "sex": sim.study.sex,
                "imaging": imaging,
                "structured": sim.study.to_dict(),
            }
        )
        if looks:
            write_png(out / "clean" / f"{iid}.png", cleans[k])
            rows[-1]["clean"] = f"clean/{iid}.png"
    # Bugs in a region simulator surface here, naming the row and column, not at assembly time.
    normalize_records(rows, source=f"patient {index} ({region})")
    record = {"index": index, "patient_id": pid, "region": region, "rows": rows}
    _atomic_text(_record_path(out, index), dumps_json(record) + "\n")
    return len(rows)
