"""Field-of-view fitting of lesions (sonofm.sim.phantoms.base)."""

from __future__ import annotations

import numpy as np

from sonofm.sim.imaging import sample_imaging_params
from sonofm.sim.phantoms.placement import fits_in_fan, params_for_target


def test_lesion_reaching_the_skin_fits_a_wide_enough_fan():
    # seed 1, 40 patients at 32 px once failed: a large breast mass whose top edge crossed the skin
    p = sample_imaging_params(np.random.default_rng(0), "linear", 60.0, width_mm=80.0)
    assert fits_in_fan(p, (-10.0, -0.4, 10.0, 30.0))
    assert fits_in_fan(p, (-10.0, 5.0, 10.0, 30.0))
    assert not fits_in_fan(p, (-50.0, 5.0, 10.0, 30.0))  # wider than the probe: still refused
    params_for_target(np.random.default_rng(1), "linear", (30.0, 50.0), (-13.5, -0.43, 13.7, 45.2))
