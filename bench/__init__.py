"""icetools benchmarks: `make bench` (or `python -m bench [name...]`) prints the figures the issues ask for."""
