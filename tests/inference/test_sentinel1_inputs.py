"""The Sentinel-1 files users hold, predicted with the bundled sea-ice model: HH/HV in dB, undescribed
bands, linear sigma0, and anything else named with --bands. All give the same SIC as the dB file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from fixtures import affine_grid, sar_like, write_scene
from typer.testing import CliRunner

from icetools.cli.app import app
from icetools.inference import default_model_dir, load_predictor

SHAPE = (72, 88)


def _scene(tmp_path: Path, name: str, names, *, linear: bool = False) -> Path:
    data = sar_like(*SHAPE, seed=4)
    if linear:
        data = np.power(10.0, data / 10).astype("float32")
    return write_scene(tmp_path / name, affine_grid(*SHAPE), data=data, band_names=names)


def _predict(tmp_path: Path, scene: Path, *extra: str) -> np.ndarray:
    out = tmp_path / f"{scene.stem}_sic.tif"
    result = CliRunner().invoke(app, ["predict", str(scene), "-o", str(out), "--device", "cpu", *extra])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as ds:
        return ds.read(1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> np.ndarray:
    """The bundled model on a GeoTIFF with bands described HH and HV, in dB (the issue's first try)."""
    tmp_path = tmp_path_factory.mktemp("s1")
    return _predict(tmp_path, _scene(tmp_path, "hh_hv.tif", ["HH", "HV"]))


def test_hh_hv_geotiff_is_predicted(reference: np.ndarray) -> None:
    assert np.isfinite(reference).mean() > 0.9 and np.nanmin(reference) >= 0 and np.nanmax(reference) <= 1


@pytest.mark.parametrize(
    ("names", "linear"),
    [(["", ""], False), (["Sigma0_HH_db", "Sigma0_HV_db"], False), (["Sigma0_HH", "Sigma0_HV"], True),
     (["", ""], True)],
    ids=["undescribed-dB", "snap-dB", "snap-linear", "undescribed-linear"],
)
def test_other_spellings_and_linear_sigma0_give_the_same_sic(
    tmp_path: Path, reference: np.ndarray, names: list[str], linear: bool
) -> None:
    predicted = _predict(tmp_path, _scene(tmp_path, "s.tif", names, linear=linear))
    np.testing.assert_allclose(predicted, reference, atol=1e-4)  # linear -> dB on reading: float32 rounding


def test_bands_option_maps_any_other_name(tmp_path: Path, reference: np.ndarray) -> None:
    scene = _scene(tmp_path, "odd.tif", ["chan_a", "chan_b"])
    refused = CliRunner().invoke(app, ["predict", str(scene), "-o", str(tmp_path / "x.tif")])
    assert refused.exit_code == 1
    assert "lacks band(s) nersc_sar_primary, nersc_sar_secondary" in refused.output and "bands found: chan_a, chan_b" in refused.output
    mapped = _predict(tmp_path, scene, "--bands", "nersc_sar_primary=chan_a,nersc_sar_secondary=2")
    np.testing.assert_allclose(mapped, reference, atol=1e-6)
    for bad in ("nersc_sar_primary", "HH=chan_a"):
        result = CliRunner().invoke(app, ["predict", str(scene), "-o", str(tmp_path / "y.tif"), "--bands", bad])
        assert result.exit_code == 2 and "bands" in result.output
    assert not (tmp_path / "y.tif").exists()


def test_tags_name_the_model_by_name_and_hash_not_by_path(tmp_path: Path) -> None:
    out = tmp_path / "o.tif"
    assert CliRunner().invoke(app, ["predict", str(_scene(tmp_path, "s.tif", ["HH", "HV"])), "-o", str(out)]).exit_code == 0
    predictor = load_predictor(default_model_dir(), "cpu")
    with rasterio.open(out) as ds:
        tags = ds.tags()
    assert tags["model"] == f"default_sic_model@sha256:{predictor.fingerprint}" and len(predictor.fingerprint) == 16
    assert all(not value.startswith("/") and str(tmp_path) not in value for value in tags.values())
    assert tags["scene"] == "s.tif" and tags["scene_path"] == "s.tif"
