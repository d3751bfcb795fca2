"""Models: the zoo, safe weight loading and the shipped default weights."""

from __future__ import annotations

from hooklab.models.weights import (
    MAX_LISTED,
    CheckpointError,
    apply_state_dict,
    hub_checkpoint_path,
    load_state_dict,
    save_safetensors,
    unwrap_state_dict,
)
from hooklab.models.zoo import (
    ModelInfo,
    SimpleCNN,
    SimpleModel,
    UnknownModelError,
    auto_target_layer,
    get_model,
    input_shape,
    list_layers,
    model_info,
    seed_model,
)

__all__ = [
    "CheckpointError",
    "MAX_LISTED",
    "ModelInfo",
    "SimpleCNN",
    "SimpleModel",
    "UnknownModelError",
    "apply_state_dict",
    "auto_target_layer",
    "get_model",
    "hub_checkpoint_path",
    "input_shape",
    "list_layers",
    "load_state_dict",
    "model_info",
    "save_safetensors",
    "seed_model",
    "unwrap_state_dict",
]
