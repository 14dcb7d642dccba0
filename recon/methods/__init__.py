"""The registry of methods: name -> (class, one-line description), in the page's order."""

from __future__ import annotations

from .base import Method
from .deform import Deform

METHODS: dict[str, tuple[type[Method], str]] = {
    Deform.name: (Deform, "Deform an ico-sphere into the target with a Chamfer loss and mesh regularisers"),
}


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise KeyError(f"Unknown method {name!r}; methods are {', '.join(METHODS)}.")
    return METHODS[name][0]
