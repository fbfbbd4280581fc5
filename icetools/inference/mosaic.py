"""The one probability pass over a scene.

Predict runs it to render its products; ``--merge refine`` and the refiner's training both run it
(:mod:`icetools.inference.refinement`) to write a crude mosaic, so the refiner learns from exactly
the mosaics it will refine.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from rasterio.windows import Window

from icetools.errors import DataError
from icetools.inference.predictor import Predictor, choose_batch, scene_input_spec
from icetools.inference.windows import (
    PREFETCH_ROWS,
    MergeStats,
    RowSink,
    Strip,
    StripReader,
    WindowPlan,
    sliding_window_merge,
    window_weights,
)
from icetools.inputs import InputSpec, as_input_spec, read_inputs
from icetools.io.scene import Scene
from icetools.progress import Progress

CUDA_PREFETCH_ROWS = 2  # a GPU finishes a row's batches sooner than the row is read: keep two ready


def scene_strip_reader(
    scene: Scene,
    inputs: InputSpec | Sequence[str],
    *,
    mean: np.ndarray | None,
    std: np.ndarray | None,
    lock: threading.Lock,
) -> StripReader:
    """Read full-width rows of the model's channels and normalise them ((x - mean) / std, NaN kept).

    ``inputs``: the bands and their transforms (a plain list of band names: as they are), read
    through :func:`icetools.inputs.read_inputs` exactly as training reads them. ``lock`` serialises
    reads of files that are not thread-safe (netCDF), shared with anything else that reads the same
    scene during the pass (the polygon ids of a chart).
    """
    spec = as_input_spec(inputs)

    def read(row0: int, row1: int) -> Strip:
        with lock:
            data, valid = read_inputs(scene, Window(0, row0, scene.width, row1 - row0), spec)
        if mean is not None and std is not None:
            data -= mean[:, None, None]
            data /= std[:, None, None]
        return Strip(row0, data, valid, (scene.height, scene.width))

    return read


def prefetch_rows(predictor: Predictor) -> int:
    """Window rows read ahead of the model (see :mod:`.prefetch`): more on a GPU than on the CPU, where
    the reader shares the cores with the model."""
    return CUDA_PREFETCH_ROWS if predictor.device.type == "cuda" else PREFETCH_ROWS


def probability_pass(
    scene: Scene,
    predictor: Predictor,
    plan: WindowPlan,
    *,
    write_rows: RowSink,
    bands: Sequence[str] | None = None,
    merge: str = "average",
    batch: int | None = None,
    lock: threading.Lock | None = None,
    progress: Progress | None = None,
) -> MergeStats:
    """``predictor`` over every window of ``plan``, merged rows handed to ``write_rows`` top to bottom.

    ``bands`` default to the scene bands the model names, with their transforms (checked); a crude
    mosaic passes its own (read as they are). ``batch`` None: chosen for the device
    (:func:`~icetools.inference.predictor.choose_batch`); reads run :func:`prefetch_rows` ahead.
    A scene without a single valid pixel is a DataError, raised inside the caller's writers so no
    output appears.
    """
    spec = InputSpec.identity(list(bands)) if bands is not None else scene_input_spec(scene, predictor)
    stats = sliding_window_merge(
        scene_strip_reader(scene, spec, mean=predictor.mean, std=predictor.std, lock=lock or threading.Lock()),
        predictor,
        plan,
        channels=predictor.out_channels(),
        weights=window_weights(plan.tile, merge),
        write_rows=write_rows,
        batch=choose_batch(predictor, plan.tile) if batch is None else batch,
        context_scales=predictor.context_scales,
        progress=progress,
        prefetch=prefetch_rows(predictor),
    )
    if stats.valid_pixels == 0:
        raise DataError(
            f"{scene.path.name} has no valid pixel in {', '.join(spec.bands)} (all NaN / nodata / land): "
            "nothing to predict"
        )
    return stats
