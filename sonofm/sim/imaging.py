"""Imaging parameters (the knobs of a scanner) and the output pixel grid.

Every simulated image draws its own parameters (`sample_imaging_params`) within ranges a
sonographer would use, so a model cannot learn one look: centre frequency per probe family, depth,
focus, gain, dynamic range, TGC slider jitter, noise floor, bandwidth and F-number.

The output image is square, `size` x `size`, with isotropic pixels that cover the fan's bounding
box (the longer side fills the image; the shorter one is centred laterally or leaves empty rows at
the bottom). Row 0 is the shallowest row; the image is centred laterally on x = 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sonofm.sim.probe import PROBES, fov_bounds, inside_fan

if TYPE_CHECKING:
    from sonofm.sim.tissue import TissueModel

SOUND_SPEED_M_S = 1540.0

# Realistic ranges per probe family (MHz, degrees, millimetres).
FREQ_RANGE_MHZ = {"linear": (7.0, 14.0), "curvilinear": (2.0, 6.0), "phased": (1.7, 4.0)}
SECTOR_RANGE_DEG = {"curvilinear": (55.0, 75.0), "phased": (70.0, 90.0)}
WIDTH_RANGE_MM = (30.0, 50.0)
RADIUS_RANGE_MM = (40.0, 70.0)
BANDWIDTH_RANGE = {"linear": (0.6, 0.9), "curvilinear": (0.5, 0.8), "phased": (0.5, 0.75)}
N_TGC = 8
_OPT_IN_FIELDS = frozenset({"scatterers_per_cell"})  # left out of `to_dict` while None


@dataclass
class ImagingParams:
    """Scanner settings of one image.

    depth_mm: imaging depth along each beam from the skin. focus_mm: transmit focal depth along the
    beam. width_mm: aperture width (linear only). sector_deg: sector angle (curvilinear, phased).
    radius_mm: radius of curvature of a curvilinear array (apex that far behind the skin).
    gain_db: overall display gain (0 puts reference parenchyma at mid grey). dynamic_range_db:
    span of the log compression. tgc_db: TGC slider offsets in dB at `N` evenly spaced depths from
    the skin to depth_mm, added to the nominal TGC. tgc_slope_db_cm_mhz: the one-way attenuation
    the nominal TGC compensates (an average soft tissue), so real attenuation differences still
    give shadowing/enhancement. noise_db: electronic noise floor at the deepest point after TGC,
    relative to the mean echo of reference parenchyma. fractional_bandwidth: -6 dB pulse bandwidth
    over the centre frequency (sets the axial resolution). f_number: focal depth / aperture (sets
    the lateral beam width at the focus and the depth of field). grey_gamma: grey map, displayed
    grey = level ** grey_gamma for the log-compressed level in [0, 1] (scanners differ in their
    post-processing curves). smoothing_px: speckle-reduction smoothing of the displayed image
    (Gaussian std in output pixels, 0 = off); it never touches `BMode.envelope`.
    scatterers_per_cell: mean number of scatterers per resolution cell (the effective number of
    scatterers of the K-distribution); None (the default) is fully developed speckle (infinitely
    many, Rayleigh envelope). Only domain randomisation sets it (`sonofm.sim.domain_randomization`),
    and `to_dict` leaves it out while None, so default manifests keep their exact bytes.
    """

    probe: str
    center_freq_mhz: float
    depth_mm: float
    focus_mm: float
    width_mm: float | None = None
    sector_deg: float | None = None
    radius_mm: float | None = None
    gain_db: float = 0.0
    dynamic_range_db: float = 60.0
    tgc_db: tuple[float, ...] = field(default_factory=lambda: (0.0,) * N_TGC)
    tgc_slope_db_cm_mhz: float = 0.6
    noise_db: float = -25.0
    fractional_bandwidth: float = 0.7
    f_number: float = 2.0
    grey_gamma: float = 1.0
    smoothing_px: float = 0.0
    sound_speed_m_s: float = SOUND_SPEED_M_S
    scatterers_per_cell: float | None = None

    def __post_init__(self) -> None:
        if self.probe not in PROBES:
            raise ValueError(f"ImagingParams.probe must be one of {PROBES}, got {self.probe!r}")
        self.tgc_db = tuple(float(v) for v in self.tgc_db)
        positive = (
            "center_freq_mhz",
            "depth_mm",
            "dynamic_range_db",
            "fractional_bandwidth",
            "f_number",
            "grey_gamma",
            "sound_speed_m_s",
        )
        for name in positive:
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"ImagingParams.{name} must be a positive number, got {value!r}")
        if not self.focus_mm > 0:
            raise ValueError(f"ImagingParams.focus_mm must be > 0, got {self.focus_mm!r}")
        if self.scatterers_per_cell is not None and not (
            np.isfinite(self.scatterers_per_cell) and self.scatterers_per_cell > 0
        ):
            raise ValueError(
                f"ImagingParams.scatterers_per_cell must be None or > 0, got {self.scatterers_per_cell!r}"
            )
        if not self.smoothing_px >= 0:
            raise ValueError(f"ImagingParams.smoothing_px must be >= 0, got {self.smoothing_px!r}")
        if len(self.tgc_db) < 1:
            raise ValueError("ImagingParams.tgc_db needs at least one slider value")
        if self.probe == "linear":
            if self.width_mm is None or self.width_mm <= 0:
                raise ValueError(
                    f"ImagingParams.width_mm must be > 0 for a linear probe, got {self.width_mm!r}"
                )
        else:
            if self.sector_deg is None or not 0 < self.sector_deg < 180:
                raise ValueError(
                    f"ImagingParams.sector_deg must be in (0, 180) for a {self.probe} probe, "
                    f"got {self.sector_deg!r}"
                )
            if self.probe == "curvilinear" and (self.radius_mm is None or self.radius_mm <= 0):
                raise ValueError(
                    f"ImagingParams.radius_mm must be > 0 for a curvilinear probe, got {self.radius_mm!r}"
                )

    @property
    def wavelength_mm(self) -> float:
        return self.sound_speed_m_s / (self.center_freq_mhz * 1e3)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict for the manifest (floats rounded; None fields kept, except the opt-in
        `scatterers_per_cell`, left out while None so default manifests are unchanged)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None and f.name in _OPT_IN_FIELDS:
                continue
            if isinstance(v, tuple):
                v = [round(float(t), 3) for t in v]
            elif isinstance(v, float | np.floating):
                v = round(float(v), 4)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImagingParams:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown ImagingParams fields {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**d)


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def sample_imaging_params(
    rng: np.random.Generator | int | None,
    probe: str,
    depth_mm: tuple[float, float] | float,
    **overrides: Any,
) -> ImagingParams:
    """Draw realistic scanner settings for one image of `probe` at a depth in `depth_mm`.

    `depth_mm` is a (lo, hi) range (callers know their region) or a fixed value. Any field of
    `ImagingParams` can be pinned through `overrides` (e.g. ``focus_mm=20``); all draws happen in
    a fixed order whatever is overridden, so pinning one knob does not change the others.
    """
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    names = {f.name for f in dataclasses.fields(ImagingParams)}
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"unknown imaging parameter(s) {sorted(unknown)}; valid: {sorted(names)}")
    rng = _as_rng(rng)
    if np.ndim(depth_mm) == 0:
        lo = hi = float(depth_mm)  # type: ignore[arg-type]
    else:
        lo, hi = (float(v) for v in depth_mm)  # type: ignore[union-attr]
    if not 0 < lo <= hi:
        raise ValueError(
            f"depth_mm must be a positive value or a (lo, hi) range with lo <= hi, got {depth_mm!r}"
        )

    u = rng.uniform(size=14)  # fixed number of draws: overrides never shift the stream
    tgc = np.clip(rng.normal(0.0, 1.5, N_TGC), -4.0, 4.0)
    f_lo, f_hi = FREQ_RANGE_MHZ[probe]
    depth = lo + (hi - lo) * u[0]
    values: dict[str, Any] = {
        "probe": probe,
        "center_freq_mhz": f_lo + (f_hi - f_lo) * u[1],
        "depth_mm": depth,
        "focus_mm": depth * (0.3 + 0.4 * u[2]),
        "gain_db": -5.0 + 10.0 * u[3],
        "dynamic_range_db": 45.0 + 25.0 * u[4],
        "tgc_db": tuple(float(t) for t in tgc),
        "tgc_slope_db_cm_mhz": 0.45 + 0.3 * u[5],
        "noise_db": -35.0 + 20.0 * u[6],
        "fractional_bandwidth": BANDWIDTH_RANGE[probe][0]
        + (BANDWIDTH_RANGE[probe][1] - BANDWIDTH_RANGE[probe][0]) * u[7],
        "f_number": 1.5 + 1.5 * u[8],
        "grey_gamma": float(np.exp(np.log(0.8) + (np.log(1.25) - np.log(0.8)) * u[12])),
        # half the images get no speckle reduction, the rest a mild one
        "smoothing_px": 0.0 if u[13] < 0.5 else 0.3 + 1.0 * (u[13] - 0.5),
    }
    if probe == "linear":
        values["width_mm"] = WIDTH_RANGE_MM[0] + (WIDTH_RANGE_MM[1] - WIDTH_RANGE_MM[0]) * u[9]
    else:
        s_lo, s_hi = SECTOR_RANGE_DEG[probe]
        values["sector_deg"] = s_lo + (s_hi - s_lo) * u[10]
        if probe == "curvilinear":
            values["radius_mm"] = RADIUS_RANGE_MM[0] + (RADIUS_RANGE_MM[1] - RADIUS_RANGE_MM[0]) * u[11]
    if "depth_mm" in overrides and "focus_mm" not in overrides:
        values["focus_mm"] = float(overrides["depth_mm"]) * (0.3 + 0.4 * u[2])
    values = {k: float(v) if isinstance(v, np.floating) else v for k, v in values.items()}
    values.update(overrides)
    return ImagingParams(**values)


def _grid_geometry(params: ImagingParams, size: int) -> tuple[float, float]:
    """(pixel spacing mm, world z of the top edge of row 0)."""
    if int(size) != size or size < 2:
        raise ValueError(f"size must be an integer >= 2, got {size!r}")
    xmin, xmax, zmin, zmax = fov_bounds(params)
    side = max(xmax - xmin, zmax - zmin)
    return side / size, zmin


def pixel_grid(params: ImagingParams, size: int) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Pixel-centre coordinates of the square output image and its fan mask.

    Returns (x_mm (W,), z_mm (H,), pixel_spacing_mm, fan_mask bool (H, W)).
    """
    spacing, ztop = _grid_geometry(params, size)
    idx = np.arange(size, dtype=np.float64) + 0.5
    x = (idx - size / 2.0) * spacing
    z = ztop + idx * spacing
    fan = inside_fan(params, x[None, :], z[:, None])
    return x, z, spacing, fan


def world_to_pixel(
    params: ImagingParams, size: int, x_mm: np.ndarray | float, z_mm: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """(col, row) as floats; integer values are pixel centres."""
    spacing, ztop = _grid_geometry(params, size)
    col = np.asarray(x_mm, dtype=np.float64) / spacing + size / 2.0 - 0.5
    row = (np.asarray(z_mm, dtype=np.float64) - ztop) / spacing - 0.5
    return col, row


def pixel_to_world(
    params: ImagingParams, size: int, col: np.ndarray | float, row: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """(x_mm, z_mm) of (fractional) pixel positions; inverse of `world_to_pixel`."""
    spacing, ztop = _grid_geometry(params, size)
    x = (np.asarray(col, dtype=np.float64) + 0.5 - size / 2.0) * spacing
    z = ztop + (np.asarray(row, dtype=np.float64) + 0.5) * spacing
    return x, z


def label_map(tissue: TissueModel, params: ImagingParams, size: int) -> np.ndarray:
    """Tissue labels (uint8, MASK_LABELS ids) at the pixel centres; 0 outside the fan."""
    x, z, _, fan = pixel_grid(params, size)
    out = np.zeros((size, size), dtype=np.uint8)
    rows, cols = np.nonzero(fan)
    if rows.size:
        labels = getattr(tissue, "labels", None)  # duck-typed models may only offer properties()
        xs, zs = x[cols], z[rows]
        out[rows, cols] = labels(xs, zs) if labels is not None else tissue.properties(xs, zs).label
    return out
