"""Benchmarks and hardware checks; run the scripts directly (python benchmarks/<script>.py). A package so that
they share benchmarks/common.py."""
