"""Rasterize: hand-computed pixels for a square and a line, GCP grids, the boundary rule, bad input."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from scenes import affine_grid, gcp_grid, write_scene

from icetools.errors import CRSError, DataError, EmptyInputError
from icetools.rasterize import rasterize_to_file


def _values(ds, band: int) -> np.ndarray:
    """A band as GDAL and QGIS show it: stored integers times the band scale, nodata as NaN."""
    raw = ds.read(band)
    return np.where(raw == ds.nodata, np.nan, raw * ds.scales[band - 1] + ds.offsets[band - 1])


def _world(grid, cols, rows):
    return grid.transform @ (np.asarray(cols, float), np.asarray(rows, float))


def _box_in_pixels(grid, c0, r0, c1, r1):
    (x0, x1), (y0, y1) = _world(grid, [c0, c1], [r0, r1])
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


@pytest.fixture()
def scene(tmp_path):
    return write_scene(tmp_path / "scene.tif", affine_grid(64, 80))


def _chart(tmp_path, geoms, cts, *, crs=3413, types=None, name="chart.gpkg", **extra):
    frame = gpd.GeoDataFrame(
        {"poly_id": np.arange(1, len(geoms) + 1), "CT": cts, "POLY_TYPE": types or ["I"] * len(geoms), **extra},
        geometry=geoms, crs=crs,
    )
    path = tmp_path / name
    frame.to_file(path)
    return path


def test_square_with_and_without_all_touched(tmp_path, scene):
    grid = affine_grid(64, 80)
    # Edges inside pixels: centres 11.5..14.5 fall inside -> cols 11..14 (4); touched: cols 10..15 (6).
    square = _box_in_pixels(grid, 10.75, 20.75, 15.25, 25.25)
    chart = _chart(tmp_path, [square], ["46"])
    rasterize_to_file(chart, scene, tmp_path / "touched.tif")
    rasterize_to_file(chart, scene, tmp_path / "centre.tif", all_touched=False)
    with rasterio.open(tmp_path / "touched.tif") as ds:
        ids, sic = ds.read(1), _values(ds, 2)
        assert ds.descriptions == ("polygon_id", "SIC") and ds.crs.to_epsg() == 3413
    expected = np.zeros(grid.shape, bool)
    expected[20:26, 10:16] = True
    assert np.array_equal(ids == 1, expected)
    assert np.allclose(sic[expected], 0.5) and np.isnan(sic[~expected]).all()  # 46 -> 4-6/10 -> 0.5
    with rasterio.open(tmp_path / "centre.tif") as ds:
        centre = ds.read(1) == 1
    expected[:] = False
    expected[21:25, 11:15] = True
    assert np.array_equal(centre, expected)


def test_line_all_touched_hand_computed(tmp_path, scene):
    grid = affine_grid(64, 80)
    (x0, x1), (y0, y1) = _world(grid, [2.5, 8.5], [3.5, 3.5])
    lines = gpd.GeoDataFrame({"id": [1]}, geometry=[shapely.LineString([(x0, y0), (x1, y1)])], crs=3413)
    lines.to_file(tmp_path / "gl.gpkg")
    rasterize_to_file(tmp_path / "gl.gpkg", scene, tmp_path / "line.tif")
    with rasterio.open(tmp_path / "line.tif") as ds:
        mask = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.descriptions == ("line",)
    expected = np.zeros(grid.shape, "uint8")
    expected[3, 2:9] = 1
    assert np.array_equal(mask, expected)


def test_diagonal_line_is_wider_with_all_touched(tmp_path, scene):
    grid = affine_grid(64, 80)
    (x0, x1), (y0, y1) = _world(grid, [1.3, 21.1], [2.2, 21.7])
    gpd.GeoDataFrame({"id": [1]}, geometry=[shapely.LineString([(x0, y0), (x1, y1)])], crs=3413).to_file(tmp_path / "d.gpkg")
    rasterize_to_file(tmp_path / "d.gpkg", scene, tmp_path / "a.tif")
    rasterize_to_file(tmp_path / "d.gpkg", scene, tmp_path / "b.tif", all_touched=False)
    touched = rasterio.open(tmp_path / "a.tif").read(1).sum()
    centre = rasterio.open(tmp_path / "b.tif").read(1).sum()
    assert centre in (20, 21) and 35 <= touched <= 41  # about 39 for a 20-pixel diagonal, as the field notes say


def test_smaller_polygon_wins_shared_boundary_pixels(tmp_path, scene):
    grid = affine_grid(64, 80)
    big = _box_in_pixels(grid, 0, 0, 40.5, 40)   # right edge inside column 40
    small = _box_in_pixels(grid, 40.5, 10, 50, 20)  # left edge inside column 40
    rasterize_to_file(_chart(tmp_path, [small, big], ["92", "30"]), scene, tmp_path / "l.tif")
    ids = rasterio.open(tmp_path / "l.tif").read(1)
    assert (ids[10:20, 40] == 1).all()  # shared column goes to the small polygon (id 1)
    assert (ids[:10, 40] == 2).all() and (ids[20:40, 40] == 2).all()


def test_attr_and_poly_id_kept(tmp_path, scene):
    grid = affine_grid(64, 80)
    frame = gpd.GeoDataFrame({"poly_id": [17], "conc": [0.37], "name": ["x"]},
                             geometry=[_box_in_pixels(grid, 2, 2, 6, 6)], crs=3413)
    frame.to_file(tmp_path / "c.gpkg")
    rasterize_to_file(tmp_path / "c.gpkg", scene, tmp_path / "o.tif", attr="conc")
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert ds.descriptions == ("polygon_id", "conc")
        assert ds.read(1)[3, 3] == 17 and _values(ds, 2)[3, 3] == pytest.approx(0.37)
    with pytest.raises(DataError, match="not numeric"):
        rasterize_to_file(tmp_path / "c.gpkg", scene, tmp_path / "p.tif", attr="name")
    assert not (tmp_path / "p.tif").exists()


def test_vectors_are_reprojected(tmp_path, scene):
    grid = affine_grid(64, 80)
    square = _box_in_pixels(grid, 10.75, 20.75, 15.25, 25.25)
    in_lonlat = gpd.GeoSeries([square], crs=3413).to_crs(4326).iloc[0]
    rasterize_to_file(_chart(tmp_path, [shapely.segmentize(in_lonlat, 1e-5)], ["92"], crs=4326), scene, tmp_path / "r.tif", all_touched=False)
    ids = rasterio.open(tmp_path / "r.tif").read(1)
    assert (ids[21:25, 11:15] == 1).all() and (ids == 1).sum() == 16


def test_onto_a_gcp_grid_lands_where_the_tie_points_say(tmp_path):
    grid = gcp_grid(300, 260)
    scene = write_scene(tmp_path / "radar.tif", grid)
    pixel_square = shapely.segmentize(shapely.box(60.3, 100.6, 180.7, 210.2), 2.0)
    pixel_blob = shapely.Point(200, 60).buffer(25, quad_segs=32)
    geoms_lonlat = []
    for geom in (pixel_square, pixel_blob):
        geoms_lonlat.append(shapely.transform(geom, lambda xy: np.stack(grid.tie_points.pixel_to_lonlat(xy[:, 0], xy[:, 1]), -1)))
    chart = gpd.GeoDataFrame({"CT": ["92", "50"]}, geometry=geoms_lonlat, crs=4326).to_crs(3413)  # a projected chart
    chart.to_file(tmp_path / "chart.gpkg")
    rasterize_to_file(tmp_path / "chart.gpkg", scene, tmp_path / "labels.tif", all_touched=False)
    with rasterio.open(tmp_path / "labels.tif") as ds:
        ids = ds.read(1)
        assert ds.gcps[0] and len(ds.gcps[0]) == 441  # the output keeps the scene's GCPs
    expected = rasterio.features.rasterize([(pixel_square, 1), (pixel_blob, 2)], out_shape=grid.shape,
                                           transform=Affine.identity())
    assert (ids == expected).mean() > 0.998


def test_bad_vectors(tmp_path, scene):
    grid = affine_grid(64, 80)
    empty = gpd.GeoDataFrame({"CT": []}, geometry=[], crs=3413)
    empty.to_file(tmp_path / "empty.gpkg")
    with pytest.raises(EmptyInputError, match="no features"):
        rasterize_to_file(tmp_path / "empty.gpkg", scene, tmp_path / "o.tif")
    far = shapely.box(0, 0, 1000, 1000)  # kilometres away from the scene
    with pytest.raises(EmptyInputError, match="overlaps"):
        rasterize_to_file(_chart(tmp_path, [far], ["92"], name="far.gpkg"), scene, tmp_path / "o.tif")
    no_crs = gpd.GeoDataFrame({"CT": ["92"]}, geometry=[_box_in_pixels(grid, 1, 1, 5, 5)])
    no_crs.to_file(tmp_path / "nocrs.gpkg")
    with pytest.raises(CRSError, match="--vector-crs"):
        rasterize_to_file(tmp_path / "nocrs.gpkg", scene, tmp_path / "o.tif")
    rasterize_to_file(tmp_path / "nocrs.gpkg", scene, tmp_path / "o.tif", vector_crs="EPSG:3413")
    no_ct = gpd.GeoDataFrame({"x": [1]}, geometry=[_box_in_pixels(grid, 1, 1, 5, 5)], crs=3413)
    no_ct.to_file(tmp_path / "noct.gpkg")
    with pytest.raises(DataError, match=r"numeric attribute to burn instead \(attr\)"):
        rasterize_to_file(tmp_path / "noct.gpkg", scene, tmp_path / "q.tif")
    assert not (tmp_path / "q.tif").exists()
