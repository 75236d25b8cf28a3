"""Organ phantoms and lesions of the non-cardiac regions.

Importing this package registers the region simulators with `sonofm.sim.registry`:
breast, thyroid, liver (liver, gallbladder), kidney (kidney, bladder), gynaecology (ovary,
uterus), vessel (carotid_artery, jugular_vein), abdomen (spleen, pancreas), urology (prostate,
testis), superficial (lymph_node, soft_tissue) and obstetric (fetus). Each is
`fn(rng, size) -> list[SimImage]`: one patient, 2-4 images of the same lesion in transverse and
longitudinal planes (axial fetal views) with new probe positions and imaging parameters, ~15%
normal studies (50% in obstetrics).

Reusable parts for further regions:
- `lesions`: `LesionKind` / `OrganCatalogue`, read by `lesion_catalogue(organ)` from the data file
  `lesion_catalogues.toml` (one table of attribute distributions per organ), `sample_lesion`,
  `image_tags`, `findings_from_tags`, `normal_findings`.
- `lesion_section`: `build_section` (attributes -> shapes + tissues in one plane),
  `section_extent` (calipers), `posterior_from_model` (posterior features measured from
  attenuation).
- `anatomy`: body-wall layers (flat or following a curvilinear probe), vessels, bright
  interfaces, organ outlines. `neck`: the anterior neck shared by thyroid and vessel.
- `shapes`: `Intersection`, `Union`, `Dots`, `Arc`, `tight_bounds`, `moved`.
- `plan`: `Scene`, `PatientPlan` (what a planner builds), `image_planes` (the planes of a
  patient's images), `sample_sex`.
- `placement`: probe placement (`params_for_target`, `choose_shift`, both at once: `fit_probe`,
  centred over a target: `place_probe`) and scene assembly (`assemble`, `paint_lesion`,
  `union_bounds`).
- `base`: `render_patient` (scenes -> images with measured labels), `simulator` (planner ->
  registered simulator).
"""

from __future__ import annotations

from sonofm.sim.phantoms import (  # noqa: F401  (registers)
    abdomen,
    breast,
    gynaecology,
    kidney,
    liver,
    obstetric,
    superficial,
    thyroid,
    urology,
    vessel,
)

__all__ = [
    "abdomen",
    "breast",
    "gynaecology",
    "kidney",
    "liver",
    "obstetric",
    "superficial",
    "thyroid",
    "urology",
    "vessel",
]
