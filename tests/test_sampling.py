"""Patch sampling: acceptance rules replayed at full resolution, leak-free splits, files and the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import CRS
from rasterio.control import GroundControlPoint
from rasterio.windows import Window, bounds as window_bounds
from typer.testing import CliRunner

import fixtures

from icetools.errors import ConfigError, CRSError, DataError, InputFileError
from icetools.grid import Grid
from icetools.io.raster import write_raster
from icetools.patches_io import (
    CELL, PATCH_COLUMNS, coverage_maps, export_chips, read_blocks, read_patches, write_patches,
)
from icetools.progress import Event
from icetools.sampling import sample_patches, split_counts

EPSG3413 = CRS.from_epsg(3413)
SIZE = 320
LAND = 100  # the top-left LAND x LAND corner is land (NaN in the scene)
UNCHARTED = 32  # the right-most columns carry no chart polygon
NAN = float("nan")


def affine_grid(height: int = SIZE, width: int = SIZE, *, x0: float = -200_000.0, crs: CRS = EPSG3413) -> Grid:
    return fixtures.affine_grid(height, width, origin=(x0, 100_000.0), crs=crs)


def gcp_grid(height: int = SIZE, width: int = SIZE) -> Grid:
    gcps = tuple(
        GroundControlPoint(row=r, col=c, x=-40.0 + c * 1e-3, y=72.0 - r * 4e-4, id=f"{r}-{c}")
        for r in (0.5, height / 2, height - 0.5)
        for c in (0.5, width / 2, width - 0.5)
    )
    return Grid(height, width, gcps=gcps, gcp_crs=CRS.from_epsg(4326))


def scene_arrays(height: int = SIZE, width: int = SIZE, *, seed: int = 1) -> np.ndarray:
    data = np.random.default_rng(seed).normal(size=(2, height, width)).astype("float32")
    data[:, :LAND, :LAND] = np.nan
    return data


def sic_arrays(height: int = SIZE, width: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Four quadrant polygons (ids 1..4), none on land or in the right-most UNCHARTED columns."""
    rows, cols = np.mgrid[:height, :width]
    ids = 1 + (rows >= height // 2) * 2 + (cols >= width // 2)
    ids[:LAND, :LAND] = 0
    ids[:, width - UNCHARTED :] = 0
    sic = np.where(ids > 0, np.array([0.0, 0.1, 0.5, 0.9, 1.0])[ids], np.nan)
    return ids.astype("float32"), sic.astype("float32")


def line_array(height: int, width: int, start: int, stop: int) -> np.ndarray:
    line = np.zeros((height, width), dtype="uint8")
    idx = np.arange(start, stop)
    line[idx, idx] = 1
    return line


def write_hh_hv(path: Path, grid: Grid, *, seed: int = 1) -> Path:
    """An HH/HV scene of :func:`scene_arrays` (its land corner is what the acceptance rules see)."""
    return fixtures.write_scene(path, grid, data=scene_arrays(grid.height, grid.width, seed=seed), band_names=("HH", "HV"))


def write_sic(path: Path, grid: Grid) -> Path:
    ids, sic = sic_arrays(grid.height, grid.width)
    return write_raster(path, np.stack([ids, sic]), grid, nodata=NAN, band_names=["polygon_id", "SIC"])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sampling")
    grid = affine_grid()
    files = {"scene": write_hh_hv(root / "scene.tif", grid), "sic": write_sic(root / "sic.tif", grid)}
    for i in range(3):
        g = affine_grid(x0=-200_000.0 + 20_000 * i)
        files[f"scene{i}"] = write_hh_hv(root / f"scene{i}.tif", g, seed=10 + i)
        files[f"sic{i}"] = write_sic(root / f"sic{i}.tif", g)
    big = affine_grid(512, 512)
    files["line_scene"] = write_hh_hv(root / "line_scene.tif", big)
    line = line_array(512, 512, 64, 448)
    files["line"] = write_raster(root / "line.tif", line, big, nodata=None, band_names=["line"])
    files["gcp_scene"] = write_hh_hv(root / "gcp_scene.tif", gcp_grid())
    files["gcp_sic"] = write_sic(root / "gcp_sic.tif", gcp_grid())
    return files


def full_valid(height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """Valid pixels of the SIC test scenes, from how they were built: not land and charted."""
    ids, sic = sic_arrays(height, width)
    return np.isfinite(scene_arrays(height, width)).all(axis=0) & np.isfinite(sic)


def windows_of(frame, scene: Path):
    rows = frame[frame["scene"] == str(scene.resolve())]
    return [(int(r.row_off), int(r.col_off), int(r.size), r) for r in rows.itertuples()]


# --- acceptance rules ---------------------------------------------------------------------------------


def test_unseen_share_at_acceptance_replayed_at_full_resolution(data):
    frame = sample_patches([data["scene"]], [data["sic"]], size=64, n=40, min_unseen=0.5, seed=3)
    assert len(frame) >= 10
    coverage = np.zeros((SIZE, SIZE), dtype=int)
    for row, col, size, record in sorted(windows_of(frame, data["scene"]), key=lambda w: w[3].patch_id):
        unseen = np.mean(coverage[row : row + size, col : col + size] == 0)
        assert unseen >= 0.5
        assert record.unseen == pytest.approx(unseen, abs=1e-12)
        coverage[row : row + size, col : col + size] += 1
    assert list(frame["patch_id"]) == list(range(len(frame)))


def test_valid_and_foreground_fractions_match_the_pixels_and_max_invalid_holds(data):
    frame = sample_patches([data["scene"]], [data["sic"]], size=64, n=30, max_invalid=0.25, min_unseen=0.3, seed=5)
    valid = full_valid()
    ids, _ = sic_arrays()
    assert len(frame) > 0 and frame.attrs["stats"]["rejected"]["invalid"] > 0
    for row, col, size, record in windows_of(frame, data["scene"]):
        window_valid = valid[row : row + size, col : col + size]
        assert record.valid == pytest.approx(window_valid.mean(), abs=1e-12)
        assert record.valid >= 0.75
        foreground = (ids[row : row + size, col : col + size] > 0) & window_valid
        assert record.foreground == pytest.approx(foreground.mean(), abs=1e-12)
        assert row % CELL == 0 and col % CELL == 0 and row + size <= SIZE and col + size <= SIZE


def test_empty_windows_are_capped(data):
    line = line_array(512, 512, 64, 448) & np.isfinite(scene_arrays(512, 512)).all(axis=0)  # not on land
    for cap in (0, 3):
        frame = sample_patches([data["line_scene"]], [data["line"]], size=32, n=40, max_empty=cap, min_unseen=0.2,
                               seed=1, max_rejects=300)
        empties = 0
        for row, col, size, record in windows_of(frame, data["line_scene"]):
            assert record.foreground == pytest.approx(line[row : row + size, col : col + size].mean(), abs=1e-12)
            empties += record.foreground == 0
        assert empties <= cap
        assert frame.attrs["stats"]["empty_windows"] == empties
        assert set(frame["task"]) == {"binary"}


def test_rare_thin_line_is_found(data):
    """A 1-pixel diagonal in a 512 x 512 scene (0.15 % of the pixels) still fills most windows."""
    frame = sample_patches([data["line_scene"]], [data["line"]], size=32, n=20, seed=0, min_unseen=0.3)
    with_line = int((frame["foreground"] > 0).sum())
    assert len(frame) == 20 and with_line >= 20 - 2  # the default cap allows 10 % empty windows


def test_class_labels_count_labelled_pixels_as_foreground(tmp_path, data):
    classes = np.full((SIZE, SIZE), 255, dtype="uint8")  # 255 = unlabelled
    classes[:, 160:] = 3
    labels = write_raster(tmp_path / "classes.tif", classes, affine_grid(), nodata=255, band_names=["class"])
    frame = sample_patches([data["scene"]], [labels], size=64, n=10, max_empty=10, seed=0)
    valid = np.isfinite(scene_arrays()).all(axis=0)
    assert set(frame["task"]) == {"multiclass"}
    for row, col, size, record in windows_of(frame, data["scene"]):
        labelled = (classes[row : row + size, col : col + size] != 255) & valid[row : row + size, col : col + size]
        assert record.foreground == pytest.approx(labelled.mean(), abs=1e-12)


@pytest.mark.parametrize("size", [8, 100, 250, 0])
def test_size_must_be_a_multiple_of_16(data, size):
    with pytest.raises(ConfigError, match="multiple of 16"):
        sample_patches([data["scene"]], [data["sic"]], size=size, n=5)


@pytest.mark.parametrize(
    "options", [{"fractions": (0.5, 0.5)}, {"fractions": (0.6, 0.3, 0.3)}, {"block_size": 40}, {"min_unseen": 1.5}]
)
def test_inconsistent_options_are_config_errors(data, options):
    with pytest.raises(ConfigError):
        sample_patches([data["scene"]], [data["sic"]], size=64, n=5, **options)


# --- splits -------------------------------------------------------------------------------------------


def split_owner(frame, scene: Path, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Every window footprint rasterised per split at full resolution."""
    masks = {s: np.zeros(shape, dtype=bool) for s in ("train", "val", "test")}
    for row, col, size, record in windows_of(frame, scene):
        masks[record.split][row : row + size, col : col + size] = True
    return masks


def test_block_splits_never_share_a_pixel(data):
    frame = sample_patches([data["scene"]], [data["sic"]], size=32, n=120, split_by="block", block_size=64,
                           min_unseen=0.5, seed=2)
    masks = split_owner(frame, data["scene"], (SIZE, SIZE))
    assert (sum(m.astype(int) for m in masks.values()) <= 1).all()
    assert set(frame["split"]) == {"train", "val", "test"}
    assert frame.attrs["sampling"]["split_by_used"] == "block"


@pytest.mark.parametrize("split_by", ["auto", "scene"])
def test_scene_splits_give_each_scene_one_split(data, split_by):
    scenes = [data[f"scene{i}"] for i in range(3)]
    frame = sample_patches(scenes, [data[f"sic{i}"] for i in range(3)], size=64, n=45, seed=4, split_by=split_by)
    assert frame.attrs["sampling"]["split_by_used"] == "scene"
    per_scene = frame.groupby("scene")["split"].agg(set)
    assert all(len(s) == 1 for s in per_scene)
    # 3 scenes at 0.7/0.15/0.15: largest remainder gives 2/1/0, then test takes one from train.
    assert sorted(next(iter(s)) for s in per_scene) == ["test", "train", "val"]


def test_default_split_is_by_block_even_with_three_scenes(data):
    """Training then gets 70 % of every scene's blocks, not one scene of three."""
    scenes = [data[f"scene{i}"] for i in range(3)]
    frame = sample_patches(scenes, [data[f"sic{i}"] for i in range(3)], size=64, n=45, seed=4)
    assert frame.attrs["sampling"]["split_by_used"] == "block"
    assert frame.attrs["sampling"]["block_size"] == 128  # twice the patch size
    assert frame.groupby("split")["scene"].nunique()["train"] > 1


def test_readme_recipe_gives_every_split_on_one_1024_px_scene(tmp_path):
    """`icetools sample-patches scene --labels labels.tif -o patches.gpkg` with every default."""
    from icetools.cli.app import app

    grid = affine_grid(1024, 1024)
    scene = fixtures.write_scene(tmp_path / "scene.tif", grid, seed=0)  # a land quarter top-left
    rows, cols = np.mgrid[:1024, :1024]
    ids = (1 + (rows // 200) * 6 + cols // 200).astype("float32")
    labels = write_raster(tmp_path / "labels.tif", np.stack([ids, (ids % 10) / 10]), grid, nodata=NAN,
                          band_names=["polygon_id", "SIC"])
    out = tmp_path / "patches.gpkg"
    result = CliRunner().invoke(app, ["sample-patches", str(scene), "--labels", str(labels), "-o", str(out)])
    assert result.exit_code == 0, result.output
    patches, blocks = read_patches(out), read_blocks(out)
    assert set(patches["size"]) == {128} and patches.attrs["sampling"]["split_by_used"] == "block"
    counts = patches["split"].value_counts()
    assert counts["val"] >= 6 and counts["test"] >= 6 and counts["train"] > counts["val"]
    assert len(blocks) == 16 and set(blocks["split"]) == {"train", "val", "test"}


def test_scene_split_with_two_scenes_falls_back_to_blocks(data):
    with pytest.warns(UserWarning, match="spatial blocks"):
        frame = sample_patches([data["scene0"], data["scene1"]], [data["sic0"], data["sic1"]], size=32, n=40,
                               split_by="scene", block_size=64)
    assert frame.attrs["sampling"]["split_by_used"] == "block"
    for i in range(2):
        masks = split_owner(frame, data[f"scene{i}"], (SIZE, SIZE))
        assert (sum(m.astype(int) for m in masks.values()) <= 1).all()


@pytest.mark.parametrize(
    ("n_items", "expected"), [(3, [1, 1, 1]), (10, [7, 2, 1]), (20, [14, 3, 3]), (2, [1, 1, 0]), (0, [0, 0, 0])]
)
def test_split_counts_by_hand(n_items, expected):
    assert list(split_counts(n_items, (0.7, 0.15, 0.15))) == expected


def test_edge_remnants_under_half_a_block_join_their_neighbour():
    from icetools.sampling import _block_index

    assert list(_block_index(20, 16)) == [0] * 20  # 4 cells left over: one block
    assert list(_block_index(25, 16)) == [0] * 16 + [1] * 9  # 9 cells left over: a block of their own
    assert list(_block_index(5, 16)) == [0] * 5


def test_a_scene_given_twice_is_refused(data):
    """Its two copies could go to different splits and share every pixel."""
    with pytest.raises(ConfigError, match="given twice"):
        sample_patches([data["scene"], data["scene"]], [data["sic"], data["sic"]], size=64, n=5)


# --- reproducibility ----------------------------------------------------------------------------------


def test_same_seed_same_patches_other_seed_other_patches(data):
    def run(seed: int):
        frame = sample_patches([data["scene"]], [data["sic"]], size=64, n=15, seed=seed)
        return list(zip(frame["row_off"], frame["col_off"], frame["split"]))

    assert run(7) == run(7)
    assert run(7) != run(8)


# --- coordinates --------------------------------------------------------------------------------------


def test_affine_footprints_match_window_bounds_exactly(data):
    frame = sample_patches([data["scene"]], [data["sic"]], size=64, n=10, seed=1)
    grid = affine_grid()
    assert frame.attrs["coords"] == "crs" and CRS(frame.crs).equals(EPSG3413)
    for row, col, size, record in windows_of(frame, data["scene"]):
        window = Window(col, row, size, size)
        assert record.geometry.bounds == window_bounds(window, grid.transform)
        assert record.geometry.bounds == window_bounds(Window(0, 0, size, size), grid.window_transform(window))


def test_gcp_scene_gives_pixel_coordinates(data):
    frame = sample_patches([data["gcp_scene"]], [data["gcp_sic"]], size=64, n=10, seed=1)
    assert frame.attrs["coords"] == "pixel" and frame.crs is None
    for row, col, size, record in windows_of(frame, data["gcp_scene"]):
        assert record.geometry.bounds == (col, row, col + size, row + size)


def test_scenes_in_different_crs_give_pixel_coordinates(tmp_path, data):
    other = affine_grid(crs=CRS.from_epsg(3031))
    scene = write_hh_hv(tmp_path / "south.tif", other)
    labels = write_sic(tmp_path / "south_sic.tif", other)
    frame = sample_patches([data["scene"], scene], [data["sic"], labels], size=64, n=10, seed=1)
    assert frame.attrs["coords"] == "pixel" and frame.crs is None


# --- input errors -------------------------------------------------------------------------------------


def test_labels_on_another_grid_is_a_crs_error(tmp_path, data):
    shifted = write_sic(tmp_path / "shifted.tif", affine_grid(x0=-199_000.0))
    with pytest.raises(CRSError, match="icetools rasterize"):
        sample_patches([data["scene"]], [shifted], size=64, n=5)


def test_scene_smaller_than_a_patch_is_a_data_error(tmp_path):
    grid = affine_grid(48, 200)
    scene = write_hh_hv(tmp_path / "small.tif", grid)
    labels = write_sic(tmp_path / "small_sic.tif", grid)
    with pytest.raises(DataError, match=r"small\.tif is 48 x 200"):
        sample_patches([scene], [labels], size=64, n=5)


def test_scene_without_chart_or_labels_asks_for_labels(data):
    with pytest.raises(Exception, match="carries no ice chart: give it a labels raster"):
        sample_patches([data["scene"]], None, size=64, n=5)


# --- AI4Arctic netCDF with its own chart ----------------------------------------------------------------


def test_netcdf_chart_scene_needs_no_labels(tmp_path):
    height = width = 96
    hh = np.ones((height, width), dtype="float32")
    hh[:32, :32] = np.nan  # land
    chart = np.zeros((height, width), dtype="int16")
    chart[:, :48] = 1  # ice 92 -> 1.0
    chart[:, 48:80] = 2  # land polygon -> masked
    chart[:, 80:] = 0  # uncharted
    path = fixtures.write_ai4arctic(
        tmp_path / "ai4arctic.nc",
        data=np.stack([hh, hh]),
        chart=chart,
        chart_dtype="i2",
        codes=["poly_id;CT;POLY_TYPE", "1;92;I", "2;-9;L", "3;01;W"],
        points=fixtures.tie_points(height, width, points=3, origin=(70.0, -40.0), step=(-1e-3, 2e-3)),
    )
    frame = sample_patches([path], None, size=32, n=6, max_invalid=1.0, min_unseen=1.0, seed=0)
    assert set(frame["task"]) == {"sic"} and frame.attrs["coords"] == "pixel"
    valid = np.zeros((height, width), dtype=bool)
    valid[:, :48] = True
    valid[:32, :32] = False
    for row, col, size, record in windows_of(frame, path):
        assert record.valid == pytest.approx(valid[row : row + size, col : col + size].mean(), abs=1e-12)
        assert record.foreground == record.valid  # every valid pixel is charted ice here


# --- progress -----------------------------------------------------------------------------------------


def test_progress_events_count_strips_then_patches(data):
    events: list[Event] = []
    frame = sample_patches([data["scene0"], data["scene1"]], [data["sic0"], data["sic1"]], size=64, n=6, seed=1,
                           progress=events.append)
    scans = [(e.done, e.total) for e in events if e.stage == "scan"]
    samples = [(e.done, e.total) for e in events if e.stage == "sample"]
    assert scans == [(1, 2), (2, 2)]  # one 512-row strip per 320-row scene, counted over both scenes
    assert samples == [(k, 6) for k in range(1, len(frame) + 1)]
    assert {e.stage for e in events} == {"scan", "sample"}


# --- files and CLI ------------------------------------------------------------------------------------


def test_geopackage_round_trip_keeps_columns_and_metadata(tmp_path, data):
    frame = sample_patches([data["gcp_scene"]], [data["gcp_sic"]], size=64, n=8, seed=2)
    path = write_patches(frame, tmp_path / "patches.gpkg")
    back = read_patches(path)
    assert list(back[list(PATCH_COLUMNS)].itertuples(index=False)) == list(
        frame[list(PATCH_COLUMNS)].itertuples(index=False)
    )
    assert back.attrs["coords"] == "pixel" and back.attrs["sampling"]["size"] == 64
    assert back.attrs["sampling"]["seed"] == 2


def test_read_patches_errors(tmp_path):
    import geopandas as gpd
    import pyogrio
    from shapely.geometry import Point

    with pytest.raises(InputFileError, match="does not exist"):
        read_patches(tmp_path / "missing.gpkg")
    other = tmp_path / "other.gpkg"
    pyogrio.write_dataframe(gpd.GeoDataFrame({"a": [1]}, geometry=[Point(0, 0)], crs="EPSG:3413"), other, layer="patches")
    with pytest.raises(DataError, match="lacks the columns scene"):
        read_patches(other)


def test_export_chips_hold_the_window_pixels(tmp_path, data):
    frame = sample_patches([data["scene"]], [data["sic"]], size=64, n=3, seed=9)
    written = export_chips(frame, tmp_path / "chips")
    assert len(written) == 2 * len(frame)
    record = frame.iloc[0]
    row, col = int(record["row_off"]), int(record["col_off"])
    folder = tmp_path / "chips" / record["split"]
    with rasterio.open(folder / f"{int(record['patch_id']):06d}_image.tif") as ds:
        assert ds.transform == affine_grid().window_transform(Window(col, row, 64, 64))
        np.testing.assert_array_equal(ds.read(), scene_arrays()[:, row : row + 64, col : col + 64])
    with rasterio.open(folder / f"{int(record['patch_id']):06d}_labels.tif") as ds:
        assert ds.descriptions == ("polygon_id", "SIC")
        np.testing.assert_array_equal(ds.read(2), sic_arrays()[1][row : row + 64, col : col + 64])


def test_coverage_maps_count_patches_per_cell(data):
    frame = sample_patches([data["scene"]], [data["sic"]], size=64, n=12, min_unseen=0.0, seed=6)
    cover = coverage_maps(frame)[str(data["scene"].resolve())]
    assert cover.shape == (math.ceil(SIZE / CELL),) * 2
    assert cover.sum() == len(frame) * (64 // CELL) ** 2


def test_cli_round_trip_and_overwrite_rule(tmp_path, data):
    from icetools.cli.app import app

    out = tmp_path / "patches.gpkg"
    plot = tmp_path / "coverage.png"
    args = ["sample-patches", str(data["scene"]), "--labels", str(data["sic"]), "-o", str(out), "--size", "64",
            "--n", "12", "--seed", "3", "--fractions", "0.6,0.2,0.2", "--plot", str(plot)]
    runner = CliRunner()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "train" in result.stderr and "stop" in result.stderr
    back = read_patches(out)
    expected = sample_patches([data["scene"]], [data["sic"]], size=64, n=12, seed=3, fractions=(0.6, 0.2, 0.2))
    assert list(zip(back["row_off"], back["col_off"], back["split"])) == list(
        zip(expected["row_off"], expected["col_off"], expected["split"])
    )
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    blocks = read_blocks(out)  # where each split lies, beside the patches
    assert set(blocks["split"]) == {"train", "val", "test"} and blocks.crs == back.crs

    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--overwrite" in again.stderr
    assert runner.invoke(app, args + ["--overwrite"]).exit_code == 0


def test_cli_labels_count_mismatch_is_a_usage_error(tmp_path, data):
    from icetools.cli.app import app

    result = CliRunner().invoke(app, ["sample-patches", str(data["scene0"]), str(data["scene1"]), "--labels",
                                      str(data["sic0"]), "-o", str(tmp_path / "p.gpkg")])
    assert result.exit_code == 2
    assert "--labels" in result.stderr
