"""Fixtures shared by every test package (none of them autouse)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread while a module's tests run: tiny models on a shared 2-core machine run far
    faster single-threaded, and their results are stable. Use it module-wide with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
