"""Many scenes: split them into shards, predict them one after another or on a Dask cluster.

Each scene is one task that writes its own products (and quicklook) through :func:`predict_scene`,
staged and committed as for one scene, so a failed scene leaves nothing and never stops the others:
every scene comes back as a :class:`SceneResult` holding its summary or its error.

On Dask (``jobs`` workers on this machine, or an existing cluster's ``scheduler`` address) the model
travels as its directory path and each worker process loads it once (:class:`Models`), never as a
pickled model; scenes, outputs and model directories must be visible at the same paths on every
worker (a shared file system), and relative paths are made absolute before they travel. Dask is an
optional dependency: ``pip install 'icetools[distributed]'``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import re
import signal
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from icetools.errors import ConfigError
from icetools.inference.predictor import Predictor, load_predictor
from icetools.inference.run import PredictJob
from icetools.io.atomic import StopRequested, removed_on_failure, request_stop
from icetools.progress import Progress, relabel, report

if TYPE_CHECKING:
    from distributed import Client

INSTALL_HINT = "pip install 'icetools[distributed]'"
SCENES_STAGE = "scenes"
CONNECT_TIMEOUT_S = 20
SHARD_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
T = TypeVar("T")


@dataclass(frozen=True)
class SceneTask:
    """One scene and where its products (and quicklook PNG, if any) go."""

    scene: Path
    output: Path
    quicklook: Path | None = None


@dataclass(frozen=True)
class Models:
    """The models of a run as directories, so a worker loads them itself instead of unpickling weights.

    ``band_map`` (model band -> band of the user's files) is set as given: check it once, where the
    run starts (:func:`icetools.inputs.check_band_map`), not on every worker.
    """

    model_dir: Path
    refiner_dir: Path | None = None
    device: str = "auto"
    band_map: tuple[tuple[str, str], ...] = ()

    def load(self, device: str | None = None) -> tuple[Predictor, Predictor | None]:
        """The model and the refiner (None without one), ready on ``device`` (default: this spec's)."""
        device = device or self.device
        model = load_predictor(self.model_dir, device)
        model.band_map = dict(self.band_map)
        refiner = load_predictor(self.refiner_dir, model.device) if self.refiner_dir is not None else None
        return model, refiner

    def absolute(self) -> Models:
        return replace(self, model_dir=Path(self.model_dir).resolve(),
                       refiner_dir=Path(self.refiner_dir).resolve() if self.refiner_dir is not None else None)


@dataclass
class SceneResult:
    """How one scene went: its :func:`predict_scene` summary, or the error that stopped it."""

    task: SceneTask
    summary: dict[str, Any] | None = None
    error: BaseException | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.error is not None


# ---------------------------------------------------------------------------------------------
# Shards: every N-th scene, for batch systems without Dask


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> (i, N); shards count from 1 (``1/4`` .. ``4/4``)."""
    match = SHARD_PATTERN.match(text)
    if match is None:
        raise ConfigError(f"shard {text!r} must read INDEX/COUNT, e.g. 1/4 (shards count from 1)")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 1 <= index <= count:
        raise ConfigError(f"shard {text!r}: shards count from 1 to COUNT, so INDEX must be in 1..{max(count, 1)}")
    return index, count


def shard(items: Iterable[T], index: int, count: int, *, key: Any = str) -> list[T]:
    """Shard ``index`` of ``count`` (1-based): every ``count``-th item of the sorted list from the
    ``index``-th, so ``count`` jobs given the same list split it with no overlap and no gap."""
    if count < 1 or not 1 <= index <= count:
        raise ConfigError(f"shard {index}/{count}: shards count from 1 to COUNT")
    return sorted(items, key=key)[index - 1 :: count]


# ---------------------------------------------------------------------------------------------
# One scene


def input_band(model: Predictor) -> str | None:
    """The file band the quicklook shows: the model's first input, as the user's files name it."""
    if not model.inputs:
        return None
    return model.band_map.get(model.inputs[0], model.inputs[0])


def predict_task(
    task: SceneTask,
    predictors: tuple[Predictor, Predictor | None],
    options: Mapping[str, Any],
    *,
    progress: Progress | None = None,
) -> SceneResult:
    """Predict one scene; its products and quicklook appear together or not at all.

    ``options``: the :class:`PredictJob` fields beyond scene, output and models (tile, overlap, ...).
    An error becomes the result's ``error``; an interruption (KeyboardInterrupt) still propagates.
    """
    # Looked up on each call, so that a caller (or a test) that swaps these functions is obeyed.
    import icetools.inference as inference
    import icetools.quicklook as quicklook

    model, refiner = predictors
    try:
        job = PredictJob(task.scene, task.output, model, refiner=refiner, **options)
        with removed_on_failure():
            summary = inference.predict_scene(job, progress=progress)
            if task.quicklook is not None:
                quicklook.write_quicklook(task.scene, task.output, task.quicklook, input_band=input_band(model),
                                          overwrite=job.overwrite)
    except Exception as exc:  # the scene failed; the others go on
        return SceneResult(task, error=exc)
    return SceneResult(task, summary=summary, warnings=list(summary.get("warnings", [])))


# ---------------------------------------------------------------------------------------------
# Many scenes


def predict_scenes(
    tasks: Sequence[SceneTask],
    models: Models,
    options: Mapping[str, Any],
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    predictors: tuple[Predictor, Predictor | None] | None = None,
    progress: Progress | None = None,
) -> Iterator[SceneResult]:
    """Every scene's result, as each finishes: here, one after another, or on Dask with ``jobs``
    local worker processes or the cluster at ``scheduler``.

    Here, ``predictors`` (already loaded) spare a second load, and ``progress`` gets each scene's
    ``windows`` events (info ``scene``) and a ``scenes`` event per scene done; on Dask only the latter.
    """
    if jobs is not None and scheduler is not None:
        raise ConfigError("give either a number of local workers or a scheduler address, not both")
    if jobs is None and scheduler is None:
        yield from _here(tasks, models, options, predictors=predictors, progress=progress)
        return
    if jobs is not None and jobs < 1:
        raise ConfigError(f"jobs must be at least 1, not {jobs}")
    with dask_client(jobs=jobs, scheduler=scheduler) as client:
        threads = torch_threads_per_worker(jobs) if jobs is not None else None
        yield from _on_dask(client, tasks, models, options, torch_threads=threads, progress=progress,
                            own_workers=scheduler is None)


def _here(
    tasks: Sequence[SceneTask], models: Models, options: Mapping[str, Any], *,
    predictors: tuple[Predictor, Predictor | None] | None, progress: Progress | None,
) -> Iterator[SceneResult]:
    predictors = predictors or models.load()
    for done, task in enumerate(tasks, 1):
        result = predict_task(task, predictors, options, progress=relabel(progress, scene=task.scene.name))
        report(progress, SCENES_STAGE, done, len(tasks), scene=task.scene.name, failed=result.failed)
        yield result


def torch_threads_per_worker(workers: int) -> int:
    """Torch threads for each of ``workers`` one-thread processes, so that together they fill the
    cores this process may use without oversubscribing them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, workers))


@contextlib.contextmanager
def dask_client(*, jobs: int | None = None, scheduler: str | None = None) -> Iterator[Client]:
    """A client of a new local cluster (``jobs`` processes of one thread each, on loopback, no
    dashboard), or of the existing cluster at ``scheduler`` (left running afterwards)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(f"running scenes on Dask needs the distributed extra: {INSTALL_HINT}") from None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        with client:
            yield client
        return
    with LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


def _on_dask(
    client: Client, tasks: Sequence[SceneTask], models: Models, options: Mapping[str, Any], *,
    torch_threads: int | None, progress: Progress | None, own_workers: bool,
) -> Iterator[SceneResult]:
    """The results as they come; ``own_workers``: the cluster is ours and closes after this run, so
    an interrupted run may tell its workers to commit nothing more."""
    from distributed import as_completed

    models = models.absolute()
    options = _absolute_options(options)
    futures = {
        client.submit(predict_on_worker, _absolute_task(task), models, options, torch_threads, pure=False): task
        for task in tasks
    }
    report(progress, SCENES_STAGE, 0, len(tasks))  # the bar shows from the start, not from the first scene done
    finished = False
    try:
        for done, future in enumerate(as_completed(futures), 1):
            task = futures[future]
            try:
                result = replace(future.result(), task=task)  # the paths as the caller gave them
            except Exception as exc:  # the task itself failed: a worker that died with it, a cancellation
                result = SceneResult(task, error=exc)
            report(progress, SCENES_STAGE, done, len(tasks), scene=task.scene.name, failed=result.failed)
            yield result
        finished = True
    finally:
        if not finished:  # interrupted: a cluster that outlives us starts no more of our scenes
            client.cancel(list(futures))
            if own_workers:  # and the scenes our own workers are running commit nothing (they cannot be cut short)
                with contextlib.suppress(Exception):
                    client.run(request_stop, signal.SIGINT)


def predict_on_worker(
    task: SceneTask, models: Models, options: Mapping[str, Any], torch_threads: int | None = None
) -> SceneResult:
    """One scene on a Dask worker: the models loaded once per worker process, warnings collected
    for the caller (a worker's own stderr is not the user's), the error made safe to send back."""
    if torch_threads is not None:
        import torch

        torch.set_num_threads(torch_threads)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            predictors = _worker_models(models, _model_stamp(models))
        except Exception as exc:
            result = SceneResult(task, error=exc)
        else:
            try:
                result = predict_task(task, predictors, options)
            except StopRequested as exc:  # the run was interrupted: this scene's files are gone already
                result = SceneResult(task, error=RuntimeError(f"stopped by {exc}"))
    result.warnings += [str(w.message).splitlines()[0] for w in caught if str(w.message)]
    result.error = _sendable(result.error)
    return result


@functools.lru_cache(maxsize=4)
def _worker_models(models: Models, stamp: tuple[tuple[int, int], ...]) -> tuple[Predictor, Predictor | None]:
    """Models loaded once per worker process; ``stamp`` reloads them when their files change."""
    return models.load()


def _model_stamp(models: Models) -> tuple[tuple[int, int], ...]:
    """Size and modification time of each model file: a model trained again in place is reloaded."""
    from icetools.modeldir import CONFIG_FILE, WEIGHTS_FILE

    stamp = []
    for directory in (models.model_dir, models.refiner_dir):
        if directory is not None:
            for name in (CONFIG_FILE, WEIGHTS_FILE):
                with contextlib.suppress(OSError):  # a missing file is load_predictor's error to give
                    stat = (Path(directory) / name).stat()
                    stamp.append((stat.st_size, stat.st_mtime_ns))
    return tuple(stamp)


def _sendable(error: BaseException | None) -> BaseException | None:
    """The error itself when it survives pickling, else a RuntimeError with its type and message."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def _absolute_task(task: SceneTask) -> SceneTask:
    return SceneTask(Path(task.scene).resolve(), Path(task.output).resolve(),
                     Path(task.quicklook).resolve() if task.quicklook is not None else None)


def _absolute_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Paths among the options made absolute: a remote worker does not share our working folder."""
    absolute = dict(options)
    polygons = absolute.get("polygons")
    if polygons is not None and polygons != "scene":
        absolute["polygons"] = Path(polygons).resolve()
    if absolute.get("extra_paths"):
        absolute["extra_paths"] = {kind: Path(path).resolve() for kind, path in absolute["extra_paths"].items()}
    return absolute
