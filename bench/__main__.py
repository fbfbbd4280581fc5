"""Run the benchmarks and print their figures as one table.

    python -m bench                 # all of them
    python -m bench rasterize train # only those whose module name contains a word given
"""

from __future__ import annotations

import importlib
import os
import sys
import time

MODULES = (
    "bench_layout", "bench_foundation", "bench_sampling", "bench_train", "bench_predict", "bench_scenes", "bench_vectorize", "bench_fctl",
    "bench_skill", "bench_xarray", "bench_gpu", "bench_ddp",
)


def main(argv: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    wanted = [m for m in MODULES if not argv or any(word in m for word in argv)]
    rows: list[tuple[str, str, str]] = []
    for name in wanted:
        module = importlib.import_module(f"bench.{name}")
        console.print(f"[bold]running {name}[/] ...")
        start = time.perf_counter()
        for figure, value in module.run():
            console.print(f"  {figure}: {value}")
            rows.append((name.removeprefix("bench_"), figure, value))
        console.print(f"  ({time.perf_counter() - start:.0f} s)")
    table = Table("bench", "figure", "value", title=f"icetools benchmarks ({os.cpu_count()} CPU cores)")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
