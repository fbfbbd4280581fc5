"""Strict JSON for the files icetools writes (config.json, metrics JSON): no NaN, no numpy types."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """NaN/inf -> None (strict JSON has neither), numpy scalars and arrays -> Python numbers and lists,
    tuples -> lists, paths -> strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(value: Any) -> str:
    """Indented strict JSON with a final newline."""
    return json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n"
