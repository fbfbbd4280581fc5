"""Training figures: the regional loss (one pass vs a per-polygon loop, and its share of a training
step), the collate that builds its groups, training throughput of every architecture on the CPU,
and how long a training step waits for the DataLoader reading a synthetic scene from disk."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

PATCH = 256
LOSS_BATCH = 16
POLYGONS_PER_PATCH = 40
THROUGHPUT_BATCH = 8
THROUGHPUT_SECONDS = 3.0  # per model: steps until this much time has passed (at least one)
DATA_STEPS = 2  # timed DataLoader steps after the first (which starts the worker)


def _median_ms(function: Callable[[], object], *, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def polygon_patches(batch: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Chart-like polygon ids (B, H, W) with ~40 polygons per patch, and the SIC of each id."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    ids = np.empty((batch, PATCH, PATCH), dtype="int64")
    for b in range(batch):
        # Nearest of 40 random seeds (a Voronoi partition), boundaries roughened by a smooth field.
        seeds = rng.uniform(0, PATCH, size=(POLYGONS_PER_PATCH, 2))
        rows, cols = np.mgrid[0:PATCH, 0:PATCH].astype("float32")
        wobble = ndimage.gaussian_filter(rng.normal(0, 60, (PATCH, PATCH)), 12)
        distance = (rows[None] - seeds[:, 0, None, None]) ** 2 + (cols[None] - seeds[:, 1, None, None] + wobble) ** 2
        ids[b] = distance.argmin(axis=0) + 1 + b * POLYGONS_PER_PATCH
    ids[:, :20, :20] = 0  # a bit of land
    sic = rng.choice([0.0, 0.1, 0.35, 0.7, 0.95, 1.0], size=ids.max() + 1)
    return ids, sic


def regional_loop(logits, ids, sic_of_id):
    """The per-polygon reference: one masked mean per polygon of each patch, in Python."""
    import torch

    probabilities = torch.sigmoid(logits[:, 0])
    errors = []
    for b in range(ids.shape[0]):
        for polygon in torch.unique(ids[b]):
            if polygon == 0:
                continue
            mask = ids[b] == polygon
            errors.append((probabilities[b][mask].mean() - sic_of_id[polygon]) ** 2)
    return torch.stack(errors).mean()


def _regional_figures() -> tuple[list[tuple[str, str]], dict]:
    import torch

    from icetools.data import regional_groups
    from icetools.losses import regional_loss

    ids_np, sic_np = polygon_patches(LOSS_BATCH)
    target = np.where(ids_np > 0, sic_np[ids_np], 0.0).astype("float32")
    patch_owner = np.arange(LOSS_BATCH)
    groups_np, group_targets_np = regional_groups(ids_np, target, patch_owner)
    groups = torch.from_numpy(groups_np)
    group_targets = torch.from_numpy(group_targets_np)
    ids = torch.from_numpy(ids_np)
    sic_of_id = torch.from_numpy(sic_np.astype("float32"))
    torch.manual_seed(0)
    logits = torch.randn(LOSS_BATCH, 1, PATCH, PATCH, requires_grad=True)

    def one_pass() -> None:
        regional_loss(logits, groups, group_targets).backward()
        logits.grad = None

    def loop() -> None:
        regional_loop(logits, ids, sic_of_id).backward()
        logits.grad = None

    with torch.no_grad():
        same = float(regional_loss(logits, groups, group_targets)) - float(regional_loop(logits, ids, sic_of_id))
    assert abs(same) < 1e-5, f"one-pass and loop regional losses differ by {same}"
    one_pass()  # warm-up
    fast = _median_ms(one_pass, repeats=15)
    slow = _median_ms(loop, repeats=3)

    def unique_groups() -> None:  # what the collate would cost with a sort instead of a presence table
        keys = patch_owner[:, None, None] * (ids_np.max() + 1) + ids_np
        np.unique(keys[ids_np > 0], return_inverse=True)

    collate_ms = _median_ms(lambda: regional_groups(ids_np, target, patch_owner), repeats=5)
    unique_ms = _median_ms(unique_groups, repeats=5)
    n_groups = int(groups_np.max())
    rows = [
        (f"regional loss fwd+bwd, {LOSS_BATCH} x {PATCH}^2, {n_groups} polygons: one pass", f"{fast:.1f} ms"),
        ("regional loss fwd+bwd: per-polygon Python loop", f"{slow:.0f} ms"),
        ("regional loss speed-up (loop / one pass)", f"{slow / fast:.0f}x"),
        (f"collate groups for {LOSS_BATCH} x {PATCH}^2 (presence table vs np.unique)",
         f"{collate_ms:.1f} ms vs {unique_ms:.1f} ms"),
    ]
    return rows, {"regional_ms": fast}


def _step_time(model, x, loss_fn, batch, optimizer) -> float:
    start = time.perf_counter()
    outputs = model.forward_heads(x) if model.can_deep_supervise else model(x)
    loss = loss_fn(outputs, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def _throughput_figures() -> list[tuple[str, str]]:
    import torch

    from icetools.losses import build_loss, deep_supervision
    from icetools.models import MODEL_NAMES, build_model

    rows = []
    for name in MODEL_NAMES:
        torch.manual_seed(0)
        model = build_model(name, in_channels=2, out_channels=1).train()
        scales = model.context_scales
        shape = (len(scales), 2, PATCH, PATCH) if model.takes_windows else (2, PATCH, PATCH)
        loss_fn = build_loss("pixel-mse")
        if model.can_deep_supervise:
            loss_fn = deep_supervision(loss_fn, [1.0] * model.n_heads)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def batch_of(size: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            x = torch.randn(size, *shape)
            return x, {"target": torch.rand(size, PATCH, PATCH), "valid": torch.ones(size, PATCH, PATCH, dtype=torch.bool)}

        small_x, small_batch = batch_of(2)
        _step_time(model, small_x, loss_fn, small_batch, optimizer)  # warm-up on a small batch
        x, batch = batch_of(THROUGHPUT_BATCH)
        spent, steps = 0.0, 0
        while steps == 0 or spent < THROUGHPUT_SECONDS:
            spent += _step_time(model, x, loss_fn, batch, optimizer)
            steps += 1
        rows.append((f"train throughput {name} ({PATCH}^2, batch {THROUGHPUT_BATCH}, CPU)",
                     f"{steps * THROUGHPUT_BATCH / spent:.2f} patches/s"))
    return rows


def _write_scene(folder: Path, size: int = 2048) -> tuple[Path, Path]:
    """A synthetic SAR-like scene with a blocky chart of ~1000 polygons, written as COGs."""
    from affine import Affine
    from pyproj import CRS

    from icetools.grid import Grid
    from icetools.io.raster import write_raster

    rng = np.random.default_rng(1)
    block = 64
    n = size // block
    coarse_ids = np.arange(1, n * n + 1, dtype="float32").reshape(n, n)
    ids = np.kron(coarse_ids, np.ones((block, block), dtype="float32"))
    sic_of = rng.choice([0.0, 0.3, 0.7, 1.0], size=n * n + 1).astype("float32")
    sic = sic_of[ids.astype("int64")]
    image = np.stack([sic * 8 - 20 + rng.normal(0, 2, sic.shape), rng.normal(-25, 3, sic.shape)]).astype("float32")
    grid = Grid(size, size, crs=CRS.from_epsg(3413), transform=Affine(40, 0, 0, 0, -40, 0))
    scene = write_raster(folder / "scene.tif", image, grid, nodata=float("nan"), band_names=["HH", "HV"])
    labels = write_raster(folder / "labels.tif", np.stack([ids, sic]), grid, nodata=float("nan"),
                          band_names=["polygon_id", "SIC"])
    return scene, labels


def _data_figures(regional_ms: float) -> list[tuple[str, str]]:
    import geopandas as gpd
    import shapely
    import torch

    from icetools.data import PatchDataset, compute_normalization, make_loader
    from icetools.losses import build_loss
    from icetools.models import build_model

    with tempfile.TemporaryDirectory() as tmp:
        scene, labels = _write_scene(Path(tmp))
        rng = np.random.default_rng(2)
        n_patches = LOSS_BATCH * (DATA_STEPS + 1)
        offsets = rng.integers(0, 2048 - PATCH, size=(n_patches, 2)) // 16 * 16
        rows = [{"scene": str(scene), "labels": str(labels), "task": "sic", "row_off": int(r), "col_off": int(c),
                 "size": PATCH, "split": "train", "foreground": 1.0, "unseen": 1.0, "valid": 1.0, "patch_id": i}
                for i, (r, c) in enumerate(offsets)]
        frame = gpd.GeoDataFrame(rows, geometry=[shapely.box(r["col_off"], r["row_off"], r["col_off"] + PATCH,
                                                             r["row_off"] + PATCH) for r in rows])
        normalization = compute_normalization(frame, ["HH", "HV"], max_patches=16)
        dataset = PatchDataset(frame, "train", inputs=["HH", "HV"], normalization=normalization, task="sic",
                               augment=True)
        start = time.perf_counter()
        for i in range(16):
            dataset[(i, i)]
        read_rate = 16 / (time.perf_counter() - start)

        torch.manual_seed(0)
        model = build_model("unet", in_channels=2, out_channels=1).train()
        loss_fn = build_loss("regional")
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        loader = make_loader(dataset, batch_size=LOSS_BATCH, pool="scene", shuffle=True, workers=1)
        waits, steps = [], []
        iterator = iter(loader)
        for step in range(DATA_STEPS + 1):
            start = time.perf_counter()
            batch = next(iterator)
            waited = time.perf_counter() - start
            spent = _step_time(model, batch["image"], loss_fn, batch, optimizer)
            if step > 0:  # the first batch includes starting the worker
                waits.append(waited)
                steps.append(spent)
        del iterator, loader
    wait = sum(waits) / (sum(waits) + sum(steps))
    step_ms = statistics.median(steps) * 1000
    return [
        (f"sea-ice unet training step ({LOSS_BATCH} x {PATCH}^2, regional loss, CPU)", f"{step_ms / 1000:.1f} s"),
        ("regional loss share of that step", f"{regional_ms / step_ms:.2%}"),
        ("patch reads (scene + labels, 256^2, augmented), one process", f"{read_rate:.0f} patches/s"),
        ("share of step time waiting for data (1 worker, scene on disk)", f"{wait:.1%}"),
    ]


def run() -> list[tuple[str, str]]:
    import torch

    rows: list[tuple[str, str]] = [("torch threads", str(torch.get_num_threads()))]
    regional_rows, figures = _regional_figures()
    rows += regional_rows
    rows += _data_figures(figures["regional_ms"])
    rows += _throughput_figures()
    return rows


if __name__ == "__main__":
    for figure, value in run():
        print(f"{figure}: {value}")
