"""Choosing layers: the one resolver (exact name, glob, module type or type name, module).

Example:
    >>> resolve_layers(resnet18(), "layer4.*.conv?")[:2]
    ['layer4.0.conv1', 'layer4.0.conv2']
    >>> resolve_layer(simple_cnn, "conv_3")
    LayerNotFoundError: unknown layer 'conv_3' in SimpleCNN; did you mean conv3, ...?
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable

from torch import nn

from hooklab.core.errors import LayerNotFoundError

__all__ = ["LayerSpec", "LayerItem", "leaf_names", "resolve_layers", "resolve_layer",
           "close_names"]

#: One layer selector: an exact qualified name (``"layer4.1.conv2"``), a glob (``"layer4.*"``),
#: a module type name (``"Conv2d"``), a module class (``nn.Conv2d``) or a submodule itself.
LayerItem = str | type[nn.Module] | nn.Module
#: What every function taking layers accepts: one :data:`LayerItem`, a list of them, or
#: ``None`` (the function's default: every leaf for a recording, the auto layer for a CAM).
LayerSpec = LayerItem | Iterable[LayerItem] | None


def is_leaf(module: nn.Module) -> bool:
    """Whether ``module`` has no child modules."""
    return not any(True for _ in module.children())


def leaf_names(model: nn.Module) -> list[str]:
    """Qualified names of modules without children (the root too, if it has none)."""
    return [n for n, m in model.named_modules() if is_leaf(m)]


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def close_names(model: nn.Module, name: str, n: int = 5) -> list[str]:
    """Layer names and module type names of ``model`` close to ``name`` (difflib), best first."""
    modules = dict(model.named_modules())
    candidates = [k for k in modules if k] + sorted({type(m).__name__ for m in modules.values()})
    return difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)


def resolve_layers(model: nn.Module, layers: LayerSpec) -> list[str]:
    """Names of the modules selected by ``layers``, in the model's module order.

    ``layers`` is ``None`` (every leaf module), or one or a list of :data:`LayerItem`.
    Anything that matches nothing raises :class:`LayerNotFoundError` listing the closest
    names.

    Example:
        >>> resolve_layers(resnet18(), "layer4.*.conv?")[:2]
        ['layer4.0.conv1', 'layer4.0.conv2']
    """
    modules = dict(model.named_modules())
    if layers is None:
        return leaf_names(model)
    if isinstance(layers, (str, type, nn.Module)):
        layers = [layers]
    wanted: set[str] = set()
    for spec in layers:
        wanted.update(_match(model, modules, spec))
    return [n for n in modules if n in wanted]


def resolve_layer(model: nn.Module, layer: LayerItem) -> str:
    """The one module named by ``layer`` (a selector that matches several is an error).

    Raises:
        LayerNotFoundError: nothing matches (close names listed) or several do.
    """
    names = resolve_layers(model, [layer])
    if len(names) != 1:
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        raise LayerNotFoundError(f"{_label(layer)} matches {len(names)} layers of "
                                 f"{type(model).__name__} ({shown}); name one")
    return names[0]


def _label(spec: object) -> str:
    if isinstance(spec, type):
        return spec.__name__
    if isinstance(spec, nn.Module):
        return f"the {type(spec).__name__} module"
    return repr(spec)


def _match(model: nn.Module, modules: dict[str, nn.Module], spec: object) -> list[str]:
    if isinstance(spec, nn.Module):
        found = [n for n, m in modules.items() if m is spec]
        if not found:
            raise LayerNotFoundError(f"module {type(spec).__name__} is not part of the model")
        if found == [""]:
            raise LayerNotFoundError("a layer cannot be the model itself; pass a submodule")
        return [n for n in found if n]
    if isinstance(spec, type):
        found = [n for n, m in modules.items() if isinstance(m, spec)]
        if not found:
            raise LayerNotFoundError(f"no module of type {spec.__name__} in {type(model).__name__}")
        return found
    if not isinstance(spec, str):
        raise LayerNotFoundError(
            f"a layer is a name, glob, module type or module, not {type(spec).__name__}")
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
    close = close_names(model, spec)
    hint = f"; did you mean {', '.join(close)}?" if close else "."
    sample = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    raise LayerNotFoundError(
        f"unknown layer {spec!r} in {type(model).__name__}{hint} "
        f"Layers are exact names ({sample}), globs like 'layer4.*', or types like 'Conv2d'.")
