"""Fuzz targets (``fuzz_<name>.py``) and their runner; see tests/fuzz/runner.py."""
