"""Benchmarks: speed, memory and quality targets, measured on this machine and written to
docs/BENCHMARKS.md (never asserted in tests). `make bench` runs them all; each module also runs
alone with `python -m bench.NAME`."""
