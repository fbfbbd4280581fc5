"""SIGRID-3 ice chart codes, decoded in one place.

Total concentration (CT) codes and how icetools maps them to a fraction 0..1:

============  ==========================  ==================================
code          meaning                     icetools SIC
============  ==========================  ==================================
00, 01        ice free / open water <1/10  0.0
02            bergy water                 0.0
98            ice free                    0.0
10 .. 90      1/10 .. 9/10                0.1 .. 0.9
91            9+/10 (more than 9/10)      0.95, midway between 9/10 and 10/10
92            10/10                       1.0
ab (a < b)    a/10 to b/10, e.g. 46       (a + b) / 20, the interval's midpoint (0.5)
81            8/10 to 10/10               0.9
55            (AI4Arctic: open water)     0.0, as the AI4Arctic challenge maps it
99, -9, NULL  unknown / not set           NaN (masked)
============  ==========================  ==================================

POLY_TYPE W (water) is 0.0 whatever CT says; L (land), N (no data) and S (ice shelf) are masked.
The AI4Arctic challenge rounds 91 up to 10/10; pass ``convention="ai4arctic"`` for that.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping

from icetools.errors import DataError

CODE_FIELDS = ("CT", "CA", "SA", "FA", "CB", "SB", "FB", "CC", "SC", "FC", "CN", "CD", "CF")
OPEN_WATER_CODES = {0, 1, 2, 55, 98}
UNKNOWN_CODES = {99, -9}
MASKED_POLY_TYPES = {"L", "N", "S"}


def _as_int(code: object) -> int | None:
    """Codes arrive as ints, floats, text with leading zeros ('08'), bytes, or NULL."""
    if code is None:
        return None
    if isinstance(code, bytes):
        code = code.decode("ascii", "replace")
    if isinstance(code, float):
        if math.isnan(code):
            return None
        return int(code)
    text = str(code).strip()
    if text == "" or text.upper() in {"NULL", "NONE", "NAN", "-"}:
        return None
    try:
        return int(float(text))
    except ValueError:
        return None


def decode_ct(code: object, poly_type: object = None, *, convention: str = "midpoint") -> float:
    """SIGRID-3 total concentration code -> sea ice fraction 0..1, NaN when unknown or masked."""
    ptype = poly_type.decode() if isinstance(poly_type, bytes) else poly_type
    ptype = str(ptype).strip().upper() if ptype not in (None, "") else None
    if ptype == "W":
        return 0.0
    if ptype in MASKED_POLY_TYPES:
        return math.nan
    value = _as_int(code)
    if value is None or value in UNKNOWN_CODES:
        return math.nan
    if value in OPEN_WATER_CODES:
        return 0.0
    if value == 92:
        return 1.0
    if value == 91:
        return 1.0 if convention == "ai4arctic" else 0.95
    if value == 81:
        return 0.9
    if 10 <= value <= 90 and value % 10 == 0:
        return value / 100.0
    low, high = divmod(value, 10)
    if 1 <= low < high <= 9:
        return (low + high) / 20.0
    return math.nan


def _code_text(code: object) -> str | None:
    """The code as the chart writes it; None when it is not set at all (empty, NULL, NaN)."""
    if isinstance(code, bytes):
        code = code.decode("ascii", "replace")
    if code is None or (isinstance(code, float) and math.isnan(code)):
        return None
    text = str(code).strip()
    return None if text == "" or text.upper() in {"NULL", "NONE", "NAN", "-"} else text


def undefined_ct_codes(codes: Iterable[object], poly_types: Iterable[object] | None = None) -> Counter[str]:
    """CT codes that SIGRID-3 does not define ('77', 'abc', '-1'), with how many polygons carry each.

    Not set (NULL), unknown by definition (99, -9) and polygons whose POLY_TYPE decides (W, L, N, S)
    are not counted: only codes that say something icetools cannot read.
    """
    counts: Counter[str] = Counter()
    codes = list(codes)
    types = list(poly_types) if poly_types is not None else [None] * len(codes)
    for code, ptype in zip(codes, types):
        text = _code_text(code)
        kind = ptype.decode() if isinstance(ptype, bytes) else ptype
        kind = str(kind).strip().upper() if kind not in (None, "") else None
        if text is None or kind == "W" or kind in MASKED_POLY_TYPES or _as_int(code) in UNKNOWN_CODES:
            continue
        if math.isnan(decode_ct(code, kind)):
            counts[text] += 1
    return counts


def warn_undefined_ct(counts: Mapping[str, int], source: str) -> str | None:
    """One warning naming the undefined CT codes of ``source`` and how many polygons they mask."""
    if not counts:
        return None
    shown = ", ".join(repr(code) for code, _ in Counter(counts).most_common(10))
    more = f" and {len(counts) - 10} more" if len(counts) > 10 else ""
    message = (f"{source}: {sum(counts.values())} polygon(s) have CT codes SIGRID-3 does not define "
               f"({shown}{more}); they are masked as nodata")
    warnings.warn(message, UserWarning, stacklevel=3)
    return message


@dataclass(frozen=True)
class ChartPolygon:
    """One chart polygon: its id, its raw codes and its decoded concentration."""

    poly_id: int
    codes: Mapping[str, str]
    poly_type: str | None
    sic: float


def parse_polygon_codes(
    rows: Iterable[object], *, convention: str = "midpoint", source: str = "polygon_codes"
) -> dict[int, ChartPolygon]:
    """Parse AI4Arctic's ``polygon_codes`` table: a header row, then ``;``-separated rows.

    Undefined CT codes give one warning naming them (``source`` names the file in it).
    """
    decoded = [r.decode("utf-8", "replace") if isinstance(r, bytes) else str(r) for r in rows]
    decoded = [r.strip() for r in decoded if r and str(r).strip()]
    if not decoded:
        return {}
    header = [h.strip() for h in decoded[0].split(";")]
    if "poly_id" not in header:
        raise ValueError("polygon_codes header has no 'poly_id' column")
    table: dict[int, ChartPolygon] = {}
    undefined: Counter[str] = Counter()
    rows_of: dict[int, set[str]] = {}
    for row in decoded[1:]:
        values = dict(zip(header, (v.strip() for v in row.split(";"))))
        pid = _as_int(values.get("poly_id"))
        if pid is None:
            continue
        rows_of.setdefault(pid, set()).add(";".join(v for k, v in values.items() if k != "poly_id"))
        ptype = values.get("POLY_TYPE") or None
        table[pid] = ChartPolygon(
            poly_id=pid,
            codes={k: values[k] for k in CODE_FIELDS if k in values},
            poly_type=ptype,
            sic=decode_ct(values.get("CT"), ptype, convention=convention),
        )
        undefined += undefined_ct_codes([values.get("CT")], [ptype])
    _refuse_conflicting_rows(rows_of, source)
    warn_undefined_ct(undefined, source)
    return table


def _refuse_conflicting_rows(rows_of: Mapping[int, set[str]], source: str) -> None:
    """One polygon id with rows of different codes: which row holds is anyone's guess (a table whose
    id column repeats one value would otherwise chart the whole scene with one polygon's codes)."""
    conflicting = sorted(pid for pid, rows in rows_of.items() if len(rows) > 1)
    if conflicting:
        worst = max(conflicting, key=lambda pid: len(rows_of[pid]))
        raise DataError(
            f"{source} gives {len(conflicting)} poly_id(s) several rows with different codes (e.g. poly_id "
            f"{worst} in {len(rows_of[worst])} rows): each polygon needs exactly one row; the table is damaged"
        )


def format_polygon_codes(polygons: Iterable[Mapping[str, object]]) -> list[str]:
    """The inverse of :func:`parse_polygon_codes`: header plus one row per polygon (``-9`` for unset)."""
    header = ("poly_id",) + CODE_FIELDS + ("POLY_TYPE",)
    lines = [";".join(header)]
    for poly in polygons:
        lines.append(";".join(str(poly.get(k, "-9")) for k in header))
    return lines


def encode_ct(fraction: float, *, spread: float = 0.0) -> str:
    """A fraction -> the CT code an analyst would write (used by the synthetic charts).

    ``spread`` is the analyst's uncertainty in tenths; above 1 tenth an interval code is written.
    """
    if not math.isfinite(fraction):
        return "99"
    tenths = fraction * 10
    if tenths < 0.5:
        return "01"
    if tenths >= 9.75:
        return "92"
    if tenths >= 9.25:
        return "91"
    if spread >= 1.0:
        low = max(1, min(8, int(math.floor(tenths - spread / 2 + 0.5))))
        high = max(low + 1, min(9, int(math.floor(tenths + spread / 2 + 0.5))))
        return f"{low}{high}"
    return f"{int(round(tenths)) * 10:02d}"
