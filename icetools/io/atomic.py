"""Outputs appear whole or not at all, and a run only ever removes files it created.

Every file is written under a temporary name ``.NAME.tmp-PID<suffix>`` in the target folder and moved
into place in one step (atomic on one file system), so an interrupted run or Make's
``.DELETE_ON_ERROR`` never sees a half-written product. Without ``overwrite`` the move is a hard
link that fails when the name exists, so of two runs racing for one output one wins and the other
fails with one line, leaving the winner's file whole. Each committed file's identity (device and
inode) is remembered: cleanup after a failure removes a final file only when it is still the one this
process put there. Temporary files left by processes that no longer exist (SIGKILL, power loss) are
removed by the next run that writes in that folder. Files that belong together (a training
checkpoint) are staged inside :func:`committed_together` and moved into place together at its end.
A refused write inside :func:`atomic_path` (no errno from GDAL, SQLite or safetensors included) comes
out as an OSError naming the final path, so the CLI says "no space left" in one line.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import itertools
import os
import re
import shutil
import signal
import threading
from pathlib import Path
from typing import Iterable, Iterator

from icetools.errors import InputFileError, OutputExistsError
from icetools.io.paths import file_identity

# Matches ``.NAME.tmp-PID`` followed by nothing or by a suffix; group 1 is the PID.
_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)(?:\..*)?$")
# One dict per open ``removed_on_failure`` block: path -> (st_dev, st_ino) of each file that run moved
# into place. A context variable, so two runs in two threads of one process never share it.
_RUN_CREATED: contextvars.ContextVar[tuple[dict[Path, tuple[int, int]], ...]] = contextvars.ContextVar(
    "created", default=()
)
_SERIAL = itertools.count()
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_IO_LIBRARIES = {"rasterio", "pyogrio", "safetensors", "netCDF4", "PIL", "matplotlib", "sqlite3", "h5py"}
_FULL_BELOW = 1 << 20  # bytes free under which a library's unexplained write error is the full disk's
# Every commit of this process since ``forget_committed``: what an interrupted command tells the user
# it did write. Process-wide (the CLI runs one command per process), guarded by a lock for threads.
_COMMITTED: list[tuple[Path, tuple[int, int]]] = []
_COMMITTED_LOCK = threading.Lock()


def forget_committed() -> None:
    """Start a new command's record of the outputs it moved into place."""
    with _COMMITTED_LOCK:
        _COMMITTED.clear()


def committed_outputs() -> list[Path]:
    """The outputs this process moved into place that are still there, unchanged (same device and inode).

    A file removed after a failure, or a staged chip inside a folder that was never moved into place,
    is not listed.
    """
    with _COMMITTED_LOCK:
        records = list(_COMMITTED)
    seen: set[Path] = set()
    kept: list[Path] = []
    for path, identity in records:
        if path not in seen and _identity(path) == identity:
            seen.add(path)
            kept.append(path)
    return kept


def check_writable(path: str | Path) -> Path:
    """Fail now, naming the folder, when ``path``'s folder takes no new file: before a long pass, not after."""
    path = Path(path)
    probe = temporary_name(path)
    _probe(probe, path.parent)
    return path


def check_output(path: str | Path, *, overwrite: bool) -> Path:
    """Refuse to replace an existing output unless asked; make sure its folder exists."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists: pass --overwrite to replace it")
    if path.parent and not path.parent.exists():
        raise InputFileError(f"output folder {path.parent} does not exist: create it first")
    return path


def temporary_name(final: Path, suffix: str | None = None) -> Path:
    """The staging name of ``final``: hidden, in the same folder, tagged with this process's id, ending
    in ``suffix`` (default: the final name's, so that writers which read the format from it agree)."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}.{next(_SERIAL)}{final.suffix if suffix is None else suffix}")


def _identity(path: Path) -> tuple[int, int] | None:
    """The identity of the file a run created there (a link is itself, never its target)."""
    return file_identity(path, follow_links=False)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove this user's temporary files in ``folder`` whose process no longer exists; return them."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            owner = entry.stat(follow_symlinks=False).st_uid
        except OSError:
            continue
        if pid == os.getpid() or owner != os.getuid() or _process_exists(pid):
            continue
        path = Path(entry.path)
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


def _probe(tmp: Path, folder: Path) -> None:
    """Fail early, naming the folder, when it takes no new file (read-only, no permission, full)."""
    try:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(folder or ".")) from None
    os.unlink(tmp)


def _replace_folder(tmp: Path, final: Path) -> None:
    """Swap a staged folder for an earlier one as a whole: no old file survives among the new ones."""
    aside = temporary_name(final)
    os.rename(final, aside)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(aside, final)  # put the earlier folder back: a failed run changes nothing
        raise
    shutil.rmtree(aside, ignore_errors=True)


class StopRequested(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGHUP) raised like Ctrl-C, so that the same cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_STOP: list[int] = []  # the stop signal received, if any


def request_stop(signum: int) -> None:
    """Remember a stop signal: no output is committed after it, even if its exception was swallowed."""
    _STOP[:] = [signum]


def _honour_stop() -> None:
    if _STOP:
        raise StopRequested(_STOP[0])


def _commit(tmp: Path, final: Path, *, overwrite: bool) -> None:
    """Move ``tmp`` to ``final``; without ``overwrite`` never replace a file that appeared meanwhile."""
    _honour_stop()
    appeared = OutputExistsError(f"{final} appeared while writing (another run?): it was kept; pass --overwrite to replace it")
    if overwrite:
        if final.is_dir() and not final.is_symlink():
            _replace_folder(tmp, final)
        else:
            os.replace(tmp, final)
        return
    if tmp.is_dir():
        if final.exists() or final.is_symlink():
            raise appeared
        os.rename(tmp, final)
        return
    try:
        os.link(tmp, final)  # fails, atomically, when the name exists
    except FileExistsError:
        raise appeared from None
    except OSError as exc:  # a file system without hard links: check, then move
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if final.exists() or final.is_symlink():
            raise appeared from None
        os.replace(tmp, final)
        return
    tmp.unlink()


def _write_errno(exc: BaseException) -> int | None:
    """The errno of a refused write that a library reports without an OSError: safetensors (Rust:
    "... (os error 28)"), SQLite via GDAL ("database or disk is full"), GDAL ("No space left on device")."""
    text = str(exc)
    match = _RUST_OS_ERROR.search(text)
    if match is not None and int(match.group(1)) in _WRITE_ERRNOS:
        return int(match.group(1))
    lowered = text.lower()
    if "disk is full" in lowered or os.strerror(errno.ENOSPC).lower() in lowered:
        return errno.ENOSPC
    if os.strerror(errno.EDQUOT).lower() in lowered:
        return errno.EDQUOT
    return None


def _io_library_error(exc: BaseException) -> bool:
    """An error from a file-writing library (GDAL, SQLite, safetensors...), not one of icetools' own."""
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in _IO_LIBRARIES


def disk_full(folder: Path, *, below: int = _FULL_BELOW) -> bool:
    """True when ``folder``'s file system has fewer than ``below`` bytes free: a write error that says
    nothing of its cause is then the full disk's (the cause a user can fix)."""
    try:
        return shutil.disk_usage(folder).free < below
    except OSError:
        return False


def _named(exc: Exception, tmp: Path, final: Path) -> Exception:
    """The error of a write to the staging name, as an OSError naming the output the user asked for.

    A write into a staged folder names the file's place in the final folder. An error that names no
    file is the output's when only a write raises it (a full disk); a library's error that says
    nothing of the cause is blamed on the disk when the disk is full.
    """
    if isinstance(exc, OSError) and exc.errno is not None:
        name = None if exc.filename is None else str(exc.filename)
        if name is not None and (name == str(tmp) or name.startswith(str(tmp) + os.sep)):
            where = str(final) + name[len(str(tmp)):]
        elif name is None and exc.errno in _WRITE_ERRNOS:
            where = str(final)
        else:
            return exc
        return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), where)  # PermissionError etc. kept
    code = _write_errno(exc)
    if code is None and _io_library_error(exc) and disk_full(final.parent):
        code = errno.ENOSPC
    return exc if code is None else OSError(code, os.strerror(code), str(final))


def _move_into_place(tmp: Path, final: Path, *, overwrite: bool) -> None:
    """Commit one staged file, recording its identity for cleanup and for the interrupted message."""
    identity = _identity(tmp)
    if identity is not None:
        # Recorded before the commit, so an interruption right after it still finds the file;
        # safe, since a file is only ever removed or listed when its identity matches this one.
        for created in _RUN_CREATED.get():
            created[final] = identity
        with _COMMITTED_LOCK:
            _COMMITTED.append((final, identity))
    _commit(tmp, final, overwrite=overwrite)


def _discard(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp.exists() or tmp.is_symlink():
        tmp.unlink()


# The open ``committed_together`` block's staged files, (tmp, final, overwrite) in the order they were
# written; None outside such a block.
_PENDING: contextvars.ContextVar[list[tuple[Path, Path, bool]] | None] = contextvars.ContextVar(
    "pending", default=None
)


@contextlib.contextmanager
def committed_together() -> Iterator[None]:
    """Files written through :func:`atomic_path` inside the block move into place together at its end.

    Each is staged (written, verified) under its temporary name, and only when the whole block has
    succeeded are they moved, in the order they were written; a failure or a signal inside the
    block removes every staged file and leaves the earlier files as they were. A training
    checkpoint (weights, config, resumable state) thus never mixes two epochs, and a full disk
    never leaves weights without their state. The moves are renames, which need no new space.
    A block inside another joins the outer one.
    """
    if _PENDING.get() is not None:
        yield
        return
    pending: list[tuple[Path, Path, bool]] = []
    token = _PENDING.set(pending)
    try:
        yield
        _honour_stop()
        for _, final, overwrite in pending:  # a name taken meanwhile fails the group before any move
            if not overwrite and (final.exists() or final.is_symlink()):
                raise OutputExistsError(f"{final} appeared while writing (another run?): it was kept; "
                                        "pass --overwrite to replace it")
        for tmp, final, overwrite in pending:
            _move_into_place(tmp, final, overwrite=overwrite)
    finally:
        _PENDING.reset(token)
        for tmp, _, _ in pending:
            _discard(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, overwrite: bool, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it into place, else remove it.

    ``suffix`` ends the temporary name (a format's extension, where the final name has none).
    Inside :func:`committed_together` the move waits for the end of that block. A refused write
    (an OSError about the temporary path, or a library's "no space left") names ``path``, the file
    the user asked for, with its errno, so the CLI says it in one plain line.
    """
    final = check_output(path, overwrite=overwrite)
    remove_stale_temporaries(final.parent)
    tmp = temporary_name(final, suffix)
    pending = _PENDING.get()
    staged = False
    try:
        _probe(tmp, final.parent)  # inside: an interruption between its create and unlink leaves nothing
        try:
            yield tmp
        except Exception as exc:
            named = _named(exc, tmp, final)
            if named is exc:
                raise
            raise named from exc
        if pending is not None:
            pending.append((tmp, final, overwrite))
            staged = True
        else:
            _move_into_place(tmp, final, overwrite=overwrite)
    finally:
        if not staged:
            _discard(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def removed_on_failure(paths: Iterable[str | Path] | None = None) -> Iterator[None]:
    """On any error or interruption, remove those of ``paths`` (all, when None) that this block put in place.

    A file is removed only when its device and inode are those of a file this block committed, so
    an output another run put there meanwhile is never touched. Blocks nest: a commit counts for
    every open block, so an outer block undoes an inner one's products too (all of a run's products
    go together).
    """
    chosen = None if paths is None else [Path(p) for p in paths]
    created: dict[Path, tuple[int, int]] = {}
    token = _RUN_CREATED.set(_RUN_CREATED.get() + (created,))
    try:
        yield
    except BaseException:
        identities = set(created.values())
        for path in created if chosen is None else chosen:
            if _identity(path) in identities:
                _remove(path)
        raise
    finally:
        _RUN_CREATED.reset(token)


def require_file(path: str | Path, what: str = "input") -> Path:
    """One clear line for the commonest mistake: a path that is not there."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{what} {path} does not exist")
    if path.is_dir():
        raise InputFileError(f"{what} {path} is a folder, not a file")
    return path
