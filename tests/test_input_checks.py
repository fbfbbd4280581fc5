"""Sanity of inputs: implausible values warn or fail, integer SAR needs a scale, odd charts are named."""

from __future__ import annotations

import math
import warnings

import geopandas as gpd
import netCDF4
import numpy as np
import pytest
import rasterio
from fixtures import affine_grid, sar_like, write_ai4arctic, write_scene
from shapely.geometry import Polygon, box
from typer.testing import CliRunner

from icetools.cli.app import app
from icetools.errors import DataError, MissingVariableError
from icetools.io.checks import check_scene_values, check_scenes, plausible_range
from icetools.io.scene import open_scene
from icetools.io.vector import repair_polygons
from icetools.sigrid import parse_polygon_codes, undefined_ct_codes

runner = CliRunner()
HH_HV = ["HH", "HV"]


def _scene(tmp_path, data, names=HH_HV, name="s.tif"):
    return write_scene(tmp_path / name, data=data, band_names=names)


def test_plausible_values_pass_silently(tmp_path):
    path = _scene(tmp_path, sar_like(96, 96))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_scenes([path]) == []


def test_a_few_absurd_rows_warn_with_their_share(tmp_path):
    data = sar_like(96, 96, land=False)
    data[0, 40:42] = 3e38  # two rows of a float fill value that is not NaN
    path = _scene(tmp_path, data)
    with open_scene(path) as scene, pytest.warns(UserWarning, match=r"% of the sampled values of band 'HH' lie outside -60..30"):
        messages = check_scene_values(scene, HH_HV)
    assert len(messages) == 1 and "HV" not in messages[0]


def test_a_mostly_absurd_band_is_an_error(tmp_path):
    data = sar_like(96, 96) * 100  # dB x 100 stored as float
    with open_scene(_scene(tmp_path, data)) as scene, pytest.raises(DataError, match="most of the scene is implausible"):
        check_scene_values(scene, HH_HV)


def test_phase_in_degrees_is_an_error(tmp_path):
    rng = np.random.default_rng(0)
    degrees = rng.uniform(-180, 180, (1, 64, 64)).astype("float32")
    with open_scene(_scene(tmp_path, degrees, names=["phase"])) as scene:
        assert plausible_range(scene, "phase")[0] == "phase"
        with pytest.raises(DataError, match=r"phase"):
            check_scene_values(scene, ["phase"])
    radians = np.deg2rad(degrees)
    with open_scene(_scene(tmp_path, radians, names=["phase"], name="r.tif")) as scene:
        assert check_scene_values(scene, ["phase"]) == []


def test_integer_sar_needs_a_scale(tmp_path):
    path = tmp_path / "int.tif"
    grid = affine_grid(64, 64)
    profile = {"driver": "GTiff", "height": 64, "width": 64, "count": 2, "dtype": "int16", "crs": grid.crs,
               "transform": grid.transform}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write((sar_like(64, 64, land=False) * 100).astype("int16"))
        ds.descriptions = tuple(HH_HV)
    with open_scene(path) as scene, pytest.raises(DataError, match="SAR band 'HH' holds integers without a scale"):
        check_scene_values(scene, HH_HV)
    with rasterio.open(path, "r+") as ds:
        ds.scales = (0.01, 0.01)
    with open_scene(path) as scene:
        assert check_scene_values(scene, HH_HV) == []  # scaled back to dB: plausible


def test_a_missing_ai4arctic_variable_is_named(tmp_path):
    path = write_ai4arctic(tmp_path / "hh.nc", data=sar_like(64, 64)[:1], bands=["nersc_sar_primary"])
    with open_scene(path) as scene, pytest.raises(MissingVariableError, match="no 'nersc_sar_secondary'"):
        scene.default_inputs


def test_undefined_ct_codes_are_named_and_counted():
    counts = undefined_ct_codes(["77", "abc", "-1", "77", "99", "", None, "46", "92", "5"],
                                [None, None, None, None, None, None, None, None, None, "W"])
    assert counts == {"77": 2, "abc": 1, "-1": 1}
    rows = ["poly_id;CT;POLY_TYPE", "1;77;I", "2;abc;I", "3;46;I", "4;-1;I", "5;;L"]
    with pytest.warns(UserWarning, match=r"chart.nc polygon_codes: 3 polygon\(s\) have CT codes SIGRID-3 does not define"):
        table = parse_polygon_codes(rows, source="chart.nc polygon_codes")
    assert math.isnan(table[1].sic) and table[3].sic == 0.5


def test_invalid_polygons_are_repaired_and_counted():
    bow_tie = Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])
    frame = gpd.GeoDataFrame({"CT": ["46", "92"]}, geometry=[bow_tie, box(3, 3, 4, 4)], crs="EPSG:3413")
    with pytest.warns(UserWarning, match=r"chart.gpkg: 1 invalid polygon\(s\)"):
        fixed = repair_polygons(frame, "chart.gpkg")
    assert fixed.geometry.is_valid.all() and fixed.geometry.iloc[0].area == pytest.approx(2.0)


def test_cli_refuses_an_absurd_scene_unless_told(tmp_path):
    scene = tmp_path / "s.nc"
    assert runner.invoke(app, ["synth", "sea-ice", str(scene), "--size", "128", "-q"]).exit_code == 0
    with netCDF4.Dataset(scene, "a") as ds:
        ds["nersc_sar_primary"][:] = ds["nersc_sar_primary"][:] * 100
    args = ["sample-patches", str(scene), "-o", str(tmp_path / "p.gpkg"), "--size", "32", "--n", "4"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "nersc_sar_primary" in refused.output and "implausible" in refused.output
    assert not (tmp_path / "p.gpkg").exists()
    assert runner.invoke(app, [*args, "--no-checks", "-q"]).exit_code == 0
