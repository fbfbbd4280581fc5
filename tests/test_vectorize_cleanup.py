"""Tests for the line cleanup (icetools.vectorize.cleanup) through lines_from_array, vectorize_lines and
the CLI: known answers for median filter, spur pruning, short pieces, smoothing and junctions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
from scipy import ndimage
from skimage.draw import disk, line
from typer.testing import CliRunner

from fixtures import affine_grid
from icetools.cli.app import app
from icetools.errors import ConfigError, EmptyInputError
from icetools.grid import Grid
from icetools.io.raster import write_raster
from icetools.progress import Event
from icetools.vectorize import (
    DEFAULT_LINE_CLEANUP,
    RAW_LINES,
    Length,
    LineCleanup,
    lines_from_array,
    majority_mask,
    parse_length,
    vectorize_lines,
    vectorize_polygons,
)

PIXEL = 10.0  # metres
runner = CliRunner()
ONLY_PRUNING = LineCleanup(spur_length=5.0, min_piece_length=0.0, smooth_sigma=0.0)


def grid_10m(height: int, width: int) -> Grid:
    """10 m pixels, the top-left corner at (0, height * 10 m): pixel (row, col) centres are easy to write."""
    return affine_grid(height, width, origin=(0.0, height * PIXEL), pixel=PIXEL)


def write(tmp_path: Path, data: np.ndarray, name: str = "mask.tif", grid: Grid | None = None) -> Path:
    return write_raster(tmp_path / name, data.astype("float32"), grid or grid_10m(*data.shape), nodata=None)


def line_with_spur(spur: int) -> np.ndarray:
    """Row 20, columns 5..40 (35 px long), and a spur of ``spur`` px down from column 20."""
    data = np.zeros((40, 50), dtype="float32")
    data[20, 5:41] = 0.9
    data[21 : 21 + spur, 20] = 0.9
    return data


def turning_angle(geometry: shapely.LineString) -> float:
    """Total absolute turning along a line, in radians: how much it wiggles."""
    steps = np.diff(np.asarray(geometry.coords), axis=0)
    heading = np.arctan2(steps[:, 1], steps[:, 0])
    turns = (np.diff(heading) + np.pi) % (2 * np.pi) - np.pi
    return float(np.abs(turns).sum())


def noisy_zigzag(seed: int = 0) -> np.ndarray:
    """A 1-pixel line from column 5 to 54 whose row steps by -1, 0 or +1 at random, within 15 +- 1."""
    data = np.zeros((30, 60), dtype="float32")
    rng = np.random.default_rng(seed)
    row = 15
    for col in range(5, 55):
        data[row, col] = 1.0
        row = int(np.clip(row + rng.integers(-1, 2), 14, 16))
    return data


def thick_y() -> np.ndarray:
    """Three 3-pixel-wide arms from (30, 30) to (5, 30), (50, 10) and (50, 52), a blob at the junction."""
    data = np.zeros((60, 60), dtype=bool)
    for end in ((5, 30), (50, 10), (50, 52)):
        rows, cols = line(30, 30, *end)
        data[rows, cols] = True
    data = ndimage.binary_dilation(data, iterations=1)
    rows, cols = disk((30, 30), 4.5)
    data[rows, cols] = True
    return data.astype("float32")


# --------------------------------------------------------------------------- known answers


def test_a_three_pixel_spur_is_pruned_and_the_line_rejoined() -> None:
    raw = lines_from_array(line_with_spur(3), cleanup=RAW_LINES)
    assert sorted(shapely.length(raw)) == pytest.approx([3.0, 15.0, 20.0])  # split at the junction
    for cleanup in (ONLY_PRUNING, DEFAULT_LINE_CLEANUP):
        (kept,) = lines_from_array(line_with_spur(3), cleanup=cleanup)
        assert kept.length == pytest.approx(35.0)
        assert {kept.coords[0], kept.coords[-1]} == {(5.5, 20.5), (40.5, 20.5)}
    # A branch as long as the limit is a real line, not a spur: kept.
    assert len(lines_from_array(line_with_spur(5), cleanup=ONLY_PRUNING)) == 3


def test_spur_pruning_across_strip_seams_on_a_georeferenced_raster(tmp_path: Path) -> None:
    path = write(tmp_path, line_with_spur(3))
    for strip_rows in (1024, 21, 3):  # 21 cuts at the junction row
        frame = vectorize_lines(path, cleanup=ONLY_PRUNING, strip_rows=strip_rows)
        assert frame["length"].tolist() == pytest.approx([35 * PIXEL])
    # The same limit in metres on a raster in metres (3 px = 30 m < 40 m; 5 px = 50 m is not).
    in_metres = LineCleanup(spur_length=Length(40.0, "m"), min_piece_length=0.0, smooth_sigma=0.0)
    assert len(vectorize_lines(path, cleanup=in_metres)) == 1
    assert len(vectorize_lines(write(tmp_path, line_with_spur(5), "five.tif"), cleanup=in_metres)) == 3


def test_a_short_isolated_blob_is_removed_and_a_long_line_kept() -> None:
    data = np.zeros((40, 50), dtype="float32")
    data[30, 5:45] = 1.0  # 39 px long
    data[5:8, 10:16] = 1.0  # a 3 x 6 blob: a skeleton of a few pixels
    raw = lines_from_array(data, cleanup=RAW_LINES)
    assert len(raw) == 2 and min(shapely.length(raw)) < 10
    (kept,) = lines_from_array(data, cleanup=DEFAULT_LINE_CLEANUP)
    assert kept.length == pytest.approx(39.0)
    assert len(lines_from_array(data, cleanup=LineCleanup(min_piece_length=0.0))) == 2


def test_a_short_link_inside_a_long_network_is_a_piece_of_it_and_stays() -> None:
    data = np.zeros((40, 50), dtype="float32")
    data[10, 5:45] = 1.0
    data[13, 5:45] = 1.0
    data[11:13, 25] = 1.0  # a 3-px rung between two long rails: shorter than 10 px, but not alone
    lines = lines_from_array(data, cleanup=LineCleanup(spur_length=0.0, smooth_sigma=0.0))
    assert sorted(shapely.length(lines))[0] == pytest.approx(3.0)
    assert shapely.length(lines).sum() == pytest.approx(2 * 39 + 3)


def test_smoothing_straightens_a_zigzag_within_a_pixel_and_keeps_its_ends() -> None:
    for seed in (0, 1, 2):
        (raw,) = lines_from_array(noisy_zigzag(seed), cleanup=RAW_LINES)
        (smooth,) = lines_from_array(noisy_zigzag(seed), cleanup=DEFAULT_LINE_CLEANUP)
        assert turning_angle(smooth) < 0.5 * turning_angle(raw)
        assert shapely.hausdorff_distance(raw, smooth, densify=0.05) <= 1.0
        assert {smooth.coords[0], smooth.coords[-1]} == {raw.coords[0], raw.coords[-1]}
        assert smooth.length < raw.length  # the staircase is gone, not lengthened


def reference_smooth(coords: np.ndarray, sigma: float) -> np.ndarray:
    """One line at a time, the plain way: resample every pixel, pad by point reflection (np.pad,
    odd), Gaussian, ends put back; rings filtered around."""
    from icetools.vectorize.cleanup import _canonical, _resampled

    closed = len(coords) > 3 and np.array_equal(coords[0], coords[-1])
    points = _resampled(_canonical(coords, closed), 1.0)
    if closed:
        ring = ndimage.gaussian_filter1d(points[:-1], sigma, axis=0, mode="wrap")
        return np.concatenate([ring, ring[:1]])
    radius = int(4 * sigma + 0.5)
    padded = np.pad(points, ((radius, radius), (0, 0)), mode="reflect", reflect_type="odd")
    smoothed = ndimage.gaussian_filter1d(padded, sigma, axis=0, mode="nearest")[radius : radius + len(points)]
    smoothed[0], smoothed[-1] = points[0], points[-1]
    return smoothed


def test_smoothing_all_lines_at_once_equals_one_line_at_a_time() -> None:
    from icetools.vectorize import smooth_lines

    rng = np.random.default_rng(4)
    data = (ndimage.gaussian_filter(rng.standard_normal((120, 120)), 3) > 0).astype("float32")
    edges = data - ndimage.binary_erosion(data)  # closed and open outlines of many sizes
    lines = lines_from_array(edges, cleanup=RAW_LINES)
    lines = np.concatenate([lines, [shapely.LineString([(0.5, 0.5), (1.5, 1.5)]),
                                    shapely.LineString([(3.5, 0.5), (4.5, 0.5), (5.5, 1.5)])]])
    assert shapely.is_closed(lines).any() and (shapely.length(lines) < 6).any()
    for sigma in (0.7, 1.5, 3.0):
        smoothed = smooth_lines(lines, sigma)
        for fast, line in zip(smoothed, lines):
            np.testing.assert_allclose(np.asarray(fast.coords), reference_smooth(np.asarray(line.coords), sigma),
                                       atol=1e-8)


def test_smoothing_leaves_a_straight_line_straight() -> None:
    data = np.zeros((20, 40), dtype="float32")
    data[10, 3:35] = 1.0
    (smooth,) = lines_from_array(data, cleanup=DEFAULT_LINE_CLEANUP)
    coords = np.asarray(smooth.coords)
    np.testing.assert_allclose(coords[:, 1], 10.5, atol=1e-9)
    assert smooth.length == pytest.approx(31.0)


def test_a_y_junction_still_splits_into_three_lines_that_meet() -> None:
    data = thick_y()
    for cleanup in (RAW_LINES, DEFAULT_LINE_CLEANUP):
        lines = lines_from_array(data, cleanup=cleanup)
        assert len(lines) == 3
        ends = [{line.coords[0], line.coords[-1]} for line in lines]
        (junction,) = set.intersection(*ends)
        assert math.dist(junction, (30.5, 30.5)) <= 1.5
        tips = sorted(next(iter(e - {junction})) for e in ends)
        for tip, arm_end in zip(tips, sorted([(30.5, 5.5), (10.5, 50.5), (52.5, 50.5)])):
            assert math.dist(tip, arm_end) <= 1.5  # the arms keep their length, no spur near the blob


def test_cleaned_lines_do_not_depend_on_the_strips(tmp_path: Path) -> None:
    data = ndimage.binary_dilation(noisy_zigzag(3) + thick_y()[:30, :60] > 0).astype("float32")
    data[2:4, 40:44] = 1.0
    path = write(tmp_path, data)
    cleanup = LineCleanup(median_size=3)
    whole = vectorize_lines(path, cleanup=cleanup)
    for strip_rows in (7, 4):
        strips = vectorize_lines(path, cleanup=cleanup, strip_rows=strip_rows)
        assert sorted(strips["length"]) == pytest.approx(sorted(whole["length"]), abs=1e-6)
    in_memory = lines_from_array(data, cleanup=cleanup)
    assert sorted(shapely.length(in_memory) * PIXEL) == pytest.approx(sorted(whole["length"]), abs=1e-6)


# --------------------------------------------------------------------------- median filter


def test_majority_vote_equals_a_median_filter_then_the_threshold() -> None:
    rng = np.random.default_rng(7)
    values = ndimage.gaussian_filter(rng.random((37, 41)), 1.0)
    for size in (1, 3, 5, 11):
        for threshold in (0.45, 0.5, 0.55):
            expected = ndimage.median_filter(values, size=size, mode="nearest") >= threshold
            np.testing.assert_array_equal(majority_mask(values >= threshold, size), expected)


def test_median_filter_removes_speckle_keeps_wide_lines_and_erases_thin_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = (rng.random((40, 60)) < 0.04).astype("float32")  # speckle: a raw skeleton full of bits
    data[18:23, 5:55] = 1.0  # a 5-pixel-wide line
    (kept,) = lines_from_array(data, cleanup=LineCleanup(median_size=5, min_piece_length=0.0))
    assert math.dist(kept.coords[0], (5.5, 20.5)) <= 3 and math.dist(kept.coords[-1], (54.5, 20.5)) <= 3
    assert len(lines_from_array(data, cleanup=RAW_LINES)) > 3
    thin = write(tmp_path, line_with_spur(0), "thin.tif")
    with pytest.raises(EmptyInputError, match="median_size"):
        vectorize_lines(thin, cleanup=LineCleanup(median_size=5))


# --------------------------------------------------------------------------- options and errors


def test_lengths_parse_and_check() -> None:
    assert parse_length("5", name="spur_length") == Length(5.0)
    assert parse_length("2.5px", name="spur_length") == Length(2.5)
    assert parse_length(" 300 m", name="spur_length") == Length(300.0, "m")
    for text in ("five", "3km", "", "nan"):
        with pytest.raises(ConfigError, match="`spur_length`"):
            parse_length(text, name="spur_length")
    assert LineCleanup(spur_length=Length(30.0, "m")).in_pixels(10.0).spur_length == 3.0
    with pytest.raises(ConfigError, match="metres"):
        LineCleanup(smooth_sigma=Length(30.0, "m")).in_pixels(None)
    for bad in ({"median_size": 4}, {"median_size": 0}, {"spur_length": -1.0}):
        with pytest.raises(ConfigError):
            LineCleanup(**bad).in_pixels()


def test_metres_need_a_raster_in_metres(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "plain.tif", line_with_spur(3), Grid(40, 50), nodata=None)
    with pytest.raises(ConfigError, match="`spur_length`"):
        vectorize_lines(path, cleanup=LineCleanup(spur_length=Length(30.0, "m")))


def test_progress_is_sent_as_events_in_rows(tmp_path: Path) -> None:
    path = write(tmp_path, line_with_spur(3))
    for function, options in ((vectorize_lines, {}), (vectorize_polygons, {"threshold": 0.5})):
        events: list[Event] = []
        function(path, strip_rows=16, progress=events.append, **options)
        assert all(isinstance(e, Event) and e.stage == "rows" and e.total == 40 for e in events)
        assert [e.done for e in events] == [16, 32, 40]


def test_cli_cleans_lines_and_speaks_in_flags(tmp_path: Path) -> None:
    path = write(tmp_path, line_with_spur(3))
    out = tmp_path / "lines.gpkg"
    result = runner.invoke(app, ["vectorize", str(path), "-o", str(out), "--lines"])
    assert result.exit_code == 0, result.output
    assert pyogrio.read_dataframe(out, layer="lines")["length"].tolist() == pytest.approx([35 * PIXEL])
    result = runner.invoke(app, ["vectorize", str(path), "-o", str(out), "--lines", "--no-cleanup", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert sorted(pyogrio.read_dataframe(out)["length"]) == pytest.approx([30.0, 150.0, 200.0])
    result = runner.invoke(app, ["vectorize", str(path), "-o", str(out), "--lines", "--spur", "20m", "--smooth", "0",
                                 "--overwrite"])
    assert result.exit_code == 0, result.output
    assert sorted(pyogrio.read_dataframe(out)["length"]) == pytest.approx([30.0, 150.0, 200.0])  # 3 px is not < 2

    def error(args: list[str]) -> str:
        """A bad option value is a usage error: exit 2, one Error line naming the option."""
        result = runner.invoke(app, ["vectorize", str(path), "-o", str(tmp_path / "bad.gpkg"), *args])
        assert result.exit_code == 2
        lines = [line for line in result.stderr.splitlines() if line.startswith("Error")]
        assert len(lines) == 1, result.stderr
        return lines[0]

    assert "--median" in error(["--lines", "--median", "4"])
    assert "--spur" in error(["--lines", "--spur", "3 miles"])
    assert "--threshold" in error(["--lines", "--threshold", "nan"])
    assert "--lines only" in error(["--threshold", "0.5", "--smooth", "3"])
    plain = write_raster(tmp_path / "plain.tif", line_with_spur(3), Grid(40, 50), nodata=None)
    result = runner.invoke(app, ["vectorize", str(plain), "-o", str(tmp_path / "p.gpkg"), "--lines", "--min-piece", "100m"])
    assert result.exit_code == 1 and "--min-piece" in result.stderr
    assert not (tmp_path / "bad.gpkg").exists() and not (tmp_path / "p.gpkg").exists()


def test_cli_help_quotes_the_library_defaults() -> None:
    result = runner.invoke(app, ["vectorize", "--help"], env={"COLUMNS": "400"})
    text = " ".join(result.stdout.split())
    defaults = DEFAULT_LINE_CLEANUP
    assert defaults.median_size == 1 and "1 = off (default)" in text
    for value in (defaults.spur_length, defaults.min_piece_length, defaults.smooth_sigma):
        assert f"Default {value:g}px" in text
