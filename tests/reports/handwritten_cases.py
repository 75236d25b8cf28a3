"""Hand-written report snippets, phrased as sonographers write (not the writer's templates).

Each case: (text, region or None, expected). `expected` keys:
- "present" / "absent" / "uncertain": sets of (dimension, tag) that must be EXACTLY the parsed ones
  with that status (echo findings use dimension "echo");
- "grades": {(dimension, tag): grade}; "measurements": {id: value} (exact set, compared to 1e-6);
- "organ", "view", "frame", "sex", "assessment": compared when given;
- "unknown": substrings that must appear among unknown_terms.
"""

from __future__ import annotations

CASES: list[tuple[str, str | None, dict]] = [
    (
        "Rt lobe: hypoechoic solid nodule w/ punctate echogenic foci, 1.2 x 0.8 x 0.9 cm.",
        "thyroid",
        {
            "present": {
                ("echogenicity", "hypoechoic"),
                ("internal", "solid"),
                ("diagnosis", "nodule"),
                ("internal", "microcalcifications"),
            },
            "measurements": {"lesion_width_mm": 12, "lesion_height_mm": 8, "lesion_length_mm": 9},
            "organ": "thyroid",
        },
    ),
    (
        "Simple appearing cyst in the RUQ of the L breast, no shadowing or enhancement.",
        "breast",
        {
            "present": {("diagnosis", "cyst")},
            "absent": {("posterior", "shadowing"), ("posterior", "enhancement")},
            "organ": "breast",
        },
    ),
    (
        "No internal vascularity but peripheral flow present.",
        None,
        {"present": {("vascularity", "peripheral")}, "absent": {("vascularity", "internal")}},
    ),
    (
        "EF 55-60%.",
        "heart",
        {"measurements": {"lvef_pct": 57.5}},
    ),
    (
        "LV is mildly dilated, LVIDd 5.9 cm.",
        "heart",
        {
            "present": {("echo", "lv_dilation")},
            "grades": {("echo", "lv_dilation"): "mild"},
            "measurements": {"lvidd_mm": 59.0},
        },
    ),
    (
        "Small pericardial effusion, no tamponade physiology.",
        "heart",
        {
            "present": {("echo", "pericardial_effusion")},
            "grades": {("echo", "pericardial_effusion"): "small"},
            "unknown": ["tamponade"],
        },
    ),
    (
        "Multiloculated cystic lesion L ovary, possible septation.",
        "gynaecology",
        {
            "present": {("diagnosis", "cyst"), ("internal", "cystic"), ("internal", "septations")},
            "organ": "ovary",
        },
    ),
    (
        "Irregular hypoechoic mass, cannot exclude microcalcifications.",
        "breast",
        {
            "present": {("shape", "irregular"), ("echogenicity", "hypoechoic"), ("diagnosis", "mass")},
            "uncertain": {("internal", "microcalcifications")},
        },
    ),
    (
        "E/e' 15, TAPSE 14mm - RV function reduced.",
        "heart",
        {
            "present": {("echo", "rv_dysfunction")},
            "measurements": {"e_e_prime_ratio": 15.0, "tapse_mm": 14.0},
        },
    ),
    (
        "There is a well defined anechoic lesion with posterior acoustic enhancement, no internal echoes, "
        "no septations, avascular on CDI.",
        None,
        {
            "present": {
                ("margin", "circumscribed"),
                ("echogenicity", "anechoic"),
                ("posterior", "enhancement"),
                ("vascularity", "avascular"),
            },
            "absent": {("internal", "debris"), ("internal", "septations")},
        },
    ),
    (
        "Lt lobe nodule 8mm, isoechoic, spongiform, wider than tall. TR1.",
        "thyroid",
        {
            "present": {
                ("diagnosis", "nodule"),
                ("echogenicity", "isoechoic"),
                ("internal", "spongiform"),
                ("shape", "wider_than_tall"),
            },
            "measurements": {"lesion_width_mm": 8.0},
            "assessment": {"TI-RADS": "TR1"},
        },
    ),
    (
        "Taller-than-wide markedly hypoechoic nodule with spiculated margins and ETE; ACR TI-RADS 5",
        "thyroid",
        {
            "present": {
                ("shape", "taller_than_wide"),
                ("echogenicity", "very_hypoechoic"),
                ("diagnosis", "nodule"),
                ("margin", "spiculated"),
                ("margin", "extrathyroidal_extension"),
            },
            "assessment": {"TI-RADS": "TR5"},
        },
    ),
    (
        "Kidneys: RK 10.8 cm bipolar length, simple cyst upper pole 14 x 12 mm. No hydronephrosis.",
        "kidney",
        {
            "present": {("diagnosis", "cyst")},
            "measurements": {"kidney_length_mm": 108.0, "lesion_width_mm": 14.0, "lesion_height_mm": 12.0},
            "organ": "kidney",
            "unknown": ["hydronephrosis"],
        },
    ),
    (
        "Normal LV size, normal wall thickness. LVEF 62%. No regional wall motion abnormality.",
        "heart",
        {"absent": {("echo", "lv_dilation"), ("echo", "lv_hypertrophy")}, "measurements": {"lvef_pct": 62.0}},
    ),
    (
        "Severely reduced LV systolic function, EF ~25%.",
        "heart",
        {
            "present": {("echo", "reduced_lvef")},
            "grades": {("echo", "reduced_lvef"): "severe"},
            "measurements": {"lvef_pct": 25.0},
        },
    ),
    (
        "Moderate LAE (LAVI 45 ml/m2).",
        "heart",
        {
            "present": {("echo", "la_enlargement")},
            "grades": {("echo", "la_enlargement"): "moderate"},
            "measurements": {"lavi_ml_m2": 45.0},
        },
    ),
    (
        "A4C, ED frame. LV end-diastolic volume 140 mL.",
        "heart",
        {"view": "A4C", "frame": "ED", "measurements": {"lv_edv_ml": 140.0}},
    ),
    (
        "PLAX: IVSd 1.3 cm, LVPWd 1.2cm, concentric LVH.",
        "heart",
        {
            "present": {("echo", "lv_hypertrophy")},
            "view": "PLAX",
            "measurements": {"ivsd_mm": 13.0, "lvpwd_mm": 12.0},
        },
    ),
    (
        "Filling pressures are elevated.",
        "heart",
        {"present": {("echo", "elevated_filling_pressure")}},
    ),
    (
        "No pericardial effusion seen.",
        "heart",
        {"absent": {("echo", "pericardial_effusion")}},
    ),
    (
        "Heterogeneous mass w/o calcification, internal flow on colour doppler.",
        None,
        {
            "present": {
                ("echogenicity", "heterogeneous"),
                ("diagnosis", "mass"),
                ("vascularity", "internal"),
            },
            "unknown": [],
        },
    ),
    (
        "Oval circumscribed parallel hypoechoic mass, no posterior features, BI-RADS 3.",
        "breast",
        {
            "present": {
                ("shape", "oval"),
                ("margin", "circumscribed"),
                ("shape", "wider_than_tall"),
                ("echogenicity", "hypoechoic"),
                ("diagnosis", "mass"),
            },
            "assessment": {"BI-RADS": "3"},
        },
    ),
    (
        "Complex collection with debris and thick septations in the RIF, ? abscess.",
        "superficial",
        {"present": {("diagnosis", "fluid_collection"), ("internal", "debris"), ("internal", "septations")}},
    ),
    (
        "Gallbladder: sludge, no stones, no wall thickening.",
        "liver",
        {"present": {("internal", "debris")}, "absent": {("diagnosis", "calculus")}, "organ": "gallbladder"},
    ),
    (
        "CCA IMT 0.7mm bilat, no plaque.",
        "vessel",
        {"measurements": {"imt_mm": 0.7}, "organ": "carotid_artery", "absent": {("diagnosis", "plaque")}},
    ),
    (
        "Liver normal in size with a 2.3cm echogenic lesion, probable haemangioma.",
        "liver",
        {
            "present": {("echogenicity", "hyperechoic")},
            "measurements": {"lesion_width_mm": 23.0},
            "organ": "liver",
            "unknown": ["haemangioma"],
        },
    ),
    (
        "Mixed solid-cystic nodule isthmus, comet tail artefacts present, not vascular.",
        "thyroid",
        {
            "present": {
                ("internal", "mixed_cystic_solid"),
                ("diagnosis", "nodule"),
                ("internal", "comet_tail"),
            },
            "organ": "thyroid",
        },
    ),
    (
        "Angular margins, microlobulated in part. Posterior acoustic shadowing. Hypervascular.",
        "breast",
        {
            "present": {
                ("margin", "angular"),
                ("margin", "microlobulated"),
                ("posterior", "shadowing"),
                ("vascularity", "hypervascular"),
            }
        },
    ),
    (
        "LVEF is normal at 58 percent; no LV hypertrophy; LA not dilated.",
        "heart",
        {
            "absent": {("echo", "reduced_lvef"), ("echo", "lv_hypertrophy"), ("echo", "la_enlargement")},
            "measurements": {"lvef_pct": 58.0},
        },
    ),
    (
        "Testis: round hypoechoic solid lesion 9 x 7 mm w/ increased vascularity. Possible seminoma.",
        "urology",
        {
            "present": {
                ("shape", "round"),
                ("echogenicity", "hypoechoic"),
                ("internal", "solid"),
                ("vascularity", "hypervascular"),
            },
            "measurements": {"lesion_width_mm": 9.0, "lesion_height_mm": 7.0},
            "organ": "testis",
            "unknown": ["seminoma"],
        },
    ),
    (
        "Female. Subcostal view end-systole, E/e' ratio 9.",
        "heart",
        {"sex": "F", "view": "SC4C", "frame": "ES", "measurements": {"e_e_prime_ratio": 9.0}},
    ),
    (
        "Findings: indistinct margins, however no shadowing. Impression: suspicious for malignancy.",
        "breast",
        {"present": {("margin", "indistinct")}, "absent": {("posterior", "shadowing")}},
    ),
    (
        "Lymph node with preserved fatty hilum, cortex 2mm, no abnormal vascularity; reactive.",
        "superficial",
        {"organ": "lymph_node"},
    ),
    (
        "The endometrium is thin. Uterine fibroid 3.4 x 2.9 x 3.1 cm, hypoechoic with shadowing.",
        "gynaecology",
        {
            "present": {("echogenicity", "hypoechoic"), ("posterior", "shadowing")},
            "measurements": {"lesion_width_mm": 34.0, "lesion_height_mm": 29.0, "lesion_length_mm": 31.0},
            "organ": "uterus",
            "unknown": ["fibroid"],
        },
    ),
]

# whole reports (several sections, other organs mentioned, indications that must not count)
CASES += [
    (
        "TTE. Indication: SOB, ?LV dysfunction.\n"
        "Findings: The left ventricle is moderately dilated (LVIDd 6.4 cm) with severely reduced systolic "
        "function, biplane EF 25-30%. Wall thickness normal (IVSd 0.9 cm, PWd 0.9 cm). The left atrium is "
        "severely dilated, LAVI 52 mL/m2. RV size normal, TAPSE 1.5 cm indicating reduced RV function. "
        "E/e' 18 consistent with raised filling pressures. Trivial pericardial effusion. No thrombus seen. "
        "Mild MR.\n"
        "Conclusion: Dilated cardiomyopathy with severe LV systolic dysfunction.",
        None,
        {
            "present": {
                ("echo", "lv_dilation"),
                ("echo", "reduced_lvef"),
                ("echo", "la_enlargement"),
                ("echo", "rv_dysfunction"),
                ("echo", "elevated_filling_pressure"),
                ("echo", "pericardial_effusion"),
            },
            "absent": {("echo", "lv_hypertrophy"), ("diagnosis", "thrombus")},
            "grades": {
                ("echo", "lv_dilation"): "moderate",
                ("echo", "reduced_lvef"): "severe",
                ("echo", "la_enlargement"): "severe",
                ("echo", "pericardial_effusion"): "small",
            },
            "measurements": {
                "lvidd_mm": 64.0,
                "lvef_pct": 27.5,
                "ivsd_mm": 9.0,
                "lvpwd_mm": 9.0,
                "lavi_ml_m2": 52.0,
                "tapse_mm": 15.0,
                "e_e_prime_ratio": 18.0,
            },
            "organ": "heart",
            "unknown": ["cardiomyopathy", "MR"],
        },
    ),
    (
        "CLINICAL HISTORY: palpable lump, ? cyst.\nFINDINGS:\nRight breast 10 o'clock, 3 cm FN: there is an "
        "irregular, not circumscribed hypoechoic mass measuring 14 x 11 x 12 mm with angular margins and "
        "posterior acoustic shadowing. Internal vascularity present. No associated calcifications. "
        "The axillary lymph nodes are normal.\nIMPRESSION:\n1. Suspicious right breast mass, BI-RADS 4C.",
        "breast",
        {
            "present": {
                ("shape", "irregular"),
                ("echogenicity", "hypoechoic"),
                ("diagnosis", "mass"),
                ("margin", "angular"),
                ("posterior", "shadowing"),
                ("vascularity", "internal"),
            },
            "absent": {("margin", "circumscribed")},
            "measurements": {"lesion_width_mm": 14.0, "lesion_height_mm": 11.0, "lesion_length_mm": 12.0},
            "organ": "breast",
            "assessment": {"BI-RADS": "4C"},
            "unknown": ["calcifications"],
        },
    ),
    (
        "Thyroid: normal size. R lobe mid pole: solid isoechoic nodule 2.1 x 1.4 x 2.5 cm, smooth margins, "
        "no echogenic foci, no ETE. L lobe: several small colloid cysts with comet-tail artefact. "
        "Impression: TR3 nodule R lobe, meets criteria for FNA.",
        "thyroid",
        {
            "present": {
                ("internal", "solid"),
                ("echogenicity", "isoechoic"),
                ("diagnosis", "nodule"),
                ("margin", "circumscribed"),
                ("diagnosis", "cyst"),
                ("internal", "comet_tail"),
            },
            "absent": {("margin", "extrathyroidal_extension")},
            "measurements": {"lesion_width_mm": 21.0, "lesion_height_mm": 14.0, "lesion_length_mm": 25.0},
            "organ": "thyroid",
            "assessment": {"TI-RADS": "TR3"},
        },
    ),
]

CASES += [
    ("No flow on colour Doppler.", None, {"present": {("vascularity", "avascular")}}),
    ("No focal lesion in the liver.", None, {"present": {("diagnosis", "normal")}, "organ": "liver"}),
    (
        "Solid mass without vascularity",
        None,
        {"present": {("diagnosis", "mass"), ("internal", "solid"), ("vascularity", "avascular")}},
    ),
]


# Expectations added with the issue-#22 lexicon: clinical findings outside the 9 dimensions
# (dimension "finding"), guideline-derived echo findings from measurements ("EF 55-60%" -> EF not
# reduced), distance from the nipple, "calcification" as a (macro)calcification.
_GROWN: dict[str, dict[str, set]] = {
    "EF 55-60%.": {"absent": {("echo", "reduced_lvef")}},
    "Small pericardial effusion, no tamponade physiology.": {"absent": {("finding", "tamponade")}},
    "E/e' 15, TAPSE 14mm - RV function reduced.": {"present": {("echo", "elevated_filling_pressure")}},
    "Kidneys: RK 10.8 cm bipolar length, simple cyst upper pole 14 x 12 mm. No hydronephrosis.": {
        "absent": {("finding", "hydronephrosis")}
    },
    "Normal LV size, normal wall thickness. LVEF 62%. No regional wall motion abnormality.": {
        "absent": {("finding", "rwma"), ("echo", "reduced_lvef")}
    },
    "Heterogeneous mass w/o calcification, internal flow on colour doppler.": {
        "absent": {("internal", "macrocalcifications")}
    },
    "Liver normal in size with a 2.3cm echogenic lesion, probable haemangioma.": {
        "uncertain": {("finding", "haemangioma")}
    },
    "Testis: round hypoechoic solid lesion 9 x 7 mm w/ increased vascularity. Possible seminoma.": {
        "uncertain": {("finding", "malignancy")}
    },
    "Female. Subcostal view end-systole, E/e' ratio 9.": {"absent": {("echo", "elevated_filling_pressure")}},
    "Findings: indistinct margins, however no shadowing. Impression: suspicious for malignancy.": {
        "uncertain": {("finding", "malignancy")}
    },
    "Lymph node with preserved fatty hilum, cortex 2mm, no abnormal vascularity; reactive.": {
        "present": {("finding", "reactive_node"), ("finding", "fatty_hilum")}
    },
    "The endometrium is thin. Uterine fibroid 3.4 x 2.9 x 3.1 cm, hypoechoic with shadowing.": {
        "present": {("finding", "fibroid")}
    },
}


def _grow(cases: list[tuple[str, str | None, dict]]) -> list[tuple[str, str | None, dict]]:
    out = []
    for text, region, exp in cases:
        exp = dict(exp)
        for key, extra in _GROWN.get(text, {}).items():
            exp[key] = set(exp.get(key, set())) | extra
        # words the grown lexicon now reads are no longer unknown
        known = {"tamponade", "hydronephrosis", "haemangioma", "seminoma", "fibroid", "calcifications"}
        if "unknown" in exp:
            exp["unknown"] = [u for u in exp["unknown"] if u.lower() not in known]
        if text.startswith("CLINICAL HISTORY: palpable lump"):
            exp["absent"] = set(exp.get("absent", set())) | {
                ("finding", "lymphadenopathy"),  # "The axillary lymph nodes are normal."
                ("internal", "macrocalcifications"),  # "No associated calcifications."
            }
            exp["measurements"] = {**exp.get("measurements", {}), "distance_from_nipple_mm": 30.0}
        if text.startswith("Thyroid: normal size. R lobe mid pole"):
            exp["present"] = set(exp.get("present", set())) | {("finding", "colloid_cyst")}
        out.append((text, region, exp))
    return out


CASES = _grow(CASES)
