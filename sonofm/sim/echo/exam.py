"""One patient = one echo exam: views x {ED, ES}, masks, landmarks, measurements, findings, images.

Flow: `sample_heart` (targets) -> per view a random layout and scanner settings, the layout fitted
into the sector -> label maps (the masks) -> measurements read back from the masks and calipers ->
guideline findings (`sonofm.taxonomy.evaluate_guidelines`) -> B-mode rendering -> `SimImage`s.

Decisions (documented for the manifest):
- Reported measurements are the *measured* values (rounded to reporting precision), not the
  targets: LVEF, EDV and ESV by biplane Simpson on the A4C + A2C LV masks; LAVI by biplane
  area-length on the ES LA masks / BSA (volumes on masks of at least `MEASURE_MIN_SIZE` px);
  LVIDd/s, IVSd, LVPWd, LA diameter (ES) and pericardial effusion depth (ED) by calipers on the
  PLAX label lines (sub-pixel, independent of the output size); TAPSE from the lateral tricuspid
  annulus landmark between the A4C ED and ES frames; E/e' is physiology (no Doppler image). The
  findings therefore always agree with what the images show; the EF target is met within 2 points
  (tests check many seeds; max 1.4 points over 300 seeds at 128 px).
- The whole exam shares one `Study` content (measurements and findings); each image carries its
  own view and frame, `study_key` "echo", and the patient's sex.
- Diagnosis (T1): "fluid_collection" when a pericardial effusion is present, else "normal" (the
  T1 tags describe focal lesions and collections; LV/RV/LA abnormalities are the echo findings).
  The study's findings carry the T1 tag only where it does not contradict them: the effusion's
  "fluid_collection", or "normal" for an exam with no finding present.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np

from sonofm.reports.schema import Finding, Status, Study
from sonofm.sim.domain_randomization import image_rng, randomize_imaging
from sonofm.sim.echo import measure
from sonofm.sim.echo.heart import Heart, sample_heart, teichholz_ef
from sonofm.sim.echo.views import (
    LA,
    LV,
    ViewGeometry,
    build_view,
    fit_offset,
    make_tissues,
    sample_layout,
)
from sonofm.sim.echo.views import shift_layout as _shift
from sonofm.sim.imaging import ImagingParams, label_map, pixel_grid, sample_imaging_params, world_to_pixel
from sonofm.sim.physics import render_bmode
from sonofm.sim.registry import register
from sonofm.sim.types import SimImage
from sonofm.taxonomy.echo import evaluate_guidelines, round_measurement

log = logging.getLogger(__name__)

CORE_VIEWS = ("A4C", "A2C", "PLAX", "PSAX_PM")
EXTRA_VIEWS = ("A3C", "PSAX_MV", "PSAX_AP", "SC4C")
VIEW_ORDER = ("A4C", "A2C", "A3C", "PLAX", "PSAX_MV", "PSAX_PM", "PSAX_AP", "SC4C")
FRAMES = ("ED", "ES")
STUDY_KEY = "echo"
DEPTH_RANGE_MM = (140.0, 200.0)
MIN_SIZE = 32  # below this the chambers are a few pixels and disc volumes lose meaning
MEASURE_MIN_SIZE = 128  # volumes of smaller outputs are measured on a finer rasterisation


@dataclass
class EchoView:
    """One view of the exam: its scanner settings and both frames' geometry, masks and landmarks."""

    view: str
    params: ImagingParams
    geometry: dict[str, ViewGeometry]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    landmarks_px: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    pixel_spacing_mm: float = 0.0
    fan_mask: np.ndarray | None = None


@dataclass
class EchoExam:
    """A planned exam: targets, views with masks and landmarks, measured values; `render_exam`
    turns it into images."""

    heart: Heart
    views: dict[str, EchoView]
    measurements: dict[str, float]  # unrounded measured values
    size: int
    render_seeds: dict[str, int]
    tissue_seed: int


def _fit_view(view: str, heart: Heart, tissues: dict, rng: np.random.Generator) -> tuple[dict, ImagingParams]:
    lay = sample_layout(view, heart, rng)
    params = sample_imaging_params(rng, "phased", DEPTH_RANGE_MM)
    geoms = [build_view(heart, view, f, lay, tissues) for f in FRAMES]
    pts = np.concatenate([g.keep_inside for g in geoms])
    dx, dz = fit_offset(pts, float(params.sector_deg), lay["jitter_x"])
    lay = _shift(lay, dx, dz)
    pts = pts + np.array([dx, dz])
    depth = float(np.max(np.hypot(pts[:, 0], pts[:, 1]))) + lay["margin_mm"]
    params = dataclasses.replace(params, depth_mm=depth, focus_mm=params.focus_mm * depth / params.depth_mm)
    return lay, params


def plan_exam(rng: np.random.Generator, size: int) -> EchoExam:
    """Sample the patient and every view's layout and settings; build masks; measure. No rendering."""
    if isinstance(size, bool) or int(size) != size or size < MIN_SIZE:
        raise ValueError(f"echo image size must be an integer >= {MIN_SIZE} pixels, got {size!r}")
    size = int(size)
    heart = sample_heart(rng)
    tissue_seed = int(rng.integers(0, 2**31 - 1))
    tissues = make_tissues(tissue_seed)
    n_extra = int(rng.integers(0, 3))
    extra = {str(v) for v in rng.choice(EXTRA_VIEWS, size=n_extra, replace=False)} if n_extra else set()
    names = [v for v in VIEW_ORDER if v in CORE_VIEWS or v in extra]
    views: dict[str, EchoView] = {}
    for v in names:
        lay, params = _fit_view(v, heart, tissues, rng)
        views[v] = EchoView(v, params, {f: build_view(heart, v, f, lay, tissues) for f in FRAMES})
    seeds = {
        f"{v}/{f}": int(s)
        for (v, f), s in zip(
            [(v, f) for v in names for f in FRAMES],
            rng.integers(0, 2**63 - 1, size=2 * len(names)),
            strict=True,
        )
    }
    for ev in views.values():
        _, _, spacing, fan = pixel_grid(ev.params, size)
        ev.pixel_spacing_mm, ev.fan_mask = float(spacing), fan
        for f, g in ev.geometry.items():
            ev.masks[f] = label_map(g.tissue, ev.params, size)
            ev.landmarks_px[f] = _landmarks_px(g, ev.params, size)
    exam = EchoExam(heart, views, {}, size, seeds, tissue_seed)
    exam.measurements = measure_exam(exam)
    return exam


@dataclass
class MeasuringFrame:
    """A label map with its landmarks (pixels) and pixel spacing, as the volume methods read it."""

    labels: np.ndarray
    landmarks: dict[str, tuple[float, float]]
    spacing_mm: float

    def lv(self) -> tuple[np.ndarray, tuple[float, float], tuple[float, float], float]:
        """(LV cavity mask, annulus midpoint, apex, spacing): the arguments of the disc methods."""
        return self.labels == LV, self.landmarks["mv_annulus_mid"], self.landmarks["lv_apex"], self.spacing_mm


def measuring_frame(exam: EchoExam, view: str, frame: str) -> MeasuringFrame:
    """The masks volumes are measured on: the output masks, or for outputs smaller than
    `MEASURE_MIN_SIZE` a finer rasterisation of the same geometry and scanner settings (disc
    volumes on a 64 px mask are off by a few percent, which the EF difference amplifies)."""
    ev = exam.views[view]
    if exam.size >= MEASURE_MIN_SIZE:
        return MeasuringFrame(ev.masks[frame], ev.landmarks_px[frame], ev.pixel_spacing_mm)
    g, n = ev.geometry[frame], MEASURE_MIN_SIZE
    labels = label_map(g.tissue, ev.params, n)
    _, _, spacing, _ = pixel_grid(ev.params, n)
    return MeasuringFrame(labels, _landmarks_px(g, ev.params, n), float(spacing))


def _landmarks_px(g: ViewGeometry, params: ImagingParams, size: int) -> dict[str, tuple[float, float]]:
    out = {}
    for name, p in g.landmarks.items():
        col, row = world_to_pixel(params, size, p[0], p[1])
        out[name] = (float(col), float(row))
    return out


def measure_exam(exam: EchoExam) -> dict[str, float]:
    """Every reported measurement, read back from the exam's masks, landmarks and calipers."""
    h = exam.heart
    a4, plax = exam.views["A4C"], exam.views["PLAX"]
    mf = {(v, f): measuring_frame(exam, v, f) for v in ("A4C", "A2C") for f in FRAMES}
    vols = {f: measure.biplane_volume_ml(*mf["A4C", f].lv(), *mf["A2C", f].lv()) for f in FRAMES}
    out: dict[str, float] = {
        "lvef_pct": measure.ejection_fraction(vols["ED"], vols["ES"]),
        "lv_edv_ml": vols["ED"],
        "lv_esv_ml": vols["ES"],
    }
    ed = measure.minor_axis(
        measure.label_runs(plax.geometry["ED"].tissue, *plax.geometry["ED"].calipers["lv_minor"])
    )
    es = measure.minor_axis(
        measure.label_runs(plax.geometry["ES"].tissue, *plax.geometry["ES"].calipers["lv_minor"])
    )
    out.update(lvidd_mm=ed.lvid_mm, lvids_mm=es.lvid_mm, ivsd_mm=ed.ivs_mm, lvpwd_mm=ed.lvpw_mm)
    la_runs = measure.label_runs(plax.geometry["ES"].tissue, *plax.geometry["ES"].calipers["la_ap"])
    out["la_diameter_mm"] = measure.longest_run_mm(la_runs, LA)
    la4, la2 = mf["A4C", "ES"], mf["A2C", "ES"]
    la_vol = measure.area_length_volume_ml(
        la4.labels == LA,
        la4.landmarks["mv_annulus_mid"],
        la4.spacing_mm,
        la2.labels == LA,
        la2.landmarks["mv_annulus_mid"],
        la2.spacing_mm,
    )
    out["lavi_ml_m2"] = la_vol / h.bsa_m2
    tl_ed = np.array(a4.landmarks_px["ED"]["tv_annulus_lateral"])
    tl_es = np.array(a4.landmarks_px["ES"]["tv_annulus_lateral"])
    out["tapse_mm"] = float(np.hypot(*(tl_es - tl_ed))) * a4.pixel_spacing_mm
    out["e_e_prime_ratio"] = h.e_e_prime
    out["pe_size_mm"] = ed.pe_mm
    return out


def view_lvef(exam: EchoExam, view: str) -> tuple[str, float]:
    """(method, EF %) by what one view allows: single-plane Simpson on A4C/A2C/A3C masks,
    Teichholz on the PLAX diameters. The exam's reported LVEF is biplane (A4C + A2C)."""
    ev = exam.views.get(view)
    if ev is None:
        raise ValueError(f"view {view!r} not in this exam; it has {sorted(exam.views)}")
    if view in ("A4C", "A2C", "A3C"):
        vols = [measure.simpson_volume_ml(*measuring_frame(exam, view, f).lv()) for f in FRAMES]
        return "simpson_single_plane", measure.ejection_fraction(vols[0], vols[1])
    if view == "PLAX":
        return "teichholz", teichholz_ef(exam.measurements["lvidd_mm"], exam.measurements["lvids_mm"])
    raise ValueError(f"no LVEF method for view {view!r}; use A4C, A2C, A3C or PLAX")


def exam_findings(measurements: dict[str, float], sex: str) -> tuple[list[Finding], str]:
    """(echo findings PRESENT/ABSENT with grades + the T1 diagnosis finding where apt, diagnosis tag)."""
    results = evaluate_guidelines(measurements, sex)
    findings = [
        Finding(
            "echo", r.finding, Status.PRESENT if r.present else Status.ABSENT, r.grade if r.present else None
        )
        for r in results
    ]
    present = {r.finding for r in results if r.present}
    diagnosis = "fluid_collection" if "pericardial_effusion" in present else "normal"
    if diagnosis == "fluid_collection" or not present:
        findings.insert(0, Finding("diagnosis", diagnosis, Status.PRESENT))
    return findings, diagnosis


def reported_measurements(measurements: dict[str, float]) -> dict[str, float]:
    """Measured values rounded to each measurement's reporting precision."""
    return {k: round_measurement(k, v) for k, v in measurements.items()}


def render_exam(exam: EchoExam) -> list[SimImage]:
    """Render every view and frame of a planned exam into `SimImage`s (the expensive step)."""
    reported = reported_measurements(exam.measurements)
    findings, diagnosis = exam_findings(reported, exam.heart.sex)
    out: list[SimImage] = []
    for i, (v, ev) in enumerate(exam.views.items()):
        # opt-in domain randomisation: one scanner setting per view (a cine loop), geometry kept
        dr_rng = image_rng(i)
        params = ev.params if dr_rng is None else randomize_imaging(ev.params, dr_rng)
        for f in FRAMES:
            bmode = render_bmode(ev.geometry[f].tissue, params, exam.size, exam.render_seeds[f"{v}/{f}"])
            study = Study(
                region="heart",
                organ="heart",
                view=v,
                frame=f,
                sex=exam.heart.sex,
                findings=[dataclasses.replace(x) for x in findings],
                measurements=dict(reported),
            )
            out.append(
                SimImage(
                    image=bmode.image,
                    mask=ev.masks[f],
                    fan_mask=bmode.fan_mask,
                    study=study,
                    region="heart",
                    organ="heart",
                    diagnosis=diagnosis,
                    malignant=None,
                    pixel_spacing_mm=float(bmode.pixel_spacing_mm),
                    imaging=params.to_dict(),
                    study_key=STUDY_KEY,
                    view=v,
                    frame=f,
                    landmarks=dict(ev.landmarks_px[f]),
                )
            )
    return out


@register("heart")
def simulate_heart(rng: np.random.Generator, size: int) -> list[SimImage]:
    """All images of one simulated echo exam (4-6 views x ED/ES); randomness only from `rng`."""
    exam = plan_exam(rng, size)
    log.debug(
        "echo exam: views %s, EF target %.1f measured %.1f",
        list(exam.views),
        exam.heart.lvef_pct,
        exam.measurements["lvef_pct"],
    )
    return render_exam(exam)
