"""Tiny model directories for the CLI tests: one per task, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

SIC_CONFIG = {"task": "sic", "inputs": ["HH", "HV"], "normalization": {"mean": [0.0, 0.0], "std": [1.0, 1.0]},
              "patch_size": 32}


def _model_dir(folder: Path, config: dict, out_channels: int) -> Path:
    import torch

    from icetools.modeldir import save_model_dir
    from icetools.models import build_model

    torch.manual_seed(0)
    model = build_model("unet", in_channels=2, out_channels=out_channels, widths=[4, 8, 8, 8])
    save_model_dir(folder, model, config)
    return folder


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """task -> model directory (sic, binary with threshold 0.4, multiclass with 3 classes)."""
    root = tmp_path_factory.mktemp("models")
    return {
        "sic": _model_dir(root / "sic", SIC_CONFIG, 1),
        "binary": _model_dir(root / "binary", {**SIC_CONFIG, "task": "binary", "threshold": 0.4}, 1),
        "multiclass": _model_dir(
            root / "multiclass",
            {**SIC_CONFIG, "task": "multiclass", "n_classes": 3, "class_names": ["water", "young", "old"]}, 3,
        ),
    }
