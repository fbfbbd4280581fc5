"""Inputs are sacred: no output of a run may name one of its inputs, with or without ``overwrite``.

Two names are the same file when they resolve to the same path (symlinks followed) or, when both
exist, when they share device and inode (hard links, bind mounts). Every library function that
writes checks its outputs here once, before it reads or writes anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from icetools.errors import OutputExistsError

PathLike = str | os.PathLike


def file_identity(path: PathLike, *, follow_links: bool = True) -> tuple[int, int] | None:
    """(device, inode) of ``path`` (of the link itself with ``follow_links=False``); None when absent."""
    try:
        st = os.stat(path) if follow_links else os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: the same real path, or the same device and inode."""
    a, b = Path(a), Path(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    ida = file_identity(a)
    return ida is not None and ida == file_identity(b)


def refuse_overwriting_inputs(outputs: Iterable[PathLike | None], inputs: Iterable[PathLike | None]) -> None:
    """Raise one line when an output is one of the inputs (``None`` entries are skipped)."""
    inputs = [Path(p) for p in inputs if p is not None]
    for output in outputs:
        if output is None:
            continue
        for source in inputs:
            if same_file(output, source):
                named = "" if str(output) == str(source) else f" ({source})"
                raise OutputExistsError(
                    f"{output} is an input of this run{named}: an output never replaces an input, "
                    "choose another output path"
                )


def refuse_duplicate_outputs(outputs: Iterable[PathLike | None]) -> None:
    """Raise one line when two products of one run would land on the same file."""
    seen: list[Path] = []
    for output in outputs:
        if output is None:
            continue
        for earlier in seen:
            if same_file(output, earlier):
                raise OutputExistsError(f"{earlier} and {output} are the same file: give each product its own path")
        seen.append(Path(output))
