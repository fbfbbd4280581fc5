"""Tests of icetools.training (and icetools.sweep), one module per module of the package."""
