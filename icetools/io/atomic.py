"""Outputs appear whole or not at all.

Every file is written under a temporary name in the target folder and moved into place with
``os.replace`` (atomic on one file system), so an interrupted run or Make's ``.DELETE_ON_ERROR``
never sees a half-written product.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from icetools.errors import InputFileError, OutputExistsError


def check_output(path: str | Path, *, overwrite: bool) -> Path:
    """Refuse to replace an existing output unless asked; make sure its folder exists."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists: pass --overwrite to replace it")
    if path.parent and not path.parent.exists():
        raise InputFileError(f"output folder {path.parent} does not exist: create it first")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it into place, else remove it."""
    final = check_output(path, overwrite=overwrite)
    tmp = final.with_name(f".{final.stem}.tmp-{os.getpid()}{final.suffix}")
    try:
        yield tmp
        if final.exists() and not overwrite:
            raise OutputExistsError(f"{final} appeared while writing: pass --overwrite to replace it")
        if final.is_dir():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def require_file(path: str | Path, what: str = "input") -> Path:
    """One clear line for the commonest mistake: a path that is not there."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{what} {path} does not exist")
    if path.is_dir():
        raise InputFileError(f"{what} {path} is a folder, not a file")
    return path
