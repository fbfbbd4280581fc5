"""The SIGRID-3 decoder: every code class, as real CIS charts and AI4Arctic tables spell them."""

from __future__ import annotations

import math

import pytest

from icetools.sigrid import decode_ct, encode_ct, format_polygon_codes, parse_polygon_codes


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("00", 0.0), ("01", 0.0), ("02", 0.0), ("98", 0.0), (55, 0.0),  # open / bergy water, ice free
        ("10", 0.1), ("50", 0.5), ("90", 0.9), (30, 0.3), (30.0, 0.3),  # tenths
        ("91", 0.95), ("92", 1.0),  # 9+/10 and 10/10
        ("46", 0.5), ("12", 0.15), ("79", 0.8), ("89", 0.85), ("81", 0.9),  # intervals -> midpoint
        (b"68", 0.7),  # bytes, as netCDF string tables can deliver
    ],
)
def test_decode_ct_code_classes(code, expected):
    assert decode_ct(code) == pytest.approx(expected)


@pytest.mark.parametrize("code", ["99", "-9", -9, None, "", "NULL", float("nan"), "54", "xx"])
def test_unknown_codes_are_masked(code):
    assert math.isnan(decode_ct(code))


def test_poly_type_overrides_ct():
    assert decode_ct("92", "W") == 0.0
    assert math.isnan(decode_ct(None, "L"))  # CIS land polygons: NULL CT
    assert math.isnan(decode_ct("50", "N"))
    assert decode_ct("08" if False else "80", "I") == 0.8


def test_ai4arctic_convention_rounds_91_up():
    assert decode_ct("91", convention="ai4arctic") == 1.0


def test_polygon_codes_table_round_trip():
    rows = format_polygon_codes([
        {"poly_id": 29, "CT": "92", "CA": "30", "POLY_TYPE": "I"},
        {"poly_id": 76, "CT": "02", "POLY_TYPE": "W"},
        {"poly_id": 3, "CT": "-9", "POLY_TYPE": "L"},
    ])
    assert rows[0].startswith("poly_id;CT;CA;SA;FA;CB;SB;FB;CC;SC;FC;CN;CD;CF;POLY_TYPE")
    table = parse_polygon_codes([r.encode() for r in rows])  # arrives as bytes in some files
    assert set(table) == {29, 76, 3}
    assert table[29].sic == 1.0 and table[29].codes["CA"] == "30"
    assert table[76].sic == 0.0
    assert math.isnan(table[3].sic)


def test_reference_rows_from_ai4arctic():
    header = "poly_id;CT;CA;SA;FA;CB;SB;FB;CC;SC;FC;CN;CD;CF;POLY_TYPE"
    table = parse_polygon_codes([header, "29;92;30;95;05;70;93;08;-9;-9;-9;-9;-9;08-9;I", "76;02;-9;98;10;-9;-9;-9;-9;-9;-9;-9;-9;10-9;W"])
    assert table[29].sic == 1.0 and table[29].codes["CF"] == "08-9"
    assert table[76].sic == 0.0


@pytest.mark.parametrize("fraction", [0.0, 0.04, 0.3, 0.5, 0.72, 0.9, 0.94, 0.97, 1.0])
def test_encode_then_decode_is_close(fraction):
    assert abs(decode_ct(encode_ct(fraction)) - fraction) <= 0.05 + 1e-9
    assert abs(decode_ct(encode_ct(fraction, spread=2)) - fraction) <= 0.1 + 1e-9
