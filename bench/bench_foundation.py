"""Foundation figures: rasterize a chart of several hundred polygons onto a 10000 x 10000 grid, next to
rasterio.features.rasterize called directly on the same input; open a raw-size AI4Arctic scene and read
one 256 x 256 window."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.util import run_child

SIZE = 10_000
N_POLYGONS = 400


def _make_inputs(folder: Path) -> tuple[Path, Path]:
    import geopandas as gpd
    import numpy as np
    import rasterio
    import shapely
    from affine import Affine

    transform = Affine(40.0, 0, 100_000.0, 0, -40.0, -2_000_000.0)
    like = folder / "like.tif"
    with rasterio.open(like, "w", driver="GTiff", height=SIZE, width=SIZE, count=1, dtype="uint8", crs="EPSG:3413",
                       transform=transform, tiled=True, compress="deflate") as ds:
        ds.descriptions = ("HH",)
    rng = np.random.default_rng(0)
    x0, y0 = transform @ (0, 0)
    x1, y1 = transform @ (SIZE, SIZE)
    points = shapely.multipoints(np.stack([rng.uniform(x0, x1, N_POLYGONS), rng.uniform(y1, y0, N_POLYGONS)], -1))
    cells = shapely.get_parts(shapely.voronoi_polygons(points, extend_to=shapely.box(x0, y1, x1, y0)))
    cells = shapely.intersection(cells, shapely.box(x0 - 5000, y1 - 5000, x1 + 5000, y0 + 5000))
    cells = shapely.segmentize(cells, 400.0)  # chart-like vertex density (a vertex every 10 pixels)
    codes = rng.choice(["01", "10", "30", "46", "70", "91", "92"], size=len(cells))
    chart = folder / "chart.gpkg"
    gpd.GeoDataFrame({"poly_id": np.arange(1, len(cells) + 1), "CT": codes}, geometry=cells, crs=3413).to_file(chart)
    return like, chart


def run() -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        like, chart = _make_inputs(folder)
        direct = run_child(f"""
            import time, numpy as np, pyogrio, rasterio.features
            from affine import Affine
            frame = pyogrio.read_dataframe("{chart}")
            transform = Affine(40.0, 0, 100_000.0, 0, -40.0, -2_000_000.0)
            start = time.perf_counter()
            ids = rasterio.features.rasterize(zip(frame.geometry.values, range(1, len(frame) + 1)),
                out_shape=({SIZE}, {SIZE}), transform=transform, all_touched=True, dtype="int32")
            result = {{"seconds": time.perf_counter() - start}}
        """)
        core = run_child(f"""
            import time, numpy as np, shapely
            from rasterio.windows import Window
            from icetools.io.scene import open_scene
            from icetools.rasterize import plan_burn, burn_strip, STRIP_ROWS
            from icetools.io.raster import iter_strips
            grid = open_scene("{like}").grid
            start = time.perf_counter()
            plan = plan_burn("{chart}", grid)
            tree = shapely.STRtree(plan.geometries)
            for window in iter_strips(grid.height, grid.width, STRIP_ROWS):
                burn_strip(plan, tree, window, grid.width, all_touched=True)
            result = {{"seconds": time.perf_counter() - start}}
        """)
        command = run_child(f"""
            import time
            from icetools.rasterize import rasterize_to_file
            start = time.perf_counter()
            rasterize_to_file("{chart}", "{like}", "{folder / 'labels.tif'}")
            result = {{"seconds": time.perf_counter() - start}}
        """)
        n = f"{SIZE} x {SIZE}, {N_POLYGONS} polygons"
        rows.append((f"rasterio.features.rasterize direct ({n}, in memory)",
                     f"{direct['seconds']:.2f} s, peak RSS {direct['peak_rss_mb']:.0f} MB"))
        rows.append(("icetools rasterize burn, strip by strip (read + reproject + burn)",
                     f"{core['seconds']:.2f} s, peak RSS {core['peak_rss_mb']:.0f} MB, "
                     f"{core['seconds'] / direct['seconds']:.2f}x direct (target <= 1.2x)"))
        rows.append(("icetools rasterize whole command (+ 2-band float32 COG with overviews)",
                     f"{command['seconds']:.2f} s, peak RSS {command['peak_rss_mb']:.0f} MB"))
        scene = run_child(f"""
            import time
            from icetools.synth import make_sea_ice_scene
            start = time.perf_counter()
            make_sea_ice_scene("{folder / 'raw.nc'}", size=10000, seed=0)
            result = {{"seconds": time.perf_counter() - start}}
        """)
        rows.append(("synth sea-ice --size 10000 (raw-size AI4Arctic netCDF)",
                     f"{scene['seconds']:.1f} s, peak RSS {scene['peak_rss_mb']:.0f} MB"))
        read = run_child(f"""
            import time
            from rasterio.windows import Window
            from icetools.io.scene import open_scene
            start = time.perf_counter()
            scene = open_scene("{folder / 'raw.nc'}")
            opened = time.perf_counter()
            data = scene.read(None, Window(5000, 5000, 256, 256))
            done = time.perf_counter()
            result = {{"open": opened - start, "read": done - opened, "shape": list(scene.grid.shape)}}
        """)
        rows.append((f"open raw-size scene {read['shape'][0]} x {read['shape'][1]} + read one 256 x 256 window (HH, HV)",
                     f"open {read['open'] * 1000:.0f} ms, read {read['read'] * 1000:.0f} ms, peak RSS {read['peak_rss_mb']:.0f} MB"))
    return rows
