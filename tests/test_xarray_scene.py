"""Scenes and xarray: ``Scene.to_xarray`` round trips, and the xarray engine's CF decoding against the
netCDF4 reader's, bit for bit on the same windows."""

from __future__ import annotations

import json
import pickle

import netCDF4
import numpy as np
import pytest
import xarray as xr
from pyproj import CRS
from rasterio.windows import Window

from icetools.errors import ConfigError
from icetools.io.scene import INCIDENCE_BAND, open_scene
from icetools.io.xarray_scene import decode_cf, has_dask
from fixtures import EPSG3413, PIXEL, affine_grid, write_ai4arctic, write_scene

HEIGHT, WIDTH = 60, 70
WINDOWS = [Window(5, 7, 40, 30), Window(0, 0, WIDTH, HEIGHT), Window(38, 28, 32, 32), Window(50, 40, 32, 32), Window(-8, -4, 24, 20)]
INSIDE = WINDOWS[:3]  # the rest reach past the edge: read() pads them


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit, NaN included."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.fixture(scope="module")
def cf_scene(tmp_path_factory):
    """An AI4Arctic raw-layout file with every CF encoding the readers decode: NaN and -9999 fills,
    packed int16 (float32 scale/offset), int32 packed with float64 scale, uint8 with a fill, a
    missing_value, uint8 labels (255 = none), a 2 km field and incidence-angle tie points."""
    path = tmp_path_factory.mktemp("cf") / "scene.nc"
    rng = np.random.default_rng(3)
    data = rng.normal(-15, 3, size=(2, HEIGHT, WIDTH)).astype("f4")
    data[:, :6, :6] = np.nan
    write_ai4arctic(path, data=data, coarse={"btemp_6_9h": rng.normal(250, 5, size=(3, 4))})
    dims = ("sar_lines", "sar_samples")
    with netCDF4.Dataset(path, "a") as ds:
        lines = ds["sar_grid_line"][:]
        ds.createVariable("sar_grid_incidenceangle", "f8", ("sar_grid_points",))[:] = 20 + lines * 0.1
        encodings = {
            "filled": ("f4", {"fill_value": np.float32(-9999)}, {}, rng.normal(0, 1, (HEIGHT, WIDTH))),
            "packed16": ("i2", {"fill_value": np.int16(-32768)},
                         {"scale_factor": np.float32(0.01), "add_offset": np.float32(-30)},
                         rng.integers(-3000, 3000, (HEIGHT, WIDTH))),
            "packed32": ("i4", {}, {"scale_factor": np.float64(1e-4), "add_offset": np.float64(2.5)},
                         rng.integers(-10**8, 10**8, (HEIGHT, WIDTH))),
            "classes": ("u1", {"fill_value": np.uint8(200)}, {}, rng.integers(0, 256, (HEIGHT, WIDTH))),
            "missing": ("f4", {}, {"missing_value": np.float32(-1)}, rng.integers(-1, 3, (HEIGHT, WIDTH))),
            "SIC": ("u1", {}, {}, rng.choice([0, 5, 10, 255], (HEIGHT, WIDTH))),
        }
        for name, (dtype, create, attrs, values) in encodings.items():
            var = ds.createVariable(name, dtype, dims, **create)
            var.setncatts(attrs)
            var.set_auto_maskandscale(False)
            raw = np.asarray(values).astype(dtype)
            if "fill_value" in create:
                raw[:3, :3] = create["fill_value"]
            var[:] = raw
    return path


def test_decode_cf_matches_xarray_on_every_encoding(cf_scene):
    with netCDF4.Dataset(cf_scene) as raw, xr.open_dataset(cf_scene, mask_and_scale=True) as decoded:
        raw.set_auto_maskandscale(False)
        for name in ("filled", "packed16", "packed32", "classes", "missing", "nersc_sar_primary"):
            var = raw[name]
            attrs = {k: var.getncattr(k) for k in var.ncattrs()}
            ours = decode_cf(var[:], attrs)
            assert same(ours, decoded[name].values.astype("float32")), name
    assert np.isnan(ours[:6, :6]).all()


def test_the_xarray_engine_reads_every_band_bit_for_bit_like_netcdf4(cf_scene):
    with open_scene(cf_scene) as default, open_scene(cf_scene, engine="xarray") as through_xarray:
        assert through_xarray.band_names == default.band_names
        assert {"packed16", "SIC", "btemp_6_9h", INCIDENCE_BAND} <= set(default.band_names)
        for name in default.band_names:
            for window in WINDOWS:
                assert same(through_xarray.read([name], window), default.read([name], window)), (name, window)
        sic = default.read(["SIC"])[0]
        assert np.isnan(sic).any() and set(np.unique(sic[np.isfinite(sic)])) <= {0.0, 5.0, 10.0}
        packed = default.read(["packed16"])[0]
        assert np.isnan(packed[:3, :3]).all() and np.nanmax(np.abs(packed + 30)) <= 30.0


def test_an_xarray_engine_scene_pickles_and_reads_after(cf_scene):
    scene = open_scene(cf_scene, engine="xarray")
    before = scene.read(["packed16"], WINDOWS[0])
    again = pickle.loads(pickle.dumps(scene))
    assert same(again.read(["packed16"], WINDOWS[0]), before)


def test_unknown_engine_is_refused(cf_scene):
    with pytest.raises(ConfigError, match="engine"):
        open_scene(cf_scene, engine="h5py")


@pytest.mark.parametrize("chunks", ["auto", None])
def test_ai4arctic_to_xarray_round_trip(cf_scene, tmp_path, chunks):
    scene = open_scene(cf_scene)
    ds = scene.to_xarray(chunks=chunks)
    assert list(ds.data_vars) == list(scene.band_names)
    assert (ds.sizes["y"], ds.sizes["x"]) == (HEIGHT, WIDTH)
    for name in scene.band_names:
        variable = ds[name].variable
        assert not variable._in_memory  # lazy: nothing read yet
        assert (variable.chunks is not None) == (chunks is not None and has_dask()), name
        assert ds[name].attrs["grid_mapping"] == "spatial_ref"
        for window in INSIDE:
            rows = slice(int(window.row_off), int(window.row_off + window.height))
            cols = slice(int(window.col_off), int(window.col_off + window.width))
            got = ds[name].isel(y=rows, x=cols).values.astype("float32")
            assert same(got, scene.read([name], window)[0]), (name, window)
    strided = ds["packed16"][::3, 5].values.astype("float32")  # steps and integer indices through the lazy path
    assert same(strided, scene.read(["packed16"])[0][::3, 5])
    assert same(ds["btemp_6_9h"][-1, ::-7].values, scene.read(["btemp_6_9h"])[0][-1, ::-7])
    # A GCP grid: pixel-centre image coordinates, the GCPs' CRS and the GCPs themselves.
    assert same(ds["y"].values, np.arange(HEIGHT) + 0.5) and same(ds["x"].values, np.arange(WIDTH) + 0.5)
    ref = ds["spatial_ref"].attrs
    assert CRS.from_wkt(ref["crs_wkt"]).equals(CRS.from_epsg(4326))
    gcps = json.loads(ref["gcps"])["features"]
    assert len(gcps) == len(scene.grid.gcps)
    first = scene.grid.gcps[0]
    assert gcps[0]["properties"]["row"] == first.row and gcps[0]["geometry"]["coordinates"][:2] == [first.x, first.y]
    # ... and everything survives a netCDF file written from the dataset.
    ds.drop_encoding().to_netcdf(tmp_path / "copy.nc")
    with xr.open_dataset(tmp_path / "copy.nc") as copy:
        assert same(copy["polygon_icechart"].values.astype("float32"), scene.read(["polygon_icechart"])[0])
        assert CRS.from_wkt(copy["spatial_ref"].attrs["crs_wkt"]).equals(CRS.from_epsg(4326))


def test_geotiff_to_xarray_round_trip(tmp_path):
    grid = affine_grid(64, 80)
    path = write_scene(tmp_path / "scene.tif", grid, seed=4, band_names=("HH", "HV"))
    scene = open_scene(path)
    ds = scene.to_xarray()
    assert list(ds.data_vars) == ["HH", "HV"]
    image = scene.read(["HH", "HV"])
    assert np.isnan(image).any()  # the NaN land corner comes through as NaN
    assert same(np.stack([ds["HH"].values, ds["HV"].values]), image)
    x0, y0 = grid.transform.c, grid.transform.f
    assert same(ds["x"].values, x0 + (np.arange(80) + 0.5) * PIXEL)
    assert same(ds["y"].values, y0 - (np.arange(64) + 0.5) * PIXEL)
    ref = ds["spatial_ref"].attrs
    assert CRS.from_wkt(ref["crs_wkt"]).equals(EPSG3413)
    assert [float(v) for v in ref["GeoTransform"].split()] == list(grid.transform.to_gdal())
    window = ds.sel(x=slice(x0 + 400, x0 + 1200), y=slice(y0 - 400, y0 - 800))  # by map coordinates
    assert same(window["HV"].values, scene.read(["HV"], Window(10, 10, 20, 10))[0])
    ds.to_netcdf(tmp_path / "copy.nc")
    with xr.open_dataset(tmp_path / "copy.nc") as copy:
        assert same(copy["HH"].values, image[0]) and same(copy["x"].values, ds["x"].values)
        assert CRS.from_wkt(copy["spatial_ref"].attrs["crs_wkt"]).equals(EPSG3413)
