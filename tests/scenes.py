"""Kept for the tests that still import it: the scenes now live in tests/fixtures.py."""

from fixtures import PIXEL, ORIGIN, affine_grid, gcp_grid, write_scene

__all__ = ["ORIGIN", "PIXEL", "affine_grid", "gcp_grid", "write_scene"]
