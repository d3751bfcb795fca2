"""Grad-CAM controls shared by the page: the picked model with its class names, cached layer
lists and CIFAR-10 split, CAM calls under the model's lock, the upload handler.

The CAMs themselves come from :mod:`hooklab.cam.engine`, inputs from :mod:`hooklab.cam.inputs`,
stored runs from :mod:`hooklab.cam.runs`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import streamlit as st
import torch

from dashboard import state
from dashboard.components.pickers import ModelChoice
from dashboard.i18n import lang, t
from hooklab.cam import engine as camlib
from hooklab.cam import inputs
from hooklab.cam import runs as cam_runs
from hooklab.core.errors import HooklabError
from hooklab.core.trace import Trace
from hooklab.data import datasets as datalib
from hooklab.models import zoo


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


def model_info(choice: ModelChoice) -> zoo.ModelInfo:
    """Normalisation and class names of a picked model (shapes classes for the trained CNN)."""
    info = getattr(choice.model, "hooklab_info", None) or zoo.model_info(choice.name)
    if choice.weights == "shapes" and tuple(info.class_names) != tuple(datalib.SHAPE_CLASSES):
        info = replace(info, class_names=tuple(datalib.SHAPE_CLASSES), weights="shapes")
    return replace(info, input_shape=tuple(choice.input_shape))


def wrap(choice: ModelChoice) -> Model:
    return Model(choice, model_info(choice))


def class_names(names) -> list[str]:
    """Class names in the session's language."""
    return inputs.class_names(names, lang())


@st.cache_resource(show_spinner=False, max_entries=16)
def spatial_layers(key: str, _model: torch.nn.Module, shape: tuple[int, ...]
                   ) -> tuple[list[str], str]:
    """Spatial layers (for the picker) and the automatic target layer, from one dry forward."""
    with state.model_lock(key):
        table = zoo.list_layers(_model, shape)
        auto = zoo.auto_target_layer(_model, shape)
    return [str(n) for n in table.loc[table["spatial"], "name"]], auto


@st.cache_resource(show_spinner=False)
def cifar_test() -> Any:
    """The local CIFAR-10 test split (read once per server)."""
    return datalib.cifar10(train=False)


@st.cache_data(show_spinner=False, ttl=300)
def cifar_available() -> bool:
    """True when a local CIFAR-10 copy can be read (checked at most every 5 minutes)."""
    try:
        cifar_test()
    except HooklabError:
        return False
    return True


def handle_upload(data: bytes, name: str, info: zoo.ModelInfo) -> inputs.Sample:
    """Uploaded bytes as a model input: a bad file becomes one ``st.error`` (page stops)."""
    with state.guard(t("Reading the uploaded image", "读取上传的图像")):
        return inputs.upload_input(data, name, info)


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


def record_run(model: Model, sample: inputs.Sample, layer: str, target: int,
               meta: dict[str, Any]) -> Trace:
    """The run "Save run" stores (:func:`hooklab.cam.runs.cam_run_trace`), under the lock."""
    with model.lock:
        return cam_runs.cam_run_trace(model.net, sample.x, layer, target, meta)
