"""Training in several processes under torchrun: who is who, and how the processes agree.

``torchrun --nproc-per-node N -m icetools train ...`` starts N copies of the command and sets
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in their environment. :func:`training_world` turns those
into a :class:`World`: the default process group (gloo for CPU tensors, NCCL for CUDA ones, each
process on ``cuda:LOCAL_RANK``) and a small gloo group for the messages by which the processes agree.
Without torchrun it gives the one-process world, whose methods do nothing, so the training loop is
the same code either way.

Why the processes must agree: DistributedDataParallel needs every process to take the same number of
steps, and a process that stops alone (an error, the time limit, Ctrl-C) leaves the others waiting on
it. So before every step the processes exchange whether they have a batch, whether one failed or was
asked to stop, and rank 0's clock (:meth:`World.next_batch`); and every phase that may fail (setup,
validation, the files rank 0 writes) runs inside :meth:`World.together`, after which either every
process goes on or every process raises: the first process with an error raises its own (the one
line the user sees) and the others :class:`PeerFailed`, which the command ends without a word.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from icetools.device import resolve_device
from icetools.errors import ConfigError
from icetools.io.atomic import StopRequested, request_stop
from icetools.train_windows import with_batch_sampler

T = TypeVar("T")

CONTROL_TIMEOUT = timedelta(hours=2)
"""How long a process waits for the others at an agreement: rank 0 alone chooses the threshold at the
end of a run while the others wait, and a validation pass over a large set takes minutes."""
_FIRST_FAILURE_KEY = "icetools/first-failure"
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@dataclass(frozen=True)
class Launch:
    """This process's place among the processes torchrun started (one process without torchrun)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Launch:
        """From torchrun's ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; one process when they are unset."""
        environ = os.environ if environ is None else environ
        if "WORLD_SIZE" not in environ:
            return cls()
        try:
            world_size = int(environ["WORLD_SIZE"])
            rank = int(environ.get("RANK", "0"))
            local_rank = int(environ.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise ConfigError(
                "WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers: start several processes with torchrun"
            ) from None
        if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
            raise ConfigError(
                f"WORLD_SIZE={world_size}, RANK={rank}, LOCAL_RANK={local_rank} do not describe a process of "
                "the run: start several processes with torchrun"
            )
        return cls(world_size, rank, local_rank)


class PeerFailed(Exception):
    """Another process of the run failed and reports it; this one ends too, quietly."""

    def __init__(self, rank: int, message: str) -> None:
        super().__init__(f"process {rank} of the run failed: {message}")
        self.rank = rank


@dataclass(frozen=True)
class _Failure:
    """What one process tells the others about its failure (plain data: it crosses processes)."""

    kind: str  # "error", "interrupt" or "peer" (it only follows another process's failure)
    message: str

    @classmethod
    def of(cls, exc: BaseException) -> _Failure:
        kind = "peer" if isinstance(exc, PeerFailed) else "interrupt" if isinstance(exc, KeyboardInterrupt) else "error"
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return cls(kind, text)


@dataclass
class Fetched:
    """One step's batch (None when the epoch is over), the samples all processes step on, and how
    long this process waited for its loader."""

    batch: Any
    samples: int
    wait_s: float


class World:
    """The processes of one training run and the few ways they agree; one process does nothing here."""

    def __init__(self, launch: Launch = Launch(), *, control: Any = None) -> None:
        self.launch = launch
        self.rank, self.world_size, self.local_rank = launch.rank, launch.world_size, launch.local_rank
        self._control = control  # the gloo group of the agreements (None in one process)
        self._agreed_time = time.monotonic()
        self._signals: list[int] = []  # stop signals received while they are deferred
        self._ending = False  # a failure was agreed: stop signals are ignored from then on

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run directory and shows progress."""
        return self.rank == 0

    # --- where this process computes ---

    def device(self, name: str | torch.device | None) -> torch.device:
        """The device ``name`` means for this process: under torchrun a GPU is ``cuda:LOCAL_RANK``."""
        device = resolve_device(name)
        if not self.distributed or device.type != "cuda":
            return device
        if device.index is not None:
            raise ConfigError(
                f"device {name}: each of the {self.world_size} processes uses the GPU of its local rank; "
                "give device cuda or auto"
            )
        if self.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"process {self.rank} has local rank {self.local_rank} but this machine has "
                f"{torch.cuda.device_count()} GPUs: start at most one process per GPU"
            )
        device = torch.device("cuda", self.local_rank)
        torch.cuda.set_device(device)
        return device

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` whose gradients are averaged over the processes (DistributedDataParallel).

        The caller keeps the unwrapped module for validation and saving, so a saved model has the
        names of a one-process model (no ``module.`` prefixes)."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    # --- agreeing ---

    def now(self) -> float:
        """The run's clock: rank 0's, as of the last agreement, so every process reads the same time
        limit and learning rate (one process: ``time.monotonic``)."""
        return self._agreed_time if self.distributed else time.monotonic()

    def gather(self, value: T) -> list[T]:
        """Every process's ``value``, in rank order, on every process (also agrees on the clock)."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, (value, time.monotonic()), group=self._control)
        self._agreed_time = gathered[0][1]
        return [item for item, _ in gathered]

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every process."""
        return self.gather(value if self.is_main else None)[0]

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Run a block on every process; all go on after it, or all raise (see the module docstring).

        The block must not itself wait on the other processes: one that failed never arrives."""
        if not self.distributed:
            yield
            return
        try:
            yield
        except GeneratorExit:
            raise
        except BaseException as exc:
            self._settle(exc)
            raise
        self._settle(None)

    def next_batch(self, batches: Iterator[Any], size_of: Callable[[Any], int]) -> Fetched:
        """The next batch of ``batches`` once every process has one (or all have run out).

        A loader error, a deferred stop signal or the end of the epoch on any process is known to all
        before anyone steps: an error ends every process (:meth:`together`'s rule), a stop signal
        raises KeyboardInterrupt everywhere (the loop's clean stop)."""
        started = time.perf_counter()
        batch, failure = None, None
        try:
            batch = next(batches, None)
        except Exception as exc:  # noqa: BLE001 - every process must hear of it before it is raised
            failure = exc
        wait_s = time.perf_counter() - started
        size = size_of(batch) if batch is not None else 0
        if not self.distributed:
            if failure is not None:
                raise failure
            return Fetched(batch, size, wait_s)
        import torch.distributed as dist

        flags = torch.tensor([failure is not None, bool(self._signals), batch is None, size,
                              time.monotonic() if self.is_main else 0.0], dtype=torch.float64)
        dist.all_reduce(flags, group=self._control)
        failed, stop, exhausted, samples, clock = flags.tolist()
        self._agreed_time = clock
        if failed:
            self._settle(failure)
        if exhausted and exhausted != self.world_size:
            self._settle(RuntimeError("the processes' epochs hold different numbers of batches"))
        if stop:
            raise self._stop()
        return Fetched(None if exhausted else batch, int(samples), wait_s)

    def _stop(self) -> KeyboardInterrupt:
        """Ctrl-C everywhere; a SIGTERM/SIGHUP this process got also bars later outputs, as in one process."""
        for signum in self._signals:
            if signum != signal.SIGINT:
                request_stop(signum)
                return StopRequested(signum)
        return KeyboardInterrupt()

    def _settle(self, failure: BaseException | None) -> None:
        """Tell every process how this one ended a phase; raise if any failed."""
        everyone = self.gather(None if failure is None else _Failure.of(failure))
        failed = [(rank, report) for rank, report in enumerate(everyone) if report is not None]
        if not failed:
            return
        self._ignore_stop_signals()
        for kind in ("error", "interrupt", "peer"):
            first = next(((rank, report) for rank, report in failed if report.kind == kind), None)
            if first is None:
                continue
            rank, report = first
            if kind == "interrupt":  # everyone stops as after Ctrl-C; only rank 0 will say so
                raise failure if isinstance(failure, KeyboardInterrupt) else KeyboardInterrupt()
            if rank == self.rank and failure is not None:
                raise failure
            raise PeerFailed(rank, report.message)

    # --- stop signals ---

    @contextlib.contextmanager
    def deferred_stop_signals(self) -> Iterator[None]:
        """While the processes step in lockstep, Ctrl-C, SIGTERM and SIGHUP only mark a stop, which
        :meth:`next_batch` makes every process take at the same step (one process: unchanged)."""
        if not self.distributed or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}
        for signum in previous:
            signal.signal(signum, lambda received, frame: self._signals.append(received))
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if self._ending:
                self._ignore_stop_signals()

    def _first_failure(self, exc: BaseException) -> PeerFailed | None:
        """None when this process failed first; else the failure of the one that did.

        For errors outside the agreements (say, inside a step): a process that fails there leaves the
        others with a broken connection, which they must not report as an error of their own. The
        first failure is written in the process group's store before the process can close its
        connections, so whoever reads one there knows it only follows."""
        self._ignore_stop_signals()
        mine = f"{self.rank}\n{_Failure.of(exc).message}"
        try:
            from torch.distributed import distributed_c10d

            first = distributed_c10d._get_default_store().compare_set(_FIRST_FAILURE_KEY, "", mine)
        except Exception:  # noqa: BLE001 - no store to ask: report it as this process's own
            return None
        first = first.decode() if isinstance(first, bytes) else str(first)
        if first == mine:
            return None
        rank, _, message = first.partition("\n")
        return PeerFailed(int(rank), message)

    def _ignore_stop_signals(self) -> None:
        """Every process is ending: torchrun's SIGTERM, sent once the first exits, must not cut the
        others' last words (the error line) short."""
        self._ending = True
        if threading.current_thread() is threading.main_thread():
            for signum in _STOP_SIGNALS:
                if signum != signal.SIGINT:
                    signal.signal(signum, signal.SIG_IGN)


@contextlib.contextmanager
def training_world(environ: Mapping[str, str] | None = None) -> Iterator[World]:
    """The world of this process: joined to the others under torchrun (and left at the end)."""
    launch = Launch.from_environment(environ)
    if launch.world_size == 1:
        yield World(launch)
        return
    import torch.distributed as dist

    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    try:
        dist.init_process_group(backend=backend)
        control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"process {launch.rank} cannot join the other {launch.world_size - 1} ({exc}): start the run with torchrun"
        ) from None
    world = World(launch, control=control)
    try:
        yield world
    except PeerFailed:
        raise
    except Exception as exc:
        peer = world._first_failure(exc)
        if peer is not None:
            raise peer from None
        raise
    finally:
        dist.destroy_process_group()


# --- sharing fixed passes ---------------------------------------------------------------------------


class RankBatches(Sampler):
    """Every ``world_size``-th batch of ``batches`` from the ``rank``-th: one process's share of a fixed
    pass such as validation, whose batches stay as one process would make them."""

    def __init__(self, batches: Sampler, rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return max(0, math.ceil((len(self.batches) - self.rank) / self.world_size))

    def __iter__(self) -> Iterator[Sequence[Any]]:
        for index, batch in enumerate(self.batches):
            if index % self.world_size == self.rank:
                yield batch


def share_of(loader: DataLoader, world: World) -> DataLoader:
    """This process's share of ``loader``'s batches (the loader itself in one process)."""
    if not world.distributed:
        return loader
    return with_batch_sampler(loader, RankBatches(loader.batch_sampler, world.rank, world.world_size))


__all__ = [
    "CONTROL_TIMEOUT", "Fetched", "Launch", "PeerFailed", "RankBatches", "World", "share_of", "training_world",
]
