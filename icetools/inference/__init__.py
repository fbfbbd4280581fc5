"""Inference: a model over whole scenes, streamed window-row by window-row, merged by overlap.

Layers, each importing only those above it:

- ``windows``: the engine (window plan, weights, strips, rolling accumulator, ``sliding_window_merge``);
  arrays and callables only.
- ``predictor``: a model and its config.json contract (``Predictor``, ``load_predictor``), refiner pairing.
- ``mosaic``: the one probability pass over a scene.
- ``products``: how merged probabilities become files.
- ``refinement``: what a refiner reads (the crude mosaic + image), its pairing, and when predict falls back.
- ``run``: ``predict_scene(PredictJob)``.

Nothing here imports :mod:`icetools.refine`; the refiner's training imports this package.
"""

from __future__ import annotations

from icetools.inference.mosaic import probability_pass, scene_strip_reader
from icetools.inference.predictor import (
    DEFAULT_TILE,
    Predictor,
    check_pairing,
    default_model_dir,
    load_predictor,
    make_predictor,
    model_classes,
    scene_input_spec,
    scene_inputs,
)
from icetools.inference.products import (
    ICE_EDGE_SIC,
    MASK_NODATA,
    PERCENT_NODATA,
    Product,
    plan_products,
    sic_of,
    to_mask,
    to_percent,
)
from icetools.inference.refinement import CRUDE_MERGE, crude_band_names
from icetools.inference.run import MERGES, PredictJob, predict_scene
from icetools.inference.windows import (
    MergeStats,
    RowAccumulator,
    Strip,
    WindowPlan,
    array_strip_reader,
    plan_windows,
    sliding_window_merge,
    window_starts,
    window_weights,
)

__all__ = [
    "CRUDE_MERGE", "DEFAULT_TILE", "ICE_EDGE_SIC", "MASK_NODATA", "MERGES", "PERCENT_NODATA", "MergeStats",
    "PredictJob", "Predictor", "Product", "RowAccumulator", "Strip", "WindowPlan", "array_strip_reader",
    "check_pairing", "crude_band_names", "default_model_dir", "load_predictor", "make_predictor", "model_classes",
    "plan_products", "plan_windows", "predict_scene", "probability_pass", "scene_input_spec", "scene_inputs", "scene_strip_reader",
    "sic_of", "sliding_window_merge", "to_mask", "to_percent", "window_starts", "window_weights",
]
