"""The report-phrasing tables of :mod:`sonofm.reports.lexicon` (pure data).

What the taxonomy does not own but report *phrasing* needs: the ``REPORT_SUPPLEMENT_*`` frame,
view, sex and grade words, the "normal" phrasings of echo findings, generic lesion words, link
words for predicate inversion, tag and echo synonyms, cue words, and the measurement lookups.
"""

from __future__ import annotations

from sonofm.taxonomy import findings as cf

# ---- report-phrasing supplements (not taxonomy vocabulary) ---------------------------------
REPORT_SUPPLEMENT_FRAMES: dict[str, tuple[str, ...]] = {
    "ED": (
        "end-diastolic frame",
        "end diastole",
        "end-diastole",
        "ED frame",
        "diastolic frame",
        "end-diastolic phase",
        "at end-diastole",
        "frame at end-diastole",
    ),
    "ES": (
        "end-systolic frame",
        "end systole",
        "end-systole",
        "ES frame",
        "systolic frame",
        "end-systolic phase",
        "at end-systole",
        "frame at end-systole",
    ),
}
REPORT_SUPPLEMENT_VIEWS: dict[str, tuple[str, ...]] = {
    "A4C": ("apical four-chamber", "apical 4-chamber", "apical four chamber view", "A4C", "4CH", "AP4"),
    "A2C": ("apical two-chamber", "apical 2-chamber", "A2C", "2CH", "AP2"),
    "A3C": ("apical three-chamber", "apical 3-chamber", "apical long-axis", "A3C", "APLAX", "3CH", "AP3"),
    "PLAX": ("parasternal long-axis", "parasternal long axis view", "PLAX", "PLAX view"),
    "PSAX_MV": (
        "parasternal short-axis at the mitral valve level",
        "parasternal short-axis mitral valve level",
        "PSAX at mitral level",
        "PSAX MV",
        "short-axis at the mitral valve level",
    ),
    "PSAX_PM": (
        "parasternal short-axis at the papillary muscle level",
        "parasternal short-axis papillary muscle level",
        "PSAX at papillary level",
        "PSAX PM",
        "short-axis at the papillary muscle level",
        "mid-papillary short-axis",
    ),
    "PSAX_AP": (
        "parasternal short-axis at the apical level",
        "parasternal short-axis apical level",
        "PSAX at apical level",
        "PSAX apex",
        "short-axis at the apical level",
    ),
    "SC4C": ("subcostal four-chamber", "subcostal 4-chamber", "subcostal view", "SC4C", "subxiphoid view"),
}
REPORT_SUPPLEMENT_SEX: dict[str, tuple[str, ...]] = {
    "F": ("female", "woman", "female patient", "sex: F", "sex F", "F patient"),
    "M": ("male", "man", "male patient", "sex: M", "sex M", "M patient"),
}
# grade words -> grade id; only kept for a finding when the taxonomy lists that grade for it
REPORT_SUPPLEMENT_GRADES: dict[str, str] = {
    "mild": "mild",
    "mildly": "mild",
    "slight": "mild",
    "slightly": "mild",
    "moderate": "moderate",
    "moderately": "moderate",
    "severe": "severe",
    "severely": "severe",
    "markedly": "severe",
    "marked": "severe",
    "small": "small",
    "trivial": "small",
    "trace": "small",
    "minimal": "small",
    "tiny": "small",
    "large": "large",
    "big": "large",
    "sizeable": "large",
}
# adverb form used by the writer in front of predicate phrases ("moderately reduced ...")
GRADE_ADVERB: dict[str, str] = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}
# phrasings that state an echo finding is absent ("normal LV systolic function")
REPORT_SUPPLEMENT_ECHO_NORMAL: dict[str, tuple[str, ...]] = {
    "reduced_lvef": (
        "normal systolic function",
        "preserved systolic function",
        "normal lv function",
        "good lv function",
        "normal LV systolic function",
        "normal left ventricular systolic function",
        "preserved LV systolic function",
        "preserved ejection fraction",
        "normal LVEF",
        "normal ejection fraction",
        "preserved LVEF",
    ),
    "lv_hypertrophy": (
        "normal LV wall thickness",
        "normal left ventricular wall thickness",
        "normal wall thickness",
        "no LV wall thickening",
    ),
    "lv_dilation": (
        "normal LV size",
        "normal left ventricular size",
        "normal LV cavity size",
        "normal LV dimensions",
    ),
    "la_enlargement": ("normal LA size", "normal left atrial size"),
    "rv_dysfunction": (
        "normal RV systolic function",
        "normal right ventricular systolic function",
        "preserved RV function",
        "normal RV function",
    ),
    "elevated_filling_pressure": (
        "normal filling pressure",
        "normal LV filling pressure",
        "normal left ventricular filling pressure",
    ),
    "pericardial_effusion": (),
}
# predicate adjectives that may follow their noun ("dilated LV" <-> "LV is dilated")
REPORT_SUPPLEMENT_PREDICATES: frozenset[str] = frozenset(
    {
        "dilated",
        "enlarged",
        "reduced",
        "impaired",
        "depressed",
        "thickened",
        "hypertrophied",
        "elevated",
        "increased",
        "decreased",
        "normal",
        "preserved",
        "raised",
        "abnormal",
    }
)
REPORT_SUPPLEMENT_LINKS: frozenset[str] = frozenset(
    {
        "is",
        "are",
        "was",
        "were",
        "appear",
        "appears",
        "seem",
        "seems",
        "look",
        "looks",
        "remain",
        "remains",
        "be",
        "to",
        "been",
        "considered",
        "overall",
        "globally",
        "visually",
        "also",
        "diffusely",
    }
)
# generic words for "a lesion" that name no diagnosis tag
REPORT_SUPPLEMENT_LESION_WORDS: tuple[str, ...] = (
    "sonographic abnormality",
    "structural abnormality",
    "focal liver lesion",
    "focal hepatic lesion",
    "focal splenic lesion",
    "focal renal lesion",
    "focal pancreatic lesion",
    "testicular abnormality",
    "focal testicular lesion",
    "lesion",
    "focal lesion",
    "abnormality",
    "focal abnormality",
    "focal mass lesion",
    "space-occupying lesion",
)
# phrases that state the diagnosis "normal" beyond the taxonomy synonyms
REPORT_SUPPLEMENT_NORMAL_STUDY: tuple[str, ...] = (
    "normal study",
    "normal echocardiogram",
    "normal examination",
    "normal scan",
    "normal ultrasound",
    "normal echocardiographic study",
    "no abnormality detected",
    "within normal limits",
    "normal size and echotexture",
    "normal in size and echotexture",
    "normal in size and echogenicity",
    "normal size and echogenicity",
    "normal in size and appearance",
    "normal size and appearance",
    "normal in size, shape and echotexture",
    "normal size, shape and echotexture",
    "normal appearances",
    "wnl",
)
# tag synonyms reports use that the taxonomy does not list (kept here, reported to the taxonomy owner)
# A tag id joined with "+" ("internal+peripheral") states several tags of the dimension at once.
REPORT_SUPPLEMENT_TAG_SYNONYMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("posterior", "enhancement"): ("enhancement", "posterior acoustic enhancement present"),
    # "echogenic focus" is how a stone, a polyp or a calcification is first described: bright
    ("echogenicity", "hyperechoic"): (
        "echogenic focus",
        "bright echogenic focus",
        "echogenic foci in the kidney",
    ),
    ("echogenicity", "anechoic"): ("echolucent", "echo-lucent"),
    ("diagnosis", "cyst"): (
        "microcysts",
        "microcyst",
        "clustered microcysts",
        "baker's cyst",
        "popliteal cyst",
        "ganglion cyst",
        "ganglion",
        "epidermoid cyst",
        "epididymal cyst",
        "spermatocele",
        "sebaceous cyst",
        "simple cyst",
        "complicated cyst",
        "complex cyst",
        "cortical cyst",
        "renal cyst",
        "ovarian cyst",
        "hepatic cyst",
        "splenic cyst",
        "breast cyst",
        "thyroid cyst",
        "follicular cyst",
        "inclusion cyst",
        "cystic mass",
        "colloid cyst",
        "colloid cysts",
        "dermoid cyst",
        "epididymal cysts",
        "chocolate cyst",
        "corpus luteal cyst",
    ),
    ("diagnosis", "fluid_collection"): (
        "peripancreatic fluid",
        "peripancreatic collection",
        "drainable collection",
        "perinephric collection",
        "subcapsular collection",
        "loculated collection",
        "pelvic free fluid",
    ),
    ("diagnosis", "thrombus"): (
        "dvt",
        "deep vein thrombosis",
        "deep venous thrombosis",
        "clot",
        "non-occlusive thrombus",
        "occlusive thrombus",
        "mural thrombus",
        "lv thrombus",
        "apical thrombus",
    ),
    ("diagnosis", "calculus"): ("calculus", "renal calculi", "urolith", "ureteric calculus", "cholelith"),
    ("diagnosis", "plaque"): (
        "calcified plaque",
        "calcified plaques",
        "ulcerated plaque",
        "soft plaque",
        "echolucent plaque",
        "fibrofatty plaque",
    ),
    ("internal", "macrocalcifications"): (
        "calcified",
        "calcification",
        "calcifications",
        "coarse calcification",
    ),
    # O-RADS: a solid component in a cystic lesion makes it multilocular-solid / unilocular-solid
    ("internal", "mixed_cystic_solid"): (
        "solid component",
        "solid components",
        "solid element",
        "solid elements",
        "solid nodular component",
        "mural nodule",
    ),
    ("vascularity", "hypervascular"): (
        "hyperaemic",
        "hyperaemia",
        "hyperemic",
        "hyperemia",
        "increased flow",
        "increased colour flow",
        "increased color flow",
        "marked hyperaemia",
    ),
    ("vascularity", "peripheral"): ("peripheral hyperaemia", "peripheral hyperemia", "rim hyperaemia"),
    ("vascularity", "internal+peripheral"): (
        "internal and peripheral vascularity",
        "peripheral and internal vascularity",
        "internal and peripheral flow",
        "peripheral and internal flow",
        "central and peripheral vascularity",
        "mixed vascularity",
    ),
}
# phrases whose synonym in the taxonomy means something else in this context: replace its entries
REPORT_SUPPLEMENT_OVERRIDES: tuple[tuple[str, str], ...] = (("internal", "mixed_cystic_solid"),)
# echo finding synonyms reports use that the taxonomy does not list
REPORT_SUPPLEMENT_ECHO_SYNONYMS: dict[str, tuple[str, ...]] = {
    "reduced_lvef": (
        "reduced systolic function",
        "impaired systolic function",
        "reduced lv function",
        "impaired lv function",
        "lv dysfunction",
        "lv systolic impairment",
        "poor lv function",
        "depressed lv function",
        "depressed systolic function",
    ),
    "lv_dilation": ("lv cavity dilatation", "dilated lv cavity", "lv dilated"),
    "la_enlargement": ("la dilated", "dilated la"),
}
# phrases that state several echo findings normal at once ("normal biventricular size and function")
REPORT_SUPPLEMENT_ECHO_NORMAL_COMBOS: dict[str, tuple[str, ...]] = {
    "lv_dilation+reduced_lvef": (
        "normal lv size and systolic function",
        "normal lv size and function",
        "normal left ventricular size and function",
        "normal left ventricular size and systolic function",
        "normal lv cavity size and systolic function",
    ),
    "reduced_lvef+rv_dysfunction": (
        "normal biventricular function",
        "normal biventricular systolic function",
        "preserved biventricular function",
        "preserved biventricular systolic function",
    ),
    "lv_dilation+reduced_lvef+rv_dysfunction": (
        "normal biventricular size and function",
        "normal biventricular size and systolic function",
        "normal size and function of both ventricles",
    ),
}
# generic flow words: "no flow" / "no vascularity" right after a negation means the lesion is avascular
REPORT_SUPPLEMENT_FLOW_WORDS: tuple[str, ...] = (
    "flow",
    "vascularity",
    "colour flow",
    "color flow",
    "doppler flow",
    "blood flow",
    "vascular flow",
    "colour doppler flow",
    "color doppler flow",
    "vascularisation",
    "vascularization",
    "doppler signal",
)
# phrases that contain a vocabulary word but state nothing ("normal in size" is not a normal study)
REPORT_SUPPLEMENT_NEUTRAL: tuple[str, ...] = (
    # TI-RADS "echogenic foci" covers punctate, macro, rim and comet-tail foci: not one tag, not hyperechoic
    "echogenic foci",
    "normal in size",
    "normal size",
    "normal limits of size",
    "upper limit of normal",
    "lower limit of normal",
    "normal range",
    "reference range",
    "colour doppler",
    "color doppler",
    "power doppler",
    "on doppler",
    # a halo or rim around a lesion is not the lesion's echogenicity
    "hypoechoic halo",
    "hypoechoic rim",
    "echogenic halo",
    # an organ's smooth outline or wall is not a lesion's circumscribed margin
    "smooth contour",
    "smooth outline",
    "smooth surface",
    "smooth wall",
    "wall smooth",
    "smooth liver contour",
    "smooth liver surface",
    "smoothly outlined",
    # valve calcification is not a lesion's calcification
    "calcified aortic valve",
    "calcified valve",
    "calcified mitral annulus",
    "mitral annular calcification",
    "aortic valve calcification",
)
# dimension-specific context words: an ambiguous phrase goes to the dimension whose cue is nearby
REPORT_SUPPLEMENT_CUES: dict[str, tuple[str, ...]] = {
    "vascularity": (
        "vascularity",
        "vascular",
        "flow",
        "doppler",
        "vascularisation",
        "vascularization",
        "colour",
        "color",
        "perfusion",
        "vessel",
        "signal",
    ),
    "posterior": ("posterior", "acoustic", "through transmission", "shadow", "distal"),
    "internal": ("internal", "component", "content", "contain", "composition", "foci", "echo"),
    "margin": ("margin", "border", "contour", "edge", "outline", "wall"),
    "shape": ("shape", "configuration", "morphology"),
    "echogenicity": ("echogenicity", "echotexture", "echogenic", "echo pattern", "relative to"),
}
# echo finding -> the measurement that sizes it (a number right after the finding belongs to it)
FINDING_SIZE_MEASUREMENT: dict[str, str] = {
    "pericardial_effusion": "pe_size_mm",
    **{f.id: f.size for f in cf.CLINICAL_FINDINGS if f.size},
}
# organ -> measurement a bare "<organ> measures N cm" sentence gives
ORGAN_SIZE_MEASUREMENT: dict[str, str] = {"kidney": "kidney_length_mm", **cf.ORGAN_SIZE_MEASUREMENTS}
CLINICAL: dict[str, cf.ClinicalFinding] = {f.id: f for f in cf.CLINICAL_FINDINGS}
# measurement id -> reporting decimals for the measurements the taxonomy does not own
REPORT_MEASUREMENT_DECIMALS: dict[str, int] = {m.id: m.decimals for m in cf.REPORT_MEASUREMENTS}
