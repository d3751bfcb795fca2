"""Grad-CAM controls shared by the page: the picked model with its class names, cached layer
lists and CIFAR-10 split, CAM calls under the model's lock, the upload handler.

The CAMs themselves come from :mod:`hooklab.cam.engine`, inputs from :mod:`hooklab.models.inputs`,
stored runs from :mod:`hooklab.cam.runs`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st
import torch

from dashboard import state
from dashboard.components import pickers
from dashboard.components.pickers import InputChoice, ModelChoice, model_info
from dashboard.i18n import lang, t
from hooklab.cam import engine as camlib
from hooklab.cam import runs as cam_runs
from hooklab.core.trace import Trace
from hooklab.models import inputs, zoo


@dataclass
class Model:
    """The picked model with what the page needs to feed it and name its classes."""

    choice: ModelChoice  # cached, shared with the other pages
    info: zoo.ModelInfo  # input shape, normalisation, class names (English)

    @property
    def net(self) -> torch.nn.Module:
        return self.choice.model

    @property
    def lock(self):
        return self.choice.lock


def wrap(choice: ModelChoice) -> Model:
    return Model(choice, model_info(choice))


def class_names(names) -> list[str]:
    """Class names in the session's language."""
    return inputs.class_names(names, lang())


@st.cache_resource(show_spinner=False, max_entries=16)
def spatial_layers(key: str, _model: torch.nn.Module, shape: tuple[int, ...]
                   ) -> tuple[list[str], str]:
    """The layers a CAM can use (for the picker: spatial ones and a ViT's token grids) and the
    automatic target layer, from dry forwards."""
    with state.model_lock(key):
        layers = zoo.cam_layers(_model, shape)
        auto = zoo.auto_target_layer(_model, shape)
    return layers, auto


def handle_upload(data: bytes, name: str, info: zoo.ModelInfo) -> inputs.Sample:
    """Uploaded bytes as a model input: a bad file becomes one ``st.error`` (page stops)."""
    with state.guard(t("Reading the uploaded image", "读取上传的图像")):
        return inputs.upload_input(data, name, info)


def make_input(source: str, index: int, model: Model, upload: Any = None) -> InputChoice:
    """The page's input through the one input pipeline (:func:`pickers.make_input`): a shapes or
    CIFAR-10 test sample ``index``, an upload, or random pixels with seed ``index``; a bad
    upload becomes one ``st.error`` (the page stops)."""
    spec: dict[str, Any] = {"source": source}
    if source == "random":
        spec["seed"] = int(index)
    elif source == "upload":
        spec["name"] = upload.name
    else:
        spec["index"] = int(index)
    what = (t("Reading the uploaded image", "读取上传的图像") if source == "upload"
            else t("Preparing the input", "准备输入"))
    with state.guard(what):
        return pickers.make_input(spec, model.choice,
                                  upload.getvalue() if upload is not None else None)


def compute(model: Model, x: torch.Tensor, method: str, layer: str | None,
            target: Any) -> camlib.CamResult:
    """One CAM on the shared model, under its lock."""
    with model.lock:
        return camlib.compute(model.net, x, method=method, layer=layer, target=target)


def _digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


@st.cache_data(show_spinner=False, max_entries=64)
def _method_map(model_key: str, x_digest: str, method: str, layer: str, target: int,
                _model: Model, _x: torch.Tensor) -> np.ndarray:
    return compute(_model, _x, method, layer, int(target)).maps[0].numpy()


def method_map(model: Model, x: torch.Tensor, method: str, layer: str, target: int
               ) -> np.ndarray:
    """One method's map, cached per (model, input, layer, class): moving the opacity slider or
    toggling raw maps does not recompute seven CAMs (Score-CAM is the slow one)."""
    return _method_map(model.choice.key, _digest(x), method, layer, int(target), model, x)


def record_run(model: Model, sample: InputChoice, layer: str, target: int,
               meta: dict[str, Any]) -> Trace:
    """The run "Save run" stores (:func:`hooklab.cam.runs.cam_run_trace`), under the lock."""
    with model.lock:
        return cam_runs.cam_run_trace(model.net, sample.x, layer, target, meta)
