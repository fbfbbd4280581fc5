"""Issue 11, item 8: every option with a fixed set of values lists them in --help; the CLI's copies
of the library's names match it; the README names no loss or model the commands refuse."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from icetools.cli import options
from icetools.models import MODEL_NAMES, MODEL_SIZES

from .helpers import runner

README = Path(__file__).resolve().parents[2] / "README.md"


def _help(*command: str) -> str:
    from icetools.cli.app import app

    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "1000"})
    assert result.exit_code == 0
    return result.stdout


@pytest.mark.parametrize(
    ("command", "option", "choices"),
    [
        (("train",), "--model", MODEL_NAMES),
        (("train",), "--loss", options.LOSS_NAMES),
        (("train",), "--lr-schedule", options.LR_SCHEDULES),
        (("train",), "--pool", options.POOLS),
        (("train",), "--model-size", MODEL_SIZES),
        (("sweep",), "--pool", options.POOLS),
        (("sweep",), "--model-size", MODEL_SIZES),
        (("predict",), "--merge", options.MERGES),
        (("evaluate",), "--task", ("sic", "binary", "multiclass")),
        (("evaluate",), "--truth-units", ("fraction", "percent", "tenths")),
        (("sample-patches",), "--split-by", ("auto", "scene", "block")),
    ],
)
def test_help_shows_the_choices(command: tuple[str, ...], option: str, choices: tuple[str, ...]) -> None:
    options_part = _help(*command).split("Options:")[1]
    line = next(line for line in options_part.splitlines() if line.strip().startswith(option + " "))
    assert f"<{'|'.join(choices)}>" in line, line


def test_sweep_help_lists_its_names_in_the_text() -> None:
    text = _help("sweep")
    for name in options.LOSS_NAMES + tuple(n for n in MODEL_NAMES if n != "refiner"):
        assert name in text


def test_the_cli_copies_match_the_library() -> None:
    """Copied so that --help needs no torch; checked here so they never drift."""
    from icetools.data import POOLS
    from icetools.inference.run import MERGES
    from icetools.inference.windows import TILE_MULTIPLE
    from icetools.losses import LOSS_NAMES, TASK_LOSSES
    from icetools.training.options import LR_SCHEDULES

    assert options.LOSS_NAMES == LOSS_NAMES and set(options.LOSS_NAMES) == {l for ls in TASK_LOSSES.values() for l in ls}
    assert (options.LR_SCHEDULES, options.POOLS, options.MERGES) == (LR_SCHEDULES, POOLS, MERGES)
    assert options.TILE_MULTIPLE == TILE_MULTIPLE


def test_readme_names_only_models_and_losses_the_commands_take() -> None:
    row = next(line for line in README.read_text().splitlines() if line.startswith("| `icetools train "))
    named = set(re.findall(r"`([a-z][a-z0-9+-]*)`", row))
    losses = named & set(options.LOSS_NAMES)
    assert losses == set(options.LOSS_NAMES), row
    assert named - set(options.LOSS_NAMES) - set(MODEL_NAMES) == set(), row
    assert "pixel," not in row and "`pixel`" not in row


def test_help_stays_free_of_torch() -> None:
    import subprocess
    import sys

    code = "import sys; from icetools.cli.app import app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
