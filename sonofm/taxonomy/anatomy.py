"""Anatomy hierarchy: body system -> region -> organ.

Why a hand-written table: no maintained ontology package (RadLex, SNOMED CT, UBERON) installs
offline here or carries the *ultrasound reporting* synonyms a parser needs ("GB", "IJV", "CCA"),
and the region level is sonofm's own grouping (EchoVLM's seven regions plus the simulator's extra
ones). Organ ids are also the tag ids of the ``organ`` attribute dimension.

Synonyms are lowercase surface forms a report may use for the organ itself. Phrases that name a
*location within* an organ ("left lobe of the thyroid", "upper outer quadrant") are kept apart in
``Organ.locations`` so a parser can report them without mistaking them for another organ.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BodySystem:
    """Top level of the hierarchy; also the tags of the ``body_system`` attribute dimension."""

    id: str
    phrase: str
    synonyms: tuple[str, ...]
    definition: str


@dataclass(frozen=True)
class Organ:
    """One organ (or organ-like target such as the fetus or soft tissue) and how reports name it."""

    id: str
    region: str
    system: str
    phrase: str
    synonyms: tuple[str, ...]
    definition: str
    locations: tuple[str, ...] = ()  # sub-organ locations a report may give (not organ synonyms)


BODY_SYSTEMS: tuple[BodySystem, ...] = (
    BodySystem(
        "breast",
        "breast",
        ("breast", "mammary"),
        "The paired mammary glands of the anterior chest wall with their ducts, lobules and stroma.",
    ),
    BodySystem(
        "endocrine",
        "endocrine system",
        ("endocrine system", "endocrine"),
        "Hormone-secreting glands; in neck ultrasound chiefly the thyroid gland.",
    ),
    BodySystem(
        "digestive",
        "digestive system",
        ("digestive system", "digestive", "gastrointestinal system", "hepatobiliary system", "hepatobiliary"),
        "The gastrointestinal tract and its solid organs: liver, gallbladder and pancreas.",
    ),
    BodySystem(
        "urinary",
        "urinary system",
        ("urinary system", "urinary tract", "renal tract", "urinary"),
        "The kidneys, ureters and urinary bladder, which produce, carry and store urine.",
    ),
    BodySystem(
        "female_reproductive",
        "female reproductive system",
        (
            "female reproductive system",
            "female pelvis",
            "gynaecological",
            "gynecological",
            "female genital tract",
        ),
        "The uterus, ovaries and adnexa, including pregnancy and the fetus.",
    ),
    BodySystem(
        "male_reproductive",
        "male reproductive system",
        ("male reproductive system", "male genital tract", "male genital organs"),
        "The prostate, testes and scrotal contents.",
    ),
    BodySystem(
        "cardiovascular",
        "cardiovascular system",
        ("cardiovascular system", "cardiovascular", "circulatory system", "vascular system"),
        "The heart and blood vessels, including the carotid arteries and jugular veins.",
    ),
    BodySystem(
        "musculoskeletal",
        "musculoskeletal system",
        ("musculoskeletal system", "musculoskeletal", "msk"),
        "Muscles, tendons, joints and the subcutaneous soft tissues.",
    ),
    BodySystem(
        "lymphatic",
        "lymphatic system",
        ("lymphatic system", "lymphatic", "lymphoid system"),
        "Lymph nodes, lymphatic vessels and the spleen, which filter lymph and blood.",
    ),
)

REGIONS: tuple[str, ...] = (
    "breast",
    "thyroid",
    "liver",
    "kidney",
    "gynaecology",
    "vessel",
    "heart",
    "abdomen",
    "urology",
    "superficial",
    "obstetric",
)
# EchoVLM's seven report-generation regions (docs/methods.md section 5).
CORE_REGIONS: tuple[str, ...] = ("breast", "gynaecology", "heart", "kidney", "liver", "thyroid", "vessel")

ORGANS: tuple[Organ, ...] = (
    Organ(
        "breast",
        "breast",
        "breast",
        "breast",
        ("breast", "breasts", "breast tissue", "mammary gland", "breast parenchyma", "fibroglandular tissue"),
        "Glandular and fatty tissue of the anterior chest wall that contains the milk ducts and lobules.",
        (
            "upper outer quadrant",
            "upper inner quadrant",
            "lower outer quadrant",
            "lower inner quadrant",
            "retroareolar",
            "subareolar",
            "axillary tail",
            "o'clock",
        ),
    ),
    Organ(
        "thyroid",
        "thyroid",
        "endocrine",
        "thyroid gland",
        ("thyroid gland", "thyroid", "thyroid parenchyma"),
        "Butterfly-shaped endocrine gland in the anterior neck, two lobes joined by an isthmus.",
        (
            "right lobe",
            "left lobe",
            "isthmus",
            "right lobe of the thyroid",
            "left lobe of the thyroid",
            "right thyroid lobe",
            "left thyroid lobe",
        ),
    ),
    Organ(
        "liver",
        "liver",
        "digestive",
        "liver",
        ("liver", "hepatic parenchyma", "hepatic", "liver parenchyma"),
        "Large solid organ in the right upper abdomen that processes nutrients and produces bile.",
        ("right lobe of the liver", "left lobe of the liver", "caudate lobe", "hepatic segment"),
    ),
    Organ(
        "gallbladder",
        "liver",
        "digestive",
        "gallbladder",
        ("gallbladder", "gall bladder", "gb"),
        "Pear-shaped sac under the liver that stores bile; normally thin-walled and anechoic.",
        ("gallbladder fundus", "gallbladder neck", "gallbladder body"),
    ),
    Organ(
        "spleen",
        "abdomen",
        "lymphatic",
        "spleen",
        ("spleen", "splenic parenchyma", "splenic"),
        "Lymphoid organ in the left upper abdomen that filters blood.",
        ("splenic hilum", "upper pole of the spleen", "lower pole of the spleen"),
    ),
    Organ(
        "pancreas",
        "abdomen",
        "digestive",
        "pancreas",
        ("pancreas", "pancreatic parenchyma", "pancreatic"),
        "Retroperitoneal gland behind the stomach with digestive and endocrine functions.",
        ("pancreatic head", "pancreatic body", "pancreatic tail", "uncinate process"),
    ),
    Organ(
        "kidney",
        "kidney",
        "urinary",
        "kidney",
        ("kidney", "kidneys", "renal", "renal parenchyma", "right kidney", "left kidney"),
        "Paired retroperitoneal organ that filters blood to make urine; cortex around a central sinus.",
        ("upper pole", "lower pole", "interpolar region", "renal cortex", "renal sinus", "renal pelvis"),
    ),
    Organ(
        "bladder",
        "kidney",
        "urinary",
        "urinary bladder",
        ("urinary bladder", "bladder", "bladder wall"),
        "Hollow muscular pelvic organ that stores urine; anechoic when distended.",
        ("bladder base", "bladder dome", "trigone"),
    ),
    Organ(
        "ovary",
        "gynaecology",
        "female_reproductive",
        "ovary",
        ("ovary", "ovaries", "ovarian", "adnexa", "adnexal", "right ovary", "left ovary"),
        "Paired female gonad in the adnexa that contains follicles and produces ova and hormones.",
        ("right adnexa", "left adnexa"),
    ),
    Organ(
        "uterus",
        "gynaecology",
        "female_reproductive",
        "uterus",
        ("uterus", "uterine", "endometrium", "myometrium", "uterine body"),
        "Muscular pelvic organ with an endometrial lining in which a pregnancy develops.",
        ("uterine fundus", "cervix", "anterior uterine wall", "posterior uterine wall", "endometrial cavity"),
    ),
    Organ(
        "fetus",
        "obstetric",
        "female_reproductive",
        "fetus",
        ("fetus", "foetus", "fetal", "foetal", "intrauterine pregnancy", "gestation"),
        "The developing baby in the uterus, imaged in obstetric ultrasound.",
        ("fetal head", "fetal abdomen", "fetal heart", "placenta", "amniotic fluid"),
    ),
    Organ(
        "prostate",
        "urology",
        "male_reproductive",
        "prostate gland",
        ("prostate gland", "prostate", "prostatic"),
        "Walnut-sized gland below the male bladder surrounding the urethra.",
        ("peripheral zone", "transition zone", "central zone", "prostatic apex", "prostatic base"),
    ),
    Organ(
        "testis",
        "urology",
        "male_reproductive",
        "testis",
        ("testis", "testes", "testicle", "testicles", "testicular", "scrotum", "scrotal"),
        "Paired male gonad in the scrotum; homogeneous medium echogenicity when normal.",
        ("right testis", "left testis", "epididymis", "rete testis"),
    ),
    Organ(
        "carotid_artery",
        "vessel",
        "cardiovascular",
        "common carotid artery",
        (
            "common carotid artery",
            "carotid artery",
            "carotid arteries",
            "carotid",
            "cca",
            "internal carotid artery",
            "ica",
            "external carotid artery",
            "eca",
            "carotid bulb",
            "carotid bifurcation",
        ),
        "Main artery of the neck supplying the head; its wall layers give the intima-media thickness.",
        ("proximal cca", "mid cca", "distal cca", "near wall", "far wall"),
    ),
    Organ(
        "jugular_vein",
        "vessel",
        "cardiovascular",
        "internal jugular vein",
        ("internal jugular vein", "jugular vein", "jugular", "ijv"),
        "Large compressible neck vein lateral to the carotid artery that drains the head.",
        (),
    ),
    Organ(
        "heart",
        "heart",
        "cardiovascular",
        "heart",
        ("heart", "cardiac", "echocardiogram", "echocardiography", "transthoracic echocardiogram", "tte"),
        "Four-chambered muscular pump imaged by transthoracic echocardiography.",
        (
            "left ventricle",
            "right ventricle",
            "left atrium",
            "right atrium",
            "mitral valve",
            "aortic valve",
            "pericardium",
        ),
    ),
    Organ(
        "lymph_node",
        "superficial",
        "lymphatic",
        "lymph node",
        (
            "lymph node",
            "lymph nodes",
            "node",
            "nodes",
            "cervical lymph node",
            "axillary lymph node",
            "lymphnode",
        ),
        "Small bean-shaped immune organ with a hypoechoic cortex and an echogenic fatty hilum.",
        ("cervical", "axillary", "inguinal", "supraclavicular", "fatty hilum"),
    ),
    Organ(
        "soft_tissue",
        "superficial",
        "musculoskeletal",
        "soft tissue",
        ("soft tissue", "soft tissues", "subcutaneous tissue", "subcutaneous fat", "subcutaneous", "muscle"),
        "Subcutaneous fat, fascia and muscle beneath the skin.",
        ("intramuscular", "fascia", "subfascial"),
    ),
)

_ORGANS_BY_ID = {o.id: o for o in ORGANS}
_SYSTEMS_BY_ID = {s.id: s for s in BODY_SYSTEMS}
SYSTEM_IDS: tuple[str, ...] = tuple(s.id for s in BODY_SYSTEMS)
ORGAN_IDS: tuple[str, ...] = tuple(o.id for o in ORGANS)


def _unknown(kind: str, value: object, valid: tuple[str, ...]) -> ValueError:
    return ValueError(f"unknown {kind} {value!r}; expected one of: {', '.join(valid)}")


def get_organ(organ_id: str) -> Organ:
    """The organ with this id; ValueError naming the valid ids otherwise."""
    try:
        return _ORGANS_BY_ID[organ_id]
    except (KeyError, TypeError):
        raise _unknown("organ", organ_id, ORGAN_IDS) from None


def get_system(system_id: str) -> BodySystem:
    """The body system with this id; ValueError naming the valid ids otherwise."""
    try:
        return _SYSTEMS_BY_ID[system_id]
    except (KeyError, TypeError):
        raise _unknown("body system", system_id, SYSTEM_IDS) from None


def organs_in(region: str) -> tuple[Organ, ...]:
    """Organs of a region, in table order."""
    if region not in REGIONS:
        raise _unknown("region", region, REGIONS)
    return tuple(o for o in ORGANS if o.region == region)


def region_of(organ_id: str) -> str:
    """The region an organ belongs to (e.g. gallbladder -> liver)."""
    return get_organ(organ_id).region


def system_of(organ_id: str) -> str:
    """The body system an organ belongs to (e.g. thyroid -> endocrine)."""
    return get_organ(organ_id).system


def organs_of_system(system_id: str) -> tuple[Organ, ...]:
    """Organs of a body system, in table order."""
    get_system(system_id)
    return tuple(o for o in ORGANS if o.system == system_id)


def regions_in(system_id: str) -> tuple[str, ...]:
    """Regions holding at least one organ of this system, in REGIONS order.

    A region can belong to several systems (abdomen: pancreas is digestive, spleen lymphatic).
    """
    get_system(system_id)
    used = {o.region for o in ORGANS if o.system == system_id}
    return tuple(r for r in REGIONS if r in used)


def systems_of_region(region: str) -> tuple[str, ...]:
    """Body systems of the organs in a region, in BODY_SYSTEMS order."""
    used = {o.system for o in organs_in(region)}
    return tuple(s for s in SYSTEM_IDS if s in used)


def default_organ(region: str) -> Organ:
    """The principal organ of a region (its first organ), e.g. liver -> liver, vessel -> carotid."""
    return organs_in(region)[0]
