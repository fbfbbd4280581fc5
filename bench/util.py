"""Shared helpers for benchmarks: run code in a fresh interpreter, report its time and peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

_EPILOGUE = """
import json as _json
# VmHWM belongs to this process image (ru_maxrss would carry the parent's peak over the fork).
with open("/proc/self/status") as _status:
    _hwm = next(line for line in _status if line.startswith("VmHWM:"))
result["peak_rss_mb"] = int(_hwm.split()[1]) / 1024
print(_json.dumps(result))
"""


def run_child(code: str, *, env: dict | None = None) -> dict:
    """Run ``code`` (which must leave a dict named ``result``) in a child; add its peak RSS in MB."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + _EPILOGUE], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
