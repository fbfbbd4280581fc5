"""QGIS opens outputs styled: colour tables and raster attribute tables on class, mask and ice/water
rasters, integer polygon ids in labels.tif, and a class label and a layer_styles style in vector files."""

from __future__ import annotations

import ctypes
import glob
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from fixtures import affine_grid, write_scene
from inference.helpers import CONFIG, fixed_conv, predict, scene_array, write_test_scene
from typer.testing import CliRunner

from icetools.cli.app import app
from icetools.io.raster import write_raster
from icetools.io.scene import open_scene
from icetools.io.style import ICE_WATER, LINE_MASK, Legend, aux_path, class_legend, read_layer_styles, read_rat
from icetools.io.vector import read_vectors
from icetools.rasterize import LABELS_NODATA, rasterize_to_file
from icetools.vectorize import vectorize_polygons


def gdal_rat(path: Path, band: int = 1) -> list[tuple[str, ...]] | None:
    """The RAT as GDAL itself reads it (rasterio has no RAT API): rows of strings, None without one."""
    libraries = glob.glob(str(Path(rasterio.__file__).parent.parent / "rasterio.libs" / "libgdal*.so*"))
    if not libraries:
        pytest.skip("rasterio's own GDAL library is not at hand for a direct RAT read")
    gdal = ctypes.CDLL(libraries[0])
    gdal.GDALAllRegister()
    gdal.GDALOpen.restype, gdal.GDALOpen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    gdal.GDALGetRasterBand.restype, gdal.GDALGetRasterBand.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int]
    gdal.GDALGetDefaultRAT.restype, gdal.GDALGetDefaultRAT.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    gdal.GDALRATGetRowCount.argtypes = gdal.GDALRATGetColumnCount.argtypes = [ctypes.c_void_p]
    gdal.GDALRATGetValueAsString.restype = ctypes.c_char_p
    gdal.GDALRATGetValueAsString.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    gdal.GDALClose.argtypes = [ctypes.c_void_p]
    handle = gdal.GDALOpen(str(path).encode(), 0)
    try:
        rat = gdal.GDALGetDefaultRAT(gdal.GDALGetRasterBand(handle, band))
        if not rat:
            return None
        return [tuple(gdal.GDALRATGetValueAsString(rat, row, col).decode() for col in range(gdal.GDALRATGetColumnCount(rat)))
                for row in range(gdal.GDALRATGetRowCount(rat))]
    finally:
        gdal.GDALClose(handle)


def assert_styled(path: Path, legend: Legend) -> None:
    """Colour table in the file, and the same classes in the RAT GDAL reads from ``.aux.xml``."""
    with rasterio.open(path) as ds:
        colors = ds.colormap(1)
    for category in legend.categories:
        assert colors[category.value] == category.color
    assert colors[255][3] == 0  # nodata drawn transparent
    rows = gdal_rat(path)
    assert rows == [(str(c.value), c.label, *map(str, c.color)) for c in legend.categories]
    assert read_rat(path) == Legend(legend.categories)


def test_ice_water_mask_and_class_rasters_carry_colour_tables_and_attribute_tables(tmp_path: Path) -> None:
    data = scene_array(40, 50, seed=9)
    write_test_scene(tmp_path / "s.tif", data)
    predict(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "sic.tif", tile=32, ice_water=True)
    assert_styled(tmp_path / "sic_icewater.tif", ICE_WATER)
    assert not aux_path(tmp_path / "sic.tif").exists()  # a continuous SIC band gets no class table
    binary = {**CONFIG, "task": "binary", "threshold": 0.35}
    predict(tmp_path / "s.tif", fixed_conv(1), binary, tmp_path / "gl.tif", tile=32)
    assert_styled(tmp_path / "gl_mask.tif", LINE_MASK)
    classes = {**CONFIG, "task": "multiclass", "n_classes": 3, "class_names": ["water", "young", "old"]}
    predict(tmp_path / "s.tif", fixed_conv(1, out_channels=3), classes, tmp_path / "c.tif", tile=32)
    assert_styled(tmp_path / "c.tif", class_legend(["water", "young", "old"]))


def test_overwriting_replaces_the_sidecar_and_a_plain_raster_drops_a_stale_one(tmp_path: Path) -> None:
    grid = affine_grid(8, 8)
    path = tmp_path / "m.tif"
    write_raster(path, np.ones((8, 8), "uint8"), grid, nodata=255, legend=ICE_WATER)
    assert read_rat(path).categories[1].label == "ice"
    write_raster(path, np.ones((8, 8), "uint8"), grid, nodata=255, legend=LINE_MASK, overwrite=True)
    assert read_rat(path).categories[1].label == "line"
    write_raster(path, np.ones((8, 8), "float32"), grid, nodata=float("nan"), overwrite=True)
    assert not aux_path(path).exists() and gdal_rat(path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif"]  # no temporary file left


def _chart(tmp_path: Path, grid) -> Path:
    import geopandas as gpd

    x0, y0 = grid.transform.c, grid.transform.f
    left = shapely.box(x0, y0 - 40 * 16, x0 + 40 * 8, y0)
    right = shapely.box(x0 + 40 * 8, y0 - 40 * 16, x0 + 40 * 16, y0)
    frame = gpd.GeoDataFrame({"poly_id": [1_000_001, 7], "CT": ["92", "46"]}, geometry=[left, right], crs=3413)
    frame.to_file(tmp_path / "chart.gpkg", layer="chart")
    return tmp_path / "chart.gpkg"


def test_labels_store_integer_polygon_ids_and_a_scaled_sic(tmp_path: Path) -> None:
    grid = affine_grid(16, 16)
    scene = write_scene(tmp_path / "s.tif", grid)
    rasterize_to_file(_chart(tmp_path, grid), scene, tmp_path / "labels.tif")
    with rasterio.open(tmp_path / "labels.tif") as ds:
        assert ds.dtypes == ("int32", "int32") and ds.nodata == LABELS_NODATA
        assert ds.descriptions == ("polygon_id", "SIC") and ds.scales == (1.0, 1e-4)
        assert ds.tags(2)["units"] == "fraction"
        ids, stored = ds.read(1), ds.read(2)
    assert set(np.unique(ids)) == {1_000_001, 7} and (ids[:, :8] == 1_000_001).all()
    assert set(np.unique(stored)) == {10_000, 5_000}
    with open_scene(tmp_path / "labels.tif") as labels:
        assert (labels.read_polygon_ids()[:, :8] == 1_000_001).all()
        sic = labels.read(["SIC"])[0]
    np.testing.assert_allclose(sic[:, :8], 1.0)
    np.testing.assert_allclose(sic[:, 8:], 0.5)


def test_line_labels_are_styled(tmp_path: Path) -> None:
    import geopandas as gpd

    grid = affine_grid(16, 16)
    scene = write_scene(tmp_path / "s.tif", grid)
    x0, y0 = grid.transform.c, grid.transform.f
    line = shapely.LineString([(x0 + 20, y0 - 20), (x0 + 40 * 15, y0 - 40 * 15)])
    gpd.GeoDataFrame(geometry=[line], crs=3413).to_file(tmp_path / "gl.gpkg")
    rasterize_to_file(tmp_path / "gl.gpkg", scene, tmp_path / "gl.tif")
    assert_styled(tmp_path / "gl.tif", LINE_MASK)


def test_vectorized_classes_carry_labels_and_a_qgis_style(tmp_path: Path) -> None:
    data = scene_array(40, 50, seed=10)
    write_test_scene(tmp_path / "s.tif", data)
    classes = {**CONFIG, "task": "multiclass", "n_classes": 3, "class_names": ["water", "young", "old"]}
    predict(tmp_path / "s.tif", fixed_conv(1, out_channels=3), classes, tmp_path / "c.tif", tile=32)
    out = tmp_path / "c.gpkg"
    result = CliRunner().invoke(app, ["vectorize", str(tmp_path / "c.tif"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    frame = pyogrio.read_dataframe(out, layer="polygons")
    names = {0: "water", 1: "young", 2: "old"}
    assert (frame["label"] == frame["class"].map(names)).all()
    styles = read_layer_styles(out)
    assert len(styles) == 1 and styles["f_table_name"][0] == "polygons" and bool(styles["useAsDefault"][0])
    assert styles["f_geometry_column"][0] == "geom"
    qml = styles["styleQML"][0]
    assert 'type="categorizedSymbol"' in qml and 'attr="class"' in qml
    for value in sorted(set(frame["class"])):
        assert f'value="{value}" label="{names[value]}"' in qml
    assert {name for name, _ in pyogrio.list_layers(out)} == {"polygons", "layer_styles"}
    assert len(read_vectors(out)) == len(frame)  # reading the file picks the data layer, not the styles


def test_threshold_and_bin_classes_are_labelled_by_their_interval(tmp_path: Path) -> None:
    grid = affine_grid(4, 6)
    values = np.array([[0.05, 0.05, 0.3, 0.3, 0.9, 0.9]] * 4, dtype="float32")
    write_raster(tmp_path / "sic.tif", values, grid, nodata=float("nan"), band_names=["SIC"])
    frame = vectorize_polygons(tmp_path / "sic.tif", bins=[0.1, 0.5])
    assert dict(zip(frame["class"], frame["label"])) == {0: "value < 0.1", 1: "0.1 <= value < 0.5", 2: "value >= 0.5"}
    frame = vectorize_polygons(tmp_path / "sic.tif", threshold=0.15)
    assert dict(zip(frame["class"], frame["label"])) == {0: "value < 0.15", 1: "value >= 0.15"}
    legend = frame.attrs["legend"]
    assert legend.categories[0].color[2] > legend.categories[0].color[0]  # water blue, ice white


def test_vectorized_lines_get_a_line_style(tmp_path: Path) -> None:
    grid = affine_grid(20, 20)
    mask = np.zeros((20, 20), "uint8")
    mask[10, 2:18] = 1
    write_raster(tmp_path / "m.tif", mask, grid, nodata=255, band_names=["line"])
    out = tmp_path / "gl.gpkg"
    assert CliRunner().invoke(app, ["vectorize", str(tmp_path / "m.tif"), "--lines", "-o", str(out)]).exit_code == 0
    styles = read_layer_styles(out)
    assert styles["f_table_name"][0] == "lines" and 'type="singleSymbol"' in styles["styleQML"][0]
    assert 'name="line_color"' in styles["styleQML"][0]
