"""Inputs are sacred: an output that names an input of its run is refused, with or without --overwrite."""

from __future__ import annotations

import os

import geopandas as gpd
import numpy as np
import pytest
import shapely
from scenes import affine_grid, write_scene
from typer.testing import CliRunner

from icetools.cli.app import app
from icetools.errors import OutputExistsError
from icetools.io.paths import refuse_duplicate_outputs, refuse_overwriting_inputs, same_file

runner = CliRunner()


def _one_line_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def _refused(args: list[str], victim) -> None:
    before = victim.read_bytes()
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "is an input of this run" in _one_line_error(result)
    assert victim.read_bytes() == before


@pytest.fixture
def scene_and_chart(tmp_path):
    scene = write_scene(tmp_path / "s.tif", affine_grid())
    frame = gpd.GeoDataFrame({"CT": ["92"]}, geometry=[shapely.box(100_200, -2_001_000, 101_000, -2_000_200)], crs=3413)
    frame.to_file(tmp_path / "c.gpkg")
    return scene, tmp_path / "c.gpkg"


def test_same_file_sees_symlinks_and_hard_links(tmp_path):
    a = tmp_path / "a.tif"
    a.write_bytes(b"x")
    (tmp_path / "link.tif").symlink_to(a)
    os.link(a, tmp_path / "hard.tif")
    assert same_file(a, tmp_path / "link.tif") and same_file(a, tmp_path / "hard.tif")
    assert same_file(tmp_path / "sub" / ".." / "a.tif", a)
    assert not same_file(a, tmp_path / "other.tif")
    with pytest.raises(OutputExistsError, match="is an input"):
        refuse_overwriting_inputs([tmp_path / "hard.tif"], [None, a])
    with pytest.raises(OutputExistsError, match="same file"):
        refuse_duplicate_outputs([a, None, tmp_path / "link.tif"])
    refuse_overwriting_inputs([tmp_path / "new.tif", None], [a])


@pytest.mark.parametrize("overwrite", [True, False])
@pytest.mark.parametrize("target", ["like", "vector", "like_symlink", "like_hardlink"])
def test_rasterize_never_replaces_its_inputs(scene_and_chart, tmp_path, target, overwrite):
    scene, chart = scene_and_chart
    output = scene
    if target == "vector":  # rasterize writes .tif: a hard link with that name to the chart
        output = tmp_path / "chart.tif"
        os.link(chart, output)
    elif target == "like_symlink":
        output = tmp_path / "alias.tif"
        output.symlink_to(scene)
    elif target == "like_hardlink":
        output = tmp_path / "alias.tif"
        os.link(scene, output)
    args = ["rasterize", str(chart), "--like", str(scene), "-o", str(output)] + (["--overwrite"] if overwrite else [])
    before = (scene if "like" in target else chart).read_bytes()
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    _one_line_error(result)
    if overwrite:
        assert "is an input of this run" in result.output
    assert (scene if "like" in target else chart).read_bytes() == before


def test_rasterize_library_refuses_too(scene_and_chart):
    from icetools.rasterize import rasterize_to_file

    scene, chart = scene_and_chart
    before = scene.read_bytes()
    with pytest.raises(OutputExistsError, match="is an input"):
        rasterize_to_file(chart, scene, scene, overwrite=True)
    assert scene.read_bytes() == before


def test_evaluate_json_never_replaces_the_prediction_or_truth(tmp_path):
    grid = affine_grid(40, 40)
    rng = np.random.default_rng(0)
    pred = write_scene(tmp_path / "p.tif", grid, data=rng.random((1, 40, 40), dtype=np.float32), band_names=["SIC"])
    truth = write_scene(tmp_path / "t.tif", grid, data=rng.random((1, 40, 40), dtype=np.float32), band_names=["SIC"])
    for victim in (pred, truth):
        alias = tmp_path / f"{victim.stem}.json"  # a hard link to the input, named like the report
        os.link(victim, alias)
        _refused(["evaluate", str(pred), "--truth", str(truth), "--json", str(alias), "--overwrite"], victim)


def test_vectorize_never_replaces_its_raster(tmp_path):
    grid = affine_grid(40, 40)
    data = np.zeros((1, 40, 40), dtype=np.float32)
    data[0, 10:20, 10:20] = 1
    raster = write_scene(tmp_path / "m.tif", grid, data=data, band_names=["line"])
    alias = tmp_path / "m.gpkg"
    os.link(raster, alias)  # a hard link named like a vector
    _refused(["vectorize", str(raster), "--lines", "-o", str(alias), "--overwrite"], raster)


def test_synth_companions_never_share_a_file(tmp_path):
    out = tmp_path / "scene.tif"
    result = runner.invoke(app, ["synth", "sea-ice", str(out), "--size", "64", "--truth-out", str(out)])
    assert result.exit_code in (1, 2), result.output
    assert not out.exists()


def test_training_dir_never_replaces_the_patches(tmp_path):
    from icetools.training.state import prepare_dir

    patches = tmp_path / "patches.gpkg"
    patches.write_bytes(b"patches")
    with pytest.raises(OutputExistsError, match="is an input"):
        prepare_dir(patches, resume=False, overwrite=True, inputs=[patches])
    run = tmp_path / "run"
    run.mkdir()
    os.link(patches, run / "model.safetensors")
    with pytest.raises(OutputExistsError, match="is an input"):
        prepare_dir(run, resume=False, overwrite=True, inputs=[patches])
    assert patches.read_bytes() == b"patches"
