"""Choosing layers by exact name, glob or module type."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable

from torch import nn

from hooklab.core.errors import LayerNotFoundError

LayerSpec = str | type | Iterable[str | type] | None


def leaf_names(model: nn.Module) -> list[str]:
    """Qualified names of modules without children (the root too, if it has none)."""
    return [n for n, m in model.named_modules() if not any(True for _ in m.children())]


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def resolve_layers(model: nn.Module, layers: LayerSpec) -> list[str]:
    """Names of the modules selected by ``layers``, in the model's module order.

    ``layers`` is ``None`` (every leaf module), or one or a list of: an exact qualified name
    (``"layer4.1.conv2"``), a glob (``"layer4.*"``), a module type name (``"Conv2d"``) or a
    module class. Anything that matches nothing raises :class:`LayerNotFoundError` listing the
    closest names.

    Example:
        >>> resolve_layers(resnet18(), "layer4.*.conv?")[:2]
        ['layer4.0.conv1', 'layer4.0.conv2']
    """
    modules = dict(model.named_modules())
    if layers is None:
        return leaf_names(model)
    if isinstance(layers, (str, type)):
        layers = [layers]
    wanted: set[str] = set()
    for spec in layers:
        wanted.update(_match(model, modules, spec))
    return [n for n in modules if n in wanted]


def _match(model: nn.Module, modules: dict[str, nn.Module], spec: str | type) -> list[str]:
    if isinstance(spec, type):
        found = [n for n, m in modules.items() if isinstance(m, spec)]
        if not found:
            raise LayerNotFoundError(f"no module of type {spec.__name__} in {type(model).__name__}")
        return found
    if not isinstance(spec, str):
        raise LayerNotFoundError(f"a layer is a name, glob or module type, not {spec!r}")
    spec = spec.strip()
    if spec in modules and spec != "":
        return [spec]
    if _is_glob(spec):
        found = [n for n in modules if n and fnmatch.fnmatchcase(n, spec)]
        if found:
            return found
    by_type = [n for n, m in modules.items() if type(m).__name__ == spec]
    if by_type:
        return by_type
    names = [n for n in modules if n]
    types = sorted({type(m).__name__ for m in modules.values()})
    close = difflib.get_close_matches(spec, names + types, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    sample = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    raise LayerNotFoundError(
        f"unknown layer {spec!r} in {type(model).__name__}.{hint} "
        f"Layers are exact names ({sample}), globs like 'layer4.*', or types like 'Conv2d'.")
