"""Many scenes (icetools.inference.batch and ``predict --jobs/--scheduler/--shard``): shards, a failed
scene that stops no other, and the same answers on a Dask cluster of two worker processes on loopback."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from typer.testing import CliRunner

from icetools.cli.app import app
from icetools.errors import ConfigError
from icetools.inference import batch
from icetools.modeldir import save_model_dir
from icetools.models import build_model

from .helpers import CONFIG, scene_array, write_test_scene

SIZE = 64


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("batch") / "model"
    save_model_dir(folder, build_model("unet", in_channels=2, widths=[4, 8, 8, 8]), CONFIG)
    return folder


def three_scenes(folder: Path) -> list[Path]:
    """a.tif and c.tif readable, b.tif corrupt (not a raster at all)."""
    folder.mkdir()
    write_test_scene(folder / "a.tif", scene_array(SIZE, SIZE, seed=1))
    (folder / "b.tif").write_bytes(b"II*\x00 this is no GeoTIFF")
    write_test_scene(folder / "c.tif", scene_array(SIZE, SIZE, seed=3))
    return [folder / name for name in ("a.tif", "b.tif", "c.tif")]


def predict(*args: object) -> object:
    return CliRunner().invoke(app, ["predict", *map(str, args)])


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def assert_bad_scene_named_once(result, out: Path) -> None:
    """Two outputs, one error line naming b.tif, exit 1, nothing of b.tif (no staged file either)."""
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert [line for line in errors if "b.tif" in line] == [errors[0]] and "cannot read" in errors[0]
    assert errors[1:] == ["error: 1 of 3 scenes failed (named above); 2 written"]
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "c.tif"]


# ------------------------------------------------------------------------------------------ shards


def test_shards_split_the_sorted_list_without_overlap_or_gap() -> None:
    names = ["e", "b", "g", "a", "d", "c", "f"]
    assert batch.shard(names, 1, 3) == ["a", "d", "g"]
    assert batch.shard(names, 2, 3) == ["b", "e"]
    assert batch.shard(names, 3, 3) == ["c", "f"]
    shards = [batch.shard(names, i, 3) for i in (1, 2, 3)]
    assert sorted(sum(shards, [])) == sorted(names)
    assert batch.shard(names, 1, 1) == sorted(names) and batch.shard(names[:2], 2, 4) == ["e"]
    assert batch.shard(names[:2], 3, 4) == []


def test_shard_text_counts_from_one() -> None:
    assert batch.parse_shard("2/4") == (2, 4) and batch.parse_shard(" 1 / 1 ") == (1, 1)
    for bad in ("0/4", "5/4", "1/0", "2", "a/b", "-1/4", "1/4/2"):
        with pytest.raises(ConfigError, match="shard"):
            batch.parse_shard(bad)


@pytest.mark.parametrize("value", ["0/2", "3/2", "half"])
def test_cli_refuses_a_bad_shard_as_a_usage_error(tmp_path: Path, model_dir: Path, value: str) -> None:
    result = predict(tmp_path / "a.tif", "-m", model_dir, "-o", f"{tmp_path}/out/", "--shard", value)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "'--shard'" in errors[0] and "count from 1" in errors[0], result.output


def test_cli_shards_predict_every_scene_once(tmp_path: Path, model_dir: Path) -> None:
    for name in ("c", "a", "b"):
        write_test_scene(tmp_path / f"{name}.tif", scene_array(32, 32))
    out = tmp_path / "out"
    for index, expected in ((1, ["a.tif", "c.tif"]), (2, ["a.tif", "b.tif", "c.tif"])):
        result = predict(tmp_path / "*.tif", "-m", model_dir, "-o", f"{out}/", "--tile", "32", "--shard", f"{index}/2")
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in out.iterdir()) == expected
        assert f"shard {index}/2: {2 if index == 1 else 1} of 3 scenes" in result.output


# ----------------------------------------------------------------------- a failed scene, in process


def test_a_failed_scene_stops_no_other(tmp_path: Path, model_dir: Path) -> None:
    scenes = three_scenes(tmp_path / "in")
    out = tmp_path / "out"
    result = predict(*scenes, "-m", model_dir, "-o", f"{out}/", "--tile", "32", "--device", "cpu")
    assert_bad_scene_named_once(result, out)
    # A rerun predicts nothing again: the good scenes are skipped, the bad one fails again.
    stamp = (out / "a.tif").stat().st_mtime_ns
    rerun = predict(*scenes, "-m", model_dir, "-o", f"{out}/", "--tile", "32", "--skip-existing")
    assert rerun.exit_code == 1 and "skip" in rerun.output and (out / "a.tif").stat().st_mtime_ns == stamp
    # The message names the scene already: no second name in front of it.
    assert [line for line in rerun.stderr.splitlines() if line.startswith("error:")][0].startswith("error: cannot read")


def test_without_dask_jobs_name_the_extra_to_install(tmp_path: Path, model_dir: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now raises ImportError
    write_test_scene(tmp_path / "a.tif", scene_array(32, 32))
    result = predict(tmp_path / "a.tif", "-m", model_dir, "-o", f"{tmp_path}/out/", "--jobs", "2")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: running scenes on Dask needs the distributed extra: pip install 'icetools[distributed]'"
    ]


def test_jobs_and_scheduler_together_are_a_usage_error(tmp_path: Path, model_dir: Path) -> None:
    result = predict(tmp_path / "a.tif", "-o", f"{tmp_path}/out/", "--jobs", "2", "--scheduler", "tcp://127.0.0.1:1")
    assert result.exit_code == 2 and "give one of them" in result.output


# ---------------------------------------------------------------------------------------- on Dask


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as local, distributed.Client(local) as client:
        yield local, client


def test_scheduler_runs_the_scenes_on_the_cluster(tmp_path: Path, model_dir: Path, cluster) -> None:
    local, client = cluster
    loads = lambda: sum(client.run(lambda: batch._worker_models.cache_info().misses).values())  # noqa: E731
    before = loads()
    scenes = three_scenes(tmp_path / "in")
    out = tmp_path / "out"
    result = predict(*scenes, "-m", model_dir, "-o", f"{out}/", "--tile", "32", "--device", "cpu",
                     "--scheduler", local.scheduler_address)
    assert_bad_scene_named_once(result, out)
    assert loads() - before <= 2  # the model travels as a path, loaded once per worker process, not per scene
    # The workers' answers are this process's answers.
    here = tmp_path / "here"
    assert predict(scenes[0], scenes[2], "-m", model_dir, "-o", f"{here}/", "--tile", "32", "--device", "cpu").exit_code == 0
    for name in ("a.tif", "c.tif"):
        np.testing.assert_allclose(read(out / name), read(here / name), atol=1e-6)
    assert len(client.scheduler_info()["workers"]) == 2  # the user's cluster is left running


def test_an_unreachable_scheduler_is_one_line(tmp_path: Path, model_dir: Path, monkeypatch) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr(batch, "CONNECT_TIMEOUT_S", 1)
    write_test_scene(tmp_path / "a.tif", scene_array(32, 32))
    result = predict(tmp_path / "a.tif", "-m", model_dir, "-o", f"{tmp_path}/out/", "--scheduler", "tcp://127.0.0.1:9")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")


def test_jobs_start_a_local_cluster_that_skips_and_writes_quicklooks(tmp_path: Path, model_dir: Path) -> None:
    pytest.importorskip("distributed")
    scenes = three_scenes(tmp_path / "in")
    out, looks = tmp_path / "out", tmp_path / "looks"
    out.mkdir()
    (out / "a.tif").write_bytes(b"done before")
    result = predict(*scenes, "-m", model_dir, "-o", f"{out}/", "--tile", "32", "--device", "cpu", "--jobs", "2",
                     "--skip-existing", "--quicklook", f"{looks}/")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "b.tif" in errors[0] and "1 of 2 scenes failed" in errors[1]
    assert (out / "a.tif").read_bytes() == b"done before"
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "c.tif"] and read(out / "c.tif").shape == (SIZE, SIZE)
    assert sorted(p.name for p in looks.iterdir()) == ["c.png"]
