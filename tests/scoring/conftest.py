"""The SIC pair every scoring test starts from."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import sic_pair_files


@pytest.fixture
def sic_pair(tmp_path: Path) -> tuple[Path, Path]:
    return sic_pair_files(tmp_path)
