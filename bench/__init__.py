"""Microbenchmarks and recipe runs of chargpt, run as `pytest bench` or `python -m bench.X`."""
