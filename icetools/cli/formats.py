"""Output names and formats, as GDAL's tools read them: the extension says the format.

``-f/--format`` names the format where the extension does not (``-o labels`` or ``-o labels.dat``);
a known extension that disagrees with it, or names a format the command does not write
(``rasterize -o labels.png``), is a usage error. ``-o -`` is standard output: GeoJSON, for the
commands that write one vector layer. A folder output for several inputs is ``-o FOLDER/`` or an
existing folder, never a file name.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    import geopandas as gpd

STDOUT = "-"
RASTER_FORMATS: dict[str, tuple[str, ...]] = {"GTiff": (".tif", ".tiff")}
VECTOR_FORMATS: dict[str, tuple[str, ...]] = {
    "GPKG": (".gpkg",),
    "GeoJSON": (".geojson", ".json"),
    "FlatGeobuf": (".fgb",),
    "ESRI Shapefile": (".shp",),
}
# Extensions of formats icetools does not write: a name with one of them is a mistake, not a
# name to override with -f (GDAL would write that format; icetools would write another under it).
OTHER_EXTENSIONS = frozenset({
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".jp2", ".nc", ".nc4", ".h5", ".hdf", ".vrt", ".img",
    ".zarr", ".asc", ".xyz", ".kml", ".kmz", ".gml", ".csv", ".gpx", ".dxf", ".parquet", ".sqlite", ".txt",
    ".xml", ".pdf", ".svg", ".html",
})


@dataclass(frozen=True)
class Output:
    """Where an output goes and in which format; ``path`` is None for standard output."""

    path: Path | None
    format: str

    @property
    def to_stdout(self) -> bool:
        return self.path is None


def _known_extensions() -> dict[str, str]:
    return {ext: name for table in (RASTER_FORMATS, VECTOR_FORMATS) for name, exts in table.items() for ext in exts}


def _format_name(given: str, formats: dict[str, tuple[str, ...]], *, option: str) -> str:
    for name in formats:
        if name.lower() == given.lower() or (name == "GTiff" and given.lower() in ("cog", "geotiff")):
            return name
    raise typer.BadParameter(f"{given!r} is not a format this command writes; formats: {', '.join(formats)}",
                             param_hint=option)


def resolve_output(
    text: str | Path,
    fmt: str | None,
    formats: dict[str, tuple[str, ...]],
    *,
    option: str = "'-o' / '--output'",
    stdout: bool = False,
) -> Output:
    """The output's format from its extension (or ``fmt`` where the extension is silent).

    ``stdout``: ``-`` is allowed and means GeoJSON on standard output.
    """
    text = str(text)
    wanted = _format_name(fmt, formats, option="'-f' / '--format'") if fmt is not None else None
    if text == STDOUT:
        if not stdout:
            raise typer.BadParameter("'-' (standard output) works only for a single vector layer "
                                     "(icetools vectorize): give a file name", param_hint=option)
        if wanted not in (None, "GeoJSON"):
            raise typer.BadParameter(f"standard output is written as GeoJSON, not {wanted}", param_hint=option)
        return Output(None, "GeoJSON")
    path = Path(text)
    suffix = path.suffix.lower()
    by_extension = next((name for name, exts in formats.items() if suffix in exts), None)
    expected = " or ".join(ext for exts in formats.values() for ext in exts)
    if by_extension is None and (suffix in _known_extensions() or suffix in OTHER_EXTENSIONS):
        raise typer.BadParameter(f"{text}: this command writes {', '.join(formats)}, not {suffix}: name it {expected}",
                                 param_hint=option)
    if by_extension is not None:
        if wanted is not None and wanted != by_extension:
            raise typer.BadParameter(f"-f {wanted} does not match {text} ({by_extension}): change one of them",
                                     param_hint=option)
        return Output(path, by_extension)
    if wanted is None:
        what = f"the extension {suffix}" if suffix else "a name without an extension"
        raise typer.BadParameter(f"{text}: cannot tell the format from {what}: name it {expected} or pass -f",
                                 param_hint=option)
    if wanted == "ESRI Shapefile":
        raise typer.BadParameter(f"{text}: a shapefile needs the .shp extension (its companion files follow it)",
                                 param_hint=option)
    return Output(path, wanted)


def folder_output(text: str | Path, *, option: str = "'-o' / '--output'") -> Path:
    """The folder several inputs are written into: ``FOLDER/`` (made if missing) or an existing folder."""
    text = str(text)
    path = Path(text)
    if path.is_dir():
        return path
    if path.exists():
        raise typer.BadParameter(f"{text} is a file: with several inputs -o names a folder (FOLDER/)", param_hint=option)
    if not text.endswith(("/", os.sep)):
        raise typer.BadParameter(
            f"several inputs need a folder: write -o {text}/ (trailing slash) or create the folder first",
            param_hint=option,
        )
    return path


def is_folder(text: str | Path) -> bool:
    """``-o FOLDER/`` or an existing folder: the output is a folder even for one input."""
    text = str(text)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def write_vector(frame: gpd.GeoDataFrame, output: Output, *, layer: str, overwrite: bool) -> None:
    """One layer to ``output``: its file (any name, the format given) or GeoJSON on standard output."""
    from icetools.io.atomic import atomic_path
    from icetools.io.paths import refuse_overwriting_inputs
    from icetools.io.vector import write_layer

    if output.path is None:
        with tempfile.TemporaryDirectory(prefix="icetools-") as folder:
            tmp = Path(folder) / f"{layer}.geojson"
            write_layer(frame, tmp, layer=layer)
            sys.stdout.write(tmp.read_text(encoding="utf-8"))
            sys.stdout.flush()
        return
    extensions = VECTOR_FORMATS[output.format]
    if output.path.suffix.lower() in extensions:
        write_layer(frame, output.path, layer=layer, overwrite=overwrite)
        return
    # A name the writer cannot read the format from (-f given): stage it under a temporary name with
    # the format's extension, then move it into place whole (stale temporaries and signals included).
    refuse_overwriting_inputs([output.path], frame.attrs.get("sources", ()))
    with atomic_path(output.path, overwrite=overwrite, suffix=extensions[0]) as tmp:
        write_layer(frame, tmp, layer=layer, overwrite=True)
