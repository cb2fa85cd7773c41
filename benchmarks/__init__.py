"""Benchmarks: each module has main() that prints figures and ends with `BENCH {json}`."""
