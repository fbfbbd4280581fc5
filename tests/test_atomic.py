"""Atomic outputs: a run removes only what it created, stale temporaries go, file-system refusals are one line."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from fixtures import refuse_file_creation_in
from scenes import affine_grid
from typer.testing import CliRunner

from icetools.cli.app import app
from icetools.errors import OutputExistsError
from icetools.io.atomic import atomic_path, remove_stale_temporaries, removed_on_failure
from icetools.io.raster import write_raster

runner = CliRunner()


def _write_whole(path, text: str) -> None:
    with atomic_path(path, overwrite=False) as tmp:
        tmp.write_text(text)


def test_the_slower_of_two_runs_fails_and_keeps_the_winners_file(tmp_path):
    out = tmp_path / "same.txt"
    with pytest.raises(OutputExistsError, match="appeared while writing"):
        with removed_on_failure([out]):
            with atomic_path(out, overwrite=False) as tmp:
                tmp.write_text("slow run")
                # The fast run, in its own thread (its own run), finishes while the slow one writes.
                fast = threading.Thread(target=_write_whole, args=(out, "fast run"))
                fast.start()
                fast.join()
    assert out.read_text() == "fast run"
    assert [p.name for p in tmp_path.iterdir()] == ["same.txt"]


def test_a_failure_removes_the_runs_own_outputs_only(tmp_path):
    mine, theirs = tmp_path / "mine.txt", tmp_path / "theirs.txt"
    with pytest.raises(RuntimeError):
        with removed_on_failure([mine, theirs]):
            _write_whole(mine, "mine")
            theirs.write_text("another run's")  # changed meanwhile, but not by this run
            raise RuntimeError("late failure")
    assert not mine.exists() and theirs.read_text() == "another run's"


def test_rasters_race_through_the_same_commit(tmp_path):
    grid = affine_grid(20, 20)
    out = tmp_path / "r.tif"
    with pytest.raises(OutputExistsError):
        with removed_on_failure([out]), atomic_path(out, overwrite=False) as tmp:
            winner = threading.Thread(target=write_raster, args=(out, np.ones((20, 20), np.float32), grid),
                                      kwargs={"nodata": None})  # another run: its own thread
            winner.start()
            winner.join()
            tmp.write_bytes(b"loser")
    import rasterio

    with rasterio.open(out) as ds:
        assert ds.read(1).sum() == 400


def test_two_processes_racing_for_one_output(tmp_path):
    # Deterministic order, whatever the machine's load: the slow run stages its file and says so
    # (a marker file); the fast run starts writing only then and commits first; the slow run waits for
    # that output before it tries to commit.
    code = (
        "import os, sys, time\n"
        "from icetools.io.atomic import atomic_path\n"
        "out, text, role, marker = sys.argv[1:5]\n"
        "def wait_for(path):\n"
        "    deadline = time.monotonic() + 60\n"
        "    while not os.path.exists(path) and time.monotonic() < deadline:\n"
        "        time.sleep(0.02)\n"
        "if role == 'fast':\n"
        "    wait_for(marker)\n"
        "with atomic_path(out, overwrite=False) as tmp:\n"
        "    tmp.write_text(text)\n"
        "    if role == 'slow':\n"
        "        open(marker, 'w').close()\n"
        "        wait_for(out)\n"
    )
    out, marker = tmp_path / "o.txt", tmp_path / "staged"
    slow = subprocess.Popen([sys.executable, "-c", code, str(out), "slow", "slow", str(marker)],
                            stderr=subprocess.PIPE, text=True)
    fast = subprocess.run([sys.executable, "-c", code, str(out), "fast", "fast", str(marker)],
                          capture_output=True, text=True)
    slow.wait(60)
    assert fast.returncode == 0 and slow.returncode != 0
    assert "appeared while writing" in slow.stderr.read()
    assert out.read_text() == "fast"


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".out.tif.tmp-{dead_pid}.0.tif"
    stale_dir = tmp_path / f".run.tmp-{dead_pid}"
    alive = tmp_path / f".out.tif.tmp-{os.getppid()}.0.tif"
    bystander = tmp_path / "notes.tmp-1.txt"  # not hidden: not ours
    for path in (stale, alive, bystander):
        path.write_text("x")
    stale_dir.mkdir()
    (stale_dir / "weights").write_text("x")
    _write_whole(tmp_path / "new.txt", "new")  # any write in the folder sweeps it
    assert not stale.exists() and not stale_dir.exists()
    assert alive.exists() and bystander.exists()
    assert remove_stale_temporaries(tmp_path) == []


def _can_be_refused() -> bool:
    return os.geteuid() != 0


def test_a_read_only_folder_is_one_plain_line(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    if _can_be_refused():
        folder.chmod(0o555)
    else:  # root ignores permissions: simulate the refusal the kernel would give
        refuse_file_creation_in(folder, monkeypatch)
    try:
        result = runner.invoke(app, ["synth", "sea-ice", str(folder / "s.tif"), "--size", "64"])
    finally:
        folder.chmod(0o755)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "permission denied" in lines[0] and str(folder) in lines[0] and "internal error" not in lines[0]
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EDQUOT])
def test_full_or_read_only_disks_are_one_plain_line(tmp_path, monkeypatch, code):
    import icetools.io.raster as raster

    def full(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / "s.tif"))

    monkeypatch.setattr(raster, "_to_cog", full)  # the final copy is where a full disk shows
    result = runner.invoke(app, ["synth", "sea-ice", str(tmp_path / "s.tif"), "--size", "64"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert str(tmp_path / "s.tif") in lines[0] and "internal error" not in lines[0]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    assert not (tmp_path / "s.tif").exists()


def test_gdal_messages_without_errno_are_recognised():
    from icetools.cli.common import plain_os_error

    gdal = OSError("/x/y.tif: Free disk space available is 0 bytes, whereas 10 are at least necessary. No space left on device")
    assert "no space left" in plain_os_error(gdal)
    assert plain_os_error(ValueError("x")) is None
    assert plain_os_error(OSError("something else")) is None
