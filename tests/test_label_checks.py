"""Labels that cannot be right are named: SIC in percent or tenths, a chart its polygon_codes table
does not cover, a table that repeats one id, and a sampling that would give zero patches."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures import AI4ARCTIC_CODES, affine_grid, write_ai4arctic, write_scene
from typer.testing import CliRunner

from icetools.cli.app import app
from icetools.errors import DataError
from icetools.io.checks import check_labels
from icetools.io.raster import open_raster_writer
from icetools.sampling import sample_patches

runner = CliRunner()
HEADER = AI4ARCTIC_CODES[0]


def _labels(path, sic: np.ndarray, *, scale: float = 1.0):
    """A labels raster as `icetools rasterize` lays it out (polygon_id + SIC, Int32), SIC stored as given."""
    grid = affine_grid(*sic.shape)
    ids = np.where(np.isfinite(sic), 1, 0)
    with open_raster_writer(path, grid, count=2, dtype="int32", nodata=-2147483648, band_names=["polygon_id", "SIC"],
                            scales=(1.0, scale)) as writer:
        writer.write(np.stack([ids, np.nan_to_num(sic, nan=-2147483648)]).astype("int32"))
    return path


def _sic(top: int) -> np.ndarray:
    """Whole numbers 0..top over a 64 x 64 scene: left half ``top``, right half a third of it."""
    sic = np.full((64, 64), top, "float32")
    sic[:, 32:] = top // 3
    return sic


@pytest.mark.parametrize(("top", "unit", "scale"), [(100, "percent", "0.01"), (10, "tenths", "0.1")])
def test_sic_labels_in_percent_or_tenths_are_refused_with_the_scale_to_give(tmp_path, top, unit, scale):
    labels = _labels(tmp_path / "labels.tif", _sic(top))
    with pytest.raises(DataError, match=rf"whole numbers up to {top}, which look like {unit}.*GDAL scale {scale}"):
        check_labels([labels])
    scene = write_scene(tmp_path / "s.tif", affine_grid(64, 64))
    result = runner.invoke(app, ["sample-patches", str(scene), "--labels", str(labels), "-o", str(tmp_path / "p.gpkg"),
                                 "--size", "32", "--n", "4", "-q"])
    assert result.exit_code == 1
    [line] = [line for line in result.output.splitlines() if line.strip()]
    assert line.startswith(f"error: {labels}: band 'SIC' holds whole numbers") and "internal error" not in line
    assert not (tmp_path / "p.gpkg").exists()


def test_the_same_numbers_with_their_scale_are_fractions_and_pass(tmp_path):
    labels = _labels(tmp_path / "labels.tif", _sic(100), scale=0.01)  # stored percent, read as 0..1
    assert check_labels([labels, None]) == []  # None: a scene's own chart, nothing to check here


def test_a_sic_band_of_zeros_and_ones_is_a_fraction(tmp_path):
    sic = np.zeros((64, 64), "float32")
    sic[:, 32:] = 1
    assert check_labels([_labels(tmp_path / "labels.tif", sic)]) == []


def test_a_polygon_codes_table_that_repeats_one_id_is_refused(tmp_path):
    rows = [HEADER, "1;92;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;I", "1;46;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;I"]
    scene = write_ai4arctic(tmp_path / "s.nc", shape=(64, 64), codes=rows)
    result = runner.invoke(app, ["sample-patches", str(scene), "-o", str(tmp_path / "p.gpkg"), "--size", "32",
                                 "--n", "4", "-q"])
    assert result.exit_code == 1
    assert "s.nc polygon_codes gives 1 poly_id(s) several rows with different codes (e.g. poly_id 1 in 2 rows)" in result.output
    assert not (tmp_path / "p.gpkg").exists()


def test_chart_polygons_missing_from_the_table_are_named(tmp_path):
    rows = [HEADER, "1;92;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;I"]  # polygon 2 (the right half) has no row
    scene = write_ai4arctic(tmp_path / "s.nc", shape=(64, 64), codes=rows)
    with pytest.warns(UserWarning, match=r"s\.nc: 1 polygon id\(s\) of its chart have no row in its polygon_codes "
                                         r"table \(2\): their 2048 pixels are left uncharted"):
        sample_patches([scene], size=32, n=2, max_rejects=50, checks=False)


def test_a_table_that_covers_no_polygon_names_the_cause_before_failing(tmp_path):
    rows = [HEADER, "7;92;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;I"]  # an id the chart does not hold
    scene = write_ai4arctic(tmp_path / "s.nc", shape=(64, 64), codes=rows)
    result = runner.invoke(app, ["sample-patches", str(scene), "-o", str(tmp_path / "p.gpkg"), "--size", "32", "--n", "4"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("warning: s.nc: 2 polygon id(s) of its chart have no row") and "(1, 2)" in lines[0]
    assert lines[-1].startswith("error: no scene has a valid pixel")
    assert not (tmp_path / "p.gpkg").exists()


def test_zero_patches_is_an_error_that_names_the_rule(tmp_path):
    chart = np.full((64, 64), np.nan, "f4")
    chart[:12, :12] = 1  # charted, but far less than half of any 32-pixel window
    scene = write_ai4arctic(tmp_path / "s.nc", shape=(64, 64), chart=chart)
    result = runner.invoke(app, ["sample-patches", str(scene), "-o", str(tmp_path / "p.gpkg"), "--size", "32",
                                 "--n", "4", "--max-rejects", "30", "-q"])
    assert result.exit_code == 1
    [line] = [line for line in result.output.splitlines() if line.strip()]
    assert line.startswith("error: no 32-pixel patch could be sampled: all 30 candidate windows were rejected (invalid 30)")
    assert "use a smaller patch size or a larger max_invalid" in line
    assert not (tmp_path / "p.gpkg").exists()
    with pytest.raises(DataError, match="no 32-pixel patch could be sampled"):
        sample_patches([scene], size=32, n=4, max_rejects=30, checks=False)
    # Allowing the invalid pixels samples it.
    assert len(sample_patches([scene], size=32, n=1, max_invalid=0.99, max_rejects=30, checks=False)) == 1

