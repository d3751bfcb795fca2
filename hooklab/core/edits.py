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
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch

from hooklab.core.errors import EditError

__all__ = [
    "Edit", "Scale", "Clip", "ClipNorm", "Zero", "ChannelMask", "Noise",
    "scale", "clip", "clip_norm", "zero", "channel_mask", "noise",
    "from_spec", "from_json", "parse", "EDIT_NAMES", "TARGETS",
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


_FACTORIES = {"scale": scale, "clip": clip, "clip_norm": clip_norm, "zero": zero,
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
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
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
