"""Benchmarks: `python -m bench [NAME...]` runs each `bench/*.py` module's `main()` and prints tables."""
