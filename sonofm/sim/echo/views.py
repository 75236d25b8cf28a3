"""Per-view cardiac geometry: one patient's `Heart` cut in a standard echo plane, at ED or ES.

Each builder returns a `ViewGeometry`: a `TissueModel` in phantom coordinates for a phased-array
sector with its apex at the skin (x = 0, z = 0, depth downwards), landmarks in millimetres, the
points that must stay inside the fan, and caliper lines the measurement code samples labels along.

Conventions shared by every builder:
- The LV is a `ProfileShape` along its long axis (base at the mitral annulus midpoint, s grows
  towards the apex); cavity half-width ``D/2 * f(s/L)`` with one shape function ``f`` for every view
  and frame, so disc-summation volumes scale exactly as ``L * D^2`` (see `heart` for why).
- ED -> ES: the apex stays, the base moves towards it (length x k_long), diameters shrink
  (x k_short), walls thicken (myocardial volume conserved), atria are larger (maximal at ES), the
  lateral tricuspid annulus moves TAPSE millimetres towards the RV apex.
- A `layout` (drawn once per view and shared by its ED and ES frames) holds the random placement;
  `fit_layout` then shifts it so the chambers sit inside the scanner's sector.
- Paint order: background, chest wall, pericardium, effusion, walls, atria, RV, LV myocardium,
  LV cavity, valves (later layers win). Mask labels are `MASK_LABELS` ids; walls that have no
  label of their own (RV free wall, atrial walls, aorta) paint 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sonofm.sim.echo.heart import Heart, es_wall_mm
from sonofm.sim.echo.shapes import AxisFrame, Dilated, ProfileShape, Union
from sonofm.sim.tissue import ANECHOIC_DB, Band, Ellipse, Polygon, Shape, Tissue, TissueModel, Tube
from sonofm.taxonomy.masks import MASK_IDS

LV, MYO, LA, RV, RA, PE = (
    MASK_IDS[k] for k in ("lv", "myocardium", "la", "rv", "ra", "pericardial_effusion")
)

# LV cavity shape function f(u), u = s / L from base (0) to apex (1): the base (annulus) is 0.82 of
# the widest diameter, widest at U_PEAK (where PLAX LVID is measured), elliptical rounded apex.
U_PEAK = 0.3
_U = np.sin(np.linspace(0.0, np.pi / 2, 48))  # knots denser towards the apex
PERICARDIUM_MM = 2.2  # thickness of the bright parietal pericardium line


def cavity_profile(u: np.ndarray) -> np.ndarray:
    u = np.asarray(u, dtype=np.float64)
    base = 0.82 + 0.18 * np.sin(0.5 * np.pi * np.clip(u / U_PEAK, 0.0, 1.0))
    tip = np.sqrt(np.clip(1.0 - ((u - U_PEAK) / (1.0 - U_PEAK)) ** 2, 0.0, None))
    return np.where(u < U_PEAK, base, tip)


def wall_profile(u: np.ndarray) -> np.ndarray:
    """Relative wall thickness along the LV: full to mid-ventricle, 75% at the apex."""
    u = np.asarray(u, dtype=np.float64)
    return 1.0 - 0.25 * np.clip((u - 0.55) / 0.45, 0.0, 1.0)


# ------------------------------------------------------------------------------------ tissues
def make_tissues(seed: int) -> dict[str, Tissue]:
    """Acoustic properties (dB re parenchyma, dB/cm/MHz) with per-patient texture seeds.

    Blood is near-anechoic (-52 dB, weak attenuation, so posterior structures enhance);
    myocardium textured and mildly hypoechoic; pericardium and valves bright; effusion anechoic.
    """
    s = int(seed)

    def blood(name: str, label: int) -> Tissue:
        return Tissue(name, -52.0, 0.18, label)

    return {
        "background": Tissue(
            "mediastinum", -24.0, 1.0, 0, texture_db=5.0, texture_scale_mm=7.0, texture_seed=s + 1
        ),
        "chest_wall": Tissue(
            "chest_wall", 0.0, 0.8, 0, texture_db=3.0, texture_scale_mm=1.5, texture_seed=s + 2
        ),
        "liver": Tissue("liver", -2.0, 0.6, 0, texture_db=1.5, texture_scale_mm=2.5, texture_seed=s + 3),
        "pericardium": Tissue("pericardium", 9.0, 1.0, 0),
        "effusion": Tissue("pericardial_effusion", ANECHOIC_DB, 0.05, PE),
        "lv_myo": Tissue(
            "lv_myocardium", -4.0, 0.5, MYO, texture_db=2.5, texture_scale_mm=3.0, texture_seed=s + 4
        ),
        "wall": Tissue(
            "cardiac_wall", -4.0, 0.5, 0, texture_db=2.5, texture_scale_mm=3.0, texture_seed=s + 5
        ),
        "papillary": Tissue("papillary_muscle", -4.0, 0.5, None, texture_db=2.0, texture_seed=s + 6),
        "valve": Tissue("valve", 6.0, 0.6, None),
        "aortic_wall": Tissue("aortic_wall", 5.0, 0.8, 0),
        "lv_blood": blood("lv_blood", LV),
        "la_blood": blood("la_blood", LA),
        "rv_blood": blood("rv_blood", RV),
        "ra_blood": blood("ra_blood", RA),
        "blood": blood("blood", 0),
    }


@dataclass
class ViewGeometry:
    """One view at one frame: what the physics renders and what measurement reads back."""

    view: str
    frame: str
    tissue: TissueModel
    landmarks: dict[str, np.ndarray]  # name -> (x, z) mm
    keep_inside: np.ndarray  # (N, 2) mm points that must lie inside the fan
    calipers: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name -> (p0, p1) mm


# --------------------------------------------------------------------------------- LV builder
@dataclass
class LVWalls:
    """Wall thicknesses (mm) of one LV cut: +n side, -n side, apex cap."""

    pos: float
    neg: float
    apex: float


def lv_walls(h: Heart, t_pos_ed: float, t_neg_ed: float, frame: str, diam_ed: float) -> LVWalls:
    """Wall thicknesses at `frame`; ES walls from myocardial volume conservation."""
    apex_ed = 0.8 * 0.5 * (t_pos_ed + t_neg_ed)
    if frame == "ED":
        return LVWalls(t_pos_ed, t_neg_ed, apex_ed)
    r_ed, r_es = 0.5 * diam_ed, 0.5 * diam_ed * h.k_short
    pos = es_wall_mm(r_ed, t_pos_ed, r_es, h.k_long)
    neg = es_wall_mm(r_ed, t_neg_ed, r_es, h.k_long)
    return LVWalls(pos, neg, apex_ed * 0.5 * (pos / t_pos_ed + neg / t_neg_ed))


def lv_shapes(
    frame: AxisFrame, length: float, half_pos: float, half_neg: float, walls: LVWalls
) -> tuple[ProfileShape, ProfileShape]:
    """(cavity, epicardial outline) of an LV cut along `frame`'s axis from the base."""
    s = length * _U
    f = cavity_profile(_U)
    tau = wall_profile(_U)
    cav = ProfileShape(frame, s, half_pos * f, half_neg * f, edge_mm=0.6)
    cap = np.sin(np.linspace(0.0, np.pi / 2, 9))[1:]
    s_cap = length + walls.apex * cap
    shrink = np.sqrt(np.clip(1.0 - cap**2, 0.0, None))
    out_pos = np.concatenate([half_pos * f + walls.pos * tau, walls.pos * tau[-1] * shrink])
    out_neg = np.concatenate([half_neg * f + walls.neg * tau, walls.neg * tau[-1] * shrink])
    outer = ProfileShape(frame, np.concatenate([s, s_cap]), out_pos, out_neg, edge_mm=0.8)
    return cav, outer


def _ellipse_points(cx: float, cz: float, rx: float, rz: float, angle_deg: float, n: int = 16) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    a = np.deg2rad(angle_deg)
    u, v = rx * np.cos(t), rz * np.sin(t)
    return np.stack([cx + np.cos(a) * u - np.sin(a) * v, cz + np.sin(a) * u + np.cos(a) * v], axis=1)


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 12) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _base_model(T: dict[str, Tissue], chest_mm: float) -> TissueModel:
    model = TissueModel(T["background"])
    model.add(Band.flat(-50.0, chest_mm, edge_mm=1.5), T["chest_wall"])
    return model


def _pericardial_layers(model: TissueModel, T: dict[str, Tissue], ventricles: Shape, pe_mm: float) -> None:
    model.add(Dilated(ventricles, pe_mm + PERICARDIUM_MM, edge_mm=0.8), T["pericardium"])
    if pe_mm > 0:
        model.add(Dilated(ventricles, pe_mm, edge_mm=0.5), T["effusion"])


# ------------------------------------------------------------------------------ apical views
def atrial_scale(frame: str) -> float:
    """Atria are maximal at ES; at ED (after atrial contraction) ~0.85 in every dimension."""
    return 1.0 if frame == "ES" else 0.85


def build_apical(h: Heart, view: str, frame: str, lay: dict[str, Any], T: dict[str, Tissue]) -> ViewGeometry:
    """A4C / A2C / A3C / SC4C: LV long axis in plane, apex near the probe (SC4C: apex to the right)."""
    es = frame == "ES"
    t_deg = lay["axis_deg"]
    a = np.array([np.sin(np.deg2rad(t_deg)), np.cos(np.deg2rad(t_deg))])
    apex = np.array(lay["anchor"], dtype=np.float64)
    L = h.lv_length_mm * (h.k_long if es else 1.0)
    k = h.k_short if es else 1.0
    diam = h.lvidd_mm * (h.lv_ecc if view == "A2C" else 1.0)
    base = apex - L * a
    fr = AxisFrame(float(base[0]), float(base[1]), float(a[0]), float(a[1]))
    if view in ("A4C", "SC4C"):
        t_pos, t_neg = h.lvpwd_mm, h.ivsd_mm  # lateral wall | septum
    elif view == "A2C":
        t_pos, t_neg = 0.5 * (h.ivsd_mm + h.lvpwd_mm), h.lvpwd_mm  # anterior | inferior
    else:  # A3C: anteroseptum | inferolateral
        t_pos, t_neg = h.ivsd_mm, h.lvpwd_mm
    walls = lv_walls(h, t_pos, t_neg, frame, diam)
    cav, outer = lv_shapes(fr, L, 0.5 * diam * k, 0.5 * diam * k, walls)
    f0 = cavity_profile(0.0)
    ann_pos = fr.point(0.0, 0.5 * diam * k * f0)
    ann_neg = fr.point(0.0, -0.5 * diam * k * f0)
    names = {
        "A4C": ("lateral", "septal"),
        "SC4C": ("lateral", "septal"),
        "A2C": ("anterior", "inferior"),
        "A3C": ("anterior", "posterior"),
    }[view]
    landmarks = {
        f"mv_annulus_{names[1]}": ann_neg,
        f"mv_annulus_{names[0]}": ann_pos,
        "lv_apex": fr.point(L, 0.0),
    }
    sc = atrial_scale(frame)
    model = _base_model(T, lay["chest_mm"])
    if view == "SC4C":
        model.add(Ellipse(*lay["liver"], edge_mm=2.0), T["liver"])

    ventricles: list[Shape] = [outer]
    layers_after: list[tuple[Shape, Tissue]] = []
    keep = [outer.outline()]

    la_semi_across = h.la_ml_mm if view in ("A4C", "SC4C") else h.la_ap_mm
    la_c, la_a = h.la_long_mm * sc, la_semi_across * sc
    la_shift = 0.0
    rv_parts: list[tuple[Shape, Tissue]] = []
    if view in ("A4C", "SC4C"):

        def sep_outer(s: float | np.ndarray) -> np.ndarray:
            """Distance of the septum's RV surface from the LV axis at axial position s."""
            return np.interp(s, outer.s_knots, outer.w_neg)

        s_tv = 0.10 * h.lv_length_mm
        d_rva = 0.22 * h.lv_length_mm  # RV apex this far short of the LV apex
        s_rva = L - d_rva
        ts = fr.point(s_tv, -sep_outer(s_tv))
        w_rv = h.rv_basal_mm
        tl_ed = fr.point(s_tv, -sep_outer(s_tv) - w_rv)
        rva = fr.point(s_rva, -sep_outer(s_rva))
        if es:
            # ED geometry of the RV apex and lateral annulus, in the world frame (the apex is fixed).
            base_ed = apex - h.lv_length_mm * a
            fr_ed = AxisFrame(float(base_ed[0]), float(base_ed[1]), float(a[0]), float(a[1]))
            _, outer_ed = lv_shapes(
                fr_ed, h.lv_length_mm, 0.5 * diam, 0.5 * diam, lv_walls(h, t_pos, t_neg, "ED", diam)
            )
            sep_ed = float(np.interp(s_tv, outer_ed.s_knots, outer_ed.w_neg))
            tl_ed = fr_ed.point(s_tv, -sep_ed - w_rv)
            rva_ed = fr_ed.point(
                h.lv_length_mm - d_rva,
                -float(np.interp(h.lv_length_mm - d_rva, outer_ed.s_knots, outer_ed.w_neg)),
            )
            d = rva_ed - tl_ed
            tl = tl_ed + h.tapse_mm * d / np.hypot(*d)
        else:
            tl = tl_ed
        # Free wall bulge: less in systole, and less the better the RV contracts.
        bulge = 0.45 * w_rv if not es else 0.45 * w_rv * (1.0 - 0.3 * min(h.tapse_mm, 25.0) / 25.0)
        mid = 0.5 * (tl + rva)
        ctrl = mid - bulge * np.array(fr.n)
        s_med = np.linspace(s_tv, s_rva, 9)
        medial = fr.point(s_med, -sep_outer(s_med))
        free = _bezier(tl, ctrl, rva, 9)[::-1]
        rv_poly = Polygon(np.concatenate([medial, free[1:]]), edge_mm=0.6)
        rv_wall = Dilated(rv_poly, lay["rv_wall_mm"], edge_mm=0.6)
        ventricles.append(rv_wall)
        keep.append(rv_poly.vertices)
        landmarks["tv_annulus_septal"] = ts
        landmarks["tv_annulus_lateral"] = tl
        landmarks["rv_apex"] = rva
        # RA below the tricuspid annulus, LA below the mitral annulus, kept apart by the atrial septum.
        ra_a = 0.55 * w_rv * sc * (1.15 if h.tapse_mm < 17 else 1.0)
        ra_c = 0.9 * h.la_long_mm * sc * (1.15 if h.tapse_mm < 17 else 1.0)
        tv_mid = 0.5 * (ts + tl)
        ra_v = float((tv_mid - base) @ np.array(fr.n))
        ra_s = float((tv_mid - base) @ a)
        la_shift = max(0.0, ra_v + ra_a + 5.0 + la_a)
        ra_center = fr.point(ra_s - (ra_c - 3.0), ra_v)
        ra = Ellipse(
            float(ra_center[0]), float(ra_center[1]), ra_a, ra_c, fr.ellipse_angle_deg(), edge_mm=0.6
        )
        keep.append(
            _ellipse_points(float(ra_center[0]), float(ra_center[1]), ra_a, ra_c, fr.ellipse_angle_deg())
        )
        rv_parts = [
            (rv_wall, T["wall"]),
            (Dilated(ra, 2.0, edge_mm=0.6), T["wall"]),
            (ra, T["ra_blood"]),
            (rv_poly, T["rv_blood"]),
        ]
        tv_c = 0.5 * (ts + tl) + (5.0 if not es else -2.0) * a
        layers_after += [
            (Tube(np.array([ts, tv_c]), 0.8), T["valve"]),
            (Tube(np.array([tl, tv_c]), 0.8), T["valve"]),
        ]

    if view == "A3C":
        la_shift = -0.4 * la_a  # the LVOT and aortic root take the +n side of the base
    la_center = fr.point(-(la_c - 4.0), la_shift)
    la = Ellipse(float(la_center[0]), float(la_center[1]), la_a, la_c, fr.ellipse_angle_deg(), edge_mm=0.6)
    keep.append(_ellipse_points(float(la_center[0]), float(la_center[1]), la_a, la_c, fr.ellipse_angle_deg()))

    ao_parts: list[tuple[Shape, Tissue]] = []
    if view == "A3C":
        r_ao = lay["aorta_mm"]
        beta = np.deg2rad(lay["aorta_deg"])
        d_loc = np.array([-np.cos(beta), np.sin(beta)])  # (s, v): back past the base, towards +n
        p0 = fr.point(2.0, 0.5 * diam * k * f0 - r_ao + 1.0)
        p1 = p0 + 45.0 * (d_loc[0] * a + d_loc[1] * np.array(fr.n))
        ao_parts = [
            (Tube(np.array([p0, p1]), r_ao + 2.5, edge_mm=0.6), T["aortic_wall"]),
            (Tube(np.array([p0, p1]), r_ao, edge_mm=0.6), T["blood"]),
        ]
        av0 = p0 + 3.0 * (p1 - p0) / 45.0  # closed aortic cusps across the root, 3 mm past the LVOT
        cusp_dir = np.array(fr.n) * np.cos(beta) + a * np.sin(beta)
        layers_after.append(
            (Tube(np.array([av0 - 0.85 * r_ao * cusp_dir, av0 + 0.85 * r_ao * cusp_dir]), 0.7), T["valve"])
        )

    _pericardial_layers(model, T, Union(ventricles), h.pe_mm)
    model.add(Dilated(la, 2.0, edge_mm=0.6), T["wall"])
    for shape, tissue in rv_parts:
        model.add(shape, tissue)
    model.add(la, T["la_blood"])
    for shape, tissue in ao_parts:
        model.add(shape, tissue)
    model.add(outer, T["lv_myo"])
    model.add(cav, T["lv_blood"])
    # Mitral leaflets, closed at both frames (ED: just coapted; ES: bowing slightly towards the LA).
    coapt = fr.point(6.0 if not es else -2.0, 0.1 * diam * k)
    model.add(Tube(np.array([ann_neg, coapt]), 0.9), T["valve"])
    model.add(Tube(np.array([ann_pos, coapt]), 0.9), T["valve"])
    for shape, tissue in layers_after:
        model.add(shape, tissue)
    landmarks["mv_annulus_mid"] = fr.point(0.0, 0.0)
    landmarks["la_roof"] = fr.point(-(2 * la_c - 4.0), la_shift)
    return ViewGeometry(view, frame, model, landmarks, np.concatenate(keep))


# ---------------------------------------------------------------------------------------- PLAX
def build_plax(h: Heart, view: str, frame: str, lay: dict[str, Any], T: dict[str, Tissue]) -> ViewGeometry:
    """Parasternal long axis: RV on top, septum, LV (apex to the left, often cut by the sector),
    aortic root and LA on the right, descending aorta behind the AV groove."""
    es = frame == "ES"
    phi = np.deg2rad(lay["tilt_deg"])
    a = np.array([-np.cos(phi), np.sin(phi)])  # base -> apex: left and slightly deeper
    L_ed = h.lv_length_mm
    L = L_ed * (h.k_long if es else 1.0)
    k = h.k_short if es else 1.0
    apex = np.array(lay["anchor"], dtype=np.float64)
    base = apex - L * a
    fr = AxisFrame(float(base[0]), float(base[1]), float(a[0]), float(a[1]))
    n = np.array(fr.n)  # anterior
    diam = h.lvidd_mm  # f(U_PEAK) = 1, so LVID at U_PEAK is exactly lvidd (x k_short at ES)
    walls = lv_walls(h, h.ivsd_mm, h.lvpwd_mm, frame, diam)
    half = 0.5 * diam * k
    cav, outer = lv_shapes(fr, L, half, half, walls)
    f0 = float(cavity_profile(0.0))

    # RV (outflow) band anterior to the septum and the aortic root.
    r_ao = lay["aorta_mm"]
    s_rv0, s_rv1 = -(r_ao + 12.0), 0.8 * L
    s_rv = np.linspace(s_rv0, s_rv1, 40)
    inner = np.interp(s_rv, outer.s_knots, outer.w_pos)
    taper = np.sqrt(np.clip((s_rv1 - s_rv) / (0.35 * L), 0.0, 1.0))
    rv_depth = lay["rv_mm"] * (1.0 if not es else 0.8 + 0.1 * min(h.tapse_mm, 25.0) / 25.0)
    rv = ProfileShape(fr, s_rv, inner + rv_depth * np.maximum(taper, 0.02), -inner, edge_mm=0.6)
    rv_wall = Dilated(rv, lay["rv_wall_mm"], edge_mm=0.6)

    # Aortic root: lumen's anterior edge continues the septal endocardium.
    beta = np.deg2rad(lay["aorta_deg"])
    ao_dir = -np.cos(beta) * a + np.sin(beta) * n
    ao_v = half * f0 - r_ao
    p0 = fr.point(-1.0, ao_v)
    p1 = p0 + 50.0 * ao_dir
    # LA behind the aortic root, touching its posterior wall; PLAX AP diameter = 2 * semi-axis along n.
    sc = atrial_scale(frame)
    la_ap, la_along = h.la_ap_mm * sc, 0.95 * h.la_ml_mm * sc
    la_s = -(r_ao + 1.0)
    # the aorta rises towards +n away from the valve, so at la_s its posterior wall is above this
    post_wall_v = ao_v - r_ao - 2.5
    la_v = post_wall_v - la_ap
    la_center = fr.point(la_s, la_v)
    la = Ellipse(
        float(la_center[0]), float(la_center[1]), la_ap, la_along, fr.ellipse_angle_deg(), edge_mm=0.6
    )
    # Descending aorta behind the AV groove, outside the pericardium.
    r_da = lay["da_mm"]
    da_v = -(half * f0 + h.lvpwd_mm + h.pe_mm + PERICARDIUM_MM + 3.0 + r_da)
    da = fr.point(-6.0, min(da_v, la_v - la_ap - r_da - 3.0))

    model = _base_model(T, lay["chest_mm"])
    _pericardial_layers(model, T, Union([outer, rv_wall]), h.pe_mm)
    model.add(Ellipse(float(da[0]), float(da[1]), r_da + 2.0, r_da + 2.0, edge_mm=0.6), T["aortic_wall"])
    model.add(Ellipse(float(da[0]), float(da[1]), r_da, r_da, edge_mm=0.6), T["blood"])
    model.add(rv_wall, T["wall"])
    model.add(rv, T["rv_blood"])
    model.add(Dilated(la, 2.0, edge_mm=0.6), T["wall"])
    model.add(la, T["la_blood"])
    model.add(Tube(np.array([p0, p1]), r_ao + 2.5, edge_mm=0.6), T["aortic_wall"])
    model.add(Tube(np.array([p0, p1]), r_ao, edge_mm=0.6), T["blood"])
    model.add(outer, T["lv_myo"])
    model.add(cav, T["lv_blood"])
    # Valves: closed aortic cusps along the root's centre; mitral leaflets closed.
    model.add(Tube(np.array([p0 + 3.0 * ao_dir, p0 + 15.0 * ao_dir]), 0.7), T["valve"])
    ant_root = fr.point(-1.0, ao_v - r_ao)
    post_root = fr.point(0.0, -half * f0)
    coapt = fr.point(10.0 if not es else 3.0, -0.25 * half)
    model.add(Tube(np.array([ant_root, coapt]), 0.9), T["valve"])
    model.add(Tube(np.array([post_root, coapt]), 0.9), T["valve"])

    s_m = U_PEAK * L
    w_sep = float(np.interp(s_m, outer.s_knots, outer.w_pos))
    w_post = float(np.interp(s_m, outer.s_knots, outer.w_neg))
    landmarks = {
        "mv_annulus_anterior": ant_root,
        "mv_annulus_posterior": post_root,
        "lvid_septal": fr.point(s_m, half),
        "lvid_posterior": fr.point(s_m, -half),
        "ivs_rv_side": fr.point(s_m, w_sep),
        "lvpw_epicardial": fr.point(s_m, -w_post),
        "la_anterior": fr.point(la_s, la_v + la_ap),
        "la_posterior": fr.point(la_s, la_v - la_ap),
    }
    calipers = {
        # across the LV at the leaflet-tip level, from inside the RV to beyond any effusion
        "lv_minor": (fr.point(s_m, w_sep + 0.5 * rv_depth), fr.point(s_m, -(w_post + h.pe_mm + 8.0))),
        "la_ap": (fr.point(la_s, la_v + la_ap + 1.5), fr.point(la_s, la_v - la_ap - 6.0)),
    }
    keep_s = np.linspace(0.0, 0.45 * L, 10)
    keep = np.concatenate(
        [
            fr.point(keep_s, np.interp(keep_s, outer.s_knots, outer.w_pos) + rv_depth),
            fr.point(keep_s, -np.interp(keep_s, outer.s_knots, outer.w_neg)),
            _ellipse_points(
                float(la_center[0]), float(la_center[1]), la_ap, la_along, fr.ellipse_angle_deg()
            ),
            np.array([p0 + 20.0 * ao_dir + (r_ao + 2.5) * np.array([0.0, -1.0])]),
        ]
    )
    return ViewGeometry(view, frame, model, landmarks, keep, calipers)


# ---------------------------------------------------------------------------------- short axis
PSAX_LEVEL = {"PSAX_MV": 0.08, "PSAX_PM": 0.5, "PSAX_AP": 0.8}


def build_psax(h: Heart, view: str, frame: str, lay: dict[str, Any], T: dict[str, Tissue]) -> ViewGeometry:
    """Parasternal short axis at the mitral, papillary-muscle or apical level: LV ring, RV crescent
    on the screen left, papillary muscles (inside the LV label, as in CAMUS-style cavity masks)."""
    es = frame == "ES"
    u = PSAX_LEVEL[view]
    k = h.k_short if es else 1.0
    cx, cz = lay["anchor"]
    f = float(cavity_profile(u))
    tau = float(wall_profile(u))
    rx, rz = 0.5 * h.lvidd_mm * f * k, 0.5 * h.lvidd_mm * h.lv_ecc * f * k
    t_ed = {"sep": h.ivsd_mm, "lat": h.lvpwd_mm, "ant": 0.5 * (h.ivsd_mm + h.lvpwd_mm), "inf": h.lvpwd_mm}
    r_ed = 0.25 * h.lvidd_mm * f * (1.0 + h.lv_ecc)
    t = {
        key: (val if not es else es_wall_mm(r_ed, val, r_ed * h.k_short, h.k_long)) * tau
        for key, val in t_ed.items()
    }
    ocx, ocz = cx + 0.5 * (t["lat"] - t["sep"]), cz + 0.5 * (t["inf"] - t["ant"])
    orx, orz = rx + 0.5 * (t["sep"] + t["lat"]), rz + 0.5 * (t["ant"] + t["inf"])
    outer = Ellipse(ocx, ocz, orx, orz, edge_mm=0.8)
    cav = Ellipse(cx, cz, rx, rz, edge_mm=0.6)
    # RV crescent wrapping the septum from the anterior to the inferior insertion.
    w = (
        lay["rv_mm"]
        * (1.0 if u < 0.7 else 0.5)
        * (1.0 if not es else 0.75 + 0.15 * min(h.tapse_mm, 25.0) / 25.0)
    )
    rrx = 0.5 * (1.2 * orx + w)
    rcx = ocx - orx - w + rrx
    rrz, rcz = 0.8 * orz, ocz - 0.2 * orz
    rv = Ellipse(rcx, rcz, rrx, rrz, edge_mm=0.6)
    rv_wall = Dilated(rv, lay["rv_wall_mm"], edge_mm=0.6)

    model = _base_model(T, lay["chest_mm"])
    _pericardial_layers(model, T, Union([outer, rv_wall]), h.pe_mm)
    model.add(rv_wall, T["wall"])
    model.add(rv, T["rv_blood"])
    model.add(outer, T["lv_myo"])
    model.add(cav, T["lv_blood"])
    if view == "PSAX_PM":
        grow = 1.0 if not es else 1.25
        for ang in (np.deg2rad(40.0), np.deg2rad(140.0)):
            pr_x, pr_z = 0.2 * rx * grow, 0.26 * rz * grow
            px = cx + np.cos(ang) * (rx - pr_x * 1.1)
            pz = cz + np.sin(ang) * (rz - pr_z * 1.1)
            model.add(Ellipse(px, pz, pr_x, pr_z, np.rad2deg(ang), edge_mm=0.5), T["papillary"])
    elif view == "PSAX_MV":
        xs = np.linspace(-0.75, 0.75, 9)
        line = np.stack([cx + xs * rx, cz + 0.2 * rz * (1.0 - xs**2)], axis=1)  # closed "fish mouth"
        model.add(Tube(line, 0.9), T["valve"])
    landmarks = {"lv_center": np.array([cx, cz])}
    keep = np.concatenate(
        [_ellipse_points(ocx, ocz, orx, orz, 0.0), _ellipse_points(rcx, rcz, rrx, rrz, 0.0)]
    )
    return ViewGeometry(view, frame, model, landmarks, keep)


# ------------------------------------------------------------------------------------- layouts
def sample_layout(view: str, h: Heart, rng: np.random.Generator) -> dict[str, Any]:
    """Random placement of one view (shared by its ED and ES frames)."""
    u = rng.uniform(size=8)
    chest = 8.0 + 6.0 * u[0]
    rv_wall = 3.0 + 2.0 * u[1]
    bsa_scale = float(np.sqrt(h.bsa_m2 / 1.9))
    lay: dict[str, Any] = {
        "chest_mm": chest,
        "rv_wall_mm": rv_wall,
        "jitter_x": -6.0 + 12.0 * u[2],
        "margin_mm": 6.0 + 20.0 * u[3],
    }
    peri = h.pe_mm + PERICARDIUM_MM
    if view in ("A4C", "A2C", "A3C"):
        lay["axis_deg"] = 180.0 + (4.0 + 12.0 * u[4]) * (1.0 if view == "A4C" else rng.choice([-1.0, 1.0]))
        wall = 0.8 * 0.5 * (h.ivsd_mm + h.lvpwd_mm)
        lay["anchor"] = (0.0, chest + 10.0 + 10.0 * u[5] + peri + wall)
        lay["aorta_mm"] = 13.0 * bsa_scale * (0.9 + 0.2 * u[6])
        lay["aorta_deg"] = 30.0 + 20.0 * u[7]
    elif view == "SC4C":
        lay["axis_deg"] = 180.0 - (50.0 + 20.0 * u[4])
        lay["anchor"] = (30.0, chest + 55.0 + 20.0 * u[5] + peri)
        lay["liver"] = (-25.0 + 20.0 * u[6], chest + 30.0, 110.0, 40.0, -15.0 + 10.0 * u[7])
    elif view == "PLAX":
        lay["tilt_deg"] = 6.0 + 14.0 * u[4]
        lay["rv_mm"] = 22.0 + 10.0 * u[5]
        lay["aorta_mm"] = 13.0 * bsa_scale * (0.9 + 0.2 * u[6])
        lay["aorta_deg"] = 4.0 + 12.0 * u[7]
        lay["da_mm"] = 9.0 + 3.0 * rng.uniform()
        depth_to_base = chest + rv_wall + lay["rv_mm"] + peri + h.ivsd_mm + 0.5 * h.lvidd_mm
        # anchor = LV apex; the base sits right of centre
        phi = np.deg2rad(lay["tilt_deg"])
        lay["anchor"] = (10.0 - h.lv_length_mm * np.cos(phi), depth_to_base + h.lv_length_mm * np.sin(phi))
    elif view in PSAX_LEVEL:
        lay["rv_mm"] = 10.0 + 8.0 * u[4]
        r_out = 0.5 * h.lvidd_mm * h.lv_ecc + h.lvpwd_mm
        lay["anchor"] = (5.0 * u[5], chest + rv_wall + 0.5 * lay["rv_mm"] + peri + r_out + 8.0 * u[6])
    else:
        raise ValueError(f"unknown echo view {view!r}; expected one of {sorted(BUILDERS)}")
    return lay


def shift_layout(lay: dict[str, Any], dx: float, dz: float) -> dict[str, Any]:
    out = dict(lay)
    x, z = lay["anchor"]
    out["anchor"] = (x + dx, z + dz)
    if "liver" in lay:
        lx, lz, *rest = lay["liver"]
        out["liver"] = (lx + dx, lz, *rest)
    return out


def fit_offset(
    points: np.ndarray, sector_deg: float, jitter_x: float, margin_deg: float = 3.0
) -> tuple[float, float]:
    """(dx, dz) that centre `points` laterally (plus jitter) and push them deep enough to lie
    inside a sector of `sector_deg` with `margin_deg` to spare on each side."""
    x = points[:, 0]
    dx = -0.5 * (x.min() + x.max()) + jitter_x
    tan_half = np.tan(np.deg2rad(0.5 * sector_deg - margin_deg))
    need = np.abs(x + dx) / tan_half - points[:, 1]
    dz = max(0.0, float(need.max()) + 2.0)
    return float(dx), dz


Builder = Callable[[Heart, str, str, dict[str, Any], dict[str, Tissue]], ViewGeometry]
BUILDERS: dict[str, Builder] = {
    "A4C": build_apical,
    "A2C": build_apical,
    "A3C": build_apical,
    "SC4C": build_apical,
    "PLAX": build_plax,
    "PSAX_MV": build_psax,
    "PSAX_PM": build_psax,
    "PSAX_AP": build_psax,
}


def build_view(
    h: Heart, view: str, frame: str, lay: dict[str, Any], tissues: dict[str, Tissue]
) -> ViewGeometry:
    try:
        builder = BUILDERS[view]
    except KeyError:
        raise ValueError(f"unknown echo view {view!r}; expected one of {sorted(BUILDERS)}") from None
    if frame not in ("ED", "ES"):
        raise ValueError(f"frame must be 'ED' or 'ES', got {frame!r}")
    return builder(h, view, frame, lay, tissues)
