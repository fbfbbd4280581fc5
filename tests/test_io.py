"""Writers and readers: COG layout, CRS or GCPs kept, nodata explicit, atomic, AI4Arctic netCDF read back."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from scenes import affine_grid, gcp_grid, write_scene

from icetools.errors import CRSError, InputFileError, MissingVariableError, OutputExistsError
from icetools.io.raster import open_raster_writer, write_raster
from icetools.io.scene import open_scene


def test_geotiff_keeps_crs_nodata_band_names_and_tags(tmp_path):
    grid = affine_grid(600, 700)  # above one 512 block: tiled, with overviews
    data = np.arange(600 * 700, dtype="float32").reshape(600, 700)
    data[:10, :10] = np.nan
    path = write_raster(tmp_path / "a.tif", data, grid, nodata=float("nan"), band_names=["SIC"], tags={"model": "m"})
    with rasterio.open(path) as ds:
        assert ds.crs.to_epsg() == 3413 and ds.transform == grid.transform
        assert np.isnan(ds.nodata) and ds.descriptions == ("SIC",)
        assert ds.tags()["model"] == "m"
        assert ds.profile["tiled"] and ds.profile["blockxsize"] == 512
        assert ds.compression.name.lower() == "deflate"
        assert ds.overviews(1)  # cloud-optimised: overviews inside
        assert np.array_equal(ds.read(1), data, equal_nan=True)


def test_uint8_sic_nodata_is_255_not_zero(tmp_path):
    grid = affine_grid()
    data = np.zeros((grid.height, grid.width), dtype="uint8")
    data[0, 0] = 255
    path = write_raster(tmp_path / "p.tif", data, grid, nodata=255)
    with rasterio.open(path) as ds:
        assert ds.nodata == 255
        assert ds.read_masks(1)[0, 1] == 255  # 0 is open water, a valid value


def test_gcps_survive_the_round_trip(tmp_path):
    grid = gcp_grid()
    write_scene(tmp_path / "s.tif", grid)
    scene = open_scene(tmp_path / "s.tif")
    assert scene.grid.has_gcps and len(scene.grid.gcps) == 441
    assert scene.grid.same_pixels_as(grid)


def test_windowed_writer_is_atomic(tmp_path):
    grid = affine_grid()
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError):
        with open_raster_writer(target, grid, count=1, dtype="float32", nodata=float("nan")) as writer:
            writer.write(np.zeros((1, 10, grid.width), "float32"), Window(0, 0, grid.width, 10))
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_existing_output_needs_overwrite(tmp_path):
    grid = affine_grid()
    path = write_raster(tmp_path / "a.tif", np.zeros(grid.shape, "float32"), grid, nodata=float("nan"))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_raster(path, np.ones(grid.shape, "float32"), grid, nodata=float("nan"))
    write_raster(path, np.ones(grid.shape, "float32"), grid, nodata=float("nan"), overwrite=True)
    with rasterio.open(path) as ds:
        assert ds.read(1).min() == 1


def test_scene_reads_windows_beyond_the_edge_padded(tmp_path):
    grid = affine_grid()
    scene = open_scene(write_scene(tmp_path / "s.tif", grid, land=False))
    inner = scene.read(None, Window(0, 0, 8, 8))
    padded = scene.read(None, Window(-4, -4, 12, 12))
    assert padded.shape == (2, 12, 12)
    assert np.isnan(padded[:, :4]).all() and np.array_equal(padded[:, 4:, 4:], inner)
    reflected = scene.read(None, Window(-2, 0, 8, 8), pad_mode="reflect")
    assert np.array_equal(reflected[:, :, 0], inner[:, :, 2]) and np.array_equal(reflected[:, :, 1], inner[:, :, 1])


def test_band_aliases_and_missing_band(tmp_path):
    scene = open_scene(write_scene(tmp_path / "s.tif", affine_grid()))
    assert scene.read(["HH"]).shape[0] == 1  # HH -> nersc_sar_primary
    with pytest.raises(MissingVariableError, match="bands found"):
        scene.read(["sar_incidenceangle"])


def _write_ai4arctic(path, *, geolocation=True, ready=False):
    """A minimal AI4Arctic-layout file written by hand (independent of icetools.synth)."""
    import netCDF4

    h, w = 40, 50
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("sar_lines", h)
        ds.createDimension("sar_samples", w)
        hh = ds.createVariable("nersc_sar_primary", "f4", ("sar_lines", "sar_samples"))
        hv = ds.createVariable("nersc_sar_secondary", "f4", ("sar_lines", "sar_samples"))
        data = np.full((h, w), -15, "f4")
        data[:5, :5] = np.nan
        hh[:], hv[:] = data, data - 10
        ids = ds.createVariable("polygon_icechart", "f4", ("sar_lines", "sar_samples"))
        chart = np.full((h, w), 1, "f4")
        chart[:, 25:] = 2
        chart[:5, :5] = np.nan
        ids[:] = chart
        ds.createDimension("polygon_codes", 3)
        codes = ds.createVariable("polygon_codes", str, ("polygon_codes",))
        codes[0] = "poly_id;CT;CA;SA;FA;CB;SB;FB;CC;SC;FC;CN;CD;CF;POLY_TYPE"
        codes[1] = "1;92;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;I"
        codes[2] = "2;46;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;I"
        ds.createDimension("2km_grid_lines", 2)
        ds.createDimension("2km_grid_samples", 2)
        tb = ds.createVariable("btemp_18_7h", "f4", ("2km_grid_lines", "2km_grid_samples"))
        tb[:] = np.array([[200, 210], [220, 230]], "f4")
        if geolocation:
            lines, samples = np.meshgrid(np.linspace(0, h - 1, 21), np.linspace(0, w - 1, 21), indexing="ij")
            ds.createDimension("sar_grid_points", 441)
            for name, values in {"sar_grid_line": lines, "sar_grid_sample": samples,
                                 "sar_grid_latitude": 75 + lines * 4e-4, "sar_grid_longitude": -20 + samples * 1e-3}.items():
                var = ds.createVariable(name, "f8", ("sar_grid_points",))
                var[:] = values.ravel()
    return path


def test_ai4arctic_netcdf_reads_back(tmp_path):
    scene = open_scene(_write_ai4arctic(tmp_path / "s.nc"))
    assert scene.kind == "ai4arctic-raw"
    assert scene.default_inputs == ("nersc_sar_primary", "nersc_sar_secondary")
    assert scene.grid.has_gcps and len(scene.grid.gcps) == 441
    data = scene.read(None, Window(0, 0, 10, 10))
    assert np.isnan(data[:, :5, :5]).all() and np.isfinite(data[:, 5:, 5:]).all()
    ids = scene.read_polygon_ids()
    assert ids[0, 0] == 0 and ids[10, 10] == 1 and ids[10, 30] == 2
    table = scene.polygon_table()
    assert table[1].sic == 1.0 and table[2].sic == 0.5
    coarse = scene.read(["btemp_18_7h"])[0]  # 2 km field upsampled by nearest neighbour
    assert coarse[0, 0] == 200 and coarse[-1, -1] == 230 and coarse.shape == (40, 50)


def test_netcdf_without_geolocation_is_refused(tmp_path):
    with pytest.raises(CRSError, match="no geolocation"):
        open_scene(_write_ai4arctic(tmp_path / "s.nc", geolocation=False))


def test_bad_files(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        open_scene(tmp_path / "missing.nc")
    bad = tmp_path / "corrupt.nc"
    bad.write_bytes(b"CDF\x01garbage")
    with pytest.raises((InputFileError, MissingVariableError), match="corrupt.nc"):
        open_scene(bad)
    odd = tmp_path / "notes.txt"
    odd.write_text("hello")
    with pytest.raises(InputFileError, match="unknown scene format"):
        open_scene(odd)
    broken_tif = tmp_path / "broken.tif"
    broken_tif.write_bytes(b"II*\x00" + b"\x00" * 20)
    with pytest.raises(InputFileError, match="broken.tif"):
        open_scene(broken_tif)
