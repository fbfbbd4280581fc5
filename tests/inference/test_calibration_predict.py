"""predict applies a SIC model's validated calibration (icetools.calibration), records it, and skips it on request."""

from __future__ import annotations

import numpy as np
import rasterio

from icetools.inference import make_predictor

from .helpers import CONFIG, fixed_conv, predict, read, scene_array, whole_image, write_test_scene

CALIBRATED = {**CONFIG, "sic_calibration": {"floor": 0.2, "ceiling": 0.8}}


def test_predict_writes_the_calibrated_sic_and_records_the_stretch(tmp_path) -> None:
    data = scene_array(40, 56, seed=7)
    scene = write_test_scene(tmp_path / "scene.tif", data)
    conv = fixed_conv()
    raw = whole_image(conv, data)[0]
    predict(scene, conv, CALIBRATED, tmp_path / "sic.tif")
    np.testing.assert_allclose(read(tmp_path / "sic.tif"), np.clip((raw - 0.2) / 0.6, 0, 1), atol=1e-5)
    with rasterio.open(tmp_path / "sic.tif") as ds:
        assert ds.tags()["sic_calibration"] == "floor 0.2000, ceiling 0.8000"

    predict(scene, conv, CALIBRATED, tmp_path / "raw.tif", calibrate=False)  # --no-calibration
    np.testing.assert_allclose(read(tmp_path / "raw.tif"), raw, atol=1e-5)
    with rasterio.open(tmp_path / "raw.tif") as ds:
        assert ds.tags()["sic_calibration"] == "none"


def test_only_sic_models_are_calibrated() -> None:
    assert make_predictor(fixed_conv(), CALIBRATED, device="cpu").calibration is not None
    assert make_predictor(fixed_conv(), {**CALIBRATED, "task": "binary"}, device="cpu").calibration is None
    assert make_predictor(fixed_conv(), CONFIG, device="cpu").calibration is None  # models from before
