"""Models: the zoo, the registry of users' own models, safe weight loading and the shipped
default weights."""

from __future__ import annotations

from hooklab.models.registry import (
    ModelFactoryError,
    ModelModuleError,
    RegisteredModel,
    RegistryError,
    load_modules,
    register,
    registered,
    unregister,
)
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
    all_model_names,
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
    "ModelFactoryError",
    "ModelInfo",
    "ModelModuleError",
    "RegisteredModel",
    "RegistryError",
    "SimpleCNN",
    "SimpleModel",
    "UnknownModelError",
    "all_model_names",
    "apply_state_dict",
    "auto_target_layer",
    "get_model",
    "hub_checkpoint_path",
    "input_shape",
    "list_layers",
    "load_modules",
    "load_state_dict",
    "model_info",
    "register",
    "registered",
    "save_safetensors",
    "seed_model",
    "unregister",
    "unwrap_state_dict",
]
