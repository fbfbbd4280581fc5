"""Issue 11, items 2, 10 and 11: `info` is data on stdout, GDAL's size order, several inputs, -q/-v."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fixtures import affine_grid, write_scene

from .helpers import data_error, invoke, scene

README = Path(__file__).resolve().parents[2] / "README.md"


def test_text_report_goes_to_stdout_with_gdal_size_order(tmp_path: Path) -> None:
    path = write_scene(tmp_path / "s.tif", affine_grid(64, 80))
    result = invoke("info", path)
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"File: {path}"
    assert "Size is 80, 64" in lines  # columns, rows: as `gdalinfo` writes it
    assert "Coordinate system: EPSG:3413" in lines
    assert any(line.startswith("Band 1 nersc_sar_primary: min ") for line in lines)


def test_json_report_is_one_object_and_parses(tmp_path: Path) -> None:
    path = scene(tmp_path / "s.tif")
    result = invoke("info", path, "--json")
    assert result.exit_code == 0 and result.stderr == ""
    report = json.loads(result.stdout)
    assert (report["width"], report["height"]) == (48, 40)


def test_several_inputs_give_one_block_each_and_a_json_list(tmp_path: Path) -> None:
    a, b = scene(tmp_path / "a.tif", 40, 48), scene(tmp_path / "b.tif", 32, 16)
    text = invoke("info", a, b)
    assert text.exit_code == 0
    blocks = text.stdout.strip().split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == [f"File: {a}", f"File: {b}"]
    assert "Size is 48, 40" in blocks[0] and "Size is 16, 32" in blocks[1]
    reports = json.loads(invoke("info", "--json", a, b).stdout)
    assert [(r["width"], r["height"]) for r in reports] == [(48, 40), (16, 32)]


def test_a_missing_input_prints_nothing_on_stdout(tmp_path: Path) -> None:
    result = invoke("info", scene(tmp_path / "a.tif"), tmp_path / "nope.tif", "--json")
    assert "nope.tif does not exist" in data_error(result)
    assert result.stdout == ""  # every input is read before any is printed: never half a JSON list


def test_quiet_and_verbose_are_taken_after_the_command(tmp_path: Path) -> None:
    path = scene(tmp_path / "s.tif")
    assert invoke("info", "-q", path).exit_code == 0
    assert invoke("info", path, "--quiet").exit_code == 0
    missing = tmp_path / "nope.tif"
    plain = invoke("info", missing)
    assert data_error(plain) == f"error: {missing} does not exist"
    detailed = invoke("info", "-v", missing)  # -v: the traceback, then the same one line
    assert detailed.exit_code == 1
    assert "Traceback" in detailed.stderr and "InputFileError" in detailed.stderr
    assert detailed.stderr.strip().splitlines()[-1] == f"error: {missing} does not exist"
    assert invoke("-v", "info", missing).stderr == detailed.stderr  # the group's -v is the same


def test_readme_states_the_demo_scene_size_as_the_synth_makes_it() -> None:
    """`make demo` writes `synth sea-ice --size 1024 --seed 7`: 1024 rows and ~4 % more columns."""
    from icetools.synth.sea_ice import SceneLayout

    layout = SceneLayout.draw(1024, 7)
    assert (layout.height, layout.width) == (1024, 1064)
    demo = README.read_text().split("## What `make demo` does")[1].split("\n## ")[0]
    assert re.search(r"\b1064 x 1024\b", demo) and "1066" not in demo
