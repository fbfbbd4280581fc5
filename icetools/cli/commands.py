"""Import every command module so that each registers itself on the app."""

from __future__ import annotations

import importlib

COMMAND_MODULES = ("info", "synth", "rasterize", "sample_patches", "train", "sweep", "predict", "vectorize", "evaluate")

for _name in COMMAND_MODULES:
    importlib.import_module(f"icetools.cli.{_name}")
