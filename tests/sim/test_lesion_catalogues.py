"""The lesion catalogues are data (sim/phantoms/lesion_catalogues.toml): every table loads into an
`OrganCatalogue`, names only known tags, and a malformed entry is reported with its organ and kind."""

import pytest

from sonofm.sim.phantoms import lesions
from sonofm.sim.phantoms.lesions import (
    COMPOSITIONS,
    CONTOURS,
    FEATURES,
    ORIENTATIONS,
    PLAQUE_LABEL,
    POSTERIOR_TARGETS,
    lesion_catalogue,
)

ORGANS = sorted(lesions._catalogue_tables())


def test_the_file_holds_every_phantom_organ():
    assert set(ORGANS) >= {"breast", "thyroid", "liver", "kidney", "carotid_artery", "fetus", "testis"}


@pytest.mark.parametrize("organ", ORGANS)
def test_every_catalogue_loads_with_known_tags(organ):
    cat = lesion_catalogue(organ)
    assert cat.organ == organ and cat.kinds
    for kind in cat.kinds:
        assert kind.weight > 0 and 0 < kind.size_mm[0] <= kind.size_mm[1]
        assert isinstance(kind.size_mm, tuple)
        assert set(kind.contour) <= set(CONTOURS)
        assert set(kind.composition) <= set(COMPOSITIONS)
        assert set(kind.features) <= set(FEATURES)
        assert set(kind.posterior) <= set(POSTERIOR_TARGETS)
        assert set(kind.orientation) <= set(ORIENTATIONS)
        for dist in (kind.contour, kind.margin, kind.echogenicity, kind.composition, kind.posterior):
            assert dist and all(w > 0 for w in dist.values())


def test_not_applicable_malignancy_and_named_labels():
    plaque = lesion_catalogue("carotid_artery").kinds[0]
    assert plaque.malignant is None and plaque.label == PLAQUE_LABEL
    assert lesion_catalogue("carotid_artery").malignant_prevalence is None
    assert lesion_catalogue("breast").orientation_tags is True


def test_unknown_organ_and_malformed_entry_are_named():
    with pytest.raises(KeyError, match="no lesion catalogue for 'spleen2'"):
        lesion_catalogue("spleen2")
    entry = {"name": "odd", "diagnosis": "mass", "malignant": False, "weight": 1.0, "size_mm": [1.0, 2.0]}
    with pytest.raises(ValueError, match="liver kind 'odd'"):
        lesions._lesion_kind("liver", entry)
