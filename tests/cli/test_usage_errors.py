"""Issue 11, item 3: every bad option value is a usage error, exit 2, one line naming the option.

The values are checked by the CLI (choices, ranges, callbacks) before any file is read, so the
paths below need not exist. The library keeps its own ConfigError for callers of the Python API.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import invoke, usage_error

PREDICT = ("predict", "a.tif", "-o", "o.tif")
SAMPLE = ("sample-patches", "a.tif", "-o", "p.gpkg")
TRAIN = ("train", "--patches", "p.gpkg", "-o", "run")
SWEEP = ("sweep", "--patches", "p.gpkg", "-o", "runs")
VECTORIZE = ("vectorize", "a.tif", "-o", "v.gpkg")
EVALUATE = ("evaluate", "a.tif", "--truth", "t.tif")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        # the ones the issue found exiting 1
        ((*PREDICT, "--overlap", "0.95"), "--overlap"),
        ((*PREDICT, "--merge", "foo"), "--merge"),
        ((*PREDICT, "--tile", "100"), "--tile"),
        ((*SAMPLE, "--size", "100"), "--size"),
        ((*TRAIN, "--model", "foo"), "--model"),
        # the ones that already exited 2
        ((*VECTORIZE, "--connectivity", "6"), "--connectivity"),
        ((*EVALUATE, "--threshold", "2"), "--threshold"),
        # and the rest of the family
        ((*PREDICT, "--batch", "0"), "--batch"),
        ((*SAMPLE, "--fractions", "0.5,0.5,0.5"), "--fractions"),
        ((*SAMPLE, "--min-unseen", "1.5"), "--min-unseen"),
        ((*SAMPLE, "--block-size", "40"), "--block-size"),
        ((*TRAIN, "--loss", "pixel"), "--loss"),
        ((*TRAIN, "--lr-schedule", "step"), "--lr-schedule"),
        ((*TRAIN, "--pool", "tile"), "--pool"),
        ((*TRAIN, "--model-size", "huge"), "--model-size"),
        ((*TRAIN, "--lr", "0"), "--lr"),
        ((*TRAIN, "--patience", "0"), "--patience"),
        ((*TRAIN, "--smoothing", "1"), "--smoothing"),
        ((*TRAIN, "--save-at", "1.5"), "--save-at"),
        ((*TRAIN, "--model-arg", "widths"), "--model-arg"),
        ((*SWEEP, "--loss", "regional,pixel"), "--loss"),
        ((*SWEEP, "--model", "unet,unet3"), "--model"),
        ((*VECTORIZE, "--bins", "0.5,0.2"), "--bins"),
        ((*VECTORIZE, "--lines", "--median", "4"), "--median"),
        ((*VECTORIZE, "--lines", "--spur", "3 miles"), "--spur"),
        ((*VECTORIZE, "--min-area", "-1"), "--min-area"),
        ((*EVALUATE, "--task", "foo"), "--task"),
        (("synth", "sea-ice", "s.nc", "--size", "10"), "--size"),
    ],
)
def test_bad_values_exit_2_with_one_line_naming_the_option(args: tuple[str, ...], option: str) -> None:
    line = usage_error(invoke(*args), option)
    assert line.startswith(f"Error: Invalid value for '{option}'"), line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((*PREDICT, "--merge", "refine"), "--merge refine needs --refiner"),
        ((*PREDICT, "--refiner", "r"), "--refiner applies to --merge refine only"),
        ((*VECTORIZE, "--lines", "--bins", "0.5"), "--bins apply to polygons only"),
        ((*VECTORIZE, "--min-length", "5"), "--min-length apply to --lines only"),
        ((*SWEEP, "--loss-arg", "gamma"), "--loss-arg 'gamma': write KEY=V1,V2"),
        ((*SAMPLE, "--size", "128", "--block-size", "64"), "--block-size 64 is smaller than --size 128"),
    ],
)
def test_options_that_do_not_go_together_are_usage_errors(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    line = usage_error(invoke(*args))
    assert line == f"Error: {words}" or line.startswith(f"Error: {words}"), line


def test_the_library_keeps_its_config_errors_for_the_python_api() -> None:
    from icetools.errors import ConfigError
    from icetools.inference.windows import check_tiling

    with pytest.raises(ConfigError, match="overlap 0.95"):
        check_tiling(128, 0.95)
    with pytest.raises(ConfigError, match="tile 100"):
        check_tiling(100, 0.25)


@pytest.mark.parametrize("command", [(*VECTORIZE[:2], "b.tif", *VECTORIZE[2:]), (*EVALUATE[:2], "b.tif", *EVALUATE[2:])])
def test_one_input_commands_name_the_extra_input(command: tuple[str, ...]) -> None:
    """vectorize and evaluate take one input (their output names one file): the extra is named."""
    assert "unexpected extra argument" in usage_error(invoke(*command), "b.tif")
