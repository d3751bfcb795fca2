"""Regenerate the shipped default weights: ``python -m hooklab train --export-defaults``.

Each default configuration (:func:`default_configs`) is trained with :func:`hooklab.studies.train.train`
(never the cache, never the shipped files), and the weights are written as
``<name>.safetensors`` beside a ``defaults.json`` manifest (see :mod:`hooklab.models.defaults`). All
models are trained before any file is replaced, each file is written to a temporary name and
moved into place with ``os.replace``, and the manifest goes last, so a failed export leaves the
previous set intact. The file bytes depend only on the weights and the configuration (one
``hooklab`` header entry of sorted JSON, no timings), so exporting twice on one machine gives the
same sha256.

Example:
    >>> manifest = export_defaults("/tmp/defaults")   # about 3 x 15 s on two cores
    >>> [m["name"] for m in manifest["models"]]
    ['simple_cnn_shapes', 'simple_cnn_biased', 'simple_cnn_rebalanced']
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from hooklab.core.machine import machine_info
from hooklab.data import datasets
from hooklab.models import defaults
from hooklab.studies import bias, train

__all__ = ["FILE_FORMAT", "default_configs", "export_defaults", "shipped_entry"]

log = logging.getLogger(__name__)

#: ``format`` tag in the shipped safetensors headers.
FILE_FORMAT = "hooklab-default-1"


def default_configs() -> dict[str, Any]:
    """Name -> :class:`hooklab.studies.train.TrainConfig` of every shipped default, in export order:
    ``trained_model()``'s default, the bias experiment's two arms (:func:`hooklab.studies.bias.arm_config`)
    and the default recipe on shuffled labels (the data-randomisation sanity check).
    """
    return {"simple_cnn_shapes": train.TrainConfig(),
            "simple_cnn_biased": bias.arm_config("biased"),
            "simple_cnn_rebalanced": bias.arm_config("rebalanced"),
            # the data-randomisation sanity check (hooklab.cam.sanity): the default recipe on
            # shapes whose training labels are permuted
            "simple_cnn_shuffled": train.TrainConfig(shuffle_labels=True),
            # the small ViT on the shapes and its two bias arms (bias.arm_config(model=...))
            "simple_vit_shapes": train.vit_config(),
            "simple_vit_biased": bias.arm_config("biased", model="simple_vit"),
            "simple_vit_rebalanced": bias.arm_config("rebalanced", model="simple_vit")}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def shipped_entry(name: str, config: Any, model: torch.nn.Module, test_accuracy: float,
                  seconds: float, machine: dict[str, Any] | None = None
                  ) -> tuple[dict[str, Any], bytes]:
    """The manifest entry and the file bytes of one default, from its trained ``model``.

    The bytes depend only on the weights and the configuration (one ``hooklab`` header entry
    of sorted JSON, no timings).
    """
    key = train.config_key(config)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # one metadata entry: safetensors writes several in a random order (other bytes)
    blob = safetensors.torch.save(state, metadata={"hooklab": json.dumps(
        {"format": FILE_FORMAT, "name": name, "key": key, "config": config.to_dict()},
        sort_keys=True)})
    entry = {
        "name": name, "file": f"{name}.safetensors", "config": config.to_dict(),
        "key": key, "sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob),
        "test_accuracy": float(test_accuracy), "train_seconds": round(float(seconds), 1),
        "torch": torch.__version__, "machine": machine or machine_info(),
        "generator_version": datasets.GENERATOR_VERSION}
    return entry, blob


def export_defaults(out: str | os.PathLike[str] | None = None,
                    progress: Callable[[str, int, int], Any] | None = None,
                    names: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Retrain the defaults and rewrite their weights and the manifest in ``out``.

    Args:
        out: target folder (default: the package's :data:`hooklab.models.defaults.DEFAULTS_DIR`).
        progress: ``progress(name, step, total)`` during each training.
        names: retrain only these defaults (e.g. ``["simple_vit_shapes"]``); the others keep
            their files and manifest entries from ``out`` (``None``: retrain every default).

    Returns:
        The manifest written.

    Raises:
        ValueError: an unknown name, or a default that is neither retrained nor in ``out``.
    """
    folder = Path(out) if out is not None else defaults.DEFAULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    configs = default_configs()
    unknown = sorted(set(names or ()) - set(configs))
    if unknown:
        raise ValueError(f"unknown default(s) {unknown}; the defaults are {list(configs)}")
    kept = {e["name"]: e for e in defaults.entries(folder)} if names is not None else {}
    missing = [n for n in configs if names is not None and n not in names and n not in kept]
    if missing:
        raise ValueError(f"{folder} has no shipped {missing}: retrain them too (names=None)")
    machine = machine_info()
    blobs: dict[str, bytes] = {}
    models = []
    for name, config in configs.items():
        if names is not None and name not in names:
            models.append(kept[name])
            continue
        cb = (lambda s, n, _m, name=name: progress(name, s, n)) if progress else None
        model, history = train.train(dataclasses.replace(config, record_every=0), cb)
        entry, blobs[f"{name}.safetensors"] = shipped_entry(
            name, config, model, history.attrs["test_accuracy"], history.attrs["seconds"],
            machine)
        models.append(entry)
        log.info("exported %s (key %s, test accuracy %.3f)", name, entry["key"],
                 entry["test_accuracy"])
    manifest = {"format": defaults.FORMAT,
                "regenerate": "python -m hooklab train --export-defaults", "models": models}
    for file, blob in blobs.items():
        _write_atomic(folder / file, blob)
    _write_atomic(folder / defaults.MANIFEST,
                  (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())
    return manifest
