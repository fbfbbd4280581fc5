"""Segmentation architectures, rebuilt by name from a model directory's ``config.json``.

Importing this package does not import torch; a model's module is loaded when it is built.
"""

from __future__ import annotations

from icetools.models.registry import (
    MODEL_NAMES,
    MODEL_SIZES,
    SIZE_PRESETS,
    WEIGHT_INIT_ARGS,
    build_model,
    model_class,
    model_spec,
    size_args,
)

__all__ = [
    "MODEL_NAMES", "MODEL_SIZES", "SIZE_PRESETS", "WEIGHT_INIT_ARGS", "build_model", "model_class", "model_spec",
    "size_args",
]
