"""Tests for ``icetools predict`` (icetools.cli.predict): one scene, several, reruns, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio
import torch
from typer.testing import CliRunner

from icetools.cli.app import app
from icetools.modeldir import save_model_dir
from icetools.models import build_model

from .helpers import CONFIG, scene_array, write_test_scene


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("unet", in_channels=2, widths=[4, 8, 8, 8])
    save_model_dir(tmp_path / "model", model, CONFIG)
    return tmp_path / "model"


def test_cli_predicts_one_scene_with_a_quicklook(tmp_path: Path, model_dir: Path) -> None:
    write_test_scene(tmp_path / "s.tif", scene_array(40, 70))
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "s.tif"), "-m", str(model_dir), "-o", str(tmp_path / "o.tif"),
              "--tile", "32", "--device", "cpu", "--percent", "--quicklook", str(tmp_path / "q.png")],
    )
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert ds.shape == (40, 70) and ds.dtypes[0] == "uint8" and ds.tags()["model"].startswith(f"{model_dir.name}@sha256:")
        assert ds.read(1).max() <= 100
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_refuses_an_existing_output(tmp_path: Path, model_dir: Path) -> None:
    write_test_scene(tmp_path / "s.tif", scene_array(40, 70))
    (tmp_path / "o.tif").write_bytes(b"old")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s.tif"), "-m", str(model_dir), "-o", str(tmp_path / "o.tif")])
    assert result.exit_code == 1
    assert "--overwrite" in result.output
    assert (tmp_path / "o.tif").read_bytes() == b"old"


def test_cli_several_scenes_go_to_a_folder_and_reruns_skip(tmp_path: Path, model_dir: Path) -> None:
    for name in ("a", "b"):
        write_test_scene(tmp_path / f"{name}.tif", scene_array(40, 40))
    args = ["predict", str(tmp_path / "*.tif"), "-m", str(model_dir), "-o", f"{tmp_path / 'out'}/", "--tile", "32"]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.tif", "b.tif"]
    stamp = (tmp_path / "out" / "a.tif").stat().st_mtime_ns
    (tmp_path / "out" / "b.tif").unlink()
    result = CliRunner().invoke(app, [*args, "--skip-existing"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "a.tif").stat().st_mtime_ns == stamp and (tmp_path / "out" / "b.tif").exists()


def test_cli_without_a_model_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import icetools

    monkeypatch.setattr(icetools, "__file__", str(tmp_path / "pkg" / "__init__.py"))
    write_test_scene(tmp_path / "s.tif", scene_array(40, 40))
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s.tif"), "-o", str(tmp_path / "o.tif")])
    assert result.exit_code == 1 and "no default model is installed: pass -m MODEL_DIR" in result.output


def test_cli_refuses_a_bad_model_dir(tmp_path: Path, model_dir: Path) -> None:
    write_test_scene(tmp_path / "s.tif", scene_array(40, 40))
    (model_dir / "config.json").write_text("{not json")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s.tif"), "-m", str(model_dir), "-o", str(tmp_path / "o.tif")])
    assert result.exit_code == 1 and "not valid JSON" in result.output


def test_cli_error_for_a_bad_tile_is_a_one_line_usage_error(tmp_path: Path, model_dir: Path) -> None:
    write_test_scene(tmp_path / "s.tif", scene_array(40, 40))
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s.tif"), "-m", str(model_dir), "-o",
                                      str(tmp_path / "o.tif"), "--tile", "40"])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert errors == ["Error: Invalid value for '--tile': 40 is not a positive multiple of 16 (e.g. 128, 256)"]
