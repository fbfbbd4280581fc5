"""Tests for icetools.modeldir: round trips, the on-disk format and every refusal."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from icetools.modeldir import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelConfig,
    load_model_dir,
    read_config,
    read_model_config,
    save_model_dir,
)
from icetools.errors import ConfigError, InputFileError
from icetools.models import MODEL_NAMES, model_spec

from test_models import sample_input, small_model


def trained_looking(name: str, **extra: object) -> torch.nn.Module:
    """A small model whose BatchNorm running statistics are no longer the defaults."""
    model = small_model(name, **extra).train()
    with torch.no_grad():
        model(sample_input(model, batch=2, height=32, width=32))
    return model.eval()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_round_trip_gives_identical_outputs(tmp_path: Path, name: str) -> None:
    model = trained_looking(name)
    save_model_dir(tmp_path / "model", model, {"task": "sic"})
    loaded, config = load_model_dir(tmp_path / "model")
    assert not loaded.training
    x = sample_input(model, batch=2, height=32, width=48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    on_disk = json.loads((tmp_path / "model" / CONFIG_FILE).read_text())
    assert on_disk == config
    assert on_disk["model"] == model_spec(model)
    assert on_disk["model"]["name"] == name
    assert on_disk["task"] == "sic"


def test_directory_holds_exactly_the_two_files(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    save_model_dir(directory, small_model("unet"), {})
    assert sorted(p.name for p in directory.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    save_model_dir(directory, small_model("unet"), {})  # overwriting leaves no temporaries either
    assert sorted(p.name for p in directory.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]


def test_weights_file_is_safetensors_not_pickle(tmp_path: Path) -> None:
    model = small_model("unet")
    save_model_dir(tmp_path, model, {})
    raw = (tmp_path / WEIGHTS_FILE).read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_length])
    assert raw[:1] != b"\x80" and raw[:2] != b"PK"  # neither a pickle nor torch's zip format
    state = model.state_dict()
    assert set(header) - {"__metadata__"} == set(state)
    key = "head.weight"
    assert header[key]["shape"] == list(state[key].shape)
    assert header[key]["dtype"] == "F32"


def test_config_is_indented_json_and_callers_dict_is_untouched(tmp_path: Path) -> None:
    config = {"bands": ["HH", "HV"], "mean": np.array([1.5, -2.0]), "threshold": np.float32(0.25)}
    save_model_dir(tmp_path, small_model("unet"), config)
    text = (tmp_path / CONFIG_FILE).read_text()
    assert text.startswith('{\n  "')
    loaded = read_config(tmp_path)
    assert loaded["mean"] == [1.5, -2.0] and loaded["threshold"] == 0.25
    assert "model" not in config


def test_unserialisable_config_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JSON"):
        save_model_dir(tmp_path / "m", small_model("unet"), {"threshold": float("nan")})
    assert not (tmp_path / "m").exists()


def test_a_given_model_entry_must_match_the_model(tmp_path: Path) -> None:
    model = small_model("unet")
    # Defaults may be left out: it still describes the same network.
    partial = {"name": "unet", "args": {"in_channels": 2, "widths": [2, 4, 4, 8]}}
    save_model_dir(tmp_path / "ok", model, {"model": partial})
    assert read_config(tmp_path / "ok")["model"]["args"] == {"in_channels": 2, "widths": [2, 4, 4, 8]}
    with pytest.raises(ConfigError, match="does not describe the model"):
        save_model_dir(tmp_path / "bad", model, {"model": {"name": "unet", "args": {"in_channels": 2}}})


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    save_model_dir(tmp_path / "unet", small_model("unet"), {})
    save_model_dir(tmp_path / "wider", small_model("unet", widths=[4, 4, 8, 8]), {})
    save_model_dir(tmp_path / "linknet", small_model("linknet"), {})
    shutil.copy(tmp_path / "wider" / WEIGHTS_FILE, tmp_path / "unet" / WEIGHTS_FILE)
    with pytest.raises(ConfigError, match="do not match the 'unet' architecture.*another shape") as info:
        load_model_dir(tmp_path / "unet")
    assert "\n" not in str(info.value)
    shutil.copy(tmp_path / "linknet" / WEIGHTS_FILE, tmp_path / "unet" / WEIGHTS_FILE)
    with pytest.raises(ConfigError, match="missing.*unexpected"):
        load_model_dir(tmp_path / "unet")


def test_missing_directory_and_files(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="nowhere"):
        load_model_dir(tmp_path / "nowhere")
    with pytest.raises(InputFileError, match="nowhere"):
        read_config(tmp_path / "nowhere")
    save_model_dir(tmp_path / "m", small_model("unet"), {})
    (tmp_path / "m" / WEIGHTS_FILE).unlink()
    with pytest.raises(InputFileError, match=WEIGHTS_FILE):
        load_model_dir(tmp_path / "m")
    (tmp_path / "m" / CONFIG_FILE).unlink()
    with pytest.raises(InputFileError, match=CONFIG_FILE):
        load_model_dir(tmp_path / "m")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputFileError, match="not a folder"):
        load_model_dir(tmp_path / "file")


def test_bad_config_contents(tmp_path: Path) -> None:
    save_model_dir(tmp_path, small_model("unet"), {})
    config_path = tmp_path / CONFIG_FILE
    config_path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_model_dir(tmp_path)
    config_path.write_text(json.dumps({"model": {"name": "resnet999", "args": {}}}))
    with pytest.raises(ConfigError, match="unknown model 'resnet999'.*unet"):
        load_model_dir(tmp_path)
    config_path.write_text(json.dumps({"task": "sic"}))
    with pytest.raises(ConfigError, match='"model"'):
        read_config(tmp_path)
    config_path.write_text(json.dumps({"model": {"name": "unet", "args": {"in_channels": 2, "widths": 3}}}))
    with pytest.raises(ConfigError, match="config.json.*'widths'"):
        load_model_dir(tmp_path)


def test_corrupt_weights_file_is_an_input_file_error(tmp_path: Path) -> None:
    save_model_dir(tmp_path, small_model("unet"), {})
    (tmp_path / WEIGHTS_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    with pytest.raises(InputFileError, match=WEIGHTS_FILE):
        load_model_dir(tmp_path)


def test_fctl_loads_after_its_encoder_weights_file_is_gone(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = small_model("fctl")
    vgg = tmp_path / "vgg.safetensors"
    save_file({k: v.contiguous() for k, v in source.encoder.state_dict().items()}, str(vgg))
    model = trained_looking("fctl", encoder_weights=str(vgg))
    save_model_dir(tmp_path / "m", model, {})
    vgg.unlink()
    loaded, config = load_model_dir(tmp_path / "m")
    assert config["model"]["args"]["encoder_weights"] == str(vgg)  # provenance kept
    x = sample_input(model, batch=1, height=32, width=32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# ------------------------------------------------------------------------------- ModelConfig

TRAINED_CONFIG = {
    "icetools_version": "0.1.0",
    "task": "multiclass",
    "inputs": ["HH", "HV"],
    "normalization": {"mean": [-15.0, -25.0], "std": [4.5, 4.1]},
    "patch_size": 64,
    "n_classes": 3,
    "context_scales": [1.0],
    "training": {"loss": "focal", "best_epoch": 3, "val_metrics": {"miou": None}},
    "provenance": {"patches": "p.gpkg", "scenes": ["a.tif"]},
    "class_names": ["water", "thin", "thick"],
    "model": {"name": "unet", "args": {"in_channels": 2, "out_channels": 3, "widths": [2, 4, 4, 8]}},
    "written_by_a_newer_icetools": {"x": 1},
}


def test_model_config_round_trips_a_trained_config_and_keeps_unknown_keys() -> None:
    config = ModelConfig.from_dict(TRAINED_CONFIG)
    assert config.task == "multiclass" and config.n_classes == 3 and config.model_name == "unet"
    assert config.extra == {"written_by_a_newer_icetools": {"x": 1}}
    assert config.to_dict() == TRAINED_CONFIG
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig().to_dict() == {"task": "sic"}  # a config without a task is read as sic


def test_read_model_config_of_a_saved_directory(tmp_path: Path) -> None:
    config = ModelConfig.from_dict({k: v for k, v in TRAINED_CONFIG.items() if k != "model"})
    model = small_model("unet", out_channels=3)
    save_model_dir(tmp_path / "m", model, config)  # a ModelConfig is written like its dict
    read = read_model_config(tmp_path / "m")
    assert read.model == model_spec(model)
    assert read.to_dict() == {**TRAINED_CONFIG, "model": model_spec(model)}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"task": "landcover"}, "unknown task 'landcover'"),
        ({"inputs": "HH"}, "'inputs' must be a list of band names"),
        ({"inputs": ["HH"], "normalization": None}, "'inputs' names 1 bands but the model takes 2"),
        ({"normalization": {"mean": [0.0, 0.0]}}, "'normalization' must be"),
        ({"normalization": {"mean": [0.0, 0.0], "std": [1.0, 0.0]}}, "std > 0"),
        ({"normalization": {"mean": [0.0], "std": [1.0]}}, "1 means and 1 stds for 2 input bands"),
        ({"patch_size": 0}, "'patch_size' must be a positive integer"),
        ({"n_classes": 2.5}, "'n_classes' must be a positive integer"),
        ({"class_names": ["a", "b"]}, "'class_names' must be 3 names"),
        ({"threshold": 1.5}, "'threshold' must be a number between 0 and 1"),
        ({"context_scales": [1.0, -2.0]}, "'context_scales' must be"),
        ({"refines": ["unet"]}, "'refines' must be a JSON object"),
        ({"model": {"name": "resnet999", "args": {}}}, "unknown model 'resnet999'"),
        ({"model": {"args": {}}}, '"model" must be of the form'),
        ({"input_transforms": ["cos-sin"]}, "'input_transforms' must be a mapping of band names to transforms"),
        ({"input_transforms": {"HH": "log"}}, "unknown input transform 'log' for band 'HH'"),
        ({"input_transforms": {"phase": "cos-sin"}}, "name band\\(s\\) 'phase' that are not inputs"),
        ({"input_transforms": {"HH": "cos-sin"}},
         r"'inputs' gives 3 channels \(HH -> cos\(HH\), sin\(HH\); HV\) but the model takes 2"),
    ],
)
def test_a_bad_config_names_its_directory_and_key(tmp_path: Path, change: dict, fragment: str) -> None:
    save_model_dir(tmp_path / "m", small_model("unet", out_channels=3), {})
    (tmp_path / "m" / CONFIG_FILE).write_text(json.dumps({**TRAINED_CONFIG, **change}))
    with pytest.raises(ConfigError, match=fragment) as info:
        read_model_config(tmp_path / "m")
    assert str(tmp_path / "m" / CONFIG_FILE) in str(info.value)
    assert "\n" not in str(info.value)


def test_a_model_config_built_in_code_is_validated_too() -> None:
    with pytest.raises(ConfigError, match="'patch_size'"):
        ModelConfig(patch_size=-1)
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        ModelConfig.from_dict(["not", "a", "dict"])  # type: ignore[arg-type]


def test_input_transforms_round_trip_and_count_channels() -> None:
    model = {"name": "unet", "args": {"in_channels": 3, "out_channels": 1}}
    data = {"inputs": ["phase", "magnitude"], "input_transforms": {"phase": "cos-sin", "magnitude": "identity"},
            "normalization": {"mean": [0.0, 0.0, 1.0], "std": [1.0, 1.0, 2.0]}, "model": model}
    config = ModelConfig.from_dict(data)
    assert config.input_transforms == {"phase": "cos-sin", "magnitude": "identity"}
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert list(config.to_dict())[:3] == ["model", "task", "inputs"] and "input_transforms" in config.to_dict()
    with pytest.raises(ConfigError, match="3 input channels"):
        ModelConfig.from_dict({**data, "normalization": {"mean": [0.0, 0.0], "std": [1.0, 1.0]}})
    old = ModelConfig.from_dict({"inputs": ["phase", "magnitude"], "model": {**model, "args": {"in_channels": 2}}})
    assert old.input_transforms is None and "input_transforms" not in old.to_dict()  # old files stay as they were
