"""xarray against today's netCDF4 reader on a raw-size (10000 x 10400) AI4Arctic-like scene.

Figures, each reader in a fresh process (HDF5 shares chunk caches between handles of one file in a
process, which would flatter whichever runs second), best of 3, imports done before the clock starts:
- ``open_scene`` (netCDF4, the default) and ``open_scene(engine="xarray")``: open, the first 256 x 256
  window (HH, HV) and the median of 8 more at other places;
- ``Scene.to_xarray()`` (dask chunks): the same windows through ``isel(...).compute()``;
- one whole-band reduction (the mean of HH): today's reader strip by strip against dask over
  ``to_xarray()`` (where xarray can win: chunks decompressed on both cores);
- the imports of xarray and dask, which any xarray path pays once per process.

The scene is written once (float32 SAR and chart, zlib level 1 with shuffle in 512 x 512 chunks, as
``icetools synth sea-ice`` writes them, tie points, two 2 km fields) into a temporary folder.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench.util import run_child

HEIGHT, WIDTH = 10_000, 10_400
WRITE_ROWS = 500
TIE_POINTS = 21
ROUNDS = 3  # each reader's figures: the best of this many fresh processes (a shared 2-core machine)
WINDOWS = [(1000 + i * 1000, 300 + i * 1100) for i in range(9)]  # (row, col) of 256 x 256 windows


def write_raw_scene(path: Path, *, height: int = HEIGHT, width: int = WIDTH) -> Path:
    """An AI4Arctic raw-layout file: structure plus noise (so it compresses like SAR, not like zeros)."""
    import netCDF4

    rng = np.random.default_rng(0)
    cols = np.arange(width, dtype="float32")
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("sar_lines", height)
        ds.createDimension("sar_samples", width)
        for name in ("nersc_sar_primary", "nersc_sar_secondary", "polygon_icechart"):
            ds.createVariable(name, "f4", ("sar_lines", "sar_samples"), zlib=True, complevel=1, shuffle=True,
                              chunksizes=(min(512, height), min(512, width)), fill_value=np.float32(np.nan))
        for row in range(0, height, WRITE_ROWS):
            rows = np.arange(row, min(row + WRITE_ROWS, height), dtype="float32")[:, None]
            base = np.sin(rows / 97.0) * np.cos(cols / 131.0)
            noise = rng.normal(scale=0.3, size=base.shape).astype("float32")
            ds["nersc_sar_primary"][row : row + len(rows)] = base - 18 + noise
            ds["nersc_sar_secondary"][row : row + len(rows)] = 0.5 * base - 25 + noise
            ds["polygon_icechart"][row : row + len(rows)] = np.where(base > 0, 1, 2).astype("float32")
        lines, samples = np.meshgrid(np.linspace(0, height - 1, TIE_POINTS), np.linspace(0, width - 1, TIE_POINTS), indexing="ij")
        ds.createDimension("sar_grid_points", TIE_POINTS**2)
        ties = {"sar_grid_line": lines, "sar_grid_sample": samples, "sar_grid_latitude": 75 + lines * 4e-4,
                "sar_grid_longitude": -20 + samples * 1e-3, "sar_grid_incidenceangle": 20 + samples * 2.5e-3}
        for name, values in ties.items():
            ds.createVariable(name, "f8", ("sar_grid_points",))[:] = values.ravel()
        ds.createDimension("2km_grid_lines", height // 50)
        ds.createDimension("2km_grid_samples", width // 50)
        for name in ("btemp_6_9h", "btemp_6_9v"):
            field = rng.normal(250, 5, size=(height // 50, width // 50)).astype("float32")
            ds.createVariable(name, "f4", ("2km_grid_lines", "2km_grid_samples"), zlib=True, complevel=1)[:] = field
        ds.setncatts({"ice_service": "dmi", "pixel_spacing": np.int32(40)})
    return path


IMPORTS = """
import importlib.util, netCDF4, xarray, dask.array
if importlib.util.find_spec("distributed"):
    import distributed  # what dask's first compute imports when it is installed
"""

WINDOW_CHILD = IMPORTS + """
import time, numpy as np
from rasterio.windows import Window
from icetools.io.scene import open_scene
BANDS = ["nersc_sar_primary", "nersc_sar_secondary"]
how, path, windows = {how!r}, {path!r}, {windows!r}
start = time.perf_counter()
scene = open_scene(path, engine="xarray" if how == "xarray" else "netcdf4")
if how == "to_xarray":
    ds = scene.to_xarray()[BANDS]
    read = lambda r, c: np.stack([v.values for v in ds.isel(y=slice(r, r + 256), x=slice(c, c + 256)).compute().data_vars.values()])
else:
    read = lambda r, c: scene.read(BANDS, Window(c, r, 256, 256))
opened = time.perf_counter()
times = []
for r, c in windows:
    t = time.perf_counter()
    data = read(r, c)
    times.append(time.perf_counter() - t)
assert data.shape == (2, 256, 256)
result = {{"open": opened - start, "first": times[0], "median": float(np.median(times[1:]))}}
"""

MEAN_CHILD = IMPORTS + """
import time, numpy as np
from rasterio.windows import Window
from icetools.io.scene import open_scene
how, path = {how!r}, {path!r}
start = time.perf_counter()
scene = open_scene(path)
if how == "to_xarray":
    mean = float(scene.to_xarray()["nersc_sar_primary"].mean().compute())
else:
    total, count = 0.0, 0
    for row in range(0, scene.height, 512):
        strip = scene.read(["nersc_sar_primary"], Window(0, row, scene.width, min(512, scene.height - row)))
        total, count = total + float(np.nansum(strip, dtype="float64")), count + int(np.isfinite(strip).sum())
    mean = total / count
result = {{"seconds": time.perf_counter() - start, "mean": mean}}
"""


def run() -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="icetools-bench-xarray-") as tmp:
        started = time.perf_counter()
        path = str(write_raw_scene(Path(tmp) / "raw.nc"))
        rows.append((f"write the {HEIGHT} x {WIDTH} scene (once)", f"{time.perf_counter() - started:.1f} s"))
        imported = run_child("import time\nstart = time.perf_counter()\n" + IMPORTS + "result = {'seconds': time.perf_counter() - start}")
        rows.append(("import xarray, dask.array, distributed (once per process on any xarray path; not in the times below)",
                     f"{imported['seconds'] * 1000:.0f} ms"))
        labels = {"netcdf4": "open_scene (netCDF4, default)", "xarray": 'open_scene(engine="xarray")',
                  "to_xarray": "Scene.to_xarray() (dask), isel + compute"}
        runs: dict[str, list[dict]] = {how: [] for how in labels}
        for _ in range(ROUNDS):  # interleaved, so a burst of load elsewhere hits every reader alike
            for how in labels:
                runs[how].append(run_child(WINDOW_CHILD.format(how=how, path=path, windows=WINDOWS)))
        for how, label in labels.items():
            got = {key: min(run[key] for run in runs[how]) for key in ("open", "first", "median")}
            rows.append((f"{label}: open / first 256x256 window / median of 8 more (HH, HV)",
                         f"{got['open'] * 1000:.0f} ms / {got['first'] * 1000:.1f} ms / {got['median'] * 1000:.1f} ms"))
        means = {how: run_child(MEAN_CHILD.format(how=how, path=path)) for how in ("netcdf4", "to_xarray")}
        agree = abs(means["netcdf4"]["mean"] - means["to_xarray"]["mean"]) < 1e-3
        rows.append(("mean of HH over the scene: netCDF4 strips / to_xarray().mean() with dask",
                     f"{means['netcdf4']['seconds']:.2f} s / {means['to_xarray']['seconds']:.2f} s"
                     f"{'' if agree else ' (MEANS DIFFER)'}"))
    return rows


if __name__ == "__main__":
    for figure, value in run():
        print(f"{figure}: {value}")
