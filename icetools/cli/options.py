"""Options used by several commands, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the output if it exists.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same output.")]
Layer = Annotated[Optional[str], typer.Option("--layer", help="Vector layer name (default: the product's name).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
VectorCRS = Annotated[
    Optional[str], typer.Option("--vector-crs", help="CRS to assume for vectors that carry none (e.g. EPSG:3413).")
]
OutPath = Annotated[Path, typer.Option("-o", "--output", help="Output file.", dir_okay=False)]
