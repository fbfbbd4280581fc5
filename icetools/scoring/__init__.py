"""What ``evaluate`` scores, one module per task, and how it reads the rasters it scores.

:mod:`icetools.evaluate` is the entry point; these modules read prediction and truth strip by
strip (``bands``: which band, its dtype, nodata and tags; ``units``: SIC units), feed the
accumulators of :mod:`icetools.metrics`, and return plain dicts.
"""
