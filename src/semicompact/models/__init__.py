"""Models: one registry, one factory (:func:`create_model`), local/hub weights, small-input stems."""

from semicompact.models.factory import (
    Classifier,
    ModelInfo,
    check_input_size,
    create_model,
    list_models,
    min_input_size,
)
from semicompact.models.registry import FAMILIES, ModelSpec, get_spec, register_model, resolve_name
from semicompact.models.weights import LoadReport, load_weights, read_state_dict

__all__ = [
    "FAMILIES",
    "Classifier",
    "LoadReport",
    "ModelInfo",
    "ModelSpec",
    "check_input_size",
    "create_model",
    "get_spec",
    "list_models",
    "load_weights",
    "min_input_size",
    "read_state_dict",
    "register_model",
    "resolve_name",
]
