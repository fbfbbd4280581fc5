"""Runs icetools commands onto a tmpfs of a given size: the helper of tests/test_full_disk.py.

Started by that test as ``unshare -rm python full_disk_driver.py CASES.json``: in a user and mount
namespace of its own it may mount a tmpfs, and the mount vanishes with the process. Each case is
``{"mount": folder, "size_kib": n, "argv": [...]}``: a fresh tmpfs of that size on the folder, the
command run in-process, then what it left there. Prints one JSON line: per case the exit code, the
non-empty output lines, the files left (relative names), those of them that do not read back, and
the files there it still holds open.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _unreadable(files: list[Path]) -> list[str]:
    """The GeoTIFFs that fail to read whole (every band and overview)."""
    import rasterio

    bad = []
    for path in files:
        if path.suffix.lower() not in (".tif", ".tiff"):
            continue
        try:
            with rasterio.open(path) as ds:
                ds.read()
                levels = len(ds.overviews(1))
            for level in range(levels):
                with rasterio.open(path, overview_level=level) as overview:
                    overview.read()
        except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
            bad.append(f"{path.name}: {exc}")
    return bad


def _open_files(mount: Path) -> list[str]:
    """Files under ``mount`` this process still holds open (a writer a failure did not close)."""
    held = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(mount) + os.sep):
            held.append(target)
    return sorted(held)


def run_case(case: dict) -> dict:
    from typer.testing import CliRunner

    from icetools.cli.app import app

    mount = Path(case["mount"])
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(case['size_kib'])}k", "tmpfs", str(mount)], check=True)
    try:
        result = CliRunner().invoke(app, case["argv"])
        files = sorted(p for p in mount.rglob("*"))
        return {
            "exit_code": result.exit_code,
            "error_lines": [line for line in result.output.splitlines() if line.strip()],
            "files": [str(p.relative_to(mount)) for p in files],
            "unreadable": _unreadable([p for p in files if p.is_file()]),
            "open_files": _open_files(mount),
        }
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps([run_case(case) for case in cases]))


if __name__ == "__main__":
    main()
