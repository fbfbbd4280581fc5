"""The command line as a user meets it: help, exit codes, one-line errors, stdout for data only."""

from __future__ import annotations

import json
import subprocess
import sys

import geopandas as gpd
import shapely
from scenes import affine_grid, write_scene
from typer.testing import CliRunner

from icetools.cli.app import app

runner = CliRunner()
COMMANDS = ("info", "synth", "rasterize", "sample-patches", "train", "sweep", "predict", "vectorize", "evaluate")


def _one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "icetools", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("icetools ")


def test_info_json_is_the_only_stdout(tmp_path):
    scene = write_scene(tmp_path / "s.tif", affine_grid())
    result = runner.invoke(app, ["info", str(scene), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["width"] == 80 and report["grid"]["crs"] == "EPSG:3413"
    assert [b["name"] for b in report["bands"]] == ["nersc_sar_primary", "nersc_sar_secondary"]
    assert 0.9 < report["valid_share"] < 0.97  # the NaN 'land' corner is 1/16 of the scene


def test_info_report_is_data_on_stdout(tmp_path):
    """As gdalinfo and rio info: the report is the command's data, so it goes to stdout."""
    scene = write_scene(tmp_path / "s.tif", affine_grid())
    result = runner.invoke(app, ["info", str(scene)])
    assert result.exit_code == 0 and result.stderr == "" and "nersc_sar_primary" in result.stdout
    assert "Size is 80, 64" in result.stdout  # GDAL's order: columns, rows


def test_info_on_a_chart_decodes_sic(tmp_path):
    frame = gpd.GeoDataFrame({"CT": ["92", "46", None], "POLY_TYPE": ["I", "I", "L"]},
                             geometry=[shapely.box(0, 0, 1, 1)] * 3, crs=3413)
    frame.to_file(tmp_path / "c.gpkg")
    report = json.loads(runner.invoke(app, ["info", str(tmp_path / "c.gpkg"), "--json"]).stdout)
    assert [row["SIC"] for row in report["layers"][0]["chart"]] == [1.0, 0.5, None]


def test_missing_file_one_line_exit_1(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path / "nope.nc")])
    assert result.exit_code == 1
    assert "nope.nc does not exist" in _one_line_error(result)


def test_usage_error_exits_2():
    result = runner.invoke(app, ["rasterize", "a.gpkg"])  # --like and -o missing
    assert result.exit_code == 2


def test_rasterize_cli_refuses_to_overwrite(tmp_path):
    scene = write_scene(tmp_path / "s.tif", affine_grid())
    frame = gpd.GeoDataFrame({"CT": ["92"]}, geometry=[shapely.box(100_200, -2_001_000, 101_000, -2_000_200)], crs=3413)
    frame.to_file(tmp_path / "c.gpkg")
    args = ["rasterize", str(tmp_path / "c.gpkg"), "--like", str(scene), "-o", str(tmp_path / "l.tif")]
    assert runner.invoke(app, args).exit_code == 0
    before = (tmp_path / "l.tif").read_bytes()
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "--overwrite" in _one_line_error(result)
    assert (tmp_path / "l.tif").read_bytes() == before
    assert runner.invoke(app, args + ["--overwrite"]).exit_code == 0


def test_rasterize_cli_without_crs_says_what_to_do(tmp_path):
    scene = write_scene(tmp_path / "s.tif", affine_grid())
    gpd.GeoDataFrame({"CT": ["92"]}, geometry=[shapely.box(100_200, -2_001_000, 101_000, -2_000_200)]).to_file(tmp_path / "c.gpkg")
    result = runner.invoke(app, ["rasterize", str(tmp_path / "c.gpkg"), "--like", str(scene), "-o", str(tmp_path / "l.tif")])
    assert result.exit_code == 1 and "--vector-crs" in _one_line_error(result)
    assert not (tmp_path / "l.tif").exists()
