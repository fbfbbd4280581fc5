"""Issue 11, item 5: every extra output has an option naming its path (the suffix stays the
default), so a Makefile can name each as a target; synth names companions from the whole name."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import shapely

from .helpers import data_error, invoke, scene, usage_error

CPU = ("--tile", "32", "--device", "cpu")


def _labels(tmp_path: Path, like: Path) -> Path:
    frame = gpd.GeoDataFrame({"CT": ["92", "46"]}, crs=3413, geometry=[
        shapely.box(100_200, -2_001_000, 101_000, -2_000_200), shapely.box(101_000, -2_001_400, 101_800, -2_000_600)])
    frame.to_file(tmp_path / "chart.gpkg")
    assert invoke("rasterize", tmp_path / "chart.gpkg", "--like", like, "-o", tmp_path / "labels.tif").exit_code == 0
    return tmp_path / "labels.tif"


def _files(folder: Path) -> list[str]:
    """The files in ``folder``, GDAL's own sidecars (.aux.xml) aside."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".aux.xml"))


def test_sic_extras_go_where_their_options_say(tmp_path: Path, models: dict[str, Path]) -> None:
    s = scene(tmp_path / "s.tif")
    labels = _labels(tmp_path, s)
    out = tmp_path / "out"
    out.mkdir()
    result = invoke("predict", s, "-m", models["sic"], "-o", out / "sic.tif", "--polygons", labels,
                    "--polygon-sic-out", out / "by_polygon.tif", "--ice-water-out", out / "ice.tif", *CPU)
    assert result.exit_code == 0, result.output
    assert _files(out) == ["by_polygon.tif", "ice.tif", "sic.tif"]  # no <out>_icewater.tif, no <out>_polygon_sic.tif
    with rasterio.open(out / "ice.tif") as ds:  # --ice-water-out implies --ice-water
        assert ds.dtypes[0] == "uint8" and set(np.unique(ds.read(1))) <= {0, 1, 255}
    with rasterio.open(out / "by_polygon.tif") as ds, rasterio.open(labels) as lab:
        assert ds.shape == (40, 48)
        sic, ids = ds.read(1), lab.read(1)
        for poly in (1, 2):  # one value per chart polygon
            assert np.unique(sic[ids == poly]).size == 1


def test_the_boolean_flags_keep_their_default_names(tmp_path: Path, models: dict[str, Path]) -> None:
    s = scene(tmp_path / "s.tif")
    result = invoke("predict", s, "-m", models["sic"], "-o", tmp_path / "sic.tif", "--ice-water", *CPU)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sic_icewater.tif").exists()


def test_binary_mask_and_class_probabilities_take_their_paths(tmp_path: Path, models: dict[str, Path]) -> None:
    s = scene(tmp_path / "s.tif")
    result = invoke("predict", s, "-m", models["binary"], "-o", tmp_path / "prob.tif", "--mask-out", tmp_path / "mask.tif", *CPU)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "prob_mask.tif").exists()
    with rasterio.open(tmp_path / "mask.tif") as ds, rasterio.open(tmp_path / "prob.tif") as prob:
        threshold = float(ds.tags()["threshold"])
        assert threshold == 0.4
        np.testing.assert_array_equal(ds.read(1), (prob.read(1) >= threshold).astype("uint8"))
    result = invoke("predict", s, "-m", models["multiclass"], "-o", tmp_path / "classes.tif",
                    "--probabilities-out", tmp_path / "p.tif", *CPU)
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "p.tif") as ds:  # --probabilities-out implies --probabilities
        assert ds.count == 3 and np.allclose(ds.read().sum(axis=0), 1, atol=1e-5)
    assert not (tmp_path / "classes_probs.tif").exists()


def test_extra_output_options_are_checked_before_any_work(tmp_path: Path, models: dict[str, Path]) -> None:
    a, b = scene(tmp_path / "a.tif"), scene(tmp_path / "b.tif")
    before = _files(tmp_path)
    model = ("-m", models["sic"], *CPU)
    line = usage_error(invoke("predict", a, "-o", tmp_path / "o.tif", "--polygon-sic-out", tmp_path / "p.tif", *model))
    assert "--polygon-sic-out needs --polygons" in line
    line = usage_error(invoke("predict", a, b, "-o", f"{tmp_path}/", "--ice-water-out", tmp_path / "i.tif", *model))
    assert "--ice-water-out name one file each" in line and "default names" in line
    assert "not .png" in usage_error(invoke("predict", a, "-o", tmp_path / "o.tif", "--mask-out", tmp_path / "m.png", *model),
                                     "--mask-out")
    assert "binary" in data_error(invoke("predict", a, "-o", tmp_path / "o.tif", "--mask-out", tmp_path / "m.tif", *model))
    assert _files(tmp_path) == before


def test_synth_companions_follow_the_whole_name_and_never_collide(tmp_path: Path) -> None:
    assert invoke("synth", "sea-ice", tmp_path / "si.nc", "--size", "64", "-q").exit_code == 0
    assert invoke("synth", "sea-ice", tmp_path / "si.tif", "--size", "64", "-q").exit_code == 0
    assert _files(tmp_path) == ["si.nc", "si.nc.chart.gpkg", "si.nc.truth.tif", "si.tif", "si.tif.chart.gpkg", "si.tif.truth.tif"]
    assert len(pyogrio.read_dataframe(tmp_path / "si.tif.chart.gpkg", layer="chart")) > 0
    with rasterio.open(tmp_path / "si.nc.truth.tif") as nc_truth, rasterio.open(tmp_path / "si.tif.truth.tif") as tif_truth:
        assert nc_truth.gcps[0] and tif_truth.crs.to_epsg() == 3413  # radar geometry vs. polar stereographic


def test_synth_companion_options_name_each_file(tmp_path: Path) -> None:
    result = invoke("synth", "sea-ice", tmp_path / "s.nc", "--size", "64", "--chart-out", tmp_path / "chart.gpkg",
                    "--truth-out", tmp_path / "truth.tif")
    assert result.exit_code == 0, result.output
    assert _files(tmp_path) == ["chart.gpkg", "s.nc", "truth.tif"]
    with rasterio.open(tmp_path / "truth.tif") as ds:
        assert ds.descriptions == ("SIC",)
    result = invoke("synth", "grounding-line", tmp_path / "g.tif", "--size", "64", "--lines-out", tmp_path / "gl.geojson")
    assert result.exit_code == 0, result.output
    assert pyogrio.read_info(tmp_path / "gl.geojson")["driver"] == "GeoJSON"
    result = invoke("synth", "landcover", tmp_path / "l.tif", "--size", "64", "--classes-out", tmp_path / "classes.tif")
    assert result.exit_code == 0 and (tmp_path / "classes.tif").exists()
    assert "OUT itself" in usage_error(invoke("synth", "landcover", tmp_path / "x.tif", "--classes-out", tmp_path / "x.tif"))
    assert usage_error(invoke("synth", "sea-ice", tmp_path / "y.nc", "--chart-out", tmp_path / "chart.shp"), "--chart-out")
