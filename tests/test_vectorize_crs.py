"""Vectors of radar-geometry (GCP) rasters in the CRS of the scene's chart, or --dst-crs; EPSG:4326 last."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from fixtures import affine_grid, gcp_grid, tie_points, write_ai4arctic
from inference.helpers import CONFIG, fixed_conv, predict, scene_array
from pyproj import CRS
from typer.testing import CliRunner

from icetools.cli.app import app
from icetools.errors import CRSError
from icetools.io.raster import write_raster
from icetools.io.scene import CIS_LCC_PROJ, open_scene
from icetools.vectorize import vectorize_lines, vectorize_polygons

EPSG3413 = CRS.from_epsg(3413)


def _gcp_raster(tmp_path: Path, name: str = "p.tif", tags: dict | None = None, *, line: bool = False) -> Path:
    """A square of 0.9 (or, ``line``, a row of them) on a GCP grid."""
    grid = gcp_grid(60, 50)
    values = np.zeros((60, 50), "float32")
    if line:
        values[30, 5:45] = 0.9
    else:
        values[20:40, 10:30] = 0.9
    return write_raster(tmp_path / name, values, grid, nodata=float("nan"), band_names=["probability"], tags=tags)


def test_without_a_chart_crs_gcp_vectors_stay_in_epsg4326(tmp_path: Path) -> None:
    frame = vectorize_polygons(_gcp_raster(tmp_path), threshold=0.5)
    assert frame.crs.equals(CRS.from_epsg(4326)) and frame.attrs["crs_from"] == "tie points"


def test_the_chart_crs_tag_or_ice_service_chooses_the_output_crs(tmp_path: Path) -> None:
    plain = vectorize_polygons(_gcp_raster(tmp_path), threshold=0.5)
    tagged = vectorize_polygons(_gcp_raster(tmp_path, "t.tif", {"chart_crs": "EPSG:3413"}), threshold=0.5)
    assert tagged.crs.equals(EPSG3413) and tagged.attrs["crs_from"] == "chart"
    # The same polygons, only in another CRS: moved vertex by vertex, areas measured alike.
    np.testing.assert_allclose(tagged["area"], plain["area"])
    moved = plain.to_crs(EPSG3413)
    for a, b in zip(moved.geometry, tagged.geometry):
        assert shapely.equals_exact(a, b, tolerance=1e-3)
    cis = vectorize_lines(_gcp_raster(tmp_path, "c.tif", {"ice_service": "cis"}, line=True), threshold=0.5)
    assert cis.crs.equals(CRS.from_proj4(CIS_LCC_PROJ))


def test_dst_crs_wins_and_copies_a_chart_file(tmp_path: Path) -> None:
    import geopandas as gpd

    raster = _gcp_raster(tmp_path, tags={"chart_crs": "EPSG:3413"})
    assert vectorize_polygons(raster, threshold=0.5, dst_crs="EPSG:3031").crs.equals(CRS.from_epsg(3031))
    gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs=CIS_LCC_PROJ).to_file(tmp_path / "chart.gpkg")
    frame = vectorize_polygons(raster, threshold=0.5, dst_crs=tmp_path / "chart.gpkg")
    assert frame.crs.equals(CRS.from_proj4(CIS_LCC_PROJ)) and frame.attrs["crs_from"] == "dst_crs"
    affine = write_raster(tmp_path / "a.tif", np.ones((8, 8), "uint8"), affine_grid(8, 8), nodata=255)
    reprojected = vectorize_polygons(affine, dst_crs="EPSG:4326")
    assert reprojected.crs.equals(CRS.from_epsg(4326)) and -180 < reprojected.total_bounds[0] < 180
    with pytest.raises(CRSError, match="`dst_crs` 'nonsense'"):
        vectorize_polygons(affine, dst_crs="nonsense")


def test_cli_dst_crs(tmp_path: Path) -> None:
    raster = _gcp_raster(tmp_path)
    out = tmp_path / "v.gpkg"
    result = CliRunner().invoke(app, ["vectorize", str(raster), "--threshold", "0.5", "-o", str(out), "--dst-crs", "EPSG:3413"])
    assert result.exit_code == 0, result.output
    assert CRS.from_user_input(pyogrio.read_info(out, layer="polygons")["crs"]).equals(EPSG3413)
    bad = CliRunner().invoke(app, ["vectorize", str(raster), "-o", str(tmp_path / "w.gpkg"), "--dst-crs", "EPSG:99999999"])
    assert bad.exit_code == 2 and "--dst-crs" in bad.output and not (tmp_path / "w.gpkg").exists()


def _dmi_scene(tmp_path: Path) -> Path:
    data = scene_array(40, 50, seed=13)
    ids = np.zeros((40, 50), dtype="float32")
    ids[:, :20], ids[:, 20:] = 1, 2
    path = write_ai4arctic(tmp_path / "scene.nc", data=data, band_fill=np.float32(np.nan), chart=ids,
                           points=tie_points(40, 50, points=2))
    with netCDF4.Dataset(path, "a") as ds:
        ds.setncattr("ice_service", "dmi")
    return path


def test_predicted_products_of_an_ai4arctic_scene_vectorize_in_its_charts_crs(tmp_path: Path) -> None:
    scene = _dmi_scene(tmp_path)
    with open_scene(scene) as opened:
        assert opened.chart_crs.equals(EPSG3413)
    config = {**CONFIG, "task": "binary", "inputs": ["nersc_sar_primary", "nersc_sar_secondary"], "threshold": 0.4}
    (tmp_path / "out").mkdir()
    predict(scene, fixed_conv(1), config, tmp_path / "out" / "gl.tif", tile=32)
    with rasterio.open(tmp_path / "out" / "gl.tif") as ds:
        tags = ds.tags()
    assert tags["chart_crs"] == "EPSG:3413" and tags["scene_path"] == "../scene.nc" and tags["scene"] == "scene.nc"
    frame = vectorize_polygons(tmp_path / "out" / "gl_mask.tif")
    assert frame.crs.equals(EPSG3413)
