"""A run's products appear together: chips are staged as one folder, a quicklook goes with its GeoTIFF."""

from __future__ import annotations

import errno
import os

import pytest
from fixtures import refuse_file_creation_in
from typer.testing import CliRunner

from icetools.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    result = runner.invoke(app, ["synth", "sea-ice", str(folder / "s.nc"), "--size", "192", "-q"])
    assert result.exit_code == 0, result.output
    return folder / "s.nc"


def _sample(scene, tmp_path, n: int, *extra: str):
    return runner.invoke(app, ["sample-patches", str(scene), "-o", str(tmp_path / "p.gpkg"), "--size", "32",
                               "--n", str(n), "--export", str(tmp_path / "chips"), "-q", *extra])


def test_an_interrupted_chip_export_leaves_nothing(scene, tmp_path, monkeypatch):
    import icetools.patches_io as patches_io

    real = patches_io._write_chips

    def interrupted(frame, out_dir):
        real(frame.iloc[:2], out_dir)  # a few chips staged, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(patches_io, "_write_chips", interrupted)
    result = _sample(scene, tmp_path, 6)
    assert result.exit_code == 130, result.output
    assert "interrupted; no output was written" in result.output
    assert list(tmp_path.iterdir()) == []  # neither the GeoPackage nor a chip nor a staging folder


def test_export_overwrite_replaces_the_folder_as_a_whole(scene, tmp_path):
    assert _sample(scene, tmp_path, 12).exit_code == 0
    before = {p.name for p in (tmp_path / "chips").rglob("*.tif")}
    result = _sample(scene, tmp_path, 3, "--overwrite")
    assert result.exit_code == 0, result.output
    after = {p.name for p in (tmp_path / "chips").rglob("*.tif")}
    assert len(after) == 6 and len(before) > len(after)  # no old chip survives among the new ones
    assert not any(".tmp-" in p.name for p in tmp_path.iterdir())


def test_export_into_a_folder_holding_files_needs_overwrite(scene, tmp_path):
    (tmp_path / "chips").mkdir()
    (tmp_path / "chips" / "mine.txt").write_text("keep")
    result = _sample(scene, tmp_path, 3)
    assert result.exit_code == 1 and "already holds files" in result.output
    assert (tmp_path / "chips" / "mine.txt").read_text() == "keep"


def test_a_failed_quicklook_takes_its_geotiff_with_it(scene, tmp_path, monkeypatch):
    import icetools.quicklook as quicklook

    png = tmp_path / "look.png"

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(png))

    monkeypatch.setattr(quicklook, "write_quicklook", refused)
    result = runner.invoke(app, ["predict", str(scene), "-o", str(tmp_path / "p.tif"), "--quicklook", str(png), "-q"])
    assert result.exit_code == 1 and "permission denied" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_quicklook_folder_fails_before_the_long_pass(scene, tmp_path, monkeypatch):
    import icetools.inference as inference

    folder = tmp_path / "ro"
    folder.mkdir()
    refuse_file_creation_in(folder, monkeypatch)
    monkeypatch.setattr(inference, "predict_scene", lambda *a, **k: pytest.fail("predicted before checking"))
    result = runner.invoke(app, ["predict", str(scene), "-o", str(tmp_path / "p.tif"),
                                 "--quicklook", str(folder / "look.png"), "-q"])
    assert result.exit_code == 1 and "permission denied" in result.output and str(folder) in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"]


def test_an_interrupted_folder_of_scenes_names_the_scenes_it_wrote(scene, tmp_path, monkeypatch):
    import shutil

    import icetools.inference as inference

    scenes = tmp_path / "in"
    scenes.mkdir()
    for name in ("a.nc", "b.nc"):
        shutil.copy(scene, scenes / name)
    real = inference.predict_scene

    def second_interrupted(job, **kwargs):
        if job.scene.name == "b.nc":
            raise KeyboardInterrupt
        return real(job, **kwargs)

    monkeypatch.setattr(inference, "predict_scene", second_interrupted)
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(scenes / "a.nc"), str(scenes / "b.nc"), "-o", f"{out}/", "-q"])
    assert result.exit_code == 130
    assert f"written, complete: {out / 'a.tif'}; nothing else was written" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.tif"]
