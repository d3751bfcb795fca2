"""The shipped default weights: the same bytes on every machine.

Float rounding differs between CPUs and thread counts, so weights trained on first use differ
between machines. The default models (the SimpleCNN on shapes and the two bias-experiment arms,
the same three for the small ViT, :class:`hooklab.models.vit.SimpleViT`) are therefore trained
once and shipped in this folder as safetensors, listed in
``defaults.json`` with, per file: name, file, training config (``TrainConfig.to_dict``), its
config key, sha256, size, test accuracy, torch version and the machine that trained it.
:func:`hooklab.studies.train.trained_model` returns these whenever the config key matches a shipped
entry, after checking the file's sha256 (a mismatch is a :class:`DefaultWeightsError`, never a
silent retraining). ``python -m hooklab train --export-defaults`` regenerates them
(:func:`hooklab.studies.export_defaults.export_defaults`).

Example:
    >>> entry = entry_for_key(config_key(TrainConfig()))
    >>> state_dict = load_entry(entry)          # sha256-checked
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as _load_safetensors_bytes

from hooklab.core.errors import HooklabError

__all__ = [
    "DEFAULTS_DIR",
    "FORMAT",
    "MANIFEST",
    "DefaultWeightsError",
    "entries",
    "entry_for_key",
    "entry_named",
    "entry_path",
    "load_entry",
    "manifest",
    "sha256_file",
]

log = logging.getLogger(__name__)

#: The folder holding the shipped weights and the manifest (package data).
DEFAULTS_DIR = Path(__file__).resolve().parent
#: The manifest's file name inside :data:`DEFAULTS_DIR`.
MANIFEST = "defaults.json"
#: Manifest format tag.
FORMAT = "hooklab-defaults-1"

_REGENERATE = "python -m hooklab train --export-defaults"


class DefaultWeightsError(HooklabError, ValueError):
    """A shipped default weights file is missing or does not match its recorded sha256."""


def _folder(folder: str | Path | None) -> Path:
    return Path(folder) if folder is not None else DEFAULTS_DIR


def manifest(folder: str | Path | None = None) -> dict[str, Any]:
    """The manifest (``{"format", "models": [entry, ...]}``); no models when there is none."""
    path = _folder(folder) / MANIFEST
    if not path.is_file():
        return {"format": FORMAT, "models": []}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DefaultWeightsError(f"the shipped defaults manifest {path} is unreadable: {exc}; "
                                  f"restore it from the repository or run `{_REGENERATE}`"
                                  ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DefaultWeightsError(f"{path} is not a {FORMAT} manifest")
    return data


def entries(folder: str | Path | None = None) -> list[dict[str, Any]]:
    """The manifest's entries, one per shipped file."""
    return list(manifest(folder).get("models", []))


def entry_for_key(key: str, folder: str | Path | None = None) -> dict[str, Any] | None:
    """The shipped entry whose config key is ``key`` (None when no shipped model matches)."""
    return next((e for e in entries(folder) if e.get("key") == key), None)


def entry_named(name: str, folder: str | Path | None = None) -> dict[str, Any]:
    """The shipped entry called ``name`` (e.g. ``"simple_cnn_shapes"``)."""
    found = next((e for e in entries(folder) if e.get("name") == name), None)
    if found is None:
        known = ", ".join(e.get("name", "?") for e in entries(folder)) or "none"
        raise DefaultWeightsError(f"no shipped default called {name!r} (shipped: {known})")
    return found


def entry_path(entry: dict[str, Any], folder: str | Path | None = None) -> Path:
    """Where the entry's weights file lies."""
    return _folder(folder) / entry["file"]


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_entry(entry: dict[str, Any], folder: str | Path | None = None
               ) -> dict[str, torch.Tensor]:
    """The entry's state dict, after checking the file's size and sha256 against the manifest.

    Raises:
        DefaultWeightsError: the file is missing or its bytes are not the recorded ones.
    """
    path = entry_path(entry, folder)
    try:
        raw = path.read_bytes()  # hashed and parsed from the same bytes
    except OSError as exc:
        raise DefaultWeightsError(f"shipped default weights {path} are missing or unreadable "
                                  f"({exc}); restore them from the repository or run "
                                  f"`{_REGENERATE}`") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != entry["sha256"] or len(raw) != entry["size"]:
        raise DefaultWeightsError(
            f"shipped default weights {path} do not match the manifest (sha256 {digest[:12]}…, "
            f"recorded {entry['sha256'][:12]}…): the file was changed or damaged; restore it "
            f"from the repository or run `{_REGENERATE}`")
    log.debug("loading shipped default %s (sha256 %s)", path, digest)
    return _load_safetensors_bytes(raw)
