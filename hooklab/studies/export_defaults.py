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

__all__ = ["FILE_FORMAT", "default_configs", "export_defaults"]

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
            "simple_cnn_shuffled": train.TrainConfig(shuffle_labels=True)}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def export_defaults(out: str | os.PathLike[str] | None = None,
                    progress: Callable[[str, int, int], Any] | None = None) -> dict[str, Any]:
    """Retrain every default and rewrite the weights and the manifest in ``out``.

    Args:
        out: target folder (default: the package's :data:`hooklab.models.defaults.DEFAULTS_DIR`).
        progress: ``progress(name, step, total)`` during each training.

    Returns:
        The manifest written.
    """
    folder = Path(out) if out is not None else defaults.DEFAULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    blobs: dict[str, bytes] = {}
    models = []
    for name, config in default_configs().items():
        cb = (lambda s, n, _m, name=name: progress(name, s, n)) if progress else None
        model, history = train.train(dataclasses.replace(config, record_every=0), cb)
        key = train.config_key(config)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        # one metadata entry: safetensors writes several in a random order (other bytes)
        blob = safetensors.torch.save(state, metadata={"hooklab": json.dumps(
            {"format": FILE_FORMAT, "name": name, "key": key, "config": config.to_dict()},
            sort_keys=True)})
        blobs[f"{name}.safetensors"] = blob
        models.append({
            "name": name, "file": f"{name}.safetensors", "config": config.to_dict(),
            "key": key, "sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob),
            "test_accuracy": float(history.attrs["test_accuracy"]),
            "train_seconds": round(float(history.attrs["seconds"]), 1),
            "torch": torch.__version__, "machine": machine,
            "generator_version": datasets.GENERATOR_VERSION})
        log.info("exported %s (key %s, test accuracy %.3f)", name, key,
                 models[-1]["test_accuracy"])
    manifest = {"format": defaults.FORMAT,
                "regenerate": "python -m hooklab train --export-defaults", "models": models}
    for file, blob in blobs.items():
        _write_atomic(folder / file, blob)
    _write_atomic(folder / defaults.MANIFEST,
                  (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())
    return manifest
