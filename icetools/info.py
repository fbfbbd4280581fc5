"""What a user checks first about a file, as ``rio info`` does: format, size, bands, grid, validity.

Band statistics come from a sample of windows spread over the scene (``exact=True`` streams every
strip instead), so ``info`` answers in a second on a 10k x 10k scene.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from icetools.errors import InputFileError
from icetools.io.raster import iter_strips
from icetools.io.scene import Scene, open_scene

VECTOR_SUFFIXES = {".gpkg", ".shp", ".geojson", ".json", ".fgb"}
SAMPLE_WINDOW = 512
SAMPLE_GRID = 4


def _sample_windows(scene: Scene, exact: bool) -> list[Window]:
    if exact:
        return list(iter_strips(scene.height, scene.width))
    size = min(SAMPLE_WINDOW, scene.height, scene.width)
    rows = np.linspace(0, scene.height - size, SAMPLE_GRID).astype(int)
    cols = np.linspace(0, scene.width - size, SAMPLE_GRID).astype(int)
    unique = {(int(r), int(c)) for r in rows for c in cols}
    return [Window(c, r, size, size) for r, c in sorted(unique)]


def _band_stats(scene: Scene, windows: list[Window]) -> tuple[list[dict], float]:
    names = list(scene.band_names)
    lo = np.full(len(names), np.inf)
    hi = np.full(len(names), -np.inf)
    total = np.zeros(len(names))
    count = np.zeros(len(names))
    valid = seen = 0
    for window in windows:
        data = scene.read(names, window)
        finite = np.isfinite(data)
        for i in range(len(names)):
            values = data[i][finite[i]]
            if values.size:
                lo[i] = min(lo[i], float(values.min()))
                hi[i] = max(hi[i], float(values.max()))
                total[i] += float(values.sum(dtype="float64"))
                count[i] += values.size
        valid += int(scene.valid_mask(window).sum())
        seen += int(window.width * window.height)
    bands = []
    for i, name in enumerate(names):
        has = count[i] > 0
        bands.append({
            "name": name,
            "min": float(lo[i]) if has else None,
            "max": float(hi[i]) if has else None,
            "mean": float(total[i] / count[i]) if has else None,
            "finite_share": float(count[i] / seen) if seen else 0.0,
        })
    return bands, (valid / seen if seen else 0.0)


def describe_scene(path: str | Path, *, exact: bool = False) -> dict:
    with open_scene(path) as scene:
        grid = scene.grid
        out = scene.describe()
        windows = _sample_windows(scene, exact)
        out["bands"], out["valid_share"] = _band_stats(scene, windows)
        out["statistics"] = "exact" if exact else f"sampled from {len(windows)} windows"
        out["default_inputs"] = list(scene.default_inputs)
        if grid.has_gcps:
            out["grid"] = {"type": "gcps", "gcp_count": len(grid.gcps), "gcp_crs": str(grid.gcp_crs)}
        else:
            out["grid"] = {
                "type": "affine" if grid.transform is not None else "none",
                "crs": grid.crs.to_string() if grid.crs is not None else None,
                "transform": list(grid.transform)[:6] if grid.transform is not None else None,
            }
        if grid.is_georeferenced:
            out["grid"]["lonlat_bounds"] = grid.lonlat_bounds()
            out["grid"]["pixel_size_m"] = round(grid.pixel_size(), 3)
        if scene.has_chart:
            table = scene.polygon_table()
            out["chart"] = {
                "polygons": len(table),
                "table": [
                    {"poly_id": p.poly_id, "CT": p.codes.get("CT"), "POLY_TYPE": p.poly_type, "SIC": None if np.isnan(p.sic) else p.sic}
                    for p in table.values()
                ],
            }
        if hasattr(scene, "attrs"):
            out["attributes"] = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in scene.attrs.items()}
        if getattr(scene, "tags", None):
            out["tags"] = scene.tags
    return out


def describe_vector(path: str | Path) -> dict:
    import pyogrio

    from icetools.sigrid import decode_ct

    path = Path(path)
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:
        raise InputFileError(f"cannot read {path} as a vector file: {str(exc).splitlines()[0]}") from None
    out: dict = {"path": str(path), "format": "vector", "layers": []}
    for layer in layers:
        meta = pyogrio.read_info(path, layer=layer)
        entry = {
            "name": layer,
            "features": int(meta["features"]),
            "geometry_type": meta["geometry_type"],
            "crs": meta["crs"],
            "fields": list(meta["fields"]),
            "bounds": list(meta["total_bounds"]) if meta.get("total_bounds") is not None else None,
        }
        fields_upper = {f.upper(): f for f in meta["fields"]}
        if "CT" in fields_upper:
            frame = pyogrio.read_dataframe(path, layer=layer, read_geometry=False)
            ct, ptype = fields_upper["CT"], fields_upper.get("POLY_TYPE")
            id_col = fields_upper.get("POLY_ID")
            entry["chart"] = [
                {
                    "poly_id": int(row[id_col]) if id_col else i + 1,
                    "CT": row[ct],
                    "POLY_TYPE": row[ptype] if ptype else None,
                    "SIC": _none_if_nan(decode_ct(row[ct], row[ptype] if ptype else None)),
                }
                for i, row in frame.iterrows()
            ]
        out["layers"].append(entry)
    return out


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else value


def describe_model(path: str | Path) -> dict:
    config_path = Path(path) / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{config_path} is not a readable model config: {exc}") from None
    return {"path": str(path), "format": "model", **config}


def describe(path: str | Path, *, exact: bool = False) -> dict:
    """Describe a scene, a labels raster, a vector file or a model directory."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path} does not exist")
    if path.is_dir():
        if (path / "config.json").exists():
            return describe_model(path)
        raise InputFileError(f"{path} is a folder but not a model directory (no config.json)")
    if path.suffix.lower() in VECTOR_SUFFIXES:
        return describe_vector(path)
    return describe_scene(path, exact=exact)
