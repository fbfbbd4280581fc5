"""How outputs look when QGIS opens them: colour tables, raster attribute tables and layer styles.

One :class:`Legend` (value, label, colour per class) feeds all three:

* the GeoTIFF colour table (inside the file; uint8 bands), which QGIS draws as paletted classes;
* a GDAL raster attribute table (RAT) with the columns ``value``, ``label``, ``red``, ``green``,
  ``blue``, ``alpha``. GDAL's GeoTIFF driver keeps a RAT in the PAM sidecar ``<file>.aux.xml`` (it has
  no place for one inside the TIFF), so that is where it goes, written in GDAL's own layout; GDAL and
  QGIS (3.30+: classify by a RAT column) read it, and it travels with the raster when both are copied;
* a QGIS style (QML) in the GeoPackage ``layer_styles`` table, the table QGIS itself writes and
  reads a layer's default style from: class polygons coloured by their ``class`` field, lines in one
  colour.
"""

from __future__ import annotations

import colorsys
import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence
from xml.etree import ElementTree as ET

from icetools.io.atomic import atomic_path

if TYPE_CHECKING:
    import geopandas as gpd

RGBA = tuple[int, int, int, int]
TRANSPARENT: RGBA = (0, 0, 0, 0)
WATER: RGBA = (31, 120, 180, 255)
ICE: RGBA = (240, 244, 248, 255)
LINE: RGBA = (228, 26, 28, 255)
PALETTE: tuple[RGBA, ...] = (
    (31, 119, 180, 255), (255, 127, 14, 255), (44, 160, 44, 255), (214, 39, 40, 255), (148, 103, 189, 255),
    (140, 86, 75, 255), (227, 119, 194, 255), (127, 127, 127, 255), (188, 189, 34, 255), (23, 190, 207, 255),
)
"""Colours of classes without their own (matplotlib's tab10), then further hues for more than ten."""
STYLE_NAME = "icetools"
RAT_TYPES = {"integer": 0, "real": 1, "string": 2}  # GDALRATFieldType
RAT_USAGE = {"generic": 0, "name": 2, "minmax": 5, "red": 6, "green": 7, "blue": 8, "alpha": 9}  # GDALRATFieldUsage


@dataclass(frozen=True)
class Category:
    value: int
    label: str
    color: RGBA


@dataclass(frozen=True)
class Legend:
    """The classes of a categorical band, and its nodata value (drawn transparent)."""

    categories: tuple[Category, ...]
    nodata: int | None = None

    @classmethod
    def of(cls, labels: Sequence[str] | dict[int, str], colors: Sequence[RGBA] | None = None, *,
           nodata: int | None = None) -> Legend:
        """Classes 0..n-1 (or the given values) with their labels, coloured from ``colors`` or :data:`PALETTE`."""
        items = list(labels.items()) if isinstance(labels, dict) else list(enumerate(labels))
        colors = list(colors) if colors is not None else [class_color(i) for i in range(len(items))]
        return cls(tuple(Category(int(v), str(label), tuple(c)) for (v, label), c in zip(items, colors)), nodata)

    def colormap(self) -> dict[int, RGBA]:
        """A GDAL colour table: every class, nodata transparent."""
        table = {c.value: c.color for c in self.categories}
        if self.nodata is not None:
            table[self.nodata] = TRANSPARENT
        return table

    def label_of(self, value: int) -> str:
        for category in self.categories:
            if category.value == value:
                return category.label
        return str(value)


ICE_WATER = Legend.of({0: "water", 1: "ice"}, [WATER, ICE], nodata=255)
BACKGROUND: RGBA = (224, 224, 224, 255)
LINE_MASK = Legend.of({0: "no line", 1: "line"}, [BACKGROUND, LINE], nodata=255)
"""A TIFF colour table holds no alpha (GDAL makes only the nodata entry transparent): "no line" is light grey."""


def class_color(index: int) -> RGBA:
    """:data:`PALETTE` for the first ten classes, then evenly spread hues (golden-angle steps)."""
    if index < len(PALETTE):
        return PALETTE[index]
    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.65, 0.9)
    return (round(r * 255), round(g * 255), round(b * 255), 255)


def class_legend(names: Sequence[str], *, nodata: int | None = 255) -> Legend:
    """Classes 0..n-1 named ``names``."""
    return Legend.of(list(names), nodata=nodata)


# --------------------------------------------------------------------------- raster attribute table


def rat_xml(legend: Legend, band: int = 1) -> str:
    """A PAM document holding the legend as band ``band``'s RAT, in the layout GDAL writes and reads."""
    root = ET.Element("PAMDataset")
    table = ET.SubElement(ET.SubElement(root, "PAMRasterBand", band=str(band)), "GDALRasterAttributeTable",
                          tableType="thematic")
    columns = [("value", "integer", "minmax"), ("label", "string", "name"), ("red", "integer", "red"),
               ("green", "integer", "green"), ("blue", "integer", "blue"), ("alpha", "integer", "alpha")]
    for index, (name, kind, usage) in enumerate(columns):
        field = ET.SubElement(table, "FieldDefn", index=str(index))
        ET.SubElement(field, "Name").text = name
        ET.SubElement(field, "Type").text = str(RAT_TYPES[kind])
        ET.SubElement(field, "Usage").text = str(RAT_USAGE[usage])
    for index, category in enumerate(legend.categories):
        row = ET.SubElement(table, "Row", index=str(index))
        for value in (category.value, category.label, *category.color):
            ET.SubElement(row, "F").text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def read_rat(path: str | Path, band: int = 1) -> Legend | None:
    """The legend in a raster's ``.aux.xml`` RAT (as :func:`rat_xml` writes it); None without one."""
    aux = aux_path(path)
    if not aux.is_file():
        return None
    try:
        root = ET.parse(aux).getroot()
    except ET.ParseError:
        return None
    for node in root.iter("PAMRasterBand"):
        table = node.find("GDALRasterAttributeTable")
        if node.get("band") != str(band) or table is None:
            continue
        usages = [int(field.findtext("Usage") or 0) for field in table.findall("FieldDefn")]
        wanted = [RAT_USAGE[u] for u in ("minmax", "name", "red", "green", "blue", "alpha")]
        if not all(u in usages for u in wanted[:2]):
            return None
        categories = []
        for row in table.findall("Row"):
            cells = [f.text or "" for f in row.findall("F")]
            value, label = int(float(cells[usages.index(wanted[0])])), cells[usages.index(wanted[1])]
            color = tuple(int(float(cells[usages.index(u)])) if u in usages else 255 for u in wanted[2:])
            categories.append(Category(value, label, color))  # type: ignore[arg-type]
        return Legend(tuple(categories))
    return None


def aux_path(path: str | Path) -> Path:
    """GDAL's PAM sidecar of a raster: ``<file>.aux.xml``."""
    path = Path(path)
    return path.with_name(path.name + ".aux.xml")


def place_sidecar(raster: Path, text: str | None) -> None:
    """Put a raster's ``.aux.xml`` in place right after the raster, or remove a stale one (``text`` None):
    a sidecar left from an earlier file of that name would mislabel the new one."""
    aux = aux_path(raster)
    if text is None:
        aux.unlink(missing_ok=True)
        return
    with atomic_path(aux, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- QGIS styles for vectors


def _symbol(name: str, kind: str, color: RGBA) -> ET.Element:
    """A QGIS symbol: a filled polygon with a thin darker outline, or a line."""
    symbol = ET.Element("symbol", type=kind, name=name, alpha="1", clip_to_extent="1", force_rhr="0")
    layer_class = "SimpleFill" if kind == "fill" else "SimpleLine"
    layer = ET.SubElement(symbol, "layer", {"class": layer_class, "pass": "0", "locked": "0", "enabled": "1"})
    options = ET.SubElement(layer, "Option", type="Map")
    rgba = ",".join(map(str, color))
    values = {"color": rgba, "outline_color": "35,35,35,255", "outline_width": "0.1", "outline_width_unit": "MM",
              "style": "solid", "outline_style": "solid", "joinstyle": "bevel"} if kind == "fill" else {
              "line_color": rgba, "line_width": "0.6", "line_width_unit": "MM", "line_style": "solid",
              "capstyle": "round", "joinstyle": "round"}
    for key, value in values.items():
        ET.SubElement(options, "Option", type="QString", name=key, value=value)
    return symbol


def _qml(renderer: ET.Element) -> str:
    root = ET.Element("qgis", version="3.28.0", styleCategories="Symbology")
    root.append(renderer)
    ET.indent(root)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, encoding="unicode") + "\n"


def categorized_qml(legend: Legend, field: str = "class") -> str:
    """A QGIS style drawing polygons by ``field``, one colour and label per class."""
    renderer = ET.Element("renderer-v2", type="categorizedSymbol", attr=field, symbollevels="0", enableorderby="0",
                          forceraster="0")
    categories, symbols = ET.SubElement(renderer, "categories"), ET.SubElement(renderer, "symbols")
    for index, category in enumerate(legend.categories):
        ET.SubElement(categories, "category", symbol=str(index), value=str(category.value), label=category.label,
                      render="true")
        symbols.append(_symbol(str(index), "fill", category.color))
    return _qml(renderer)


def line_qml(color: RGBA = LINE) -> str:
    """A QGIS style drawing every line in one colour, 0.6 mm wide."""
    renderer = ET.Element("renderer-v2", type="singleSymbol", symbollevels="0", enableorderby="0", forceraster="0")
    ET.SubElement(renderer, "symbols").append(_symbol("0", "line", color))
    return _qml(renderer)


def write_layer_style(gpkg: str | Path, layer: str, qml: str, *, description: str = "") -> None:
    """Add ``qml`` as the default style of ``layer`` to a GeoPackage's ``layer_styles`` table (QGIS's schema),
    registered as an attributes table so GDAL lists it too."""
    import pandas as pd
    import pyogrio

    with contextlib.closing(sqlite3.connect(gpkg)) as db:  # closed: a connection's `with` only commits
        geometry = db.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)).fetchone()
    row = {
        "f_table_catalog": "", "f_table_schema": "", "f_table_name": layer,
        "f_geometry_column": geometry[0] if geometry else "", "styleName": STYLE_NAME, "styleQML": qml,
        "styleSLD": "", "useAsDefault": True, "description": description, "owner": "", "ui": "",
        "update_time": pd.Timestamp.now(tz="UTC"),
    }
    pyogrio.write_dataframe(pd.DataFrame([row]), gpkg, layer="layer_styles", driver="GPKG",
                            append="layer_styles" in {name for name, _ in pyogrio.list_layers(gpkg)},
                            layer_options={"FID": "id"})


def read_layer_styles(gpkg: str | Path) -> "gpd.GeoDataFrame | None":
    """The ``layer_styles`` table of a GeoPackage, None without one (for tests and ``info``)."""
    import pyogrio

    if "layer_styles" not in {name for name, _ in pyogrio.list_layers(gpkg)}:
        return None
    return pyogrio.read_dataframe(gpkg, layer="layer_styles")


def data_layers(names: Iterable[str]) -> list[str]:
    """The layers of a file that hold data: ``layer_styles`` is QGIS's style table."""
    return [name for name in names if name != "layer_styles"]


__all__ = [
    "ICE_WATER", "LINE_MASK", "Category", "Legend", "aux_path", "categorized_qml", "class_color",
    "class_legend", "data_layers", "line_qml", "place_sidecar", "rat_xml", "read_layer_styles", "read_rat",
    "write_layer_style",
]
