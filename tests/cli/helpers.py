"""What the CLI tests share: the runner, scenes, and how an error must look."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fixtures import write_scene
from typer.testing import CliRunner

from icetools.cli.app import app

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def scene(path: Path, height: int = 40, width: int = 48, *, seed: int = 0) -> Path:
    """A two-band HH/HV GeoTIFF in EPSG:3413 (the tiny models' inputs)."""
    data = np.random.default_rng(seed).normal(size=(2, height, width)).astype("float32")
    return write_scene(path, None, data=data, band_names=("HH", "HV"), nodata=None)


def usage_error(result, option: str | None = None) -> str:
    """Exit 2 and exactly one ``Error:`` line (naming ``option``); no traceback, nothing on stdout."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    if option is not None:
        assert f"'{option}'" in errors[0] or option in errors[0], errors[0]
    return errors[0]


def data_error(result) -> str:
    """Exit 1 and one ``error:`` line on stderr."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]
