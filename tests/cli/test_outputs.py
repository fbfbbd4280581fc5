"""Issue 11, item 4: the output's extension says its format (-f where it does not), a mismatch is
refused, `-o -` is GeoJSON on stdout where one vector layer is written, several scenes need a folder."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import shapely
from fixtures import write_scene

from .helpers import invoke, scene, usage_error


def _chart(path: Path) -> Path:
    frame = gpd.GeoDataFrame({"CT": ["92", "46"]}, crs=3413, geometry=[
        shapely.box(100_200, -2_001_000, 101_000, -2_000_200), shapely.box(101_000, -2_001_400, 101_800, -2_000_600)])
    frame.to_file(path)
    return path


def test_rasterize_refuses_a_png_name_and_writes_nothing(tmp_path: Path) -> None:
    like, chart = scene(tmp_path / "s.tif"), _chart(tmp_path / "c.gpkg")
    line = usage_error(invoke("rasterize", chart, "--like", like, "-o", tmp_path / "labels.png"), "-o")
    assert "not .png" in line and ".tif" in line
    assert usage_error(invoke("rasterize", chart, "--like", like, "-o", tmp_path / "labels.png", "-f", "GTiff"), "-o")
    assert "cannot tell the format" in usage_error(invoke("rasterize", chart, "--like", like, "-o", tmp_path / "labels"))
    assert "GPKG" in usage_error(invoke("rasterize", chart, "--like", like, "-o", tmp_path / "l.tif", "-f", "GPKG"))
    assert "standard output" in usage_error(invoke("rasterize", chart, "--like", like, "-o", "-"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.gpkg", "s.tif"]


def test_format_option_names_the_format_of_a_name_without_extension(tmp_path: Path) -> None:
    like, chart = scene(tmp_path / "s.tif"), _chart(tmp_path / "c.gpkg")
    result = invoke("rasterize", chart, "--like", like, "-o", tmp_path / "labels", "-f", "GTiff")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "labels") as ds:
        assert ds.driver == "GTiff" and ds.descriptions == ("polygon_id", "SIC")
    ok = invoke("rasterize", chart, "--like", like, "-o", tmp_path / "labels.tif", "-f", "gtiff")  # agreeing
    assert ok.exit_code == 0, ok.output


def _halves(path: Path) -> Path:
    """A one-band raster: 0.2 in the left half, 0.9 in the right (two polygons at threshold 0.5)."""
    data = np.full((1, 40, 48), 0.2, "float32")
    data[:, :, 24:] = 0.9
    return write_scene(path, None, data=data, band_names=("SIC",), nodata=None)


def test_vectorize_dash_writes_geojson_to_stdout_and_logs_to_stderr(tmp_path: Path) -> None:
    raster = _halves(tmp_path / "sic.tif")
    piped = invoke("vectorize", raster, "--threshold", "0.5", "-o", "-")
    assert piped.exit_code == 0, piped.output
    collection = json.loads(piped.stdout)  # stdout holds the GeoJSON and nothing else
    assert collection["type"] == "FeatureCollection" and "GeoJSON to stdout" in piped.stderr
    assert sorted(f["properties"]["class"] for f in collection["features"]) == [0, 1]
    assert not Path("-").exists() and not (tmp_path / "-").exists()
    filed = invoke("vectorize", raster, "--threshold", "0.5", "-o", tmp_path / "v.gpkg")
    assert filed.exit_code == 0 and filed.stdout == ""
    assert len(pyogrio.read_dataframe(tmp_path / "v.gpkg", layer="polygons")) == len(collection["features"])


def test_vectorize_format_override_and_mismatch(tmp_path: Path) -> None:
    raster = _halves(tmp_path / "sic.tif")
    result = invoke("vectorize", raster, "--threshold", "0.5", "-o", tmp_path / "v.dat", "-f", "GeoJSON")
    assert result.exit_code == 0, result.output
    assert pyogrio.read_info(tmp_path / "v.dat")["driver"] == "GeoJSON"
    assert len(pyogrio.read_dataframe(tmp_path / "v.dat")) == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
    line = usage_error(invoke("vectorize", raster, "-o", tmp_path / "v.geojson", "-f", "GPKG"), "-o")
    assert "does not match" in line
    assert usage_error(invoke("vectorize", raster, "-o", tmp_path / "v.tif"), "-o")
    assert usage_error(invoke("vectorize", raster, "-o", "-", "-f", "GPKG"), "-o")


def test_predict_needs_a_folder_for_several_scenes(tmp_path: Path, models: dict[str, Path]) -> None:
    a, b = scene(tmp_path / "a.tif"), scene(tmp_path / "b.tif", seed=1)
    common = ("-m", models["sic"], "--tile", "32", "--device", "cpu")
    line = usage_error(invoke("predict", a, b, "-o", tmp_path / "multi.tif", *common), "-o")
    assert "trailing slash" in line and not (tmp_path / "multi.tif").exists()
    assert "standard output" in usage_error(invoke("predict", a, "-o", "-", *common), "-o")
    assert not Path("-").exists()
    assert usage_error(invoke("predict", a, "-o", tmp_path / "sic.png", *common), "-o")

    result = invoke("predict", a, b, "-o", f"{tmp_path / 'out'}/", *common)  # FOLDER/: made
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.tif", "b.tif"]
    (tmp_path / "existing").mkdir()
    result = invoke("predict", a, b, "-o", tmp_path / "existing", *common)  # an existing folder
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "existing" / "b.tif") as ds:
        assert ds.descriptions == ("SIC",) and ds.shape == (40, 48)
    (tmp_path / "file.tif").write_bytes(b"")
    assert "is a file" in usage_error(invoke("predict", a, b, "-o", tmp_path / "file.tif", *common))
