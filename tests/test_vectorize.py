"""Tests for icetools.vectorize: hand-checked polygons and lines, seam merging, georeferencing, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
from pyproj import CRS
from scipy import ndimage
from typer.testing import CliRunner

from fixtures import affine_grid, gcp_grid
from icetools.cli.app import app
from icetools.errors import ConfigError, DataError, EmptyInputError, MissingVariableError
from icetools.grid import Grid
from icetools.io.raster import write_raster
from icetools.vectorize import add_shared_vertices, parse_bins, vectorize_lines, vectorize_polygons

PIXEL = 10.0  # metres: one pixel is 100 m2
PIXEL_AREA = PIXEL * PIXEL
runner = CliRunner()


def grid_10m(height: int, width: int) -> Grid:
    """10 m pixels, the top-left corner at (0, height * 10 m): pixel (row, col) centres are easy to write."""
    return affine_grid(height, width, origin=(0.0, height * PIXEL), pixel=PIXEL)


def pixel_box(grid: Grid, row0: int, col0: int, row1: int, col1: int) -> shapely.Polygon:
    """The map footprint of pixels [row0, row1) x [col0, col1)."""
    (x0, y0), (x1, y1) = grid.transform @ (col0, row0), grid.transform @ (col1, row1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def squares_raster(tmp_path: Path) -> tuple[Path, Grid]:
    """Background 0, a 10x10 square of class 1, a 15x20 class-2 square with a 5x5 class-0 hole,
    a class-3 U whose arms meet only at its bottom, and a 3x5 nodata corner."""
    grid = grid_10m(40, 50)
    data = np.zeros((40, 50), dtype=np.uint8)
    data[5:15, 5:15] = 1
    data[20:35, 20:40] = 2
    data[25:30, 25:30] = 0
    data[3:18, 42:44] = 3
    data[3:18, 47:49] = 3
    data[16:18, 42:49] = 3  # U: two 15x2 arms + a 2x3 bar between them = 66 pixels
    data[0:3, 45:50] = 255
    return write_raster(tmp_path / "classes.tif", data, grid, nodata=255), grid


def blob_raster(tmp_path: Path, *, seed: int = 3, shape: tuple[int, int] = (60, 70)) -> tuple[Path, Grid, np.ndarray]:
    """Smoothed noise cut into four classes, with a nodata disc: many shapes cross many seams."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.5)
    data = np.digitize(field, np.quantile(field, [0.3, 0.55, 0.8])).astype(np.uint8)
    rows, cols = np.indices(shape)
    data[(rows - 45) ** 2 + (cols - 15) ** 2 < 64] = 255
    grid = grid_10m(*shape)
    return write_raster(tmp_path / "blobs.tif", data, grid, nodata=255), grid, data


def polygon_key(frame) -> list[tuple[int, int, float]]:
    return sorted(zip(frame["class"].tolist(), frame["n_pixels"].tolist(), np.round(frame["area"], 6).tolist()))


# --------------------------------------------------------------------------- polygons


def test_squares_give_exact_polygons_areas_classes_and_means(tmp_path: Path) -> None:
    path, grid = squares_raster(tmp_path)
    frame = vectorize_polygons(path)
    assert frame.crs.equals(CRS.from_epsg(3413))
    assert list(frame.columns) == ["class", "label", "mean", "area", "n_pixels", "geometry"]  # no interval: integer classes
    assert sorted(frame["class"]) == [0, 0, 1, 2, 3]
    one = frame[frame["class"] == 1].iloc[0]
    assert one["n_pixels"] == 100 and one["area"] == pytest.approx(100 * PIXEL_AREA) and one["mean"] == 1.0
    assert shapely.equals(one.geometry, pixel_box(grid, 5, 5, 15, 15))
    two = frame[frame["class"] == 2].iloc[0]
    assert two["n_pixels"] == 300 - 25 and two["area"] == pytest.approx(275 * PIXEL_AREA)
    assert len(two.geometry.interiors) == 1  # the hole is kept
    assert shapely.Polygon(two.geometry.interiors[0]).area == pytest.approx(25 * PIXEL_AREA)
    u_shape = frame[frame["class"] == 3].iloc[0]
    assert u_shape["n_pixels"] == 66 and u_shape["mean"] == 3.0
    backgrounds = frame[frame["class"] == 0].sort_values("n_pixels")
    assert backgrounds["n_pixels"].tolist() == [25, 2000 - 15 - 100 - 275 - 25 - 66]
    assert frame["n_pixels"].sum() == 2000 - 15  # every valid pixel once, nodata in none
    assert frame.is_valid.all()


def test_strip_seams_are_merged_to_the_one_piece_result(tmp_path: Path) -> None:
    for path in (squares_raster(tmp_path)[0], blob_raster(tmp_path)[0]):
        whole = vectorize_polygons(path, strip_rows=10_000)
        strips = vectorize_polygons(path, strip_rows=7)
        assert len(strips) == len(whole)
        assert polygon_key(strips) == polygon_key(whole)
        # Same shapes, not only the same areas: every strip-wise polygon equals one whole polygon.
        tree = shapely.STRtree(whole.geometry.values)
        hits = tree.query(strips.geometry.values, predicate="covers")
        equal = shapely.equals(strips.geometry.values[hits[0]], whole.geometry.values[hits[1]])
        assert len(np.unique(hits[0][equal])) == len(strips)
        assert strips.is_valid.all()
        np.testing.assert_allclose(sorted(strips["mean"]), sorted(whole["mean"]))


def test_threshold_gives_two_classes_with_hand_checked_means(tmp_path: Path) -> None:
    values = np.array([
        [0.2, 0.4, 0.8, 1.0],
        [0.3, np.nan, 0.5, 0.9],
        [0.1, 0.3, 0.6, 0.7],
    ], dtype="float32")
    path = write_raster(tmp_path / "sic.tif", values, grid_10m(3, 4), nodata=float("nan"))
    frame = vectorize_polygons(path, threshold=0.5).sort_values("class")
    assert frame["class"].tolist() == [0, 1]
    below, above = frame.iloc[0], frame.iloc[1]
    assert below["n_pixels"] == 5 and below["mean"] == pytest.approx((0.2 + 0.4 + 0.3 + 0.1 + 0.3) / 5, rel=1e-6)
    assert above["n_pixels"] == 6 and above["mean"] == pytest.approx((0.8 + 1.0 + 0.5 + 0.9 + 0.6 + 0.7) / 6, rel=1e-6)
    assert math.isnan(below["value_min"]) and below["value_max"] == 0.5
    assert above["value_min"] == 0.5 and math.isnan(above["value_max"])
    assert frame["area"].sum() == pytest.approx(11 * PIXEL_AREA)  # the NaN pixel belongs to no polygon


def test_bins_classes_follow_intervals_like_an_ice_chart(tmp_path: Path) -> None:
    columns = np.array([0.05, 0.3, 0.4, 0.5, 0.95], dtype="float32")  # 0.4 lies on an edge: upper class
    values = np.tile(columns, (4, 1))
    path = write_raster(tmp_path / "sic.tif", values, grid_10m(4, 5), nodata=None)
    frame = vectorize_polygons(path, bins=[0.1, 0.4, 0.7, 0.9]).sort_values("class")
    assert frame["class"].tolist() == [0, 1, 2, 4]
    assert frame["n_pixels"].tolist() == [4, 4, 8, 4]
    assert frame["mean"].tolist() == pytest.approx([0.05, 0.3, 0.45, 0.95], rel=1e-6)
    assert frame["value_min"].iloc[1:].tolist() == pytest.approx([0.1, 0.4, 0.9])
    assert frame["value_max"].iloc[:3].tolist() == pytest.approx([0.1, 0.4, 0.7])


def test_band_by_name_and_bad_inputs(tmp_path: Path) -> None:
    grid = grid_10m(4, 4)
    stack = np.stack([np.full((4, 4), 0.7, "float32"), np.ones((4, 4), "float32")])
    path = write_raster(tmp_path / "two.tif", stack, grid, nodata=None, band_names=["sic", "other"])
    assert vectorize_polygons(path, band="sic", threshold=0.5)["mean"].tolist() == pytest.approx([0.7])
    with pytest.raises(DataError, match="`threshold`"):  # the CLI says --threshold
        vectorize_polygons(path)
    with pytest.raises(MissingVariableError, match="sic, other"):
        vectorize_polygons(path, band="sod", threshold=0.5)
    with pytest.raises(MissingVariableError, match="out of range"):
        vectorize_polygons(path, band=3, threshold=0.5)
    empty = write_raster(tmp_path / "empty.tif", np.full((4, 4), np.nan, "float32"), grid, nodata=float("nan"))
    with pytest.raises(EmptyInputError):
        vectorize_polygons(empty, threshold=0.5)
    for text in ("0.4,0.1", "0.1,x", "", "0.1,0.1"):
        with pytest.raises(ConfigError):
            parse_bins(text)
    assert parse_bins(" 0.1, 0.4,0.7 ") == [0.1, 0.4, 0.7]


def test_min_area_sieves_a_two_pixel_speck_also_across_a_seam(tmp_path: Path) -> None:
    data = np.zeros((12, 12), dtype=np.uint8)
    data[4:6, 6] = 1  # a vertical 2-pixel speck, cut by the seam at row 5 when strip_rows=5
    data[3:7, 1] = 1  # a 4-pixel bar, also cut by that seam: each strip alone sees only 2 of its pixels
    path = write_raster(tmp_path / "speck.tif", data, grid_10m(12, 12), nodata=None)
    assert sorted(vectorize_polygons(path)["n_pixels"]) == [2, 4, 138]
    for strip_rows in (1024, 5):
        sieved = vectorize_polygons(path, min_area=3 * PIXEL_AREA, strip_rows=strip_rows)
        assert sorted(zip(sieved["class"], sieved["n_pixels"])) == [(0, 140), (1, 4)]
    # Not below the limit: kept (2 pixels = 200 m2 is not smaller than 200 m2).
    assert len(vectorize_polygons(path, min_area=2 * PIXEL_AREA)) == 3
    assert len(vectorize_polygons(path, min_area_px=3, strip_rows=5)) == 2
    assert len(vectorize_polygons(path, min_area_px=5)) == 1
    with pytest.raises(ConfigError):
        vectorize_polygons(path, min_area=100.0, min_area_px=2)


def test_connectivity_8_joins_diagonal_pixels(tmp_path: Path) -> None:
    data = np.zeros((6, 6), dtype=np.uint8)
    data[2, 2] = data[3, 3] = 1
    path = write_raster(tmp_path / "diag.tif", data, grid_10m(6, 6), nodata=None)
    assert sorted(vectorize_polygons(path)["n_pixels"]) == [1, 1, 34]
    for strip_rows in (1024, 3):  # the diagonal crosses the seam at row 3
        frame = vectorize_polygons(path, connectivity=8, strip_rows=strip_rows)
        assert frame[frame["class"] == 1]["n_pixels"].tolist() == [2]
    with pytest.raises(ConfigError):
        vectorize_polygons(path, connectivity=6)


def test_simplify_keeps_valid_polygons_with_shared_edges(tmp_path: Path) -> None:
    path, grid, data = blob_raster(tmp_path, seed=5)
    plain = vectorize_polygons(path, strip_rows=9)
    simple = vectorize_polygons(path, strip_rows=9, simplify=2.5 * PIXEL)
    assert len(simple) == len(plain)
    assert simple.is_valid.all()
    assert shapely.coverage_is_valid(simple.geometry.values)
    assert shapely.get_num_coordinates(simple.geometry.values).sum() < 0.7 * shapely.get_num_coordinates(
        plain.geometry.values).sum()
    union_area = shapely.union_all(simple.geometry.values).area
    assert union_area == pytest.approx(simple["area"].sum(), rel=1e-9)  # no overlaps
    valid_area = np.count_nonzero(data != 255) * PIXEL_AREA
    assert union_area == pytest.approx(valid_area, rel=0.01)  # no gaps; only the outer boundary moves
    assert simple["n_pixels"].tolist() == plain["n_pixels"].tolist()  # attributes stay those of the pixels


def test_add_shared_vertices_matches_a_t_junction() -> None:
    top = shapely.box(0, 0, 4, 2)
    left, right = shapely.box(0, 2, 1, 4), shapely.box(1, 2, 4, 4)
    assert not shapely.coverage_is_valid([top, left, right])  # the top lacks the vertex at x=1
    fixed = add_shared_vertices(np.array([top, left, right]))
    assert shapely.coverage_is_valid(fixed)
    assert shapely.equals(fixed[0], top) and shapely.get_num_coordinates(fixed[0]) == 6


def test_gcp_raster_polygons_in_lonlat_with_metric_area(tmp_path: Path) -> None:
    grid = gcp_grid(60, 50)
    data = np.zeros((60, 50), dtype=np.uint8)
    data[20:30, 10:25] = 1
    path = write_raster(tmp_path / "gcp.tif", data, grid, nodata=None)
    frame = vectorize_polygons(path, strip_rows=8)
    assert frame.crs.equals(CRS.from_epsg(4326))
    square = frame[frame["class"] == 1].iloc[0]
    corners = np.array(grid.tie_points.pixel_to_lonlat(np.array([10.0, 25.0]), np.array([20.0, 30.0]))).T
    ring = shapely.get_coordinates(square.geometry)
    for corner in corners:  # pixel corners (col, row) = (10, 20) and (25, 30) are vertices
        assert np.abs(ring - corner).sum(axis=1).min() < 1e-9
    assert square["area"] == pytest.approx(150 * grid.pixel_size() ** 2, rel=0.02)


# --------------------------------------------------------------------------- lines


def line_raster(tmp_path: Path, pixels: list[tuple[slice | int, slice | int]], shape=(40, 50), name="mask.tif"):
    data = np.zeros(shape, dtype="float32")
    for rows, cols in pixels:
        data[rows, cols] = 0.9
    return write_raster(tmp_path / name, data, grid_10m(*shape), nodata=None)


def test_l_shaped_line_is_one_linestring(tmp_path: Path) -> None:
    path = line_raster(tmp_path, [(2, slice(2, 9)), (slice(2, 10), 8)])
    frame = vectorize_lines(path, cleanup=None)  # the raw skeleton
    assert len(frame) == 1 and frame.geometry.iloc[0].geom_type == "LineString"
    # skeletonize drops the corner pixel (2, 8): cols 2..7 on row 2 (5 px), one diagonal step to
    # (3, 8), then rows 3..9 (6 px).
    assert frame["length"].iloc[0] == pytest.approx((11 + math.sqrt(2)) * PIXEL)
    ends = {shapely.get_point(frame.geometry.iloc[0], i).coords[0] for i in (0, -1)}
    assert ends == {(25.0, 375.0), (85.0, 305.0)}  # centres of pixels (2, 2) and (9, 8)


def test_t_shape_splits_into_three_lines_at_the_junction(tmp_path: Path) -> None:
    path = line_raster(tmp_path, [(2, slice(1, 12)), (slice(2, 10), 6)])
    for strip_rows in (1024, 3):
        frame = vectorize_lines(path, strip_rows=strip_rows)
        assert sorted(frame["length"]) == pytest.approx([50.0, 50.0, 70.0])
        junction = (65.0, 375.0)  # centre of pixel (2, 6)
        for line in frame.geometry:
            assert junction in (line.coords[0], line.coords[-1])


def test_line_crossing_many_seams_comes_out_whole(tmp_path: Path) -> None:
    diagonal = [(r, 5 + r // 2) for r in range(1, 39)]
    path = line_raster(tmp_path, [(r, c) for r, c in diagonal])
    whole = vectorize_lines(path, cleanup=None)
    for strip_rows in (4, 1):
        frame = vectorize_lines(path, strip_rows=strip_rows, cleanup=None)
        assert len(frame) == 1
        assert frame["length"].iloc[0] == pytest.approx(whole["length"].iloc[0])
    # 37 steps between rows 1 and 38: 19 diagonal (the column advances) and 18 straight down.
    assert whole["length"].iloc[0] == pytest.approx((19 * math.sqrt(2) + 18) * PIXEL)


def test_closed_ring_across_seams_is_one_closed_line(tmp_path: Path) -> None:
    path = line_raster(tmp_path, [(10, slice(10, 30)), (30, slice(10, 30)), (slice(10, 31), 10), (slice(10, 31), 29)])
    lengths = [vectorize_lines(path, strip_rows=s) for s in (1024, 4)]
    for frame in lengths:
        assert len(frame) == 1 and frame.geometry.iloc[0].is_closed
    assert lengths[0]["length"].iloc[0] == pytest.approx(lengths[1]["length"].iloc[0])


def test_min_length_drops_short_lines_and_threshold_applies(tmp_path: Path) -> None:
    path = line_raster(tmp_path, [(5, slice(5, 11)), (20, slice(5, 36))])  # 50 m and 300 m long
    assert sorted(vectorize_lines(path, cleanup=None)["length"]) == pytest.approx([50.0, 300.0])
    assert vectorize_lines(path, min_length=100.0)["length"].tolist() == pytest.approx([300.0])
    with pytest.raises(EmptyInputError, match="shorter"):
        vectorize_lines(path, min_length=1000.0)
    with pytest.raises(EmptyInputError, match="threshold"):
        vectorize_lines(path, threshold=0.95)


def test_gcp_raster_lines_sit_on_tie_point_pixel_centres(tmp_path: Path) -> None:
    grid = gcp_grid(60, 50)
    data = np.zeros((60, 50), dtype=np.uint8)
    data[30, 5:40] = 1
    path = write_raster(tmp_path / "gcp_line.tif", data, grid, nodata=None)
    frame = vectorize_lines(path, strip_rows=7)
    assert frame.crs.equals(CRS.from_epsg(4326)) and len(frame) == 1
    coords = shapely.get_coordinates(frame.geometry.iloc[0])
    if coords[0, 0] > coords[-1, 0]:
        coords = coords[::-1]
    lon, lat = grid.tie_points.pixel_to_lonlat(np.arange(5, 40) + 0.5, np.full(35, 30.5))
    np.testing.assert_allclose(coords, np.stack([lon, lat], axis=1), atol=1e-9)
    assert frame["length"].iloc[0] == pytest.approx(34 * grid.pixel_size(), rel=0.05)  # metres, not degrees


def test_raster_without_crs_gives_pixel_coordinates(tmp_path: Path) -> None:
    data = np.zeros((8, 8), dtype=np.uint8)
    data[2:4, 3:6] = 1
    path = write_raster(tmp_path / "plain.tif", data, Grid(8, 8), nodata=None)
    frame = vectorize_polygons(path)
    assert frame.crs is None and frame.attrs["georeference"] == "none"
    square = frame[frame["class"] == 1].iloc[0]
    assert shapely.equals(square.geometry, shapely.box(3, 2, 6, 4)) and square["area"] == 6.0


# --------------------------------------------------------------------------- CLI


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_cli_writes_polygons_and_lines_that_reopen(tmp_path: Path) -> None:
    path, _ = squares_raster(tmp_path)
    out = tmp_path / "classes.gpkg"
    result = runner.invoke(app, ["vectorize", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "5 polygons" in " ".join(result.stderr.split())  # rich wraps long lines
    frame = pyogrio.read_dataframe(out, layer="polygons")
    assert sorted(frame["class"]) == [0, 0, 1, 2, 3] and frame["n_pixels"].sum() == 1985
    assert frame.crs.equals(CRS.from_epsg(3413))

    mask = line_raster(tmp_path, [(2, slice(1, 12)), (slice(2, 10), 6)])
    out_lines = tmp_path / "lines.gpkg"
    result = runner.invoke(app, ["vectorize", str(mask), "-o", str(out_lines), "--lines", "--min-length", "60",
                                 "--layer", "gl"])
    assert result.exit_code == 0, result.output
    assert pyogrio.read_dataframe(out_lines, layer="gl")["length"].tolist() == pytest.approx([70.0])


def test_cli_errors_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    sic = write_raster(tmp_path / "sic.tif", np.full((5, 5), 0.5, "float32"), grid_10m(5, 5), nodata=None)
    out = tmp_path / "sic.gpkg"
    result = runner.invoke(app, ["vectorize", str(sic), "-o", str(out)])
    assert result.exit_code == 1 and "--threshold" in one_line_error(result)
    assert not out.exists()
    result = runner.invoke(app, ["vectorize", str(sic), "-o", str(out), "--threshold", "0.4"])
    assert result.exit_code == 0
    result = runner.invoke(app, ["vectorize", str(sic), "-o", str(out), "--threshold", "0.4"])
    assert result.exit_code == 1 and "--overwrite" in one_line_error(result)
    result = runner.invoke(app, ["vectorize", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "m.gpkg")])
    assert result.exit_code == 1 and "does not exist" in one_line_error(result)
    # Bad option values and options that do not go together are usage errors: exit 2, one Error line.
    result = runner.invoke(app, ["vectorize", str(sic), "-o", str(tmp_path / "b.gpkg"), "--bins", "0.5,0.2"])
    assert result.exit_code == 2 and "increasing" in result.stderr and "'--bins'" in result.stderr
    result = runner.invoke(app, ["vectorize", str(sic), "-o", str(tmp_path / "c.gpkg"), "--lines", "--bins", "0.5"])
    assert result.exit_code == 2 and "Error: --bins apply to polygons only" in result.stderr
    assert not (tmp_path / "b.gpkg").exists() and not (tmp_path / "c.gpkg").exists()
