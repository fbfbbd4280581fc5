"""Writers and readers: COG layout, CRS or GCPs kept, nodata explicit, atomic, AI4Arctic netCDF read back."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from fixtures import affine_grid, ai4arctic_bands, gcp_grid, two_polygon_chart, write_ai4arctic, write_scene

from icetools.errors import CRSError, InputFileError, MissingVariableError, OutputExistsError
from icetools.io.raster import open_raster_writer, write_raster
from icetools.io.scene import TiePointField, open_scene


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


def _write_ai4arctic(path, *, geolocation: bool = True):
    """A 40 x 50 raw-layout file with a land corner, a two-polygon chart and a 2 km brightness field."""
    return write_ai4arctic(
        path,
        data=ai4arctic_bands(40, 50, land=5),
        chart=two_polygon_chart(40, 50, land=5),
        coarse={"btemp_18_7h": [[200, 210], [220, 230]]},
        geolocation="tie-points" if geolocation else None,
    )


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


# --- the incidence angle from the tie points ------------------------------------------------------

TIE_LINES = np.array([0.0, 13.0, 26.0, 39.0])
TIE_SAMPLES = np.array([0.0, 10.0, 20.0, 30.0, 40.0, 49.0])


def _incidence(lines, samples):
    """Degrees: linear across range and along track, plus a product term bilinear interpolation keeps exact."""
    return 19.5 + 0.55 * samples + 0.02 * lines + 1e-3 * lines * samples


def _write_with_incidence(path, *, layout: str = "tie-points"):
    import netCDF4

    if layout == "tie-points":
        lines, samples = np.meshgrid(TIE_LINES, TIE_SAMPLES, indexing="ij")
        points = {"sar_grid_line": lines.ravel(), "sar_grid_sample": samples.ravel(),
                  "sar_grid_latitude": 75.0 + lines.ravel() * 4e-4,
                  "sar_grid_longitude": -20.0 + samples.ravel() * 1e-3}
        write_ai4arctic(path, data=ai4arctic_bands(40, 50, land=5), points=points)
        with netCDF4.Dataset(path, "a") as ds:
            angle = ds.createVariable("sar_grid_incidenceangle", "f8", ("sar_grid_points",))
            angle[:] = _incidence(lines, samples).ravel()
    else:  # ready-to-train: scaled SAR with 0 on land, a 2 x 2 grid at the corners, dims (sample points, line points)
        write_ai4arctic(path, data=np.nan_to_num(ai4arctic_bands(40, 50, land=5) / 10), geolocation="grid2d")
        samples, lines = np.meshgrid([0.0, 49.0], [0.0, 39.0], indexing="ij")
        with netCDF4.Dataset(path, "a") as ds:
            dims = ("sar_sample_2dgrid_points", "sar_line_2dgrid_points")
            ds.createVariable("sar_grid2d_incidenceangle", "f8", dims)[:] = _incidence(lines, samples)
    return path


def test_incidence_angle_is_a_band_read_by_window_exact_at_the_tie_points(tmp_path):
    scene = open_scene(_write_with_incidence(tmp_path / "s.nc"))
    assert "sar_incidence_angle" in scene.band_names
    assert "sar_incidence_angle" not in scene.default_inputs  # offered, not imposed
    window = Window(5, 10, 40, 25)  # columns 5..44, rows 10..34
    angle = scene.read(["sar_incidence_angle"], window)[0]
    assert angle.shape == (25, 40) and angle.dtype == np.float32
    for line in TIE_LINES[(TIE_LINES >= 10) & (TIE_LINES < 35)]:
        for sample in TIE_SAMPLES[(TIE_SAMPLES >= 5) & (TIE_SAMPLES < 45)]:
            assert angle[int(line) - 10, int(sample) - 5] == np.float32(_incidence(line, sample))
    rows, cols = np.mgrid[10:35, 5:45]
    np.testing.assert_allclose(angle, _incidence(rows, cols), rtol=1e-6)  # bilinear between them
    whole = scene.read(["sar_incidence_angle"])[0]
    np.testing.assert_array_equal(whole[10:35, 5:45], angle)
    beyond = scene.read(["sar_incidence_angle"], Window(45, 35, 10, 10))[0]
    assert np.isfinite(beyond[:5, :5]).all() and np.isnan(beyond[5:]).all()  # padded beyond the scene edge


def test_incidence_angle_of_a_ready_to_train_file(tmp_path):
    scene = open_scene(_write_with_incidence(tmp_path / "r.nc", layout="grid2d"))
    angle = scene.read(["sar_incidence_angle"])[0]
    for line, sample in ((0, 0), (0, 49), (39, 0), (39, 49)):
        assert angle[line, sample] == np.float32(_incidence(line, sample))
    rows, cols = np.mgrid[:40, :50]
    np.testing.assert_allclose(angle, _incidence(rows, cols), rtol=1e-6)
    assert scene.kind == "ai4arctic-ready"
    valid = scene.valid_mask(None, ["HH", "sar_incidence_angle"])
    assert not valid[:5, :5].any() and valid[5:, 5:].all()  # all-zero SAR is land, whatever the angle says


def test_a_scene_with_incidence_angles_still_pickles(tmp_path):
    import pickle

    scene = open_scene(_write_with_incidence(tmp_path / "s.nc"))
    before = scene.read(["sar_incidence_angle"], Window(0, 0, 8, 8))
    again = pickle.loads(pickle.dumps(scene))
    np.testing.assert_array_equal(again.read(["sar_incidence_angle"], Window(0, 0, 8, 8)), before)


def test_no_incidence_band_without_incidence_tie_points(tmp_path):
    scene = open_scene(_write_ai4arctic(tmp_path / "s.nc"))
    assert "sar_incidence_angle" not in scene.band_names
    with pytest.raises(MissingVariableError, match="no band 'sar_incidence_angle'"):
        scene.read(["sar_incidence_angle"])


def test_scattered_tie_points_are_interpolated_too():
    lines = np.array([0.0, 0.0, 20.0, 20.0, 9.0])
    samples = np.array([0.0, 30.0, 0.0, 30.0, 14.0])
    field = TiePointField(lines, samples, _incidence(lines, samples))  # not a full grid: triangulated
    values = field.read(Window(0, 0, 31, 21))
    for line, sample in zip(lines, samples):
        assert values[int(line), int(sample)] == np.float32(_incidence(line, sample))
    beyond = field.read(Window(40, 30, 2, 2))  # outside the triangulation: the nearest tie point
    assert np.all(beyond == np.float32(_incidence(20.0, 30.0)))
