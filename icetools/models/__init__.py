"""Segmentation architectures, rebuilt by name from a model directory's ``config.json``.

Importing this package does not import torch; a model's module is loaded when it is built.
"""

from __future__ import annotations

from icetools.models.registry import (
    MODEL_NAMES,
    WEIGHT_INIT_ARGS,
    build_model,
    context_scales_of,
    model_class,
    model_spec,
)

__all__ = ["MODEL_NAMES", "WEIGHT_INIT_ARGS", "build_model", "context_scales_of", "model_class", "model_spec"]
