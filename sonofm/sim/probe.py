"""Probe geometry: where the beams go, the field of view and the fan.

Three transducer families, all described in the world frame of `sonofm.sim.tissue` (x lateral,
z depth, millimetres, z = 0 at the skin contact point at x = 0):

- ``linear``: parallel vertical beams over ``width_mm``; the fan is a rectangle.
- ``curvilinear``: beams radiate from a virtual apex ``radius_mm`` behind the skin, at
  (0, -radius_mm), over ``sector_deg``; the fan is an annular sector whose inner arc is the skin.
- ``phased``: beams radiate from an apex on the skin at (0, 0) over ``sector_deg`` (<= 90 degrees
  typical); the fan is a circular sector with its apex at the top centre of the image.

Every beam is parametrised by a lateral coordinate (x in mm for linear, steering angle in radians
for the sector probes) and a path length along the beam from the skin (``path_mm`` in
[0, depth_mm]); ``depth_mm`` is the imaging depth along every beam. Written here because it is the
geometry of scan conversion itself; no library describes transducer fans.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

PROBES = ("linear", "curvilinear", "phased")


class GeometryParams(Protocol):
    """The fields of `ImagingParams` the geometry needs (kept structural to avoid an import cycle)."""

    probe: str
    depth_mm: float
    width_mm: float | None
    sector_deg: float | None
    radius_mm: float | None


def apex_offset(params: GeometryParams) -> float:
    """Distance from the beams' common apex to the skin along the central beam (0 for linear/phased)."""
    if params.probe == "curvilinear":
        return float(params.radius_mm or 0.0)
    return 0.0


def lateral_span(params: GeometryParams) -> tuple[float, float]:
    """Range of the lateral beam coordinate: mm for linear, radians for sector probes."""
    if params.probe == "linear":
        half = 0.5 * float(params.width_mm or 0.0)
    else:
        half = 0.5 * np.deg2rad(float(params.sector_deg or 0.0))
    return -half, half


def beam_to_world(
    params: GeometryParams, lateral: np.ndarray, path_mm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """World (x, z) of points at lateral coordinate `lateral` and path length `path_mm` along the beam."""
    lateral = np.asarray(lateral, dtype=np.float64)
    path_mm = np.asarray(path_mm, dtype=np.float64)
    if params.probe == "linear":
        return np.broadcast_arrays(lateral, path_mm)
    r0 = apex_offset(params)
    r = r0 + path_mm
    return r * np.sin(lateral), r * np.cos(lateral) - r0


def world_to_beam(params: GeometryParams, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `beam_to_world`: (lateral, path_mm) of world points (no range check)."""
    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    if params.probe == "linear":
        return np.broadcast_arrays(x, z)
    r0 = apex_offset(params)
    zz = z + r0
    return np.arctan2(x, zz), np.sqrt(x * x + zz * zz) - r0


def inside_fan(params: GeometryParams, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Boolean: which world points the probe insonifies (the fan / field of view)."""
    lat, path = world_to_beam(params, x, z)
    lo, hi = lateral_span(params)
    ok = (lat >= lo) & (lat <= hi) & (path >= 0.0) & (path <= params.depth_mm)
    if params.probe != "linear":
        # Points behind the apex plane would otherwise alias into the sector through arctan2.
        ok &= (np.asarray(z, dtype=np.float64) + apex_offset(params)) > 0
    return ok


def fov_bounds(params: GeometryParams) -> tuple[float, float, float, float]:
    """(xmin, xmax, zmin, zmax) of the fan in world millimetres."""
    depth = float(params.depth_mm)
    if params.probe == "linear":
        half = 0.5 * float(params.width_mm or 0.0)
        return -half, half, 0.0, depth
    r0 = apex_offset(params)
    half = 0.5 * np.deg2rad(float(params.sector_deg or 0.0))
    r1 = r0 + depth
    xmax = r1 * np.sin(min(half, np.pi / 2))
    # shallowest point: the inner arc's ends (the skin line for curvilinear, the apex for phased)
    zmin = r0 * np.cos(half) - r0 if r0 > 0 else 0.0
    zmax = r1 - r0 if half > 0 else depth
    return -xmax, xmax, float(zmin), float(zmax)
