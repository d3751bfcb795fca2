"""The registry of users' own models: ``register``, the ``hooklab.models`` entry points and
``HOOKLAB_MODELS`` / ``--models`` modules.

A lab group registers its architecture once, in a module of its own; :func:`hooklab.models.zoo.
get_model` and everything built on it (the CLI, every dashboard page) then accept its name like a
zoo name. The modules that register models are *trusted code chosen by the operator* (the person
who starts the server or runs the command): named in ``$HOOKLAB_MODELS`` or ``--models``
(comma-separated, imported by :func:`load_modules`) or declared by an installed package as an
entry point of the group ``hooklab.models`` (loaded lazily, once, the first time the registry is
listed). Uploaded files are never imported or executed.

Example:
    >>> import hooklab
    >>> @hooklab.models.register("lab_cnn", input_shape=(3, 32, 32), class_names=SHAPES,
    ...                          normalise=((0.5,) * 3, (0.5,) * 3), weights="lab_cnn.safetensors")
    ... class LabCNN(nn.Module): ...
    >>> hooklab.models.get_model("lab_cnn")          # built, weights loaded safely, eval mode

An entry point (``pyproject.toml`` of the lab package)::

    [project.entry-points."hooklab.models"]
    mylab = "mylab.models"             # a module that registers at import, or a callable
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import threading
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar, overload

from torch import nn

from hooklab.core.errors import HooklabError

__all__ = ["ENTRY_POINT_GROUP", "ENV_VAR", "ModelFactoryError", "ModelModuleError",
           "RegisteredModel", "RegistryError", "build", "entry", "load_env", "load_errors",
           "load_modules", "register", "registered", "unregister"]

log = logging.getLogger(__name__)

#: The entry-point group an installed lab package declares its model modules in.
ENTRY_POINT_GROUP = "hooklab.models"
#: Environment variable naming model modules (comma-separated) for the dashboard and the CLI.
ENV_VAR = "HOOKLAB_MODELS"

F = TypeVar("F", bound=Callable[..., Any])


class RegistryError(HooklabError, ValueError):
    """A registration is malformed (bad name, shape, normalisation) or clashes with another."""


class ModelModuleError(HooklabError, ImportError):
    """A model module (``HOOKLAB_MODELS``, ``--models`` or an entry point) failed to load."""


class ModelFactoryError(HooklabError, RuntimeError):
    """A registered factory raised, or returned something that is not an ``nn.Module``."""


@dataclass(frozen=True)
class RegisteredModel:
    """One registered model.

    Attributes:
        name: the name :func:`hooklab.models.zoo.get_model` accepts (lower case).
        factory: builds the model with no arguments (a function or an ``nn.Module`` subclass).
        input_shape: the shape of one sample, e.g. ``(3, 32, 32)`` (no batch dimension).
        class_names: one name per output logit, or ``None`` (``class_0``, ... from the output).
        mean, std: per-channel normalisation after scaling pixels to [0, 1] (``(0,)``/``(1,)``:
            none).
        weights: the default weights file (safetensors or a ``weights_only`` state dict), or
            ``None`` for the factory's own initialisation.
        cam_layer: the Grad-CAM target layer, or ``None`` (the automatic one).
        description: one line shown in the model pickers and ``hooklab models``.
        module: the module that defines the factory (named in every error about it).
    """

    name: str
    factory: Callable[[], Any]
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: str | None
    cam_layer: str | None
    description: str
    module: str

    @property
    def origin(self) -> str:
        """``module.qualname`` of the factory."""
        return f"{self.module}.{getattr(self.factory, '__qualname__', repr(self.factory))}"


_LOCK = threading.RLock()
#: Names a registration may not take (the zoo's, set by :mod:`hooklab.models.zoo`).
_RESERVED: set[str] = set()
_REGISTRY: dict[str, RegisteredModel] = {}
_ENTRY_POINTS_LOADED = False
#: Model-module load failures so far, by module (shown with an unknown-name error and on pages).
_ERRORS: dict[str, ModelModuleError] = {}


def reserve(names: Iterable[str]) -> None:
    """Keep ``names`` (the zoo's) from being registered."""
    with _LOCK:
        _RESERVED.update(normalise_name(n) for n in names)


def normalise_name(name: str) -> str:
    """The registry key of ``name``: stripped, lower case, ``-`` as ``_`` (as the zoo's names)."""
    return str(name).strip().lower().replace("-", "_")


def _check_shape(name: str, shape: Any) -> tuple[int, ...]:
    try:
        if isinstance(shape, (str, bytes)):
            raise TypeError(shape)
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise RegistryError(f"register({name!r}): input_shape must be a tuple of sizes such as "
                            f"(3, 32, 32), got {shape!r}") from None
    if not out or any(s < 1 for s in out):
        raise RegistryError(f"register({name!r}): input_shape must be positive sizes of one "
                            f"sample, e.g. (3, 32, 32), got {shape!r}")
    return out


def _check_normalise(name: str, normalise: Any, shape: tuple[int, ...]
                     ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    channels = shape[0] if len(shape) == 3 else None
    if normalise is None:
        return (0.0,) * (channels or 1), (1.0,) * (channels or 1)
    try:
        mean, std = normalise
        mean_t, std_t = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError):
        raise RegistryError(f"register({name!r}): normalise is (mean, std), one value per channel "
                            f"each, e.g. ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)); got {normalise!r}"
                            ) from None
    for what, vals in (("mean", mean_t), ("std", std_t)):
        if len(vals) not in (1, channels):
            raise RegistryError(f"register({name!r}): normalise {what} has {len(vals)} values; "
                                f"give 1 or one per channel ({channels})")
    if any(s <= 0 for s in std_t):
        raise RegistryError(f"register({name!r}): normalise std must be > 0, got {std_t}")
    if channels and len(mean_t) == 1:
        mean_t *= channels
    if channels and len(std_t) == 1:
        std_t *= channels
    return mean_t, std_t


def _module_of(factory: Any) -> str:
    return str(getattr(factory, "__module__", None) or "?")


@overload
def register(name: str, factory: None = None, *, input_shape: Sequence[int],
             class_names: Sequence[str] | None = None,
             normalise: tuple[Sequence[float], Sequence[float]] | None = None,
             weights: str | os.PathLike[str] | None = None, cam_layer: str | None = None,
             description: str = "") -> Callable[[F], F]: ...


@overload
def register(name: str, factory: F, *, input_shape: Sequence[int],
             class_names: Sequence[str] | None = None,
             normalise: tuple[Sequence[float], Sequence[float]] | None = None,
             weights: str | os.PathLike[str] | None = None, cam_layer: str | None = None,
             description: str = "") -> F: ...


def register(name: str, factory: Any = None, *, input_shape: Sequence[int],
             class_names: Sequence[str] | None = None,
             normalise: tuple[Sequence[float], Sequence[float]] | None = None,
             weights: str | os.PathLike[str] | None = None, cam_layer: str | None = None,
             description: str = "") -> Any:
    """Register a model under ``name``; also usable as a decorator.

    Args:
        name: the name to pick it by (case and ``-``/``_`` are ignored); not a zoo name.
        factory: a callable with no arguments that returns an ``nn.Module`` (a function, or an
            ``nn.Module`` subclass). Omit it to use ``register`` as a decorator.
        input_shape: one sample's shape, ``(C, H, W)`` for images, any shape otherwise.
        class_names: one name per output logit (default: ``class_0``, ``class_1``, ...).
        normalise: ``(mean, std)`` per channel applied after scaling pixels to [0, 1], or
            ``None`` (no normalisation).
        weights: the default weights file, loaded safely (safetensors, or a ``weights_only``
            state dict; a full pickle is refused); ``None``: the factory's own initialisation.
        cam_layer: the Grad-CAM target layer (default: the last spatial layer).
        description: one line for the model pickers and ``hooklab models``.

    Returns:
        ``factory`` unchanged (or, as a decorator, a decorator that returns it unchanged).

    Raises:
        RegistryError: a zoo name, a name another factory already holds, a bad shape or
            normalisation, or a factory that is not callable.

    Example:
        >>> @register("tiny_mlp", input_shape=(16,), class_names=("no", "yes"))
        ... def tiny_mlp() -> nn.Module:
        ...     return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    """
    if factory is None:
        def decorator(f: F) -> F:
            register(name, f, input_shape=input_shape, class_names=class_names,
                     normalise=normalise, weights=weights, cam_layer=cam_layer,
                     description=description)
            return f
        return decorator

    key = normalise_name(name)
    if not key or not key.replace("_", "").replace(".", "").isalnum():
        raise RegistryError(f"register: a model name is letters, digits and _, got {name!r}")
    if isinstance(factory, nn.Module):
        raise RegistryError(f"register({name!r}): pass a factory (the nn.Module subclass or a "
                            f"function that builds the model), not a built "
                            f"{type(factory).__name__} instance")
    if not callable(factory):
        raise RegistryError(f"register({name!r}): the factory must be callable (a function or "
                            f"an nn.Module subclass), got {type(factory).__name__}")
    if key in _RESERVED:
        raise RegistryError(f"register({name!r}): {key!r} is a zoo model; choose another name")
    shape = _check_shape(name, input_shape)
    mean, std = _check_normalise(name, normalise, shape)
    names = None if class_names is None else tuple(str(c) for c in class_names)
    if names is not None and not names:
        raise RegistryError(f"register({name!r}): class_names is empty; give one per logit or "
                            "None")
    path = None if weights is None else str(Path(weights).expanduser().resolve())
    item = RegisteredModel(key, factory, shape, names, mean, std, path,
                           None if cam_layer is None else str(cam_layer),
                           " ".join(str(description).split()), _module_of(factory))
    with _LOCK:
        old = _REGISTRY.get(key)
        if old is not None and (old.module, getattr(old.factory, "__qualname__", None)) != (
                item.module, getattr(factory, "__qualname__", None)):
            raise RegistryError(f"model {key!r} is already registered by {old.origin}; "
                                f"{item.origin} cannot take the name (unregister it first)")
        _REGISTRY[key] = item  # the same factory again (a reloaded module) replaces it
    log.debug("registered model %s from %s", key, item.origin)
    return factory


def unregister(name: str) -> bool:
    """Remove ``name`` from the registry (tests, notebooks); True when it was there."""
    with _LOCK:
        return _REGISTRY.pop(normalise_name(name), None) is not None


def _load_entry_points() -> None:
    """Load every ``hooklab.models`` entry point once (a module, or a callable to call)."""
    global _ENTRY_POINTS_LOADED
    with _LOCK:
        if _ENTRY_POINTS_LOADED:
            return
        _ENTRY_POINTS_LOADED = True
        eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    seen: set[str] = set()
    for ep in eps:
        if ep.value in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(ep.value)
        what = f"entry point {ep.name} = {ep.value}"
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, types.ModuleType) and not (
                    inspect.isclass(obj) and issubclass(obj, nn.Module)):
                obj()
        except Exception as exc:  # noqa: BLE001 - one clear message per module, zoo unharmed
            _fail(ep.value.split(":")[0], what, exc)


def reload_entry_points() -> None:
    """Forget that the entry points were loaded, so the next listing loads them again (tests)."""
    global _ENTRY_POINTS_LOADED
    with _LOCK:
        _ENTRY_POINTS_LOADED = False


def _fail(module: str, what: str, exc: BaseException) -> ModelModuleError:
    first = str(exc).splitlines()[0] if str(exc) else ""
    err = ModelModuleError(f"could not load model module {module!r} ({what}): "
                           f"{type(exc).__name__}{': ' + first if first else ''}")
    err.__cause__ = exc
    with _LOCK:
        _ERRORS[module] = err
    log.warning("%s", err)
    return err


def load_modules(modules: str | Iterable[str] | None, source: str = "--models"
                 ) -> list[ModelModuleError]:
    """Import the model modules named in ``modules`` (comma-separated text or a list).

    Each module registers its models when imported. A module that fails to import (missing,
    a syntax error, an exception at import) does not stop the others, nor the zoo: it gives
    one :class:`ModelModuleError` in the returned list (also remembered for
    :func:`load_errors` and for the unknown-name message).

    Args:
        modules: ``"mylab.models,other.mod"``, a list of such texts, or ``None``.
        source: where the names came from (``"$HOOKLAB_MODELS"``, ``"--models"``), for messages.

    Returns:
        One error per module that failed, in order; empty when all loaded.
    """
    if modules is None:
        return []
    texts = [modules] if isinstance(modules, str) else list(modules)
    names = [n.strip() for text in texts for n in str(text).split(",") if n.strip()]
    errors = []
    for mod in dict.fromkeys(names):
        try:
            importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001 - SyntaxError, ImportError, its own errors...
            errors.append(_fail(mod, f"named in {source}", exc))
        else:
            with _LOCK:
                _ERRORS.pop(mod, None)
    return errors


_ENV_LOADED: dict[str, list[ModelModuleError]] = {}


def load_env() -> list[ModelModuleError]:
    """:func:`load_modules` of ``$HOOKLAB_MODELS``, once per value of the variable."""
    value = os.environ.get(ENV_VAR, "")
    with _LOCK:
        if value in _ENV_LOADED:
            return list(_ENV_LOADED[value])
    errors = load_modules(value, f"${ENV_VAR}")
    with _LOCK:
        _ENV_LOADED[value] = errors
    return list(errors)


def load_errors() -> list[ModelModuleError]:
    """The model modules that failed to load so far (and have not loaded since)."""
    with _LOCK:
        return list(_ERRORS.values())


def registered() -> list[RegisteredModel]:
    """Every registered model, by name (loads the entry points the first time)."""
    _load_entry_points()
    with _LOCK:
        return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def entry(name: str) -> RegisteredModel | None:
    """The registration of ``name``, or ``None`` (loads the entry points the first time)."""
    key = normalise_name(name)
    with _LOCK:
        found = _REGISTRY.get(key)
    if found is not None:
        return found
    _load_entry_points()
    with _LOCK:
        return _REGISTRY.get(key)


def build(item: RegisteredModel) -> nn.Module:
    """Call the factory of ``item`` and check that it returned an ``nn.Module``.

    Raises:
        ModelFactoryError: the factory raised, or returned something else; the message names
            the model and the factory's module.
    """
    try:
        model = item.factory()
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelFactoryError(
            f"the factory of registered model {item.name!r} ({item.origin}, module "
            f"{item.module}) raised {type(exc).__name__}{': ' + first if first else ''}") from exc
    if not isinstance(model, nn.Module):
        raise ModelFactoryError(
            f"the factory of registered model {item.name!r} ({item.origin}, module "
            f"{item.module}) returned {type(model).__name__}, not a torch.nn.Module")
    return model
