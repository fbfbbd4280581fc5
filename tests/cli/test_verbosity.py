"""Issue 11, items 2 and 10: -q/-v on every command as on the group; -q silences warnings too;
-v adds the traceback (and the cause a one-line message hides) to a data error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from icetools.cli.app import app
from icetools.grid import Grid
from icetools.io.raster import write_raster

from .helpers import data_error, invoke


def _commands(command, path: str = "icetools"):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, f"{path} {name}")


def test_every_command_and_group_takes_quiet_and_verbose() -> None:
    seen = []
    for path, command in _commands(typer.main.get_command(app)):
        flags = {opt for param in command.params for opt in param.opts}
        assert {"-q", "--quiet", "-v", "--verbose"} <= flags, path
        seen.append(path)
    assert len(seen) >= 13  # the group, 8 commands, synth and its 3 generators


def _plain_raster(path: Path) -> Path:
    """No CRS, no transform: vectorize warns that it writes pixel coordinates."""
    data = np.zeros((20, 30), "float32")
    data[:, 15:] = 1
    return write_raster(path, data, Grid(20, 30), nodata=None)


def test_warnings_are_one_line_each_and_silenced_by_quiet(tmp_path: Path) -> None:
    raster = _plain_raster(tmp_path / "plain.tif")
    loud = invoke("vectorize", raster, "--threshold", "0.5", "-o", tmp_path / "a.gpkg")
    assert loud.exit_code == 0, loud.output
    warnings = [line for line in loud.stderr.splitlines() if line.startswith("warning:")]
    assert any("neither a CRS nor tie points" in line for line in warnings)
    assert "UserWarning" not in loud.stderr and "warn(" not in loud.stderr  # no Python warning format
    for args in (("vectorize", "-q"), ("-q", "vectorize")):
        quiet = invoke(*args, raster, "--threshold", "0.5", "-o", tmp_path / f"q{len(args[0])}.gpkg")
        assert quiet.exit_code == 0 and quiet.stderr == "", quiet.stderr


def test_verbose_adds_the_traceback_and_the_hidden_cause_to_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a raster")
    plain = invoke("vectorize", bad, "-o", tmp_path / "v.gpkg")
    line = data_error(plain)
    detailed = invoke("vectorize", bad, "-o", tmp_path / "v.gpkg", "-v")
    assert detailed.exit_code == 1
    assert detailed.stderr.strip().splitlines()[-1] == line  # the same one line, last
    assert detailed.stderr.count("Traceback (most recent call last)") >= 2
    assert "RasterioIOError" in detailed.stderr  # the cause the one-line message hides
    assert not (tmp_path / "v.gpkg").exists()
