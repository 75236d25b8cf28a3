"""Clinical findings, measurements and locations that ultrasound reports state beyond the 9
attribute dimensions and the echo guideline findings (issue #22).

Why a separate table: the attribute dimensions are model targets (heads, prompts, losses) and
grow only with care; these are what a report *says* ("moderate hydronephrosis", "c/w tamponade",
"CBD 4 mm", "left breast 2 o'clock") and what the parser must read so that hand-written reports
are not silently half-read. Findings parse as `Finding("finding", id)`; they are not attributes.

Written from how sonographers and radiologists phrase reports (BMUS/ASUM/SRU style, ACR
BI-RADS/TI-RADS terms, ASE echo terms, ISUOG obstetric terms), not from any test set. Phrases are
lowercase surface forms; the report parser normalises hyphens, plurals and abbreviations.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClinicalFinding:
    """A finding a report states. `lesion`: the finding is a lesion a size belongs to ("2 cm
    fibroid"); `size`: the measurement a number right after it gives ("stenosis 60%")."""

    id: str
    phrases: tuple[str, ...]
    organs: tuple[str, ...] = ()  # where it occurs (documentation and plausibility), () = any
    lesion: bool = False
    size: str | None = None
    grades: tuple[str, ...] = ()


_SEV = ("mild", "moderate", "severe")


def _f(fid: str, phrases: str, organs: str = "", **kw) -> ClinicalFinding:
    return ClinicalFinding(
        fid,
        tuple(p.strip() for p in phrases.split("|") if p.strip()),
        tuple(o for o in organs.split() if o),
        **kw,
    )


CLINICAL_FINDINGS: tuple[ClinicalFinding, ...] = (
    # ---- liver, biliary, spleen, pancreas, aorta
    _f(
        "hepatic_steatosis",
        "hepatic steatosis|steatosis|fatty liver|fatty infiltration|fatty infiltration of the liver|"
        "fatty change|diffuse fatty infiltration|hepatic fatty infiltration|fatty liver disease|masld|nafld",
        "liver",
        grades=_SEV,
    ),
    _f("hepatomegaly", "hepatomegaly|enlarged liver", "liver", size="liver_span_mm"),
    _f("cirrhosis", "cirrhosis|cirrhotic liver|cirrhotic morphology|cirrhotic", "liver"),
    _f(
        "focal_fatty_sparing",
        "focal fatty sparing|fatty sparing|focal fat sparing|focal fatty infiltration",
        "liver",
    ),
    _f(
        "caudate_hypertrophy",
        "caudate lobe hypertrophy|caudate hypertrophy|hypertrophied caudate lobe",
        "liver",
    ),
    _f(
        "haemangioma",
        "haemangioma|hemangioma|haemangiomas|hemangiomas|hepatic haemangioma|hepatic hemangioma",
        "liver spleen",
        lesion=True,
    ),
    _f("hcc", "hcc|hepatocellular carcinoma|hepatoma", "liver", lesion=True),
    _f(
        "metastases",
        "metastases|metastasis|metastatic disease|metastatic deposits|metastatic lymphadenopathy|"
        "liver metastases|hepatic metastases",
        lesion=True,
    ),
    _f(
        "biliary_dilatation",
        "biliary dilatation|biliary dilation|intrahepatic biliary dilatation|"
        "intrahepatic duct dilatation|intrahepatic ductal dilatation|biliary ductal dilatation|"
        "dilated bile ducts|dilated cbd|dilated common bile duct|dilated common duct|"
        "bile duct dilatation|ductal dilatation|"
        "extrahepatic biliary dilatation|dilated intrahepatic ducts|ihbd",
        "liver gallbladder",
        size="cbd_mm",
    ),
    _f(
        "gallbladder_wall_thickening",
        "gallbladder wall thickening|gb wall thickening|thickened gallbladder wall|"
        "thickened gb wall|gallbladder wall oedema|gallbladder wall edema",
        "gallbladder",
        size="gb_wall_mm",
    ),
    _f(
        "pericholecystic_fluid",
        "pericholecystic fluid|pericholecystic free fluid|pericholecystic collection",
        "gallbladder",
    ),
    _f(
        "murphy_sign",
        "sonographic murphy sign|sonographic murphy's sign|murphy's sign|murphy sign|"
        "positive murphy's sign|positive sonographic murphy's sign|positive murphy sign",
        "gallbladder",
    ),
    _f(
        "cholecystitis",
        "cholecystitis|acute cholecystitis|chronic cholecystitis|acalculous cholecystitis",
        "gallbladder",
    ),
    _f(
        "polyp",
        "polyp|polyps|gallbladder polyp|endometrial polyp|polypoid lesion",
        "gallbladder uterus",
        lesion=True,
    ),
    _f("splenomegaly", "splenomegaly|enlarged spleen", "spleen", grades=_SEV, size="spleen_length_mm"),
    _f("splenunculus", "splenunculus|splenule|accessory spleen", "spleen", lesion=True),
    _f(
        "granuloma",
        "granuloma|granulomas|calcified granuloma|calcified granulomas|granulomata",
        "spleen liver",
        lesion=True,
    ),
    _f(
        "pancreatic_duct_dilatation",
        "pancreatic duct dilatation|pancreatic ductal dilatation|dilated pancreatic duct|"
        "dilated pd|main pancreatic duct dilatation",
        "pancreas",
        size="pancreatic_duct_mm",
    ),
    _f("pancreatitis", "pancreatitis|acute pancreatitis|chronic pancreatitis", "pancreas"),
    _f("pseudocyst", "pseudocyst|pancreatic pseudocyst|pseudocysts", "pancreas", lesion=True),
    _f("ipmn", "ipmn|intraductal papillary mucinous neoplasm", "pancreas", lesion=True),
    _f(
        "aortic_aneurysm",
        "aortic aneurysm|abdominal aortic aneurysm|aaa|infrarenal aaa|aneurysm|aneurysmal dilatation",
        size="aorta_diameter_mm",
    ),
    # ---- kidney, bladder, prostate, scrotum
    _f(
        "hydronephrosis",
        "hydronephrosis|pelvicalyceal dilatation|pelvicalyceal dilation|pelvicaliectasis|"
        "pelvicalyectasis|pelvi-calyceal dilatation|collecting system dilatation|dilated collecting system|"
        "caliectasis|calyectasis|pyelectasis|renal pelvic dilatation|pelvicalyceal system dilatation",
        "kidney fetus",
        grades=_SEV,
    ),
    _f("hydroureter", "hydroureter|dilated ureter|ureteric dilatation", "kidney"),
    _f(
        "hydronephrosis+hydroureter",
        "hydroureteronephrosis|hydronephrosis and hydroureter|ureterohydronephrosis",
        "kidney",
    ),
    _f(
        "cortical_thinning",
        "cortical thinning|renal cortical thinning|thinned cortex|thin cortex|parenchymal thinning",
        "kidney",
    ),
    _f(
        "increased_cortical_echogenicity",
        "increased cortical echogenicity|increased renal cortical echogenicity|"
        "increased renal echogenicity|echogenic renal cortex",
        "kidney",
    ),
    _f(
        "chronic_kidney_disease",
        "chronic kidney disease|chronic renal disease|medical renal disease|ckd|"
        "chronic renal parenchymal disease",
        "kidney",
    ),
    _f("angiomyolipoma", "angiomyolipoma|aml|angiomyolipomas", "kidney", lesion=True),
    _f("rcc", "rcc|renal cell carcinoma|renal carcinoma", "kidney", lesion=True),
    _f(
        "bladder_wall_thickening",
        "bladder wall thickening|thickened bladder wall|trabeculated bladder|"
        "bladder trabeculation|trabeculation",
        "bladder",
    ),
    _f(
        "prostatomegaly",
        "prostatomegaly|enlarged prostate|prostatic enlargement|benign prostatic hyperplasia|bph|"
        "benign prostatic hypertrophy",
        "prostate",
    ),
    _f(
        "median_lobe",
        "median lobe|median lobe protrusion|intravesical prostatic protrusion|median lobe hypertrophy",
        "prostate",
    ),
    _f("hydrocele", "hydrocele|hydroceles", "testis", grades=("small", "moderate", "large")),
    _f("varicocele", "varicocele|varicoceles", "testis"),
    _f("microlithiasis", "microlithiasis|testicular microlithiasis", "testis"),
    _f("epididymitis", "epididymitis|epididymo-orchitis|epididymoorchitis", "testis"),
    _f("orchitis", "orchitis", "testis"),
    _f("torsion", "torsion|testicular torsion|ovarian torsion|adnexal torsion", "testis ovary"),
    _f(
        "scrotal_wall_thickening",
        "scrotal wall thickening|scrotal wall oedema|scrotal wall edema|thickened scrotal wall",
        "testis",
    ),
    # ---- gynaecology
    _f(
        "fibroid",
        "fibroid|fibroids|leiomyoma|leiomyomas|leiomyomata|myoma|intramural fibroid|subserosal fibroid|"
        "submucosal fibroid|pedunculated fibroid|uterine fibroid|intramural fibroids",
        "uterus",
        lesion=True,
    ),
    _f("adenomyosis", "adenomyosis", "uterus"),
    _f(
        "endometrial_thickening",
        "endometrial thickening|thickened endometrium|endometrial hyperplasia",
        "uterus",
        size="endometrial_thickness_mm",
    ),
    _f("hydrosalpinx", "hydrosalpinx|hydrosalpinges", "ovary", lesion=True),
    _f("endometrioma", "endometrioma|endometriomas|chocolate cyst", "ovary", lesion=True),
    _f("dermoid", "dermoid|dermoid cyst|mature cystic teratoma|teratoma", "ovary", lesion=True),
    _f("dominant_follicle", "dominant follicle|dominant follicles", "ovary", lesion=True),
    _f(
        "corpus_luteum",
        "corpus luteum|corpus luteal cyst|haemorrhagic corpus luteum|hemorrhagic corpus luteum",
        "ovary",
        lesion=True,
    ),
    _f(
        "polycystic_ovaries",
        "polycystic ovaries|polycystic ovarian morphology|polycystic ovary|polycystic appearance|"
        "pcom|polycystic ovarian syndrome morphology",
        "ovary",
    ),
    _f(
        "ovarian_enlargement",
        "enlarged ovary|ovarian enlargement|enlarged right ovary|enlarged left ovary",
        "ovary",
    ),
    # ---- obstetric
    _f(
        "fetal_cardiac_activity",
        "fetal cardiac activity|fetal heart activity|cardiac activity|fetal heartbeat|"
        "fetal heart beat|fetal heart motion|fetal cardiac motion|positive fetal heart",
        "fetus",
    ),
    _f("fetal_pole", "fetal pole|embryonic pole|embryo", "fetus"),
    _f("yolk_sac", "yolk sac", "fetus"),
    _f(
        "miscarriage",
        "miscarriage|missed miscarriage|failed pregnancy|early pregnancy failure|missed abortion|"
        "embryonic demise|fetal demise",
        "fetus",
    ),
    _f("oligohydramnios", "oligohydramnios|reduced liquor|reduced amniotic fluid|anhydramnios", "fetus"),
    _f("polyhydramnios", "polyhydramnios|increased liquor|increased amniotic fluid|hydramnios", "fetus"),
    _f(
        "placenta_previa",
        "placenta previa|placenta praevia|low-lying placenta|low lying placenta|"
        "covering the internal os|major praevia|major previa|previa|praevia",
        "fetus",
    ),
    _f("cephalic_presentation", "cephalic presentation|cephalic|vertex presentation", "fetus"),
    _f("breech_presentation", "breech presentation|breech|frank breech", "fetus"),
    _f(
        "subchorionic_haematoma",
        "subchorionic haematoma|subchorionic hematoma|subchorionic haemorrhage|"
        "subchorionic hemorrhage|subchorionic bleed",
        "fetus",
        lesion=True,
    ),
    _f(
        "echogenic_intracardiac_focus",
        "echogenic intracardiac focus|eif|intracardiac echogenic focus",
        "fetus",
    ),
    _f(
        "two_vessel_cord",
        "two-vessel cord|two vessel cord|single umbilical artery|2-vessel cord|2 vessel cord",
        "fetus",
    ),
    _f(
        "twin_pregnancy",
        "twin pregnancy|twins|twin gestation|dichorionic diamniotic|monochorionic diamniotic|"
        "dcda twins|mcda twins",
        "fetus",
    ),
    # ---- vessels
    _f(
        "stenosis",
        "stenosis|carotid stenosis|ica stenosis|luminal narrowing|haemodynamically significant stenosis|"
        "hemodynamically significant stenosis|significant stenosis|flow-limiting stenosis|stenoses",
        "carotid_artery",
        size="stenosis_pct",
    ),
    _f(
        "occlusion",
        "occlusion|occluded|total occlusion|complete occlusion|occlusive",
        "carotid_artery jugular_vein",
    ),
    _f(
        "intraplaque_haemorrhage",
        "intraplaque haemorrhage|intraplaque hemorrhage|intraplaque haemorrhages",
        "carotid_artery",
    ),
    # ---- heart (beyond the guideline findings of taxonomy.echo)
    _f("tamponade", "tamponade|cardiac tamponade|tamponade physiology|pericardial tamponade", "heart"),
    _f(
        "ra_collapse",
        "right atrial collapse|ra collapse|right atrial systolic collapse|ra systolic collapse|"
        "right atrial inversion|ra inversion|right atrial free wall collapse",
        "heart",
    ),
    _f(
        "rv_collapse",
        "right ventricular diastolic collapse|rv diastolic collapse|rv collapse|"
        "right ventricular collapse|rv free wall collapse|right ventricular free wall collapse",
        "heart",
    ),
    _f(
        "ra_collapse+rv_collapse",
        "ra and rv collapse|ra or rv collapse|ra and rv diastolic collapse|"
        "ra or rv diastolic collapse|right atrial and right ventricular collapse|"
        "right atrial or right ventricular collapse|right heart collapse|right heart chamber collapse",
        "heart",
    ),
    _f(
        "rwma",
        "regional wall motion abnormality|regional wall motion abnormalities|rwma|rwmas|hypokinesis|"
        "hypokinetic|akinesis|akinetic|dyskinesis|dyskinetic|regional hypokinesis",
        "heart",
    ),
    _f(
        "mitral_regurgitation",
        "mitral regurgitation|mitral insufficiency|mitral incompetence",
        "heart",
        grades=_SEV,
    ),
    _f(
        "tricuspid_regurgitation",
        "tricuspid regurgitation|tricuspid insufficiency|tricuspid incompetence",
        "heart",
        grades=_SEV,
    ),
    _f(
        "aortic_regurgitation",
        "aortic regurgitation|aortic insufficiency|aortic incompetence",
        "heart",
        grades=_SEV,
    ),
    _f(
        "aortic_stenosis",
        "aortic stenosis|aortic valve stenosis|calcific aortic stenosis",
        "heart",
        grades=_SEV,
    ),
    _f("mitral_stenosis", "mitral stenosis|mitral valve stenosis", "heart", grades=_SEV),
    _f(
        "dilated_ivc",
        "dilated ivc|plethoric ivc|ivc plethora|dilated inferior vena cava|plethoric inferior vena cava",
        "heart",
    ),
    _f(
        "rv_dilation",
        "rv dilation|rv dilatation|dilated rv|right ventricular dilatation|right ventricular dilation|"
        "right ventricular enlargement|enlarged rv|rv enlargement|dilated right ventricle",
        "heart",
        grades=_SEV,
    ),
    _f(
        "ra_enlargement",
        "right atrial enlargement|ra enlargement|dilated ra|ra dilatation|enlarged right atrium|"
        "dilated right atrium",
        "heart",
        grades=_SEV,
    ),
    _f(
        "pulmonary_hypertension",
        "pulmonary hypertension|elevated pasp|raised pa pressure|elevated pa pressure|"
        "elevated pulmonary pressures|raised pulmonary pressures",
        "heart",
    ),
    _f(
        "diastolic_dysfunction",
        "diastolic dysfunction|impaired relaxation|grade i diastolic dysfunction|"
        "grade ii diastolic dysfunction|grade iii diastolic dysfunction",
        "heart",
    ),
    _f("pleural_effusion", "pleural effusion|pleural effusions|pleural fluid"),
    # ---- thyroid, breast, nodes, soft tissue
    _f(
        "goitre",
        "goitre|goiter|multinodular goitre|multinodular goiter|thyromegaly|enlarged thyroid|"
        "thyroid enlargement|enlarged thyroid gland|multinodular gland",
        "thyroid",
    ),
    _f(
        "thyroiditis",
        "thyroiditis|hashimoto's thyroiditis|hashimoto thyroiditis|focal thyroiditis|"
        "subacute thyroiditis|autoimmune thyroiditis",
        "thyroid",
    ),
    _f("graves_disease", "graves disease|graves' disease|grave's disease|graves", "thyroid"),
    _f("colloid_cyst", "colloid cyst|colloid nodule|colloid cysts", "thyroid", lesion=True),
    _f("fibroadenoma", "fibroadenoma|fibroadenomas", "breast", lesion=True),
    _f("papilloma", "papilloma|intraductal papilloma|papillomas", "breast", lesion=True),
    _f(
        "duct_ectasia",
        "duct ectasia|ductal ectasia|ductal dilatation|dilated ducts|dilated duct|mammary duct ectasia",
        "breast",
    ),
    _f(
        "intramammary_node",
        "intramammary lymph node|intramammary node|intramammary lymph nodes",
        "breast",
        lesion=True,
    ),
    _f("skin_thickening", "skin thickening|thickened skin|cutaneous thickening", "breast"),
    _f("architectural_distortion", "architectural distortion", "breast"),
    _f(
        "malignancy",
        "malignancy|malignant|neoplasm|carcinoma|cancer|sarcoma|urothelial carcinoma|"
        "malignant neoplasm|tumour recurrence|seminoma|germ cell tumour|germ cell tumor",
        lesion=True,
    ),
    _f(
        "lymphadenopathy",
        "lymphadenopathy|adenopathy|enlarged lymph nodes|enlarged lymph node|enlarged nodes|"
        "enlarged node|lymph node enlargement|cervical lymphadenopathy|axillary lymphadenopathy|"
        "pathological lymph nodes|pathologic lymph nodes",
        "lymph_node",
        lesion=True,
    ),
    _f(
        "reactive_node",
        "reactive|reactive lymph node|reactive lymph nodes|reactive node|reactive nodes|"
        "reactive-appearing|reactive appearing|reactive-appearing lymph nodes|reactive appearing lymph nodes",
        "lymph_node",
    ),
    _f(
        "fatty_hilum",
        "fatty hilum|echogenic hilum|fatty hila|echogenic fatty hilum|hilar fat|normal fatty hilum",
        "lymph_node",
    ),
    _f(
        "cortical_thickening",
        "cortical thickening|thickened cortex|eccentric cortical thickening|cortical hypertrophy",
        "lymph_node",
        size="cortical_thickness_mm",
    ),
    _f("necrosis", "necrosis|necrotic|central necrosis|cystic necrosis", "lymph_node"),
    _f("lipoma", "lipoma|lipomas|lipomatous lesion", "soft_tissue breast", lesion=True),
    _f(
        "hernia",
        "hernia|inguinal hernia|umbilical hernia|paraumbilical hernia|incisional hernia|femoral hernia|"
        "epigastric hernia|spigelian hernia",
        "soft_tissue",
    ),
    _f("foreign_body", "foreign body|foreign bodies|retained foreign body", "soft_tissue", lesion=True),
    _f(
        "soft_tissue_oedema",
        "subcutaneous oedema|subcutaneous edema|soft tissue oedema|soft tissue edema|"
        "cobblestoning|cellulitis|cobblestone appearance",
        "soft_tissue",
    ),
    _f("rupture", "rupture|ruptured|leak|leakage", "soft_tissue"),
)

# phrases that state a finding is absent or normal ("clear of the internal os": no previa)
CLINICAL_NORMAL_PHRASES: dict[str, tuple[str, ...]] = {
    "placenta_previa": (
        "clear of the internal os",
        "clear of the os",
        "not low-lying",
        "not low lying",
        "away from the internal os",
    ),
    "oligohydramnios+polyhydramnios": (
        "amniotic fluid volume normal",
        "normal amniotic fluid volume",
        "normal liquor volume",
        "liquor volume normal",
        "normal amniotic fluid",
        "amniotic fluid normal",
        "liquor normal",
        "normal liquor",
    ),
    "lymphadenopathy": (
        "normal-appearing lymph nodes",
        "normal appearing lymph nodes",
        "normal lymph nodes",
        "lymph nodes are normal",
        "no enlarged lymph nodes",
    ),
}


@dataclass(frozen=True)
class ReportMeasurement:
    """A measurement reports give outside `taxonomy.echo.MEASUREMENTS` (id carries the unit)."""

    id: str
    phrases: tuple[str, ...]
    decimals: int = 1


def _m(mid: str, phrases: str, decimals: int = 1) -> ReportMeasurement:
    return ReportMeasurement(mid, tuple(p.strip() for p in phrases.split("|") if p.strip()), decimals)


REPORT_MEASUREMENTS: tuple[ReportMeasurement, ...] = (
    _m(
        "cbd_mm",
        "cbd|common bile duct|common duct|cbd diameter|bile duct|cbd measures|common bile duct diameter",
    ),
    _m("gb_wall_mm", "gallbladder wall thickness|gb wall thickness|gallbladder wall|gb wall"),
    _m("liver_span_mm", "liver span|liver length|hepatic span|craniocaudal liver span", 0),
    _m("spleen_length_mm", "spleen length|splenic length|spleen size|bipolar splenic length|splenic span", 0),
    _m("pancreatic_duct_mm", "pancreatic duct|main pancreatic duct|pd diameter|pancreatic duct diameter"),
    _m(
        "aorta_diameter_mm",
        "aorta|abdominal aorta|aortic diameter|ap diameter of the aorta|infrarenal aorta|"
        "maximal aortic diameter",
    ),
    _m(
        "endometrial_thickness_mm",
        "endometrial thickness|endometrial stripe|endometrial echo|endometrial echo complex|"
        "endometrium measures",
    ),
    _m(
        "prostate_volume_ml",
        "prostate volume|prostatic volume|volume of the prostate|estimated prostate volume",
        0,
    ),
    _m(
        "bladder_volume_ml",
        "bladder volume|prevoid volume|pre-void volume|prevoid bladder volume|"
        "pre-void bladder volume|prevoid bladder",
        0,
    ),
    # a bare "volume" is the volume of the organ the report is about (renamed by organ, see below)
    _m("organ_volume_ml", "volume|estimated volume|calculated volume", 0),
    _m(
        "pvr_ml",
        "post-void residual|post void residual|postvoid residual|pvr|post-micturition residual|"
        "post micturition residual|post-void residual volume|residual volume|post-void volume",
        0,
    ),
    _m(
        "vein_diameter_mm",
        "vein diameter|veins up to|veins measuring up to|largest vein|veins measure up to|"
        "maximal vein diameter",
    ),
    _m("cortical_thickness_mm", "cortical thickness|nodal cortical thickness|cortex measures"),
    _m(
        "renal_pelvis_ap_mm",
        "renal pelvic apd|renal pelvis ap diameter|renal pelvic ap diameter|apd|"
        "anteroposterior renal pelvic diameter|renal pelvic diameter",
    ),
    _m("psv_m_s", "psv|peak systolic velocity|ica psv|cca psv|peak systolic velocities", 2),
    _m("edv_m_s", "end-diastolic velocity|end diastolic velocity", 2),
    _m("ica_cca_ratio", "ica/cca ratio|ica:cca ratio|ica/cca psv ratio|ica to cca ratio"),
    _m("stenosis_pct", "degree of stenosis|percent stenosis", 0),
    _m(
        "rvsp_mmhg",
        "rvsp|pasp|rv systolic pressure|right ventricular systolic pressure|pa systolic pressure|"
        "estimated pa pressure|pulmonary artery systolic pressure",
        0,
    ),
    _m("ivc_mm", "ivc diameter|ivc|inferior vena cava"),
    _m("heart_rate_bpm", "heart rate|hr", 0),
    _m("fhr_bpm", "fhr|fetal heart rate|fetal heart rate of", 0),
    _m("crl_mm", "crl|crown-rump length|crown rump length"),
    _m("bpd_mm", "bpd|biparietal diameter"),
    _m("hc_mm", "hc|head circumference", 0),
    _m("ac_mm", "ac|abdominal circumference", 0),
    _m("fl_mm", "fl|femur length"),
    _m("nt_mm", "nt|nuchal translucency|nuchal translucency thickness"),
    _m("afi_mm", "afi|amniotic fluid index", 0),
    _m("dvp_mm", "deepest vertical pocket|dvp|mvp|maximum vertical pocket|single deepest pocket|sdp"),
    # "3 cm FN" / "3 cm from the nipple" is read by pattern (the parser's _FN_RE), not by name
)

# organ -> measurement a bare "<organ> measures N cm" gives (beyond kidney length in the lexicon)
ORGAN_SIZE_MEASUREMENTS: dict[str, str] = {
    "spleen": "spleen_length_mm",
    "liver": "liver_span_mm",
}
# organ -> measurement a bare "<organ> ... volume N mL" gives
ORGAN_VOLUME_MEASUREMENTS: dict[str, str] = {"prostate": "prostate_volume_ml", "bladder": "bladder_volume_ml"}

# location phrases -> normalised location (the side, where it names a lobe, stays: "right lobe")
LOCATION_PHRASES: dict[str, tuple[str, ...]] = {
    "right lobe": (
        "right lobe",
        "right lobe of the thyroid",
        "right thyroid lobe",
        "right lobe of the liver",
        "right hepatic lobe",
        "right lobe of thyroid",
    ),
    "left lobe": (
        "left lobe",
        "left lobe of the thyroid",
        "left thyroid lobe",
        "left lobe of the liver",
        "left hepatic lobe",
        "left lobe of thyroid",
    ),
    "isthmus": ("isthmus", "thyroid isthmus", "isthmus of the thyroid"),
    "caudate lobe": ("caudate lobe", "caudate"),
    "upper outer quadrant": ("upper outer quadrant", "uoq", "outer upper quadrant"),
    "upper inner quadrant": ("upper inner quadrant", "uiq", "inner upper quadrant"),
    "lower outer quadrant": ("lower outer quadrant", "loq", "outer lower quadrant"),
    "lower inner quadrant": ("lower inner quadrant", "liq", "inner lower quadrant"),
    "retroareolar": ("retroareolar", "retroareolar region", "retro-areolar"),
    "subareolar": ("subareolar", "subareolar region", "sub-areolar", "periareolar"),
    "axillary tail": ("axillary tail", "tail of spence"),
    "upper pole": ("upper pole", "superior pole", "upper pole of the kidney", "upper pole of the spleen"),
    "lower pole": ("lower pole", "inferior pole", "lower pole of the kidney", "lower pole of the spleen"),
    "interpolar region": ("interpolar region", "interpolar", "mid pole", "midpole", "mid-pole", "mid kidney"),
    "renal pelvis": ("renal pelvis",),
    "renal sinus": ("renal sinus",),
    "hilum": ("splenic hilum", "hilum of the spleen"),
    "head": ("pancreatic head", "head of the pancreas", "head of pancreas"),
    "body": ("pancreatic body", "body of the pancreas"),
    "tail": ("pancreatic tail", "tail of the pancreas", "tail of pancreas"),
    "uncinate process": ("uncinate process", "uncinate"),
    "neck": ("gallbladder neck", "neck of the gallbladder", "gb neck"),
    "fundus": ("gallbladder fundus", "fundus of the gallbladder", "uterine fundus", "fundus", "fundal"),
    "anterior wall": ("anterior wall", "anterior uterine wall", "anterior myometrium"),
    "posterior wall": ("posterior wall", "posterior uterine wall", "posterior myometrium"),
    "endometrial cavity": ("endometrial cavity", "uterine cavity"),
    "cervix": ("cervix", "cervical canal"),
    "peripheral zone": ("peripheral zone",),
    "transition zone": ("transition zone", "transitional zone"),
    "central zone": ("central zone",),
    "epididymis": (
        "epididymis",
        "epididymal head",
        "head of the epididymis",
        "epididymal body",
        "epididymal tail",
        "tail of the epididymis",
    ),
    "rete testis": ("rete testis",),
    "axillary": ("axillary", "axilla"),
    "cervical": ("cervical",),
    "supraclavicular": ("supraclavicular",),
    "inguinal": ("inguinal",),
    "intramuscular": ("intramuscular", "within the muscle"),
    "segment": (),  # "segment 6" / "segment VII": read by pattern, normalised to "segment N"
}
# organs without a side: a "right"/"left" in their reports names a lobe or chamber, not a side
UNPAIRED_ORGANS: frozenset[str] = frozenset(
    {"liver", "gallbladder", "spleen", "pancreas", "bladder", "uterus", "heart"}
)
# words after "right"/"left" that make it part of a name, not the side of the finding
NOT_A_SIDE_AFTER: frozenset[str] = frozenset(
    {
        "ventricle",
        "ventricular",
        "atrium",
        "atrial",
        "heart",
        "hemidiaphragm",
        "sided",
        "bundle",
        "coronary",
        "hepatic",
        "portal",
        "pleural",
        "ventricles",
        "atria",
        "axis",
    }
)
