"""The reader of the taxonomy's data files (anatomy.toml, attributes.toml, echo.toml,
findings.toml beside this module) and the `Term` record several of them hold.

The vocabularies are data, so they live in TOML; the modules that expose them (``anatomy``,
``attributes``, ``echo``, ``findings``) read them here into their frozen dataclasses. TOML keeps
the order of a table's entries, and that order is kept (it is the order of tags, rules and the
parser's index).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Term:
    """A concept of the vocabulary and how reports name it (a body system, an echo view, an echo
    finding): ``synonyms`` are the lowercase surface forms a parser maps to it, the phrase included."""

    id: str
    phrase: str
    synonyms: tuple[str, ...]
    definition: str


def load(name: str, folder: Path = HERE) -> dict[str, Any]:
    """The parsed ``<name>.toml`` beside this module (or in ``folder``: another package's data)."""
    with (folder / f"{name}.toml").open("rb") as f:
        return tomllib.load(f)


def frozen(value: Any) -> Any:
    """``value`` with every list turned into a tuple, at any depth (dataclasses stay hashable)."""
    if isinstance(value, list):
        return tuple(frozen(v) for v in value)
    if isinstance(value, dict):
        return {k: frozen(v) for k, v in value.items()}
    return value


def entries(table: dict[str, dict], cls: type, **fixed: Any) -> tuple:
    """One ``cls`` per ``[table.<id>]`` entry (id = the key), with ``fixed`` keyword arguments
    added; lists become tuples and an unknown key is an error (the dataclass rejects it)."""
    return tuple(cls(id=key, **fixed, **frozen(entry)) for key, entry in table.items())


def with_phrase(phrase: str, synonyms: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The synonyms with the lowercase phrase first: a parser built from synonyms alone finds
    the phrase too (the data files list only the other surface forms)."""
    return tuple(dict.fromkeys((phrase.lower(), *synonyms)))
