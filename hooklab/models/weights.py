"""Safe weight loading: safetensors, or a state dict unpickled with ``weights_only=True``.

A checkpoint is untrusted input. hooklab never runs a full pickle: ``.safetensors`` files are
read with :mod:`safetensors` (no code at all), and ``.pt``/``.pth`` files go through
``torch.load(weights_only=True)``, PyTorch's restricted unpickler, which refuses any global that
is not a tensor/container type. A refused pickle raises :class:`UnsafeCheckpointError`; its
payload never runs.

Example:
    >>> sd = load_state_dict("resnet18.safetensors")
    >>> apply_state_dict(model, sd)          # WeightsMismatchError lists what does not fit
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from hooklab.core.errors import HooklabError, UnsafeCheckpointError, WeightsMismatchError

__all__ = ["CheckpointError", "load_state_dict", "unwrap_state_dict", "apply_state_dict",
           "save_safetensors", "hub_checkpoint_path", "MAX_LISTED"]

log = logging.getLogger(__name__)

#: How many keys a mismatch message lists per category before "... and N more".
MAX_LISTED = 8

#: Keys under which training scripts commonly nest the real state dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "weights")
#: Prefixes added by DataParallel/DistributedDataParallel and torch.compile.
_STRIP_PREFIXES = ("module.", "_orig_mod.")

_ZIP_MAGIC = b"PK\x03\x04"
#: What torch's weights-only unpickler says when a pickle asks for code it will not run.
_NEEDS_CODE = ("GLOBAL", "Can only create new object", "call reduce for unrecognized")


class CheckpointError(HooklabError, ValueError):
    """A checkpoint file is missing, unreadable, corrupt, or not a state dict."""


def _is_safetensors(head: bytes) -> bool:
    # 8-byte little-endian header length, then a JSON object.
    return len(head) >= 9 and head[8:9] == b"{"


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` without ever executing code from the file.

    The format is taken from the file's content (not its suffix): safetensors, a zip-format
    ``torch.save`` file or a legacy pickle; the last two are read with
    ``torch.load(map_location="cpu", weights_only=True)``. Wrapped dicts
    (``{"state_dict": ...}``, ``{"model": ...}``) and ``module.`` prefixes are unwrapped.

    Raises:
        UnsafeCheckpointError: the pickle needs code (a global outside PyTorch's allow-list).
        CheckpointError: missing, empty, corrupt, or not a mapping of names to tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist or is not a file")
    try:
        with p.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {str(p)!r}: {exc}") from exc
    if not head:
        raise CheckpointError(f"checkpoint {str(p)!r} is empty")

    if _is_safetensors(head) and not head.startswith(_ZIP_MAGIC):
        obj: Any = _load_safetensors(p)
    else:
        obj = _torch_load_safe(p)
    return unwrap_state_dict(obj, source=str(p))


def _load_safetensors(p: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{str(p)!r} is not a valid safetensors file: {exc}") from exc


def _torch_load_safe(p: Path) -> Any:
    try:
        # A file object, not the path: torch.load dispatches on a ".safetensors" suffix, and the
        # content (already sniffed) is what decides the format here.
        with p.open("rb") as fh:
            return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        # torch wraps every refusal in "Weights only load failed"; only these say the file asks
        # for code ("Unsupported operand" is a byte that is no pickle opcode: corrupt, not unsafe)
        if any(m in msg for m in _NEEDS_CODE):
            detail = next((ln.strip() for ln in msg.splitlines() if "GLOBAL" in ln
                           or "Unsupported" in ln), "it needs objects beyond tensors")
            raise UnsafeCheckpointError(
                f"refused to load {str(p)!r}: it is a full pickle that would need arbitrary code "
                f"to load ({detail}). Only plain state dicts (weights_only) or .safetensors are "
                "accepted; re-save it with torch.save(model.state_dict(), ...) or "
                "safetensors.torch.save_file(...)") from exc
        detail = msg.split("WeightsUnpickler error:", 1)[-1].split("Check the documentation")[0]
        raise CheckpointError(f"{str(p)!r} is not a readable checkpoint (corrupt, truncated, or "
                              f"not a PyTorch or safetensors file): {detail.strip()}") from exc
    except Exception as exc:  # the loader's many ways of saying "corrupt"
        if isinstance(exc, HooklabError):
            raise
        raise CheckpointError(
            f"{str(p)!r} is not a readable checkpoint (corrupt or truncated?): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Return a flat ``{name: tensor}`` dict from a (possibly wrapped) checkpoint object.

    Unwraps one of :data:`_WRAPPER_KEYS` when the top level is not itself all tensors,
    drops non-tensor entries beside tensors (e.g. ``"epoch"``) only inside a wrapper, and strips
    ``module.`` / ``_orig_mod.`` prefixes when every key carries them.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a state dict (a mapping of names to tensors), "
                              f"got {type(obj).__name__}")
    sd: Mapping[str, Any] = obj
    for _ in range(3):  # nested wrappers, e.g. {"model": {"state_dict": {...}}}
        if sd and all(isinstance(v, torch.Tensor) for v in sd.values()):
            break
        inner = next((sd[k] for k in _WRAPPER_KEYS if isinstance(sd.get(k), Mapping)), None)
        if inner is None:
            break
        sd = inner
    tensors = {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(map(str, list(sd)[:MAX_LISTED]))
        raise CheckpointError(f"{source}: no tensors found (top-level keys: {keys or 'none'})")
    for prefix in _STRIP_PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


def _capped(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    more = len(items) - MAX_LISTED
    return shown + (f", ... and {more} more" if more > 0 else "")


def apply_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                     source: str = "weights") -> nn.Module:
    """Load ``state_dict`` into ``model`` strictly; on any mismatch raise a compact report.

    Raises:
        WeightsMismatchError: with attributes ``missing``, ``unexpected`` and ``shape_mismatch``
            (lists), and a message listing at most :data:`MAX_LISTED` of each.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{source} do not fit {type(model).__name__}"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_capped(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_capped(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {_capped(shapes)}")
        err = WeightsMismatchError("; ".join(parts))
        err.missing, err.unexpected, err.shape_mismatch = missing, unexpected, shapes  # type: ignore[attr-defined]
        raise err
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as exc:  # dtype trouble etc.; keys and shapes were checked above
        raise WeightsMismatchError(f"{source}: {exc}") from exc
    return model


def save_safetensors(model_or_sd: nn.Module | Mapping[str, torch.Tensor],
                     path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> Path:
    """Write a state dict as safetensors, atomically (temporary file + ``os.replace``)."""
    sd = model_or_sd.state_dict() if isinstance(model_or_sd, nn.Module) else model_or_sd
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        safetensors.torch.save_file(flat, str(tmp), metadata=metadata)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def hub_checkpoint_path(url: str) -> Path:
    """Where ``torch.hub`` caches the file of ``url``: ``torch.hub.get_dir()/checkpoints/<name>``."""
    name = os.path.basename(url.split("?", 1)[0])
    return Path(torch.hub.get_dir()) / "checkpoints" / name


# torchvision's DenseNet checkpoints use old key names ("denselayer1.norm.1.weight");
# torchvision remaps them in densenet._load_state_dict with this pattern.
_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def remap_torchvision_keys(arch: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply torchvision's own legacy key renames (DenseNet) to a hub checkpoint."""
    if not arch.startswith("densenet"):
        return sd
    out = {}
    for k, v in sd.items():
        m = _DENSENET_KEY.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out
