"""Gradient and activation edits: small, pure, serialisable callables.

An edit maps a tensor to a new tensor and never changes its argument. It can be registered
directly as a tensor hook, or given to :func:`hooklab.record` for a layer's output gradient, its
output activation or a parameter gradient. Every edit round-trips through JSON, so a run's
manifest says exactly what was done.

Example:
    >>> y.register_hook(hooklab.core.edits.scale(0.5))   # halve the gradient flowing through y
    >>> e = hooklab.core.edits.parse("clip_norm(1.0)")
    >>> hooklab.core.edits.from_spec(e.spec()) == e
    True
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch

from hooklab.core.errors import EditError

log = logging.getLogger(__name__)

__all__ = [
    "Edit", "Scale", "Clip", "ClipNorm", "Zero", "ChannelMask", "Noise",
    "scale", "clip", "clip_norm", "zero", "channel_mask", "noise",
    "from_spec", "from_json", "parse", "EDIT_NAMES", "TARGETS",
    "EditSpec", "EditsArg", "normalise_edits", "describe",
]

#: Where an edit can be applied in a recording.
TARGETS = ("grad", "activation", "param_grad")


@dataclass(frozen=True)
class Edit:
    """Base class. Subclasses set ``name`` and implement :meth:`apply`."""

    name: ClassVar[str] = ""

    def apply(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        """Apply the edit; usable as a tensor hook (returns the new gradient)."""
        if not isinstance(t, torch.Tensor):
            raise EditError(f"edit {self} expects a tensor, got {type(t).__name__}")
        return self.apply(t)

    def spec(self) -> dict[str, Any]:
        """A JSON-ready description: ``{"name": "scale", "k": 0.5}``."""
        return {"name": self.name, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.spec(), sort_keys=True)

    def __str__(self) -> str:
        args = ", ".join(repr(v) if not isinstance(v, tuple) else repr(list(v))
                         for v in asdict(self).values())
        return f"{self.name}({args})"


@dataclass(frozen=True)
class Scale(Edit):
    """``g -> k * g``. ``scale(0.5)`` halves a gradient."""

    k: float
    name: ClassVar[str] = "scale"

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        return t * self.k


@dataclass(frozen=True)
class Clip(Edit):
    """Clamp every element to ``[-value, value]``."""

    value: float
    name: ClassVar[str] = "clip"

    def __post_init__(self) -> None:
        if not self.value >= 0:
            raise EditError(f"clip value must be >= 0, got {self.value}")

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        return t.clamp(-self.value, self.value)


@dataclass(frozen=True)
class ClipNorm(Edit):
    """Rescale the whole tensor so its L2 norm is at most ``max_norm``."""

    max_norm: float
    name: ClassVar[str] = "clip_norm"

    def __post_init__(self) -> None:
        if not self.max_norm >= 0:
            raise EditError(f"clip_norm max_norm must be >= 0, got {self.max_norm}")

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(t.float())
        factor = torch.clamp(self.max_norm / (norm + 1e-12), max=1.0).to(t.dtype)
        return t * factor


@dataclass(frozen=True)
class Zero(Edit):
    """Replace by zeros (blocks the gradient)."""

    name: ClassVar[str] = "zero"

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)


@dataclass(frozen=True)
class ChannelMask(Edit):
    """Zero the listed channels (dimension 1; dimension 0 for a 1-D tensor)."""

    channels: tuple[int, ...]
    name: ClassVar[str] = "channel_mask"

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        dim = 1 if t.dim() >= 2 else 0
        size = t.shape[dim]
        bad = [c for c in self.channels if not -size <= c < size]
        if bad:
            raise EditError(f"channel_mask channels {bad} out of range for {size} channels")
        mask = torch.ones(size, dtype=t.dtype, device=t.device)
        mask[list(self.channels)] = 0
        view = [1] * t.dim()
        view[dim] = size
        return t * mask.view(view)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "channels": list(self.channels)}


@dataclass(frozen=True)
class Noise(Edit):
    """Add Gaussian noise ``N(0, std²)``; the same seed gives the same noise every call."""

    std: float
    seed: int = 0
    name: ClassVar[str] = "noise"

    def __post_init__(self) -> None:
        if not self.std >= 0:
            raise EditError(f"noise std must be >= 0, got {self.std}")

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator(device=t.device)
        gen.manual_seed(int(self.seed))
        noise = torch.randn(t.shape, generator=gen, device=t.device, dtype=torch.float32)
        return t + (noise * self.std).to(t.dtype)


_CLASSES: dict[str, type[Edit]] = {
    c.name: c for c in (Scale, Clip, ClipNorm, Zero, ChannelMask, Noise)}
EDIT_NAMES = tuple(_CLASSES)


def scale(k: float) -> Scale:
    return Scale(float(k))


def clip(value: float) -> Clip:
    return Clip(float(value))


def clip_norm(max_norm: float) -> ClipNorm:
    return ClipNorm(float(max_norm))


def zero() -> Zero:
    return Zero()


def channel_mask(channels: int | list[int] | tuple[int, ...]) -> ChannelMask:
    if isinstance(channels, int):
        channels = (channels,)
    return ChannelMask(tuple(channels))


def noise(std: float, seed: int = 0) -> Noise:
    return Noise(float(std), int(seed))


def from_spec(spec: dict[str, Any]) -> Edit:
    """Build an edit from :meth:`Edit.spec` output; unknown names or fields are an EditError."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise EditError(f"an edit spec is a dict with a 'name', got {spec!r}")
    name = spec["name"]
    cls = _CLASSES.get(name)
    if cls is None:
        raise EditError(f"unknown edit {name!r}; known: {', '.join(EDIT_NAMES)}")
    allowed = {f.name for f in fields(cls)}
    args = {k: v for k, v in spec.items() if k != "name"}
    extra = set(args) - allowed
    if extra:
        raise EditError(f"edit {name!r} takes {sorted(allowed)}, not {sorted(extra)}")
    if cls is ChannelMask:
        args["channels"] = tuple(args.get("channels", ()))
    try:
        return cls(**args)
    except EditError:
        raise
    except (TypeError, ValueError) as exc:
        raise EditError(f"bad arguments for edit {name!r}: {exc}") from exc


def from_json(text: str) -> Edit:
    try:
        return from_spec(json.loads(text))
    except json.JSONDecodeError as exc:
        raise EditError(f"edit spec is not valid JSON: {exc}") from exc


_FACTORIES: dict[str, Callable[..., Edit]] = {"scale": scale, "clip": clip, "clip_norm": clip_norm, "zero": zero,
              "channel_mask": channel_mask, "noise": noise, "halve": lambda: scale(0.5)}


def parse(text: str) -> Edit:
    """Parse the short form used by the CLI and the dashboard: ``scale(0.5)``, ``halve``,
    ``clip(1)``, ``clip_norm(2.0)``, ``zero()``, ``channel_mask([0, 3])``, ``noise(0.1, seed=1)``.

    Only literal arguments are accepted (no code is evaluated).
    """
    text = text.strip()
    if text.startswith("{"):
        return from_json(text)
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise EditError(f"cannot parse edit {text!r}: {exc.msg}") from exc
    if isinstance(node, ast.Name):
        fname, args, kwargs = node.id, [], {}
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        fname = node.func.id
        try:
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {str(k.arg): ast.literal_eval(k.value) for k in node.keywords}
        except ValueError as exc:
            raise EditError(f"edit arguments must be literals in {text!r}") from exc
    else:
        raise EditError(f"cannot parse edit {text!r}; write e.g. scale(0.5)")
    factory = _FACTORIES.get(fname)
    if factory is None:
        raise EditError(f"unknown edit {fname!r}; known: {', '.join(_FACTORIES)}")
    try:
        return factory(*args, **kwargs)
    except EditError:
        raise
    except (TypeError, ValueError) as exc:
        raise EditError(f"bad arguments in {text!r}: {exc}") from exc


@dataclass(frozen=True)
class EditSpec:
    """An edit applied at one place: a layer's output gradient (``"grad"``), its output
    activation (``"activation"``) or its parameters' gradients (``"param_grad"``; ``layer`` may
    name one parameter, e.g. ``"conv2.weight"``).

    ``str(spec)`` is *the* text of an edit everywhere (CLI ``--edit``, listings, the dashboard):
    ``LAYER=EDIT`` for the default target, ``LAYER=EDIT@TARGET`` otherwise.
    :meth:`parse` is its exact inverse.

    Example:
        >>> spec = EditSpec("block.0", scale(0.5), "activation")
        >>> str(spec)
        'block.0=scale(0.5)@activation'
        >>> EditSpec.parse(str(spec)) == spec
        True
    """

    layer: str
    edit: Edit
    target: str = "grad"

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise EditError(f"edit target must be one of {TARGETS}, got {self.target!r}")
        if not isinstance(self.edit, Edit):
            raise EditError(f"edit must be a hooklab edit, got {type(self.edit).__name__}")

    def __str__(self) -> str:
        suffix = "" if self.target == "grad" else f"@{self.target}"
        return f"{self.layer}={self.edit}{suffix}"

    def spec(self) -> dict[str, Any]:
        """JSON-ready form ``{"layer", "target", "edit": {...}}`` (what manifests store)."""
        return {"layer": self.layer, "target": self.target, "edit": self.edit.spec()}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> EditSpec:
        """Inverse of :meth:`spec`; ``edit`` may also be the short text (``"scale(0.5)"``)."""
        try:
            edit = spec["edit"]
            edit = edit if isinstance(edit, Edit) else (
                parse(edit) if isinstance(edit, str) else from_spec(dict(edit)))
            return cls(str(spec["layer"]), edit, str(spec.get("target") or "grad"))
        except KeyError as exc:
            raise EditError(f"edit spec lacks {exc}: {spec!r}") from exc
        except (TypeError, ValueError) as exc:
            raise EditError(f"bad edit spec {spec!r}: {exc}") from exc

    @classmethod
    def parse(cls, text: str, target: str = "grad") -> EditSpec:
        """Parse ``"conv2=scale(0.5)"`` or ``"conv2=scale(0.5)@activation"``.

        The older ``"conv2:activation=zero()"`` is accepted too. ``target`` applies when the
        text names none (the CLI's ``--edit-target``).

        Raises:
            EditError: no ``LAYER=EDIT``, an unknown edit or target, bad arguments.
        """
        if not isinstance(text, str) or "=" not in text:
            raise EditError(f"write an edit as LAYER=EDIT, e.g. conv2=scale(0.5); got {text!r}")
        where, _, what = text.partition("=")
        layer, colon, tgt = where.strip().partition(":")
        body, at, suffix = what.rpartition("@")
        if at and suffix.strip() in TARGETS:
            what, tgt = body, suffix.strip()
        elif at and not colon:
            raise EditError(f"unknown edit target {suffix.strip()!r} in {text!r}; "
                            f"known: {', '.join(TARGETS)}")
        if not layer.strip():
            raise EditError(f"an edit needs a layer name before '=', got {text!r}")
        return cls(layer.strip(), parse(what), tgt.strip() or target)


#: Every form of edits users pass: ``None``; a mapping layer -> Edit / text / spec; a list of
#: :class:`EditSpec`, spec dicts or ``LAYER=EDIT`` texts; one such text (``;``/newline
#: separated) or the JSON of specs runs store in ``trace.meta["edits"]``.
EditsArg = Mapping[str, Any] | Iterable[Any] | str | EditSpec | None


def _spec_of_item(item: Any) -> EditSpec:
    if isinstance(item, EditSpec):
        return item
    if isinstance(item, str):
        return EditSpec.parse(item)
    if isinstance(item, Mapping):
        return EditSpec.from_spec(item)
    raise EditError(f"cannot use {item!r} as an edit; use EditSpec(layer, edit, target), "
                    "a spec dict or 'LAYER=EDIT'")


def _spec_of_pair(layer: Any, value: Any) -> EditSpec:
    if isinstance(value, Edit):
        return EditSpec(str(layer), value)
    if isinstance(value, str):  # "scale(0.5)" or "scale(0.5)@activation"
        return EditSpec.parse(f"{layer}={value}")
    if isinstance(value, Mapping):
        if "edit" in value:  # {"edit": ..., "target": ...}
            return EditSpec.from_spec({"layer": layer, **value})
        return EditSpec(str(layer), from_spec(dict(value)))
    raise EditError(f"cannot use {value!r} as the edit of {layer!r}")


def _is_single_spec(edits: Mapping[str, Any]) -> bool:
    return "layer" in edits and "edit" in edits and set(edits) <= {"layer", "edit", "target"}


def normalise_edits(edits: EditsArg) -> list[EditSpec]:
    """The one normalisation of edits: any :data:`EditsArg` form as a list of EditSpec.

    Example:
        >>> normalise_edits({"block.0": scale(0.5)})
        [EditSpec(layer='block.0', edit=Scale(k=0.5), target='grad')]

    Raises:
        EditError: a malformed edit (unknown name, bad arguments, no ``LAYER=EDIT``).
    """
    try:
        if edits is None:
            return []
        if isinstance(edits, EditSpec):
            return [edits]
        if isinstance(edits, str):
            text = edits.strip()
            if text.startswith(("[", "{")):
                try:
                    loaded = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise EditError(f"edits are not valid JSON: {exc}") from exc
                return normalise_edits(loaded)
            return [EditSpec.parse(t) for t in text.replace(";", "\n").splitlines()
                    if t.strip()]
        if isinstance(edits, Mapping):
            if _is_single_spec(edits):
                return [EditSpec.from_spec(edits)]
            return [_spec_of_pair(k, v) for k, v in edits.items()]
        if isinstance(edits, Iterable):
            return [_spec_of_item(e) for e in edits]
    except EditError:
        raise
    except (TypeError, ValueError) as exc:  # e.g. scale('x'): float() fails in the factory
        raise EditError(f"bad edit in {edits!r}: {exc}") from exc
    raise EditError(f"cannot use {edits!r} as edits")


def _raw_text(item: Any) -> str:
    """Best-effort text, in :class:`EditSpec`'s syntax, of an edit that does not validate
    (a run written by another version); for display only."""
    if isinstance(item, Mapping):
        spec = item.get("edit", item)
        if isinstance(spec, Mapping):
            name = spec.get("name") or spec.get("kind") or spec.get("op") or "edit"
            params = {k: v for k, v in spec.items() if k not in ("name", "kind", "op", "layer")}
            args = ", ".join(f"{v}" if len(params) == 1 else f"{k}={v}"
                             for k, v in params.items())
            body = f"{name}({args})"
        else:
            body = str(spec)
        target = item.get("target")
        suffix = f"@{target}" if target and target != "grad" else ""
        return f"{item['layer']}={body}{suffix}" if "layer" in item else body
    return str(item)


def describe(edits: EditsArg) -> str:
    """The text of a run's edits: ``"; ".join(str(s) for s in normalise_edits(edits))``.

    ``""`` when there are none (callers add their own "no edit" word). For display, an edit
    that does not validate (a run from another version) is shown as written, never raised.

    Example:
        >>> describe({"block.0": scale(0.5)})
        'block.0=scale(0.5)'
    """
    try:
        return "; ".join(str(s) for s in normalise_edits(edits))
    except EditError as exc:
        log.warning("showing edits that do not validate as written: %s", exc)
    if isinstance(edits, str):
        return edits.strip()
    if isinstance(edits, Mapping):
        items: list[Any] = ([edits] if _is_single_spec(edits) else
                            [{"layer": k, "edit": v} for k, v in edits.items()])
    elif isinstance(edits, Iterable):
        items = list(edits)
    else:
        return str(edits)
    parts = []
    for item in items:
        try:
            parts.append(str(_spec_of_item(item)))
        except EditError:
            parts.append(_raw_text(item))
    return "; ".join(parts)
