"""Band names resolved in one place: Sentinel-1 aliases, band numbers, HH/HV by position, sigma0 units."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest
import rasterio
from fixtures import affine_grid, sar_like, write_ai4arctic, write_scene
from rasterio.windows import Window

from icetools.errors import ConfigError, MissingVariableError
from icetools.inputs import (
    InputSpec,
    bind_inputs,
    model_input_units,
    parse_band_map,
    read_inputs,
    recorded_input_units,
)
from icetools.io.bands import (
    DB,
    LINEAR,
    conversion,
    convert,
    sar_polarisation,
    units_from_name,
    units_from_text,
    units_from_values,
)
from icetools.io.scene import AmbiguousBandError, open_scene
from icetools.modeldir import ModelConfig

SAR = ("nersc_sar_primary", "nersc_sar_secondary")
SPEC = InputSpec.identity(list(SAR))


def _tif(tmp_path: Path, names, data=None, name="s.tif") -> Path:
    data = sar_like(32, 40, land=False) if data is None else data
    return write_scene(tmp_path / name, affine_grid(32, 40), data=data, band_names=names)


@pytest.mark.parametrize(
    ("name", "polarisation"),
    [("HH", "HH"), ("hv", "HV"), ("sigma0_HH", "HH"), ("Sigma0_HV_db", "HV"), ("HH_dB", "HH"),
     ("nersc_sar_primary", "HH"), ("NERSC_SAR_SECONDARY", "HV"), ("s0_hh", "HH"), ("VV", None), ("phase", None),
     ("Amplitude_HH", None)],
)
def test_polarisation_of_the_usual_sentinel1_names(name: str, polarisation: str | None) -> None:
    assert sar_polarisation(name) == polarisation


def test_units_from_words_names_and_values() -> None:
    assert units_from_text("dB") == DB and units_from_text("decibel") == DB and units_from_text("linear") == LINEAR
    assert units_from_text("") is None and units_from_text("K") is None
    assert units_from_name("Sigma0_HH_db") == DB and units_from_name("HH_dB") == DB
    assert units_from_name("Sigma0_HH") == LINEAR and units_from_name("hh_linear") == LINEAR
    assert units_from_name("HH") is None and units_from_name("nersc_sar_primary") is None
    rng = np.random.default_rng(0)
    db = rng.normal(-15, 3, 1000)
    assert units_from_values(db) == DB
    assert units_from_values(10 ** (db / 10)) == LINEAR
    assert units_from_values(rng.normal(0, 1, 1000)) is None  # standard-scaled: neither
    assert units_from_values(np.full(5, -15.0)) is None  # too few values to tell


def test_conversion_between_linear_and_db() -> None:
    assert conversion(LINEAR, DB) == "linear->dB" and conversion(DB, DB) == "" and conversion(None, DB) == ""
    values = np.array([0.1, 0.01, 0.0, -1.0, np.nan], dtype="float32")
    out = convert(values, "linear->dB")
    np.testing.assert_allclose(out[:2], [-10.0, -20.0], rtol=1e-6)
    assert np.isnan(out[2:]).all()  # no dB value for 0 or below: invalid, not -inf
    np.testing.assert_allclose(convert(np.array([-10.0, 0.0], "float32"), "dB->linear"), [0.1, 1.0], rtol=1e-6)


def test_geotiff_hh_hv_names_answer_the_ai4arctic_names(tmp_path: Path) -> None:
    for names in (("HH", "HV"), ("sigma0_hh", "SIGMA0_HV"), ("Sigma0_HH_db", "Sigma0_HV_db")):
        with open_scene(_tif(tmp_path, names, name=f"{names[0]}.tif")) as scene:
            assert scene.resolve(list(SAR)) == list(names)
            assert scene.resolve(["hh", "HV"]) == list(names)


def test_undescribed_two_band_file_is_hh_then_hv_and_numbers_name_bands(tmp_path: Path) -> None:
    with open_scene(_tif(tmp_path, ["", ""])) as scene:
        assert scene.band_names == ("band1", "band2")
        assert scene.resolve(list(SAR)) == ["band1", "band2"]
        assert scene.resolve(["2", "band1"]) == ["band2", "band1"]
    three = np.concatenate([sar_like(32, 40, land=False), sar_like(32, 40, land=False)[:1]])
    with open_scene(_tif(tmp_path, ["", "", ""], data=three, name="three.tif")) as scene:
        with pytest.raises(MissingVariableError, match="no band 'nersc_sar_primary'"):
            scene.resolve(["nersc_sar_primary"])  # the HH-first rule is for two-band files only


def test_two_bands_of_one_polarisation_must_be_chosen(tmp_path: Path) -> None:
    with open_scene(_tif(tmp_path, ["Sigma0_HH", "Sigma0_HH_db"])) as scene:
        with pytest.raises(AmbiguousBandError, match="several HH bands .*Sigma0_HH, Sigma0_HH_db"):
            scene.resolve(["nersc_sar_primary"])
        assert scene.resolve(["sigma0_hh_db"]) == ["Sigma0_HH_db"]  # the same spelling in another case


def test_band_units_from_gdal_unit_type_name_values_and_ai4arctic(tmp_path: Path) -> None:
    path = _tif(tmp_path, ["HH", "HV"])
    with rasterio.open(path, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        ds.set_band_unit(2, "linear")
    with open_scene(path) as scene:
        assert scene.band_unit("HV") == LINEAR  # the file's word first, even over its values
        assert scene.band_unit("nersc_sar_primary") == DB  # values around -15 dB
    linear = np.power(10.0, sar_like(32, 40, land=False) / 10).astype("float32")
    with open_scene(_tif(tmp_path, ["", ""], data=linear, name="lin.tif")) as scene:
        assert scene.band_unit("band1") == LINEAR and scene.band_unit("HV") == LINEAR
    with open_scene(write_ai4arctic(tmp_path / "a.nc")) as scene:
        assert scene.band_unit("HH") == DB  # the raw AI4Arctic layout is in dB


def test_bind_maps_converts_and_names_every_missing_band(tmp_path: Path) -> None:
    data = sar_like(32, 40, land=False)
    linear = np.power(10.0, data / 10).astype("float32")
    with open_scene(_tif(tmp_path, ["Sigma0_HH", "Sigma0_HV"], data=linear)) as scene:
        bound = bind_inputs(scene, SPEC, units={"nersc_sar_primary": DB, "nersc_sar_secondary": DB})
        assert bound.sources == ("Sigma0_HH", "Sigma0_HV") and bound.conversions == ("linear->dB",) * 2
        assert "nersc_sar_primary <- Sigma0_HH (linear->dB)" in bound.describe_binding()
        channels, valid = read_inputs(scene, Window(0, 0, 40, 32), bound)
        np.testing.assert_allclose(channels, data, atol=1e-4)
        assert valid.all()
        assert bind_inputs(scene, SPEC).conversions == ("", "")  # no units recorded: read as they are
    with open_scene(_tif(tmp_path, ["a", "b"], name="ab.tif")) as scene:
        with pytest.raises(MissingVariableError, match="lacks band.s. nersc_sar_primary, nersc_sar_secondary .*bands found: a, b; map them with bands"):
            bind_inputs(scene, SPEC)
        bound = bind_inputs(scene, SPEC, band_map={"nersc_sar_primary": "b", "nersc_sar_secondary": "1"})
        assert bound.sources == ("b", "a")
        with pytest.raises(MissingVariableError, match="bands maps nersc_sar_primary to 'c'"):
            bind_inputs(scene, SPEC, band_map={"nersc_sar_primary": "c"})
        with pytest.raises(ConfigError, match="bands maps 'HH', which the model does not read"):
            bind_inputs(scene, SPEC, band_map={"HH": "a"})


def test_band_map_text() -> None:
    assert parse_band_map("nersc_sar_primary=HH, nersc_sar_secondary=2") == {
        "nersc_sar_primary": "HH", "nersc_sar_secondary": "2"}
    assert parse_band_map(None) == {}
    for bad in ("HH", "=HH", "a=b,a=c"):
        with pytest.raises(ConfigError):
            parse_band_map(bad)


def test_model_units_recorded_or_told_by_the_normalisation() -> None:
    assert model_input_units({"inputs": list(SAR), "input_units": {"nersc_sar_primary": "dB"}}) == {"nersc_sar_primary": DB}
    in_db = {"inputs": list(SAR), "normalization": {"mean": [-14.9, -25.3], "std": [4.5, 4.1]}}
    assert model_input_units(in_db) == {"nersc_sar_primary": DB, "nersc_sar_secondary": DB}
    scaled = {"inputs": list(SAR), "normalization": {"mean": [0.01, -0.02], "std": [1.0, 1.0]}}
    assert model_input_units(scaled) == {}
    phase = {"inputs": ["phase"], "normalization": {"mean": [-3.0], "std": [1.0]}}
    assert model_input_units(phase) == {}  # not a backscatter band
    with pytest.raises(ConfigError, match="input_units"):
        ModelConfig(inputs=list(SAR), input_units={"HH": "dB"})
    assert ModelConfig(inputs=list(SAR), input_units={"nersc_sar_primary": "dB"}).to_dict()["input_units"]


def test_training_records_the_units_of_its_scenes(tmp_path: Path) -> None:
    nc = write_ai4arctic(tmp_path / "a.nc")
    assert recorded_input_units([nc], list(SAR)) == {"nersc_sar_primary": DB, "nersc_sar_secondary": DB}
    linear = np.power(10.0, sar_like(32, 40, land=False) / 10).astype("float32")
    tif = _tif(tmp_path, ["HH", "HV"], data=linear)
    assert recorded_input_units([tif], ["HH", "HV", "probability"]) == {"HH": LINEAR, "HV": LINEAR}
    assert recorded_input_units([tmp_path / "gone.nc"], list(SAR)) == {}


def test_ready_to_train_sar_is_neither_db_nor_linear(tmp_path: Path) -> None:
    path = write_ai4arctic(tmp_path / "r.nc", geolocation="grid2d")
    with netCDF4.Dataset(path, "a") as ds:
        ds.createVariable("SIC", "u1", ("sar_lines", "sar_samples"))[:] = 0
    with open_scene(path) as scene:
        assert scene.kind == "ai4arctic-ready" and scene.band_unit("nersc_sar_primary") is None
