"""icetools: turn full satellite scenes into ice maps."""

__version__ = "0.1.0"
