"""icetools: turn full satellite scenes into ice maps."""

import os

# GDAL's default block cache (5% of RAM) dominates the memory of streamed passes; 256 MB is plenty
# for strip-by-strip work. A user's own setting wins.
os.environ.setdefault("GDAL_CACHEMAX", "256")

__version__ = "0.1.0"
