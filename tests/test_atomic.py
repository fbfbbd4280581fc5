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


# --------------------------------------------------------------------------- files committed together


def test_files_written_together_appear_together_or_not_at_all(tmp_path):
    from icetools.io.atomic import committed_together

    (tmp_path / "weights").write_text("epoch 1")
    (tmp_path / "state").write_text("epoch 1")
    with pytest.raises(OSError):
        with committed_together():
            with atomic_path(tmp_path / "weights", overwrite=True) as tmp:
                tmp.write_text("epoch 2")
            assert (tmp_path / "weights").read_text() == "epoch 1"  # staged, not yet in place
            with atomic_path(tmp_path / "state", overwrite=True) as tmp:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    # The failed epoch left nothing: the earlier pair stays, and no staged file either.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state", "weights"]
    assert {(tmp_path / n).read_text() for n in ("weights", "state")} == {"epoch 1"}

    with committed_together():
        with committed_together():  # an inner block joins the outer one
            with atomic_path(tmp_path / "weights", overwrite=True) as tmp:
                tmp.write_text("epoch 2")
        assert (tmp_path / "weights").read_text() == "epoch 1"
        with atomic_path(tmp_path / "state", overwrite=True) as tmp:
            tmp.write_text("epoch 2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state", "weights"]
    assert {(tmp_path / n).read_text() for n in ("weights", "state")} == {"epoch 2"}


def test_a_name_taken_meanwhile_fails_the_group_before_any_move(tmp_path):
    from icetools.io.atomic import committed_together

    with pytest.raises(OutputExistsError, match="appeared while writing"):
        with committed_together():
            with atomic_path(tmp_path / "a", overwrite=False) as tmp:
                tmp.write_text("mine")
            with atomic_path(tmp_path / "b", overwrite=False) as tmp:
                tmp.write_text("mine")
            (tmp_path / "b").write_text("another run's")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    assert (tmp_path / "b").read_text() == "another run's"


def test_a_full_disk_names_the_output_not_its_temporary_name(tmp_path):
    out = tmp_path / "out.json"
    for raised in (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),  # a writer that names no file
                   None):  # one that names the file it wrote: the temporary one
        with pytest.raises(OSError) as caught:
            with atomic_path(out, overwrite=False) as tmp:
                raise raised or OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(out)
    # Libraries that say it without an OSError: safetensors (Rust), SQLite through GDAL.
    for message in ("Error while serializing: I/O error: No space left on device (os error 28)",
                    "sqlite3_exec(COMMIT) failed: database or disk is full"):
        with pytest.raises(OSError) as caught:
            with atomic_path(out, overwrite=False):
                raise RuntimeError(message)
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(out)
    with pytest.raises(RuntimeError, match="os error 2"):  # not a refused write: left as it is
        with atomic_path(out, overwrite=False):
            raise RuntimeError("No such file or directory (os error 2)")
    # An error about another file (an input) is left as it is.
    with pytest.raises(FileNotFoundError) as caught:
        with atomic_path(out, overwrite=False):
            open(tmp_path / "missing.txt")
    assert caught.value.filename == str(tmp_path / "missing.txt")
    assert list(tmp_path.iterdir()) == []


def test_a_vector_with_a_format_flag_is_staged_like_every_output(tmp_path):
    import geopandas as gpd
    import pyogrio
    import shapely

    from icetools.cli.formats import Output, write_vector

    frame = gpd.GeoDataFrame({"v": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs=3413)
    stale = tmp_path / f".labels.dat.tmp-{2**22 + 7}.0.gpkg"  # a killed run's leftover (no such process)
    stale.write_text("half")
    out = Output(tmp_path / "labels.dat", "GPKG")
    write_vector(frame, out, layer="labels", overwrite=False)
    assert pyogrio.read_dataframe(out.path, layer="labels")["v"].tolist() == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.dat"]  # the stale one went too
    with pytest.raises(OutputExistsError):
        write_vector(frame, out, layer="labels", overwrite=False)


def test_an_unexplained_library_error_is_blamed_on_the_disk_only_when_it_is_full(tmp_path, monkeypatch):
    from collections import namedtuple

    import pyogrio.errors

    import icetools.io.atomic as atomic

    usage = namedtuple("usage", "total used free")
    out = tmp_path / "out.gpkg"
    for free, blamed in ((0, True), (10**12, False)):
        monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path, free=free: usage(10**12, 10**12 - free, free))
        with pytest.raises(Exception) as caught:
            with atomic_path(out, overwrite=False):
                raise pyogrio.errors.DataSourceError("Failed to commit transaction")
        assert (getattr(caught.value, "errno", None) == errno.ENOSPC) is blamed
    # An error of the computation inside the block (torch raises RuntimeError) is never the disk's.
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: usage(10**12, 10**12, 0))
    with pytest.raises(RuntimeError, match="out of memory"):
        with atomic_path(out, overwrite=False):
            raise RuntimeError("CUDA out of memory")
    assert list(tmp_path.iterdir()) == []
