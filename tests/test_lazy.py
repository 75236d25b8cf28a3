"""sonofm/lazy.py: the lazy re-exports of the packages (eval, models, serve, data, losses, pretrain, ssl)."""

import importlib
import sys
import types

import pytest

from sonofm.lazy import lazy_exports, lazy_names
from tests.fresh_imports import packages_loaded_by


@pytest.mark.parametrize(
    "package",
    [
        "sonofm.eval",
        "sonofm.models",
        "sonofm.serve",
        "sonofm.data",
        "sonofm.losses",
        "sonofm.pretrain",
        "sonofm.ssl",
    ],
)
def test_every_exported_name_resolves(package):
    pkg = importlib.import_module(package)
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None
        assert name in dir(pkg)
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'nope'"):
        pkg.nope  # noqa: B018


def test_cache_stores_the_name_and_no_cache_sees_a_new_value(monkeypatch):
    source = types.ModuleType("lazy_test_source")
    source.value = 1
    monkeypatch.setitem(sys.modules, "lazy_test_source", source)
    for cache in (False, True):
        pkg = types.ModuleType(f"lazy_test_pkg_{cache}")
        monkeypatch.setitem(sys.modules, pkg.__name__, pkg)
        pkg.__getattr__, pkg.__dir__ = lazy_exports(
            pkg.__name__, {"lazy_test_source": ("value",)}, cache=cache
        )
        assert pkg.value == 1 and ("value" in vars(pkg)) is cache
        source.value = 2
        assert pkg.value == (1 if cache else 2)
        source.value = 1
    assert lazy_names({"a": ("z", "b"), "c": ("a",)}) == ["a", "b", "z"]


def test_modules_whose_lazy_imports_keep_torch_out_import_no_torch():
    """The `# lazy:` reasons that say "keeps torch out" hold: importing these imports no torch (#19)."""
    modules = ["sonofm", "sonofm.config", "sonofm.cli", "sonofm.demo", "sonofm.demo_report"]
    modules += ["sonofm.pretrain", "sonofm.ssl"]
    assert packages_loaded_by(modules, {"torch"}) == []
