"""SIGTERM, SIGHUP and Ctrl-C: the same cleanup, the message says what was and was not written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from icetools.cli.common import guarded, interrupted_message
from icetools.io.atomic import atomic_path, committed_outputs

runner = CliRunner()


def _wait_for_staging(folder: Path, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until a staged ``.NAME.tmp-PID`` file shows: the run is mid-write, the moment worth killing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(".tmp-" in p.name for p in folder.iterdir()):
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended before it staged a file: {process.stderr.read()}")
        time.sleep(0.05)
    pytest.fail("no staged file appeared")


def _signal_mid_write(folder: Path, signum: int) -> subprocess.CompletedProcess:
    out = folder / "X.nc"
    process = subprocess.Popen(
        [sys.executable, "-m", "icetools", "synth", "sea-ice", str(out), "--size", "3072"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    try:
        _wait_for_staging(folder, process)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, "", stderr)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signal_mid_write_leaves_nothing(tmp_path, signum, code):
    result = _signal_mid_write(tmp_path, signum)
    if result.returncode == 0:
        # On a loaded machine the run may have finished before the signal arrived: that run is whole
        # (nothing to clean up); try once more in a fresh folder so the interrupted case is checked.
        retry = tmp_path / "again"
        retry.mkdir()
        result = _signal_mid_write(retry, signum)
        tmp_path = retry
    assert result.returncode == code, result.stderr
    assert "interrupted; no output was written" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no .tmp- file, nothing at X.nc nor its companions


def test_the_message_names_what_was_written_and_only_that(tmp_path):
    done, staged = tmp_path / "scene1.tif", tmp_path / "scene2.tif"
    app = typer.Typer()

    @app.command()
    @guarded
    def two_scenes() -> None:
        with atomic_path(done, overwrite=False) as tmp:
            tmp.write_text("first scene")
        with atomic_path(staged, overwrite=False) as tmp:
            tmp.write_text("half of the second")
            raise KeyboardInterrupt

    result = runner.invoke(app, [])
    assert result.exit_code == 130
    assert f"written, complete: {done}; nothing else was written" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene1.tif"]


def test_only_outputs_still_in_place_are_listed(tmp_path):
    path = tmp_path / "a.txt"
    with atomic_path(path, overwrite=False) as tmp:
        tmp.write_text("a")
    assert path in committed_outputs()
    theirs = tmp_path / "theirs.txt"
    theirs.write_text("another run's")
    os.replace(theirs, path)  # same name, another file: not ours any more
    assert path not in committed_outputs()


def test_interrupted_message_shortens_long_lists():
    assert interrupted_message([]) == "interrupted; no output was written"
    message = interrupted_message([Path(f"{k}.tif") for k in range(8)])
    assert "4.tif and 3 more" in message and "5.tif" not in message
