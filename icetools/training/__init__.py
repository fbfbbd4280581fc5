"""Training: options -> setup -> the epoch loop with its callbacks -> a model directory.

``options``   TrainOptions and their coercion (also what ``icetools train`` and ``sweep`` share)
``setup``     model, loss, inputs, classes and normalisation for the patches; the torch parts
``samples``   epochs of a fixed number of samples over the fixed training windows
``schedule``  the budget (epochs and/or time), the learning rate over it, the early stopping rule
``loop``      the step/epoch loop; save-best, save-at, history, curves, state and early stopping callbacks
``state``     the run directory: resumable state, history.csv, config.json, its rules
``validate``  validation metrics on :mod:`icetools.metrics`' counters; the binary threshold sweep
``distributed`` several processes under torchrun: the World, its agreements, the validation shares
``run``       :func:`train_model`, which only wires these together
"""

from __future__ import annotations

from icetools.training.options import TrainOptions, build_options, parse_key_values, parse_weights, read_yaml_options
from icetools.training.run import train_model
from icetools.training.setup import Setup, load_patches, resolve_setup
from icetools.training.state import save_at_name
from icetools.training.validate import (
    DEFAULT_THRESHOLDS,
    ValidationResult,
    patch_dice,
    pick_threshold,
    validate,
)

__all__ = [
    "DEFAULT_THRESHOLDS", "Setup", "TrainOptions", "ValidationResult", "build_options", "load_patches",
    "parse_key_values", "parse_weights", "patch_dice", "pick_threshold", "read_yaml_options", "resolve_setup",
    "save_at_name", "train_model", "validate",
]
