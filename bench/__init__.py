"""Benchmarks of processhub: ``python bench/run_all.py`` (see docs/benchmarks.md)."""
