"""A full disk: exit 1, one line naming the path and "no space left", nothing left behind.

GDAL reports some refused writes only on stderr (a COG copy that runs out of room returns as if
it had succeeded), so every raster is read back before it moves into place. The first tests
simulate the refusals in-process (they run everywhere); the last ones fill a real tmpfs, mounted
in a user namespace (``unshare -rm``), and are skipped with the reason where that is not allowed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import rasterio
from typer.testing import CliRunner

import icetools.io.raster as raster
from icetools.cli.app import app

runner = CliRunner()
HERE = Path(__file__).parent
DiskUsage = namedtuple("DiskUsage", "total used free")


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A small AI4Arctic-like scene with its chart (``s.nc.chart.gpkg``), outside the test's folder."""
    folder = tmp_path_factory.mktemp("inputs")
    result = runner.invoke(app, ["synth", "sea-ice", str(folder / "s.nc"), "--size", "96", "-q"])
    assert result.exit_code == 0, result.output
    return folder / "s.nc"


def _rasterize(scene: Path, out: Path):
    return runner.invoke(app, ["rasterize", f"{scene}.chart.gpkg", "--like", str(scene), "-o", str(out), "-q"])


def _error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


def _disk(free: int):
    return lambda path: DiskUsage(10**12, 10**12 - free, free)


def _truncating_cog_copy(monkeypatch) -> None:
    """The COG copy "succeeds" but its file ends early: what GDAL leaves when the disk fills mid-copy."""
    real = raster._to_cog

    def short(src, dst, **kwargs):
        real(src, dst, **kwargs)
        size = os.path.getsize(dst)
        with open(dst, "r+b") as handle:
            handle.truncate(size // 3)

    monkeypatch.setattr(raster, "_to_cog", short)


def test_a_cog_copy_cut_short_by_a_full_disk_is_one_line_and_leaves_nothing(scene, tmp_path, monkeypatch):
    _truncating_cog_copy(monkeypatch)
    monkeypatch.setattr(shutil, "disk_usage", _disk(0))
    out = tmp_path / "labels.tif"
    result = _rasterize(scene, out)
    assert result.exit_code == 1
    assert _error_lines(result) == [f"error: {out}: no space left on the device"]
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary, no sidecar


def test_a_file_that_does_not_read_back_on_a_roomy_disk_is_not_blamed_on_space(scene, tmp_path, monkeypatch):
    _truncating_cog_copy(monkeypatch)
    monkeypatch.setattr(shutil, "disk_usage", _disk(10**12))
    out = tmp_path / "labels.tif"
    result = _rasterize(scene, out)
    assert result.exit_code == 1
    [line] = _error_lines(result)
    assert line.startswith(f"error: {out}: writing failed") and "does not read back" in line
    assert "internal error" not in line
    assert list(tmp_path.iterdir()) == []


def test_a_copy_that_reads_back_other_values_is_refused(scene, tmp_path, monkeypatch):
    """Readable but wrong (a block the disk refused, read back as zeros): the byte comparison sees it."""
    real = raster._to_cog

    def altered(src, dst, **kwargs):
        with rasterio.open(src, "r+") as ds:
            ds.write(ds.read(1) * 0 + 7, 1)
        real(src, dst, **kwargs)
        with rasterio.open(src, "r+") as ds:
            ds.write(ds.read(1) * 0 + 3, 1)

    monkeypatch.setattr(raster, "_to_cog", altered)
    result = _rasterize(scene, tmp_path / "labels.tif")
    assert result.exit_code == 1 and "does not read back as written" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_refused_block_write_names_the_output(scene, tmp_path, monkeypatch):
    from rasterio.errors import RasterioIOError

    def refused(self, *args, **kwargs):
        raise RasterioIOError("Write failed. See previous exception for details.")

    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", refused)
    monkeypatch.setattr(shutil, "disk_usage", _disk(4096))
    out = tmp_path / "labels.tif"
    result = _rasterize(scene, out)
    assert result.exit_code == 1
    assert _error_lines(result) == [f"error: {out}: no space left on the device"]
    assert list(tmp_path.iterdir()) == []


def test_predict_on_a_full_disk_leaves_no_product(scene, tmp_path, monkeypatch):
    _truncating_cog_copy(monkeypatch)
    monkeypatch.setattr(shutil, "disk_usage", _disk(0))
    out = tmp_path / "sic.tif"
    result = runner.invoke(app, ["predict", str(scene), "-o", str(out), "--quicklook", str(tmp_path / "q.png"), "-q"])
    assert result.exit_code == 1
    assert _error_lines(result)[-1] == f"error: {out}: no space left on the device"
    assert list(tmp_path.iterdir()) == []


def test_the_write_check_costs_no_false_alarm(scene, tmp_path):
    """An ordinary write passes the read-back and the product is whole."""
    out = tmp_path / "labels.tif"
    assert _rasterize(scene, out).exit_code == 0
    with rasterio.open(out) as ds:
        assert ds.read().shape[0] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]


# --------------------------------------------------------------------------- a real full disk (tmpfs)


def _can_mount_tmpfs() -> str | None:
    """None when this process may mount a tmpfs in a user namespace, else why not."""
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return "needs Linux and unshare(1)"
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>&1 || mount -t tmpfs -o size=64k tmpfs /tmp"],
        capture_output=True, text=True, timeout=30,
    )
    if probe.returncode != 0:
        return f"cannot mount a tmpfs in a user namespace here: {(probe.stderr or probe.stdout).strip()[:200]}"
    return None


def _on_tmpfs(tmp_path: Path, cases: list[dict]) -> list[dict]:
    """Run ``cases`` in tests/full_disk_driver.py, inside a user and mount namespace of its own."""
    reason = _can_mount_tmpfs()
    if reason is not None:
        pytest.skip(reason)
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps(cases))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(["unshare", "-rm", sys.executable, str(HERE / "full_disk_driver.py"), str(spec)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check_outcome(outcome: dict, output: Path) -> None:
    """Either whole products (exit 0, they read back) or one plain line naming the output (or a file
    in an output folder), exit 1 and an empty disk; never a file still held open."""
    assert outcome["open_files"] == [], outcome
    if outcome["exit_code"] == 0:
        assert outcome["unreadable"] == [], outcome
        assert not any(".tmp-" in name for name in outcome["files"]), outcome
        return
    assert outcome["exit_code"] == 1, outcome
    [line] = outcome["error_lines"]
    named = line.removeprefix("error: ").removesuffix(": no space left on the device")
    assert line == f"error: {named}: no space left on the device", outcome
    assert named == str(output) or named.startswith(f"{output.parent}/"), outcome
    assert outcome["files"] == [], outcome


def test_every_product_on_a_filling_tmpfs(scene, tmp_path):
    """Disks from too small to roomy: every run either writes whole products or fails plainly."""
    mount = tmp_path / "disk"
    mount.mkdir()
    labels, sic, patches, shapes = mount / "labels.tif", mount / "sic.tif", mount / "p.gpkg", mount / "ice.gpkg"
    commands = {
        labels: ["rasterize", f"{scene}.chart.gpkg", "--like", str(scene), "-o", str(labels)],
        sic: ["predict", str(scene), "-o", str(sic)],
        patches: ["sample-patches", str(scene), "-o", str(patches), "--size", "32", "--n", "24",
                  "--export", str(mount / "chips")],
        shapes: ["vectorize", f"{scene}.truth.tif", "--threshold", "0.5", "-o", str(shapes)],
    }
    # Sizes in KiB. The staged rasters take 72 (labels) and 36 (SIC); the middle sizes are where,
    # unchecked, the COG copy ran out of room unseen and exit 0 left a file no reader opens
    # (GDAL 3.10: predict at 96..112 KiB, rasterize at 118..120 KiB). The patches need 1 MiB with
    # their chips: at 128 the GeoPackage does not fit, at 512 the chips do not.
    sizes = {labels: (16, 116, 118, 120, 2048), sic: (16, 100, 2048),
             patches: (128, 512, 2048), shapes: (16, 2048)}
    cases = [{"mount": str(mount), "size_kib": size, "argv": [*commands[output], "-q"], "output": str(output)}
             for output in commands for size in sizes[output]]
    outcomes = _on_tmpfs(tmp_path, cases)
    for case, outcome in zip(cases, outcomes):
        _check_outcome(outcome, Path(case["output"]))
    codes = {(Path(case["output"]).name, case["size_kib"]): outcome["exit_code"] for case, outcome in zip(cases, outcomes)}
    assert codes[("labels.tif", 16)] == codes[("sic.tif", 16)] == codes[("p.gpkg", 512)] == codes[("ice.gpkg", 16)] == 1
    assert codes[("labels.tif", 2048)] == codes[("sic.tif", 2048)] == codes[("p.gpkg", 2048)] == codes[("ice.gpkg", 2048)] == 0


def test_train_on_a_filling_tmpfs_never_leaves_weights_without_state(scene, tmp_path):
    patches = tmp_path / "patches.gpkg"
    sampled = runner.invoke(app, ["sample-patches", str(scene), "-o", str(patches), "--size", "32", "--n", "24", "-q"])
    assert sampled.exit_code == 0, sampled.output
    mount = tmp_path / "disk"
    mount.mkdir()
    run = mount / "run"
    argv = ["train", "--patches", str(patches), "-o", str(run), "--epochs", "1", "--batch-size", "4", "--workers", "0",
            "--samples-per-epoch", "16", "--model-arg", "widths=[4,8,8,8]", "-q"]
    # KiB. An epoch writes weights (66), state (191), curves (21) and small files: at 150 the
    # weights fit and their state does not.
    sizes = (150, 4096)
    outcomes = _on_tmpfs(tmp_path, [{"mount": str(mount), "size_kib": size, "argv": argv} for size in sizes])
    for outcome in outcomes:
        assert outcome["open_files"] == [], outcome
        files = set(outcome["files"])
        assert not any(".tmp-" in name for name in files), outcome
        if "run/model.safetensors" in files:  # weights always come with their state and config
            assert {"run/config.json", "run/last_state.json", "run/last_state.safetensors"} <= files, outcome
        if outcome["exit_code"] != 0:
            assert outcome["exit_code"] == 1, outcome
            [line] = outcome["error_lines"]
            assert line.startswith(f"error: {run}/") and line.endswith(": no space left on the device"), outcome
    assert [o["exit_code"] for o in outcomes][0] == 1 and outcomes[0]["files"] in ([], ["run"])
    assert outcomes[-1]["exit_code"] == 0 and "run/model.safetensors" in outcomes[-1]["files"]
